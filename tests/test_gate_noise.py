"""The default gate is not vetoed by noise: paired tests, three outcomes, and replay samples that grow when close."""

from __future__ import annotations

import re

import pytest

from ctxopt.baselines.continual import CtxoptMethod
from ctxopt.budget import get_budget
from ctxopt.config import RunConfig
from ctxopt.edits import AddItem
from ctxopt.gate import (
    DEFAULT_GATE,
    Decision,
    PairedScores,
    PairedTestGate,
    PairedToleranceGate,
    StrictGate,
    get_gate,
    tolerance_gate,
)
from ctxopt.matrix import RunResult, StepRecord
from ctxopt.metrics import get_metric
from ctxopt.optimizer import ContinualOptimizer
from ctxopt.program import program_for
from ctxopt.proposer import Proposal, ProposalContext
from ctxopt.report import gate_summary
from ctxopt.selector import ScopeSelector
from ctxopt.tasks import Task, TaskStream, example_id, make_example
from tests.fakes import chat_fields, scripted_lm
from tests.toy import RULES, WORDS


def scores(task: str, n: int, before: int, after: int) -> PairedScores:
    """``n`` examples; the first ``before`` score 1 under the current context, the first ``after`` under the candidate."""
    ids = [f"x{k:02d}" for k in range(n)]
    return PairedScores(task, {i: float(k < before) for k, i in enumerate(ids)},
                        {i: float(k < after) for k, i in enumerate(ids)})


CLEAR_GAIN = scores("new", 10, 0, 8)


# --------------------------------------------------------------------------- the gate alone


def test_one_flipped_replay_answer_among_ten_does_not_veto_a_clear_gain():
    one_flip = scores("old", 10, 10, 9)
    assert not StrictGate().decide(CLEAR_GAIN, [one_flip]).accepted  # the old default: vetoed by one answer
    d = PairedTestGate().decide(CLEAR_GAIN, [one_flip])
    # not a veto: 10 examples cannot show the drop is under 0.25 (bound 0.1 + 1.645 × 0.1), so the sample grows
    assert not d.accepted and d.outcome == "undecided" and d.grow == ("old",)
    d = PairedTestGate().decide(CLEAR_GAIN, [scores("old", 20, 20, 19)])  # one flip of 20: bound 0.13
    assert d.accepted and d.outcome == "accepted" and d.grow == ()
    assert d.p_value == pytest.approx(0.5 ** 8)  # sign test: 8 fixed, 0 broken


def test_a_real_regression_is_rejected():
    d = PairedTestGate().decide(CLEAR_GAIN, [scores("old", 10, 10, 5)])
    assert not d.accepted and d.outcome == "rejected"
    assert "earlier task old drops 1.000 → 0.500" in d.reason and "significantly" in d.reason
    # Small drops spread over many tasks add up: one flip on each of five tasks is a significant mean drop.
    spread = [scores(f"t{k}", 10, 10, 9) for k in range(5)]
    assert PairedTestGate().decide(CLEAR_GAIN, spread).outcome == "rejected"


def test_a_borderline_drop_is_undecided_and_names_the_tasks_to_grow():
    d = PairedTestGate().decide(CLEAR_GAIN, [scores("old", 10, 10, 8), scores("other", 10, 5, 5)])
    assert d.outcome == "undecided" and not d.accepted and d.grow == ("old",)
    assert d.reason.startswith("undecided: earlier task old drops 1.000 → 0.800")
    # One task far over the per-task bound, hidden in a small mean: grow that task.
    quiet = [scores(f"t{k}", 10, 10, 10) for k in range(7)]
    d = PairedTestGate().decide(CLEAR_GAIN, [scores("hit", 10, 10, 7), *quiet])
    assert d.outcome == "undecided" and d.grow == ("hit",)


