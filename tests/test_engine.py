"""One run engine: fit and compare drive methods through the same loop and the same state.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import ctxopt
from ctxopt.budget import get_budget
from ctxopt.compare import compare
from ctxopt.errors import ConfigError
from ctxopt.optimizer import ContinualOptimizer
from ctxopt.program import program_for
from ctxopt.rundir import STATE_FILE, RunDir
from tests.toy import reflection_lm, task_lm, toy_stream

SMALL = dict(n_trials=4, train_minibatch=6, val_minibatch=5, replay_per_task=3, gate_replay_per_task=5)
BUDGET = get_budget("light", **SMALL)


def test_fit_and_compare_write_the_same_state_and_reach_the_same_context(tmp_path):
    stream = toy_stream()
    fit = ContinualOptimizer(task_lm(), reflection_lm(), budget=BUDGET, seed=0, num_threads=2).fit(
        program_for(stream), stream, run_dir=tmp_path / "fit")
    [cmp] = compare(program_for(stream), stream, "ctxopt", task_lm=task_lm(), reflection_lm=reflection_lm(),
                    run_dir=tmp_path / "cmp", budget=BUDGET, seed=0, num_threads=2, report=False)
    a = json.loads((tmp_path / "fit" / STATE_FILE).read_text())
    b = json.loads((tmp_path / "cmp" / "ctxopt" / STATE_FILE).read_text())
    assert set(a) == set(b) and a["version"] == b["version"]
    drop = {"max_context_tokens", "lms"}  # compare gives append/summarize a default context budget
    assert {k: v for k, v in a["identity"].items() if k not in drop} == \
        {k: v for k, v in b["identity"].items() if k not in drop}
    # the same method on the same stream, seed and LMs: the same decisions, matrix and context
    assert fit.R == cmp.R and fit.r0 == cmp.r0
    assert fit.meta["final_context_hash"] == cmp.meta["final_context_hash"]
    assert [s.accepted for s in fit.steps] == [s.accepted for s in cmp.steps]
    assert a["method_state"]["ledger"]["spent_task"] == b["method_state"]["ledger"]["spent_task"]
    # the same cost columns in both
    for s in (*fit.steps, *cmp.steps):
        assert {"task_model_calls", "charged_task_calls", "task_prompt_tokens", "task_completion_tokens"} <= set(s.extra)


def test_only_the_run_directory_module_names_the_state_file():
    pkg = Path(ctxopt.__file__).parent
    writers = sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*.py")
                     if re.search(r"[\"']state\.json[\"']", p.read_text(encoding="utf-8")))
    assert writers == ["rundir.py"]


def test_a_resume_under_other_settings_names_old_and_new(tmp_path):
    stream = toy_stream(names=("suffix",))
    ContinualOptimizer(task_lm(), reflection_lm(), budget=BUDGET, seed=0, num_threads=2).fit(
        program_for(stream), stream, run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"holds another run \(seed 0 → 1\)"):
        ContinualOptimizer(task_lm(), reflection_lm(), budget=BUDGET, seed=1, num_threads=2).fit(
            program_for(stream), stream, run_dir=tmp_path / "run")


def test_a_finished_run_is_read_through_its_run_directory(tmp_path):
    stream = toy_stream(names=("suffix", "reverse"))
    ContinualOptimizer(task_lm(), reflection_lm(), budget=BUDGET, seed=0, num_threads=2).fit(
        program_for(stream), stream, run_dir=tmp_path / "run")
    run = RunDir.of_store(ctxopt.Store.open(tmp_path / "run" / "store"))
    assert run.done() == 2 and run.identity()["tasks"] == ["suffix", "reverse"]
    assert run.identity()["method"] == "ctxopt"
