"""Regression tests for defects found by reading and running the code (architecture issue).

Each test failed on the commit before its fix.
"""

from __future__ import annotations

import json

import dspy
import pytest

import ctxopt.evaluator as evaluator_module
import ctxopt.gate as gate_module
import ctxopt.portability as portability_module
import ctxopt.proposer as proposer_module
from ctxopt.budget import get_budget
from ctxopt.context import Item, LearnedContext, PredictorContext
from ctxopt.errors import ConfigError, ProgramError
from ctxopt.evaluator import Evaluator
from ctxopt.optimizer import ContinualOptimizer
from ctxopt.program import program_for
from ctxopt.rundir import CLOCK_FILE
from ctxopt.store import Store
from ctxopt.streams import load_stream
from tests.toy import reflection_lm, task_lm, toy_stream

SMALL = dict(n_trials=4, train_minibatch=6, val_minibatch=5, replay_per_task=3, gate_replay_per_task=5)


def _opt(budget=None, **kw):
    return ContinualOptimizer(task_lm(), reflection_lm(), budget=budget or get_budget("light", **SMALL), seed=0,
                              num_threads=2, **kw)


# -- defect 2: evaluations are cached by what the model sees, and unchanged tasks are not replayed -------------

def test_a_change_to_another_tasks_items_reuses_the_cached_results():
    stream = toy_stream()
    suffix, reverse = stream.tasks[0], stream.tasks[1]
    program = program_for(stream)
    ev = Evaluator(task_lm(), num_threads=1)
    base = LearnedContext.from_program(program)
    other = base.with_predictor("predict", PredictorContext(
        base.predictor("predict").instruction,
        items=(Item(id="r-00000001", text="Reverse the letters of the input word.", scope=reverse.name),)))
    first = ev.evaluate(program, base, suffix, suffix.val)
    again = ev.evaluate(program, other, suffix, suffix.val)  # suffix's prompt is the same under both contexts
    assert first.cache_hits == 0 and again.cache_hits == len(suffix.val)


def test_task_aware_steps_do_not_pay_to_replay_tasks_whose_prompts_did_not_change(tmp_path):
    stream = toy_stream()
    result = _opt().fit(program_for(stream), stream, run_dir=tmp_path / "run")
    charged = [s.extra["charged_task_calls"] for s in result.steps]
    # Edits are scoped to their task, so no earlier task's prompt changes: the gate replays nothing and
    # every step costs what the first one did (before the fix each step paid for a growing replay set).
    assert all(s.accepted for s in result.steps)
    assert charged[1] == charged[0] and charged[2] == charged[0]


# -- defect 3: a second fit() with another run directory uses that directory's store --------------------

def test_refit_into_another_run_directory_commits_into_that_store(tmp_path):
    stream = toy_stream(names=("suffix",))
    opt = _opt()
    opt.fit(program_for(stream), stream, run_dir=tmp_path / "a")
    first_log = [v.rev for v in Store.open(tmp_path / "a" / "store").log()]
    opt.fit(program_for(stream), stream, run_dir=tmp_path / "b")
    assert [v.rev for v in Store.open(tmp_path / "a" / "store").log()] == first_log
    assert len(Store.open(tmp_path / "b" / "store").log()) == len(first_log)


# -- defect 4: resuming under another budget is refused with the old and new settings --------------------

def test_resume_with_a_changed_budget_is_refused(tmp_path):
    stream = toy_stream(names=("suffix", "reverse"))
    _opt().fit(program_for(stream), stream, run_dir=tmp_path / "run")
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    state["done"] = 1  # as if killed after step 1
    (tmp_path / "run" / "state.json").write_text(json.dumps(state))
    other = get_budget("light", **{**SMALL, "n_trials": 6})
    with pytest.raises(ConfigError, match=r"holds another run \(budget.n_trials 4 → 6\)"):
        _opt(budget=other).fit(program_for(stream), stream, run_dir=tmp_path / "run")


# -- defect 5: the step clock is kept until fit has saved the step -----------------------------------------

def test_step_clock_survives_a_failure_to_save_the_step(tmp_path):
    stream = toy_stream(names=("suffix",))
    run = tmp_path / "run"

    def break_state(event):
        if event.kind == "task_end":  # learning is done; the state file cannot be written from now on
            (run / "state.json").unlink()
            (run / "state.json").mkdir()

    with pytest.raises(OSError):
        _opt(callbacks=[break_state]).fit(program_for(stream), stream, run_dir=run)
    clock = json.loads((run / CLOCK_FILE).read_text())
    assert clock["step"] == 1 and clock["seconds"] > 0