def test_the_current_task_needs_a_significant_gain():
    gate = PairedTestGate()
    assert gate.decide(scores("new", 10, 0, 3), []).accepted  # 3 fixed, 0 broken: p = 0.125 < 0.25
    d = gate.decide(scores("new", 10, 0, 2), [])  # p = 0.25: close, so the current task's sample grows
    assert d.outcome == "undecided" and d.grow == ("new",) and d.p_value == 0.25 and "close" in d.reason
    d = PairedTestGate(alpha_grow=0.25).decide(scores("new", 10, 0, 2), [])  # with no close zone: rejected at once
    assert d.outcome == "rejected" and "not significant" in d.reason
    d = gate.decide(scores("new", 10, 0, 1), [])  # 1 fixed: p = 0.5, not close
    assert d.outcome == "rejected" and "not significant" in d.reason
    assert gate.decide(scores("new", 10, 5, 5), []).reason.startswith("no gain on new")


def test_a_close_gain_grows_with_the_earlier_tasks_to_grow_unless_harm_rejects():
    gate, close = PairedTestGate(), scores("new", 10, 0, 2)
    d = gate.decide(close, [scores("old", 10, 10, 9), scores("quiet", 10, 10, 10)])
    assert d.outcome == "undecided" and d.grow == ("new", "old")
    d = gate.decide(close, [scores("old", 10, 10, 5)])  # a real regression: no sample growth can save it
    assert d.outcome == "rejected" and "earlier task old drops 1.000 → 0.500" in d.reason


def test_decision_outcome_defaults_and_serializes():
    assert Decision(True, "ok", 0.0).outcome == "accepted" and Decision(False, "no", 0.0).outcome == "rejected"
    d = Decision(False, "close", 0.1, {"a": -0.2}, 0.01, "undecided", ["a"])
    assert d.grow == ("a",) and d.to_dict()["grow"] == ["a"] and d.to_dict()["outcome"] == "undecided"
    with pytest.raises(ValueError):
        Decision(True, "contradiction", 0.0, outcome="undecided")


def test_paired_is_the_default_gate_everywhere():
    assert DEFAULT_GATE == "paired" and isinstance(get_gate(DEFAULT_GATE, epsilon=0.05), PairedTestGate)
    assert isinstance(ContinualOptimizer(None, None).gate, PairedTestGate)
    assert RunConfig.model_validate({"stream": "ii-8", "run_dir": "r"}).gate == "paired"
    assert CtxoptMethod().gate == "paired"
    assert isinstance(get_gate("strict"), StrictGate)


def test_the_consolidation_tolerance_is_noise_aware_too():
    tol = tolerance_gate(PairedTestGate(epsilon=0.05))
    assert isinstance(tol, PairedToleranceGate) and tol.epsilon == 0.05
    assert tol.decide(scores("t", 10, 10, 9), []).accepted  # no gain needed; one flip is noise
    wiped = tol.decide(scores("t", 10, 10, 0), [])
    assert wiped.outcome == "rejected" and "task t drops 1.000 → 0.000" in wiped.reason
    assert tol.decide(scores("t", 10, 10, 8), []).outcome == "undecided"  # does not land


def test_gate_counts_in_the_summary_and_the_report_line():
    steps = [StepRecord(1, "a", extra={"gate_outcome": "accepted", "gate_rounds": 0}),
             StepRecord(2, "b", extra={"gate_outcome": "undecided", "gate_rounds": 2}),
             StepRecord(3, "c", extra={"gate_outcome": None, "gate_rounds": 0}), StepRecord(4, "d")]
    run = RunResult("ctxopt", ["a", "b", "c", "d"], [0.0] * 4, steps=steps)
    assert run.summary()["gate_counts"] == {"accepted": 1, "rejected": 0, "undecided": 1, "rounds": 2,
                                               "fallbacks": 0, "landed": 0}
    assert gate_summary(run).startswith("gate: 1 accepted, 0 rejected, 1 undecided")
    assert gate_summary(RunResult("static", ["a"], [0.0], steps=[StepRecord(1, "a")])) == ""


# --------------------------------------------------------------------------- in the optimizer

NAMES = ("suffix", "double")


