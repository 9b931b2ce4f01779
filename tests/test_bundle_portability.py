"""A bundle carries the learned context to another machine: fresh store, fresh program, same behaviour."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from ctxopt.budget import get_budget
from ctxopt.optimizer import ContinualOptimizer
from ctxopt.portability import transfer
from ctxopt.program import program_for
from ctxopt.store import Store
from tests.fakes import scripted_lm
from tests.test_transfer import contrarian_answer
from tests.toy import RULES, reflection_lm, task_lm, toy_stream

SMALL = dict(n_trials=4, train_minibatch=6, val_minibatch=5, replay_per_task=3, gate_replay_per_task=5)
REPO = Path(__file__).resolve().parents[1]

# Runs in a new interpreter, in another directory, with another HOME: nothing but the bundle file is shared.
OTHER_MACHINE = textwrap.dedent("""
    import json, sys
    import dspy
    from ctxopt.evaluator import Evaluator
    from ctxopt.program import program_for
    from ctxopt.store import Store
    from tests.toy import task_lm, toy_stream

    bundle, where = sys.argv[1], sys.argv[2]
    store = Store.import_bundle(bundle, where + "/store")
    ctx = store.current()
    stream = toy_stream()
    program = program_for(stream)                       # a fresh program: C0 only
    ev = Evaluator(task_lm(), num_threads=1)
    val = {t.name: ev.evaluate(program, ctx, t, list(t.val)).mean for t in stream}
    static = {t.name: ev.evaluate(program, None, t, list(t.val)).mean for t in stream}
    fresh = program_for(stream)
    ctx.apply_to(fresh, task="reverse")
    store.export_dspy(program_for(stream), where + "/reverse.json", task="reverse")
    plain = program_for(stream)
    plain.load(where + "/reverse.json")                 # plain DSPy, no ctxopt involved
    print(json.dumps({
        "hash": ctx.hash, "versions": len(store.log()), "branches": store.branches(),
        "branch": store.current_branch(), "val": val, "static": static,
        "instruction": fresh.predict.signature.instructions,
        "loaded_instruction": plain.predict.signature.instructions,
        "transfer_final": store.show("transfer/scripted-contrarian").hash,
    }))
""")


def test_bundle_round_trip_into_a_fresh_store_on_another_machine(tmp_path):
    stream = toy_stream()
    run = tmp_path / "here" / "run"
    ContinualOptimizer(task_lm(), reflection_lm(), budget=get_budget("light", **SMALL), seed=0, num_threads=2,
                       measure_test=False).fit(program_for(stream), stream, run_dir=run)
    store = Store.open(run / "store")
    moved = transfer(store, scripted_lm(contrarian_answer, name="scripted/contrarian"), stream=stream,
                     work_dir=tmp_path / "here" / "work")
    expected = {"hash": store.current().hash, "versions": len(store.log()),
                "transfer_final": store.show(moved.branch).hash}
    bundle = store.export_bundle(tmp_path / "here" / "ctx.bundle")

    there = tmp_path / "there"
    there.mkdir()
    shutil.copy(bundle, there / "ctx.bundle")
    shutil.rmtree(tmp_path / "here")  # the original store is gone
    env = {**os.environ, "HOME": str(there), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", OTHER_MACHINE, str(there / "ctx.bundle"), str(there)],
                          cwd=there, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])

    assert got["hash"] == expected["hash"] and got["versions"] == expected["versions"]
    assert got["branch"] == "main" and "transfer/scripted-contrarian" in got["branches"]
    assert got["transfer_final"] == expected["transfer_final"]  # transfer history travels too
    assert got["val"] == {name: 1.0 for name in RULES}  # the fresh program behaves as learned
    assert got["static"] == {name: 0.0 for name in RULES}
    assert RULES["reverse"][0] in got["instruction"] and RULES["suffix"][0] not in got["instruction"]
    assert got["loaded_instruction"] == got["instruction"]
