"""SIGTERM to a real-model run while a model call is in flight: exit 143, every time, and the rerun ends where
an uninterrupted run ends.

The run is ``ctxopt run`` on one Instruction Induction task with the embedded 0.5B as task and reflection
LM and a small budget. It is started with ``-v`` so the local engine logs each native call it starts and
finishes; the test sends SIGTERM right after a call has started and before it has finished, five times, each
time on the rerun of the same command, then lets the sixth run finish. Before the fix the process freed the
model under the evaluator's thread and died with a segmentation fault (139).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.real_lm

CONFIG = """\
stream: ii:antonyms
program: builtin
task_lm: local
reflection_lm: local
budget: {{preset: light, task_calls_per_task: 60, n_trials: 4}}
sizes: [8, 6, 6]
seed: 0
num_threads: 2
run_dir: {run_dir}
"""

STARTED = "local model call started"
FINISHED = "local model call finished"


def _config(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(CONFIG.format(run_dir=tmp / name))
    return path


def _cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "ctxopt", "-v", "run", str(config)]


def _final_hash(run_dir: Path) -> str:
    from ctxopt.store import Store

    return str(Store.open(run_dir / "store").current().hash)


def _kill_during_a_call(config: Path, nth_call: int) -> tuple[int, bool, str]:
    """Run until the ``nth_call``-th new model call has started, SIGTERM it while in flight; (rc, in_flight, tail)."""
    proc = subprocess.Popen(_cmd(config), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    state = {"started": 0, "finished": 0, "sent_at": None, "in_flight": False}
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if STARTED in line:
                state["started"] += 1
                if state["started"] == nth_call and state["sent_at"] is None:
                    state["in_flight"] = state["finished"] == state["started"] - 1
                    proc.send_signal(signal.SIGTERM)
                    state["sent_at"] = state["finished"]
            elif FINISHED in line:
                state["finished"] += 1

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    rc = proc.wait(timeout=900)
    reader.join(timeout=10)
    tail = "".join(lines[-5:])
    return rc, bool(state["in_flight"]) and state["sent_at"] is not None, tail


def test_sigterm_during_a_model_call_exits_143_five_times_and_the_rerun_matches(tmp_path, real_lm):
    reference = _config(tmp_path, "reference")
    done = subprocess.run(_cmd(reference), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]

    killed = _config(tmp_path, "killed")
    for nth in (2, 4, 6, 8, 10):
        t0 = time.perf_counter()
        rc, in_flight, tail = _kill_during_a_call(killed, nth)
        assert in_flight, f"SIGTERM was not sent during a model call (call {nth}): {tail}"
        assert rc == 143, f"kill at call {nth}: exit {rc} after {time.perf_counter() - t0:.1f}s; stderr ends: {tail}"
        assert "terminated; rerun the same command to resume" in tail
    final = subprocess.run(_cmd(killed), capture_output=True, text=True, timeout=1800)
    assert final.returncode == 0, final.stderr[-2000:]
    assert _final_hash(tmp_path / "killed") == _final_hash(tmp_path / "reference")