def make_stream(val: tuple[int, int] = (40, 10)) -> TaskStream:
    """Two task-agnostic tasks; each word ends in its task's index, so the scripted LM knows its task."""
    metric, tasks = get_metric("exact_match", "output"), []
    for k, (name, n_val) in enumerate(zip(NAMES, val)):
        fn = RULES[name][1]
        words = [f"{WORDS[i % 30]}{chr(97 + i // 30)}{k}" for i in range(6 + n_val + 2)]
        ex = [make_example({"input": w, "output": fn(w)}, ["input"]) for w in words]
        tasks.append(Task.from_splits(name, ("input",), "output", metric, ex[:6], ex[6:6 + n_val], ex[6 + n_val:]))
    return TaskStream("noisy", "task-agnostic", tuple(tasks))


def task_lm(broken: set[str]):
    """Applies the taught rule of the word's own task; once the second task's rule is in the prompt,
    the words in ``broken`` (first task) come back wrong."""

    def respond(system: str, user: str) -> str:
        word = re.findall(r"\[\[ ## input ## \]\]\n(\S+)", user)[-1]
        rule, fn = RULES[NAMES[int(word[-1])]]
        out = fn(word) if rule in system else word
        if word in broken and RULES[NAMES[1]][0] in system:
            out = "wrong"
        return chat_fields(output=out)

    return scripted_lm(respond, name="scripted/noisy")


class TheRule:
    """Proposes the task's rule (global in a task-agnostic stream)."""

    def propose(self, pc: ProposalContext) -> list[Proposal]:
        return [Proposal("rule", (AddItem(pc.predictor, RULES[pc.task][0], scope=pc.scope),), "scripted")]


BUDGET = dict(n_trials=2, train_minibatch=4, val_minibatch=4, replay_per_task=0, gate_replay_per_task=10)


def run(tmp_path, broken_at: tuple[int, ...], val: tuple[int, int] = (40, 10), gate=None, **budget):
    """Learn both tasks; ``broken_at`` are positions in the first task's seeded gate order that the second rule
    breaks. Returns the optimizer, the stream, the run result and the optimizer's events."""
    stream = make_stream(val)
    probe = ContinualOptimizer(None, None, seed=0)
    first, second = stream.tasks
    order = probe._gate_sets(second, [first], {first.name: len(first.val)})[1][1]  # the whole seeded order
    broken = {order[i].input for i in broken_at}
    opt = ContinualOptimizer(task_lm(broken), None, budget=get_budget("light", **{**BUDGET, **budget}), seed=0,
                             num_threads=2, measure_test=False, proposers=[TheRule()], selector=ScopeSelector(),
                             consolidate=False, **({"gate": gate} if gate else {}))
    events = []
    opt.callbacks.append(events.append)
    result = opt.fit(program_for(stream), stream, run_dir=tmp_path / "run")
    return opt, stream, result, events


def test_a_borderline_step_grows_the_replay_sample_and_resolves(tmp_path):
    # 2 broken among the first 10 of 40 val examples: 2/10 (p=0.09) and 2/20 (p=0.12) are close, 2/40 is not.
    opt, stream, result, events = run(tmp_path, broken_at=(0, 1))
    first, second = result.steps
    assert first.extra["gate_outcome"] == "accepted" and first.extra["gate_rounds"] == 0
    assert second.extra["gate_outcome"] == "undecided" and second.extra["gate_rounds"] == 2 and second.accepted
    # Charged under "gate", each prompt once a run: both sides on the current val (10) but for the val
    # minibatch (4) the search scored them on, the candidate on the base sample (10), then the candidate on
    # what each round adds (10, then 20); the current C's side was paid at step 1, whose gate scored it on
    # all 40 of the first task's val.
    assert second.extra["charged_by_source"]["task:gate"] == 2 * (10 - 4) + 10 + (10 + 20)
    grown = [e.data["grow"] for e in events if e.kind == "phase" and "grow" in e.data]
    assert grown == [{"suffix": 20}, {"suffix": 40}]
    # Each grown sample is the smaller one plus more of the same seeded order (so cached scores are reused).
    base, twice, whole = ([example_id(e) for e in opt._gate_sets(stream.tasks[1], stream.tasks[:1], sizes)[1][1]]
                          for sizes in ({}, {"suffix": 20}, {"suffix": 40}))
    assert twice[:10] == base and whole[:20] == twice and len(set(whole)) == 40
    gate = next(e.data for e in events if e.kind == "gate" and e.task == "double")
    assert gate["outcome"] == "accepted" and gate["first_outcome"] == "undecided" and gate["rounds"] == 2
    assert result.summary()["gate_counts"] == {"accepted": 1, "rejected": 0, "undecided": 1, "rounds": 2,
                                               "fallbacks": 0, "landed": 0}


