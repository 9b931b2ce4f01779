"""Jobs on Ray: `ctxopt compare --executor ray` reproduces the in-process comparison, and survives a killed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctxopt.errors import ConfigError
from ctxopt.executor import Job, run_jobs
from ctxopt.matrix import load_results
from tests.toy import write_toy_stream

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]
LMS = ["--task-lm", "py:tests.toy:slow_task_lm", "--reflection-lm", "py:tests.toy:reflection_lm"]


def _compare(stream, run, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", "ctxopt", "compare", "--stream", str(stream), "--methods",
                             "static,ctxopt", "--budget", "light", "--run-dir", str(run), *LMS, *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _matrices(run):
    return {r.method: (r.r0, r.R) for r in load_results(run)}


def _ray_workers(name: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if name in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_unknown_executor_is_one_line():
    with pytest.raises(ConfigError, match="unknown executor"):
        run_jobs([Job("x", "json:dumps", {"obj": 1})], "spark")


def test_a_job_error_on_ray_is_raised_unchanged():
    with pytest.raises(ConfigError, match="unknown stream"):
        run_jobs([Job("bad", "ctxopt.streams:load_stream", {"spec": "no-such-stream"})], "ray", cpus=1)


def test_compare_on_ray_reproduces_in_process_and_survives_a_killed_worker(tmp_path):
    stream = write_toy_stream(tmp_path / "data", names=("suffix", "reverse"))
    local = _compare(stream, tmp_path / "local")
    out, _ = local.communicate(timeout=600)
    assert local.returncode == 0, out

    ray_run = tmp_path / "ray"
    proc = _compare(stream, ray_run, "--executor", "ray", "--ray-cpus", "2")
    state = ray_run / "ctxopt" / "state.json"
    killed = []
    deadline = time.time() + 900  # a loaded machine (CI beside a model run) starts Ray slowly
    while time.time() < deadline and proc.poll() is None and not killed:
        try:
            done = int(json.loads(state.read_text()).get("done", 0))
        except (OSError, ValueError):
            done = 0
        if done >= 1:  # ctxopt finished a step: kill the worker that runs it
            for pid in _ray_workers("ray::ctxopt s0"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert killed, "no ctxopt worker was found to kill"
    assert _matrices(ray_run) == _matrices(tmp_path / "local")
    assert (ray_run / "comparison.md").is_file() and (ray_run / "report.html").is_file()
    assert "| ctxopt |" in out
    # rerunning the same command finishes at once with the same results
    again = _compare(stream, ray_run, "--executor", "ray", "--ray-cpus", "2")
    out2, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out2
    assert _matrices(ray_run) == _matrices(tmp_path / "local")


def test_an_unexpected_error_on_ray_keeps_the_job_traceback():
    with pytest.raises(ValueError) as info:
        run_jobs([Job("bad", "json:loads", {"s": "{"})], "ray", cpus=1)
    assert any("in the Ray job" in note and "json" in note for note in getattr(info.value, "__notes__", []))