# -- defect 10: dead code is gone ---------------------------------------------------------------------------

def test_unused_record_readers_are_gone():
    assert not hasattr(proposer_module.Proposal, "from_dict")
    assert not hasattr(gate_module.Decision, "from_dict")
    assert not hasattr(portability_module.TaskDelta, "from_dict")
    assert not hasattr(evaluator_module.EvalResult, "by_id")


# -- defect 11: a user's own program ---------------------------------------------------------------------------

class QA(dspy.Module):
    """A user's program: it takes only ``input``, never the task label."""

    def __init__(self):
        super().__init__()
        self.answer = dspy.ChainOfThought("input -> output")

    def forward(self, input):  # noqa: A002 - the stream's field name
        return self.answer(input=input)


STREAM_YAML = """
name: user-stream
scenario: task-aware
inputs: [input]
output: output
metric: exact_match
tasks:
  - name: suffix
    data: {file}
"""


def test_a_user_program_without_a_task_parameter_learns_on_a_task_aware_stream(tmp_path):
    stream = toy_stream(names=("suffix", "reverse"))
    result = _opt().fit(QA(), stream, run_dir=tmp_path / "run")
    assert result.r0 == [0.0, 0.0] and [result.R[i][i] for i in range(2)] == [1.0, 1.0]


class Broken(dspy.Module):
    def __init__(self):
        super().__init__()
        self.answer = dspy.Predict("input -> output")

    def forward(self, input):  # noqa: A002
        raise TypeError("Broken.forward() is broken")


def test_every_example_failing_the_same_way_stops_with_one_line(tmp_path):
    stream = toy_stream(names=("suffix",))
    with pytest.raises(ProgramError, match=r"failed with the same error: TypeError: Broken.forward\(\) is broken"):
        _opt().fit(Broken(), stream, run_dir=tmp_path / "run")


def test_a_user_program_runs_on_a_task_aware_yaml_stream(tmp_path):
    # The YAML user path of the issue: a plain module on a task-aware YAML stream file.
    words = ("apple", "bread", "chair", "delta", "eagle", "flame", "grape", "house", "igloo", "joker")
    rows = [{"input": w, "output": w + "zz"} for w in words]
    data = tmp_path / "suffix.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    path = tmp_path / "stream.yaml"
    path.write_text(STREAM_YAML.format(file=data))
    stream = load_stream(str(path), sizes=(2, 2, 2))
    ev = Evaluator(task_lm(), num_threads=1)
    res = ev.evaluate(QA(), None, stream.tasks[0], stream.tasks[0].val, scenario="task-aware")
    assert res.failures == 0


def test_fit_store_is_a_deprecated_alias_of_run_dir(tmp_path):
    stream = toy_stream(names=("suffix",))
    with pytest.warns(DeprecationWarning, match=r"fit\(store=...\) is deprecated; pass run_dir"):
        _opt().fit(program_for(stream), stream, store=tmp_path / "run")
    assert (tmp_path / "run" / "state.json").is_file()


# -- defect 7: consolidation's share of the reflection calls is kept from the proposers ------------------------

def test_the_reflection_proposer_cannot_spend_consolidations_share(tmp_path):
    from ctxopt.consolidate import Consolidator

    stream = toy_stream(names=("suffix",))
    budget = get_budget("light", **{**SMALL, "reflection_calls_per_task": 3})
    opt = _opt(budget=budget, consolidate=True, consolidator=Consolidator(reflection_lm(), similarity="lexical"))
    result = opt.fit(program_for(stream), stream, run_dir=tmp_path / "run")
    by_source = result.steps[0].extra["charged_by_source"]
    assert by_source.get("reflection:proposer:ReflectionProposer", 0) <= 2  # one of 3 calls kept for consolidation
    without = _opt(budget=budget, consolidate=False).fit(program_for(stream), stream, run_dir=tmp_path / "plain")
    assert without.steps[0].extra["charged_by_source"]["reflection:proposer:ReflectionProposer"] == 3


# -- defect 9: an accepted step credits the items it added with the gate's paired outcome ----------------------

def test_accepted_items_carry_the_gates_evidence(tmp_path):
    stream = toy_stream(names=("suffix", "reverse"))
    opt = _opt()
    opt.fit(program_for(stream), stream, run_dir=tmp_path / "run")
    items = Store.open(tmp_path / "run" / "store").current().predictor("predict").items
    learned = [it for it in items if it.source_task in ("suffix", "reverse")]
    assert learned and all(it.helpful > 0 and it.harmful == 0 for it in learned)