def test_an_undecided_step_that_stays_undecided_is_rejected_and_says_so(tmp_path):
    _, _, result, _ = run(tmp_path, broken_at=(0, 1), val=(20, 10))  # 2/10, then 2/20: still close; 20 is all
    step = result.steps[1]
    assert not step.accepted and step.extra["gate_outcome"] == "undecided" and step.extra["gate_rounds"] == 1
    assert step.extra["reason"].startswith("undecided after 1 round(s): the samples of suffix cannot grow")


def test_growth_the_budget_refuses_is_a_rejection_that_says_so(tmp_path):
    # Step 1 charges 84 calls: 4 (observe), 8 (search), 72 (gate: both sides on 40 val examples, less the 4 of
    # each the search scored). Of the run's 146, step 2 has 62 (the search needs 8 beside the gate's reserve,
    # 42): 4 (observe) + 8 (search) + 22 (gate) + 10 (the first round: the candidate on 10 more; the current
    # C's side was paid at step 1) leave 18, and the second round's 20 do not fit.
    _, _, result, _ = run(tmp_path, broken_at=(0, 1), task_calls_per_task=92, total_task_calls=146)
    first, step = result.steps
    assert first.accepted and not step.accepted and first.extra["charged_task_calls"] == 84
    assert step.extra["gate_outcome"] == "undecided" and step.extra["gate_rounds"] == 1
    assert "undecided after 1 round(s): growing the samples needs 20 task-LM calls, 18 left" in step.extra["reason"]


def test_the_gate_judges_the_search_on_replay_examples_the_search_did_not_see():
    stream = make_stream((40, 10))
    opt = ContinualOptimizer(None, None, seed=0)
    first, second = stream.tasks
    pool = {example_id(e) for e in opt._search_replay(first)}
    assert len(pool) == opt.budget.gate_replay_per_task
    for size in (10, 20, 30):  # the gate's sample and its growths stay clear of the search's pool...
        gate = {example_id(e) for e in opt._gate_sets(second, [first], {first.name: size})[1][1]}
        assert len(gate) == size and not gate & pool
    whole = {example_id(e) for e in opt._gate_sets(second, [first], {first.name: 40})[1][1]}
    assert pool <= whole  # ...until the sample is the whole val


def test_a_candidate_that_wins_only_on_the_searchs_minibatch_does_not_land(tmp_path):
    # The candidate fixes exactly the val examples the search scores it on, and no other: the search picks it
    # (4 of 4 against 0), and the gate, testing the gain on the val examples the search did not score, finds
    # none. Counting the minibatch, as the gate did at stop 35, it would land: 4 fixed, 0 broken, p = 0.06.
    stream = make_stream((40, 10))
    stream = TaskStream(stream.name, stream.scenario, stream.tasks[:1])
    task = stream.tasks[0]
    probe = ContinualOptimizer(None, None, budget=get_budget("light", **BUDGET), seed=0)
    lucky = {e.input for e in probe._search_val(task)}
    assert len(lucky) == 4 and len(probe._held_out(task)) == 36 and not lucky & {e.input for e in probe._held_out(task)}
    small = make_stream((40, 7)).tasks[1]  # 3 left beside a minibatch of 4: too few to test a gain on, so all of val
    assert [example_id(e) for e in probe._held_out(small)] == [example_id(e) for e in small.val]

    def respond(system: str, user: str) -> str:
        word = re.findall(r"\[\[ ## input ## \]\]\n(\S+)", user)[-1]
        return chat_fields(output=RULES["suffix"][1](word) if RULES["suffix"][0] in system and word in lucky else word)

    opt = ContinualOptimizer(scripted_lm(respond, name="scripted/lucky"), None, budget=get_budget("light", **BUDGET),
                             seed=0, num_threads=2, measure_test=False, proposers=[TheRule()], selector=ScopeSelector(),
                             consolidate=False)
    result = opt.fit(program_for(stream), stream, run_dir=tmp_path / "run")
    [step] = result.steps
    assert not step.accepted and step.extra["reason"] == "no gain on suffix 0.000 → 0.000 (0 fixed, 0 broken)"


