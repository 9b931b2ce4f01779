"""Each comparison method on the 3-task toy stream with scripted LMs, and the budget plans."""

from __future__ import annotations

import json
import logging
import re

import pytest

from ctxopt.baselines import get_method, get_methods
from ctxopt.baselines.append import Append, Summarize
from ctxopt.baselines.dspy_optimizers import GepaSeq, MiproSeq, gepa_plan, mipro_plan
from ctxopt.baselines.oracle import OracleHuman
from ctxopt.budget import get_budget
from ctxopt.compare import compare
from ctxopt.errors import ConfigError
from ctxopt.program import program_for
from tests.fakes import chat_fields, scripted_lm
from tests.toy import RULES, task_lm, toy_stream

# A small budget: every method learns each toy task in well under a second.
BUDGET = get_budget("light", task_calls_per_task=60, reflection_calls_per_task=3, n_trials=4, train_minibatch=6,
                    val_minibatch=5, replay_per_task=3, gate_replay_per_task=5)


def _task_in(text: str) -> str | None:
    counts = {name: len(re.findall(rf"\b{name}\b", text)) for name in RULES}
    best = max(counts, key=counts.get)
    return best if counts[best] else None


def reflector(useless: bool = False):
    """A scripted reflection LM that answers every prompt the methods send.

    It names the rule of the task the prompt is about: ``ADD:`` lines for ctxopt's
    reflection, fields in DSPy's chat or JSON format for GEPA's and MIPROv2's
    proposers, plain lines for summaries. ``useless=True`` never names a rule.
    """

    def respond(system: str, user: str) -> str:
        task = None if useless else _task_in(user)
        rule = RULES[task][0] if task else "Answer carefully."
        if "Your output fields are" in system:  # a DSPy signature call
            block = re.search(r"Your output fields are:\n(.*?)(?:\n\n|\Z)", system, re.DOTALL)
            fields = re.findall(r"`(\w+)`", block.group(1)) if block else []
            values = {f: rule if "instruction" in f else f"Words of the task {task or 'unknown'}." for f in fields}
            return json.dumps(values) if "JSON" in system else chat_fields(**values)
        if re.search(r'on the task "', user):  # ctxopt's reflection prompt
            return f"ADD: {rule}"
        return f"- {rule}"

    return scripted_lm(respond, name="scripted/reflector")