def test_a_drop_a_fixed_sample_of_ten_would_miss_is_caught_by_growing_it(tmp_path):
    # 1 broken among the first 10 of the first task's gate order, 6 among the first 20: a true drop of 0.3.
    broken_at = (0, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29)
    _, _, result, _ = run(tmp_path / "bound", broken_at=broken_at)
    step = result.steps[1]
    assert (step.extra["gate_outcome"], step.extra["gate_rounds"], step.accepted) == ("undecided", 1, False)
    assert "drops 1.000 → 0.700" in step.extra["reason"]
    # Holding only the observed drop to max_drop (the rule before the bound) lets it through on 1 of 10.
    _, _, result, _ = run(tmp_path / "observed", broken_at=broken_at, gate=PairedTestGate(alpha_safe=0.5))
    assert result.steps[1].accepted and result.steps[1].extra["gate_rounds"] == 0


HINT = "Mind the doubled letters."


def test_a_bundle_rejected_for_harm_is_judged_again_without_what_reached_the_broken_inputs(tmp_path):
    from ctxopt.selector import KeepItems

    stream = make_stream((10, 10))
    first, second = stream.tasks
    probe = ContinualOptimizer(None, None, seed=0)
    order = probe._gate_sets(second, [first])[1][1]
    broken = {e.input for e in order[:6]}  # 6 of the first task's 10 replay inputs break under the hint
    rule = RULES["double"][0]

    def respond(system: str, user: str) -> str:
        word = re.findall(r"\[\[ ## input ## \]\]\n(\S+)", user)[-1]
        k = int(word[-1])
        if k == 0:
            out = "wrong" if word in broken and HINT in system else (word + "zz" if RULES["suffix"][0] in system else word)
        else:  # half the second task's words need the rule, the other half the hint
            need = rule if WORDS.index(word[:-2]) % 2 == 0 else HINT
            out = RULES["double"][1](word) if need in system else word
        return chat_fields(output=out)

    class Both:
        """The first task's rule; then the second's rule, keyed to its own inputs, and a hint shown to all."""

        def propose(self, pc: ProposalContext) -> list[Proposal]:
            if pc.task == "suffix":
                return [Proposal("rule", (AddItem(pc.predictor, RULES["suffix"][0], scope=pc.scope),), "scripted")]
            return [Proposal("keyed", (AddItem(pc.predictor, rule + " [1]", scope=pc.scope),), "scripted"),
                    Proposal("hint", (AddItem(pc.predictor, HINT, scope=pc.scope),), "scripted")]

    def keep(item, inputs) -> bool:  # an item ending in "[k]" reaches only the inputs of task k
        return not item.text.endswith("]") or item.text.endswith(f"[{inputs['input'][-1]}]")

    opt = ContinualOptimizer(scripted_lm(respond, name="scripted/hint"), None,
                             budget=get_budget("light", **{**BUDGET, "n_trials": 4, "val_minibatch": 10}), seed=0, num_threads=2,
                             measure_test=False, proposers=[Both()], selector=KeepItems(keep), consolidate=False)
    result = opt.fit(program_for(stream), stream, run_dir=tmp_path / "run")
    step = result.steps[1]
    # The search (on all of val, and no replay: replay_per_task 0) takes both, 1.0 on val; the gate sees the hint break 6 of the
    # first task's 10 and rejects; without the hint, which reaches those inputs, the keyed rule alone fixes
    # half of val with nothing broken (p = 1/32 < α/2) and lands.
    assert step.accepted, step.extra["reason"]
    assert "fallback hint (swapped or left out" in step.extra["reason"]
    assert "after the whole candidate was rejected" in step.extra["reason"]
    items = [it.text for it in opt._context.predictor("predict").items]
    assert rule + " [1]" in items and HINT not in items
    assert step.extra["proposals"] == ["keyed"] and step.extra["gate_fallback"] == ["hint"]
    counts = result.summary()["gate_counts"]
    assert (counts["rejected"], counts["fallbacks"], counts["landed"]) == (1, 1, 1)


def test_the_fallback_swaps_a_proposal_that_reached_a_broken_input_for_a_twin_that_does_not():
    from ctxopt.context import LearnedContext, PredictorContext
    from ctxopt.selector import KeepItems
    from ctxopt.stages import Searched, StepSetup

    stream = make_stream((10, 10))
    first, second = stream.tasks
    opt = ContinualOptimizer(None, None, seed=0)
    opt.ledger.start_task(second.name)
    base = LearnedContext({"predict": PredictorContext("Answer.")})

    def keep(item, inputs) -> bool:  # an item ending in "[k]" reaches only the inputs of task k
        return not item.text.endswith("]") or item.text.endswith(f"[{inputs['input'][-1]}]")

    setup = StepSetup(step=2, task=second, base=base, earlier=(first,), scenario="task-agnostic", scope="global",
                      predictor="predict", n_pred=1, selector=KeepItems(keep))
    rule = Proposal("rule", (AddItem("predict", RULES["double"][0] + " [1]"),), "scripted")
    wide = Proposal("hint", (AddItem("predict", HINT),), "scripted", group="memory:hint")
    twin = Proposal("hint+narrow", (AddItem("predict", HINT + " [1]"),), "scripted", group="memory:hint")
    other = Proposal("note", (AddItem("predict", "Be brief."),), "scripted")  # wide, and no twin
    best = base.apply_edits([e for p in (rule, wide, other) for e in p.edits])
    ids = [example_id(e) for e in first.val]
    harm = PairedScores(first.name, dict.fromkeys(ids, 1.0), {i: float(k >= 6) for k, i in enumerate(ids)})
    decision = PairedTestGate().decide(scores("double", 10, 0, 8), [harm])
    assert decision.outcome == "rejected" and decision.p_value < 0.25
    draw = Proposal("hint2+narrow", (AddItem("predict", "Another hint. [1]"),), "scripted", group="memory:hint")
    ctx, kept, cut = opt._fallback(setup, Searched(best, (rule, wide, other)), decision, [scores("double", 10, 0, 8), harm],
                                   offered=(rule, wide, draw, twin, other))  # the hint's own narrowed form first
    assert [p.name for p in kept] == ["rule", "hint+narrow"] and cut == ["hint → hint+narrow", "note"]
    assert [it.text for it in ctx.predictor("predict").items] == [RULES["double"][0] + " [1]", HINT + " [1]"]
    # a rejection for want of gain gets no fallback
    no_gain = PairedTestGate().decide(scores("double", 10, 5, 5), [harm])
    assert opt._fallback(setup, Searched(best, (rule, wide, other)), no_gain, [harm], offered=(twin,)) is None