@pytest.fixture(autouse=True)
def _quiet_optimizers():
    """GEPA and MIPROv2 log every iteration at INFO; formatting that for pytest's capture is slow."""
    loggers = [logging.getLogger(n) for n in ("dspy", "gepa", "optuna")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    yield
    for lg, level in zip(loggers, levels):
        lg.setLevel(level)


def run(tmp_path, method, *, reflection=None, budget=BUDGET, scenario="task-aware", tokens=400, **kw):
    """Run one method over the toy stream; every method must give a full matrix within its budget."""
    stream = toy_stream(scenario)
    tl, rl = task_lm(), reflection or reflector()
    [result] = compare(program_for(stream), stream, [method], task_lm=tl, reflection_lm=rl,
                       run_dir=tmp_path / "run", budget=budget, seed=0, num_threads=2, max_context_tokens=tokens,
                       report=False, **kw)
    assert_full_matrix(result)
    joint = get_method(method).joint
    for s in result.steps:
        assert s.extra["budget_task_calls"] == budget.task_calls_per_task * (3 if joint else 1)
        assert s.task_calls <= s.extra["budget_task_calls"]
    return result, tl, rl


def diag(result):
    return [result.R[i][i] for i in range(len(result.R))]


def assert_full_matrix(result, n=3):
    assert len(result.r0) == n and len(result.R) == n and all(len(row) == n for row in result.R)
    assert [s.task for s in result.steps] == ["suffix", "reverse", "double"][:n]
    assert not [s.extra["error"] for s in result.steps if s.extra.get("error")]
    assert result.summary()["acc"] is not None


def toy_annotations(tmp_path):
    folder = tmp_path / "annotations"
    folder.mkdir()
    for name, (rule, _) in RULES.items():
        (folder / f"{name}.json").write_text(json.dumps({"annotations": ["short", rule]}))
    return folder


# ------------------------------------------------------------------ every method, full matrix


def test_static_never_learns_and_spends_nothing(tmp_path):
    result, _, rl = run(tmp_path, "static")
    assert result.R == [result.r0] * 3 and usage_calls(rl) == 0
    assert all(s.task_calls == 0 and s.reflection_calls == 0 for s in result.steps)
    assert len({s.extra["context_hash"] for s in result.steps}) == 1


def test_labeled_fewshot_keeps_k_demos_per_task_scoped_and_makes_no_lm_call(tmp_path):
    from ctxopt.baselines.fewshot import LabeledFewShot
    from ctxopt.store import Store

    result, tl, rl = run(tmp_path, LabeledFewShot(k=3))
    assert usage_calls(rl) == 0 and all(s.task_calls == 0 for s in result.steps)
    final = Store.open(tmp_path / "run" / "labeled-fewshot" / "store").current().predictor("predict")
    stream = toy_stream("task-aware")
    assert sorted(d.scope for d in final.demos) == sorted(["suffix"] * 3 + ["reverse"] * 3 + ["double"] * 3)
    for task in stream.tasks:  # each demo is a train example of its task, labelled with its gold output
        gold = {ex.input: ex.output for ex in task.train}
        for d in final.scoped_demos(task.name):
            if d.scope == task.name:
                assert gold[d.inputs["input"]] == d.outputs["output"] and d.inputs["task"] == task.name
    assert diag(result)[0] >= result.r0[0]


def test_labeled_fewshot_replaces_the_previous_tasks_demos_without_labels(tmp_path):
    from ctxopt.baselines.fewshot import LabeledFewShot
    from ctxopt.store import Store

    run(tmp_path, LabeledFewShot(k=3), scenario="task-agnostic")
    final = Store.open(tmp_path / "run" / "labeled-fewshot" / "store").current().predictor("predict")
    double = {ex.input for ex in toy_stream("task-agnostic").tasks[-1].train}
    assert len(final.demos) == 3 and all(d.scope == "global" and d.inputs["input"] in double for d in final.demos)


def test_append_adds_failures_with_feedback_until_the_context_budget_is_full(tmp_path):
    result, _, rl = run(tmp_path, Append(), tokens=200)
    from ctxopt.store import Store

    ctx = Store.open(tmp_path / "run" / "append" / "store").current()
    notes = ctx.items("predict")
    assert notes and all(it.kind == "note" and it.scope == "suffix" for it in notes)
    assert "expected: " in notes[0].text and "feedback: " in notes[0].text
    assert ctx.token_count() <= 200
    assert "context budget of 200 tokens is full" in result.steps[0].extra["note"]
    assert result.steps[1].extra["appended"] == 0  # later tasks find the budget full
    assert all(s.reflection_calls == 0 for s in result.steps)
    assert usage_calls(rl) == 0


def usage_calls(lm):
    return lm.usage.snapshot().calls


def test_summarize_keeps_the_context_within_budget_with_reflection_summaries(tmp_path):
    result, _, rl = run(tmp_path, Summarize(), tokens=150)
    assert usage_calls(rl) == sum(s.reflection_calls for s in result.steps)
    # The scripted summary states each task's rule, so each task is solved once learned, and kept.
    assert diag(result) == [1.0, 1.0, 1.0] and result.R[2] == [1.0, 1.0, 1.0]
    for s in result.steps:
        assert s.context_tokens <= 150
        assert 1 <= s.reflection_calls <= BUDGET.reflection_calls_per_task
        assert s.extra["summaries"] == s.reflection_calls


def test_summarize_drops_oldest_items_when_the_summary_does_not_fit(tmp_path):
    # A reflector that ignores the requested length: the hard cap still holds.
    verbose = scripted_lm(lambda s, u: "\n".join(f"- rule number {i} " + "word " * 30 for i in range(6)),
                          name="scripted/verbose")
    result, _, _ = run(tmp_path, Summarize(), reflection=verbose, tokens=120)
    assert all(s.context_tokens <= 120 for s in result.steps)
    assert sum(s.extra["dropped_items"] for s in result.steps) > 0


def test_gepa_seq_learns_each_task_and_forgets_the_earlier_ones(tmp_path):
    result, _, _ = run(tmp_path, "gepa-seq")
    assert diag(result) == [1.0, 1.0, 1.0]
    assert result.R[2] == [0.0, 0.0, 1.0]  # one instruction, overwritten by each task: sequential forgetting
    assert result.summary()["bwt"] == -1.0
    plan = result.steps[0].extra["plan"]
    for s in result.steps:  # GEPA runs until its max_metric_calls and never past the worst case
        assert plan["max_metric_calls"] <= s.task_calls <= plan["worst_case"] <= BUDGET.task_calls_per_task


def test_gepa_joint_learns_once_on_all_tasks_and_keeps_its_context(tmp_path):
    result, _, _ = run(tmp_path, "gepa-joint")
    first, *rest = result.steps
    assert first.task_calls > 0 and all(s.task_calls == 0 and s.reflection_calls == 0 for s in rest)
    assert first.task_calls <= first.extra["plan"]["worst_case"] <= 3 * BUDGET.task_calls_per_task
    assert result.R[0] == result.R[1] == result.R[2]
    assert max(result.R[0]) == 1.0  # its one instruction solves one of the tasks
    assert "joint" in rest[0].extra["note"]


def test_mipro_seq_learns_each_task_from_its_proposed_instruction(tmp_path):
    result, _, _ = run(tmp_path, "mipro-seq")
    assert diag(result) == [1.0, 1.0, 1.0]
    assert result.summary()["bwt"] == -1.0
    for s in result.steps:
        assert s.task_calls <= s.extra["plan"]["worst_case"] <= BUDGET.task_calls_per_task


def test_oracle_human_adds_the_human_instruction_scoped_to_its_task(tmp_path):
    result, _, rl = run(tmp_path, OracleHuman(annotations_dir=toy_annotations(tmp_path)))
    assert diag(result) == [1.0, 1.0, 1.0] and result.R[2] == [1.0, 1.0, 1.0] and usage_calls(rl) == 0
    assert all(s.task_calls == 0 and s.reflection_calls == 0 for s in result.steps)
    assert result.steps[0].extra["instruction"] == RULES["suffix"][0]  # the longest annotation
    from ctxopt.store import Store

    items = Store.open(tmp_path / "run" / "oracle-human" / "store").current().items("predict")
    assert {(it.scope, it.text) for it in items} == {(n, r) for n, (r, _) in RULES.items()}


def test_oracle_human_refuses_streams_without_human_instructions():
    with pytest.raises(ConfigError, match="oracle-human needs Instruction Induction tasks"):
        OracleHuman().check(["suffix"])
    OracleHuman().check(["antonyms", "translation_en-es"])


def test_ctxopt_method_learns_with_its_gate_and_commits_itself(tmp_path):
    budget = get_budget(BUDGET, task_calls_per_task=300)  # its search and gate replay earlier tasks
    result, _, _ = run(tmp_path, "ctxopt", budget=budget)
    assert diag(result) == [1.0, 1.0, 1.0] and result.summary()["bwt"] == 0.0
    assert all(s.accepted for s in result.steps)
    for s in result.steps:
        assert s.task_calls <= s.extra["charged_task_calls"] <= 300
        assert s.reflection_calls <= BUDGET.reflection_calls_per_task
    from ctxopt.store import Store

    log = Store.open(tmp_path / "run" / "ctxopt" / "store").log()
    assert [v.metadata.get("step") for v in reversed(log)] == [0, 1, 2, 3]  # one version per step, no doubles


# ------------------------------------------------------------------ budget matching


@pytest.mark.parametrize("minibatch_size", [10, 4])
def test_mipro_call_count_matches_its_plan_exactly(tmp_path, minibatch_size):
    # A useless reflector: no demo bootstraps and no trial succeeds, so MIPROv2 spends its worst case.
    budget = get_budget(BUDGET, task_calls_per_task=120)
    result, _, _ = run(tmp_path, MiproSeq(minibatch_size=minibatch_size), reflection=reflector(useless=True),
                       budget=budget)
    for s in result.steps:
        plan = s.extra["plan"]
        assert plan["minibatch"] is (minibatch_size < 10)
        assert s.task_calls == plan["worst_case"] <= 120


def test_gepa_spends_its_budget_but_never_more(tmp_path):
    budget = get_budget(BUDGET, task_calls_per_task=90)
    result, _, _ = run(tmp_path, GepaSeq(), reflection=reflector(useless=True), budget=budget)
    for s in result.steps:
        plan = s.extra["plan"]
        assert plan == gepa_plan(90, n_val=10).to_dict()
        assert plan["max_metric_calls"] <= s.task_calls <= plan["worst_case"] <= 90


@pytest.mark.parametrize("calls", [40, 60, 120, 300, 800, 2400])
@pytest.mark.parametrize("n_val", [4, 10, 30, 240])
def test_budget_plans_never_exceed_the_per_task_budget(calls, n_val):
    g = gepa_plan(calls, n_val)
    assert g.worst_case <= calls and g.val_size <= n_val and g.max_metric_calls > g.val_size
    m = mipro_plan(calls, n_train=40, n_val=n_val)
    assert m.worst_case <= calls and m.num_trials >= 1 and m.val_size <= n_val


def test_budget_plans_refuse_a_budget_too_small_to_run():
    with pytest.raises(ConfigError, match="too small for GEPA"):
        gepa_plan(8, n_val=30)
    with pytest.raises(ConfigError, match="too small for MIPROv2"):
        mipro_plan(3, n_train=40, n_val=30)


def test_methods_are_resolved_by_name_and_errors_list_the_valid_names():
    assert [m.name for m in get_methods("static, append,ctxopt")] == ["static", "append", "ctxopt"]
    with pytest.raises(ConfigError, match="valid methods: static, append"):
        get_methods("static,bogus")
    with pytest.raises(ConfigError, match="listed twice: static"):
        get_methods("static,static")