def close_call(tmp_path, train_fixed: bool):
    """One task, 30 train and 14 val examples; the rule fixes 2 of the 10 val examples the search did not score
    (p = 0.25: close) and, with ``train_fixed``, every train example. Returns the optimizer, task, step, events."""
    metric, fn = get_metric("exact_match", "output"), RULES["suffix"][1]
    words = [f"{WORDS[i % 30]}{chr(97 + i // 30)}" for i in range(50)]
    ex = [make_example({"input": w, "output": fn(w)}, ["input"]) for w in words]
    task = Task.from_splits("suffix", ("input",), "output", metric, ex[:30], ex[30:44], ex[44:])
    stream = TaskStream("close", "task-agnostic", (task,))
    probe = ContinualOptimizer(None, None, budget=get_budget("light", **BUDGET), seed=0)
    fixed = {e.input for e in probe._search_val(task)} | {e.input for e in probe._held_out(task)[:2]}
    fixed |= {e.input for e in task.train} if train_fixed else set()

    def respond(system: str, user: str) -> str:
        word = re.findall(r"\[\[ ## input ## \]\]\n(\S+)", user)[-1]
        return chat_fields(output=fn(word) if RULES["suffix"][0] in system and word in fixed else word)

    opt = ContinualOptimizer(scripted_lm(respond, name="scripted/close"), None, budget=get_budget("light", **BUDGET),
                             seed=0, num_threads=2, measure_test=False, proposers=[TheRule()], selector=ScopeSelector(),
                             consolidate=False)
    events = []
    opt.callbacks.append(events.append)
    [step] = opt.fit(program_for(stream), stream, run_dir=tmp_path / "run").steps
    return opt, task, step, events


def test_a_close_gain_grows_into_train_examples_no_proposer_saw_and_lands_if_they_confirm_it(tmp_path):
    opt, task, step, events = close_call(tmp_path, train_fixed=True)
    assert step.accepted and step.extra["gate_outcome"] == "undecided" and step.extra["gate_rounds"] == 1
    assert "12 fixed, 0 broken" in step.extra["reason"]  # 2 of the 10 held-out val, 10 of 10 fresh train
    assert [e.data["grow"] for e in events if e.kind == "phase" and "grow" in e.data] == [{"suffix": 20}]
    # charged under "gate": both sides on the 10 held-out val examples, then on the 10 train examples the round adds
    assert step.extra["charged_by_source"]["task:gate"] == 2 * 10 + 2 * 10
    assert opt._ended["suffix"] == pytest.approx(0.2)  # the bar a revisit must meet: val alone (2 of 10), not 12/20


def test_a_close_gain_the_fresh_examples_do_not_confirm_is_rejected_at_half_the_level(tmp_path):
    _, _, step, events = close_call(tmp_path, train_fixed=False)
    assert not step.accepted and step.extra["gate_rounds"] == 2  # 2/20 (p = 0.25 ≥ α/2), then 2/36: still close
    assert step.extra["reason"].startswith("undecided after 2 round(s) of growing the samples")
    assert [e.data["grow"] for e in events if e.kind == "phase" and "grow" in e.data] == [{"suffix": 20},
                                                                                          {"suffix": 36}]


def test_fresh_train_leaves_out_what_the_proposers_were_shown():
    from ctxopt.context import Demo, LearnedContext, PredictorContext
    from ctxopt.edits import AddDemo
    from ctxopt.proposer import Observation
    from ctxopt.stages import Observed, Proposed, StepSetup

    task = make_stream((40, 10)).tasks[0]  # 6 train examples
    train = list(task.train)
    base = LearnedContext({"predict": PredictorContext("Answer.", demos=(Demo(inputs={"input": train[0].input},
                                                                              outputs={"output": "x"}),))})
    setup = StepSetup(step=1, task=task, base=base, earlier=(), scenario="task-agnostic", scope="global",
                      predictor="predict", n_pred=1)
    observed = Observed(0.0, (Observation(train[1], 0.0, "", {}),))
    demo = AddDemo("predict", Demo(inputs={"input": train[2].input}, outputs={"output": train[2].output}))
    fresh = ContinualOptimizer(None, None, seed=0)._fresh_train(setup, observed, Proposed((Proposal("d", (demo,),
                                                                                                    "demos"),)))
    assert sorted(e.input for e in fresh) == sorted(e.input for e in train[3:])  # not C's demo, observed, proposed
    assert ContinualOptimizer(None, None, seed=0, grounded=True)._fresh_train(setup, observed, Proposed(())) == ()
