"""Recurrence: a task that comes back later is its own task (``name@k``) with fresh examples and its family's scope."""

from __future__ import annotations

import json
import textwrap

import pytest

from ctxopt.baselines.base import LearnContext
from ctxopt.budget import get_budget
from ctxopt.context import GLOBAL, Item, LearnedContext, PredictorContext
from ctxopt.errors import ConfigError
from ctxopt.matrix import RunResult, load_results
from ctxopt.metrics import get_metric
from ctxopt.optimizer import ContinualOptimizer
from ctxopt.program import program_for
from ctxopt.stages import StepSetup
from ctxopt.streams import II8, load_stream
from ctxopt.tasks import Task, TaskStream, example_id, make_example, sealed_test_split, split_visit
from tests.toy import RULES, WORDS, reflection_lm, task_lm

SMALL = (6, 4, 5)


def ids(examples) -> set[str]:
    return {example_id(e) for e in examples}


def all_ids(task: Task) -> set[str]:
    return ids(task.train) | ids(task.val) | ids(sealed_test_split(task))


# --------------------------------------------------------------------------- streams


def test_a_repeated_name_is_a_revisit_with_fresh_disjoint_examples():
    s = load_stream("ii:antonyms,sum,antonyms", sizes=SMALL)
    assert s.names == ("antonyms", "sum", "antonyms@2")
    first, again = s["antonyms"], s["antonyms@2"]
    assert (again.family, again.visit, first.family, first.visit) == ("antonyms", 2, "antonyms", 1)
    assert (len(again.train), len(again.val), again.test_size) == SMALL
    assert not all_ids(first) & all_ids(again)  # train, val and test all fresh
    assert not ids(again.train) & ids(again.val)
    # the program is told the family, so the revisit's prompts address the same task
    assert {e.task for e in again.train} == {"antonyms"}
    # deterministic by seed; the test split does not depend on it
    same, other = load_stream("ii:antonyms,sum,antonyms", sizes=SMALL), load_stream("ii:antonyms,sum,antonyms",
                                                                                      sizes=SMALL, seed=1)
    assert all_ids(same["antonyms@2"]) == all_ids(again)
    assert ids(other["antonyms@2"].train) != ids(again.train)
    assert ids(sealed_test_split(other["antonyms@2"])) == ids(sealed_test_split(again))


def test_the_repeat_suffix_runs_a_builtin_twice_and_leaves_the_first_visits_unchanged():
    twice = load_stream("ii-8x2", sizes=SMALL)
    once = load_stream("ii-8", sizes=SMALL)
    assert twice.name == "ii-8x2" and twice.names == (*II8, *(f"{n}@2" for n in II8))
    for t in once:  # visit 1 is exactly the stream without repeats
        assert all_ids(twice[t.name]) == all_ids(t)
        assert not all_ids(twice[f"{t.name}@2"]) & all_ids(t)
    babi = load_stream("babi:1x3", sizes=SMALL)
    assert babi.names == ("qa1_single-supporting-fact", "qa1_single-supporting-fact@2", "qa1_single-supporting-fact@3")
    assert len(set().union(*(all_ids(t) for t in babi))) == 3 * sum(SMALL)
    assert load_stream("ii-8x2", sizes=SMALL, scenario="task-agnostic").program_inputs == ("input",)


def test_visit_names_round_trip_and_odd_names_are_first_visits():
    assert split_visit("qa1_single-supporting-fact@12") == ("qa1_single-supporting-fact", 12)
    assert split_visit("user@example") == ("user@example", 1) and split_visit("t@02") == ("t@02", 1)
    with pytest.raises(ConfigError, match="unknown stream 'nope-8x2'"):
        load_stream("nope-8x2")


def test_yaml_repeat_entry_revisits_an_earlier_task_with_the_next_block(tmp_path):
    rows = [{"input": f"w{i}", "output": f"o{i}"} for i in range(30)]
    (tmp_path / "all.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    y = tmp_path / "s.yaml"
    y.write_text(textwrap.dedent("""
        name: rec
        inputs: [input]
        output: output
        sizes: [3, 2, 2]
        tasks:
          - {name: words, data: all.jsonl}
          - repeat: words
    """))
    s = load_stream(y)
    assert s.names == ("words", "words@2")
    assert not all_ids(s["words"]) & all_ids(s["words@2"])
    assert (len(s["words@2"].train), len(s["words@2"].val), s["words@2"].test_size) == (3, 2, 2)
    y.write_text(y.read_text().replace("repeat: words", "repeat: nothing"))
    with pytest.raises(ConfigError, match="'repeat: nothing' must name an earlier task"):
        load_stream(y)


# --------------------------------------------------------------------------- scope


def test_a_revisit_sees_the_items_its_family_learned():
    s = load_stream("ii:antonyms,sum,antonyms", sizes=SMALL)
    rule = Item(id="r-1", text="Answer with the opposite word.", scope="antonyms")
    other = Item(id="r-2", text="Add the numbers.", scope="sum")
    ctx = LearnedContext({"predict": PredictorContext("Answer.", items=(rule, other))})
    setup = StepSetup(step=3, task=s["antonyms@2"], base=ctx, earlier=s.tasks[:2], scenario="task-aware",
                      scope="antonyms", predictor="predict", n_pred=1)
    assert setup.label(s["antonyms@2"]) == "antonyms"
    assert setup.shows(ctx, s["antonyms@2"], s["antonyms@2"].val) == setup.shows(ctx, s["antonyms"], s["antonyms"].val)
    assert rule.text in ctx.render("predict", setup.label(s["antonyms@2"]))
    assert other.text not in ctx.render("predict", setup.label(s["antonyms@2"]))
    # the baselines scope by family too
    learn = dict(task_lm=None, reflection_lm=None, budget=get_budget("light"), task_calls=0, reflection_calls=0,
                 max_context_tokens=0, seed=0, step=3, evaluator=None, store=None, work_dir=None)
    assert LearnContext(scenario="task-aware", **learn).scope(s["antonyms@2"]) == "antonyms"
    assert LearnContext(scenario="task-agnostic", **learn).scope(s["antonyms@2"]) == GLOBAL


def _toy_recurrence(scenario: str = "task-aware", noisy: bool = False) -> TaskStream:
    """suffix, reverse, then suffix again on fresh words; every example labelled with its family (task-aware).

    ``noisy``: every fourth label is one no rule produces, so a learned family scores 0.75, not 1.
    """
    metric = get_metric("exact_match", "output")
    tasks = []
    for k, name in enumerate(("suffix", "reverse", "suffix@2")):
        family = split_visit(name)[0]
        fn = RULES[family][1]
        ex = [make_example({"input": f"{w}{k}", "output": "unknowable" if noisy and i % 4 == 3 else fn(f"{w}{k}")},
                           ["input"],
                           task=family if scenario == "task-aware" else None) for i, w in enumerate(WORDS)]
        tasks.append(Task.from_splits(name, ("input",), "output", metric, ex[:12], ex[12:22], ex[22:30]))
    return TaskStream("toy-recurrence", scenario, tuple(tasks))


def test_a_run_over_a_revisit_fills_its_own_column_and_starts_from_what_was_kept(tmp_path):
    stream = _toy_recurrence()
    budget = get_budget("light", n_trials=4, train_minibatch=6, val_minibatch=5, replay_per_task=3,
                        gate_replay_per_task=5)
    result = ContinualOptimizer(task_lm(), reflection_lm(), budget=budget, seed=0, num_threads=2).fit(
        program_for(stream), stream, run_dir=tmp_path / "run")
    assert result.tasks == ["suffix", "reverse", "suffix@2"] and result.complete
    assert result.r0[2] == 0.0
    assert result.R[1][2] == 1.0 >= result.R[0][0]  # on arrival, the revisit already scores what visit 1 reached
    summary = result.summary()
    assert summary["acc"] == 1.0 and summary["bwt"] == 0.0 and summary["fwt"] == pytest.approx(0.5)
    [stored] = load_results(tmp_path / "run")
    assert stored.tasks == result.tasks and stored.R == result.R
    # The revisit costs far less than the first visit: what was kept already passes, so it stops after observing.
    first, again = result.steps[0], result.steps[2]
    assert again.extra["reason"].startswith("nothing to learn")
    assert again.extra["charged_task_calls"] <= 0.25 * first.extra["charged_task_calls"]


@pytest.mark.parametrize("scenario", ["task-aware", "task-agnostic"])
def test_a_revisit_that_kept_its_score_stops_after_observing_even_with_failures_left(tmp_path, scenario):
    stream = _toy_recurrence(scenario, noisy=True)
    budget = get_budget("light", n_trials=4, train_minibatch=8, val_minibatch=5, replay_per_task=3,
                        gate_replay_per_task=5)
    opt = ContinualOptimizer(task_lm(), reflection_lm(), budget=budget, seed=0, num_threads=2)
    result = opt.fit(program_for(stream), stream, run_dir=tmp_path / "run")
    first, again = result.steps[0], result.steps[2]
    # only an accepted visit leaves a bar: a family that learned nothing must learn in full when it comes back
    assert set(opt.resume_state()["ended"]) == {split_visit(s.task)[0] for s in result.steps if s.accepted}
    assert first.accepted and 0.5 <= result.R[0][0] < 1.0  # learned, with unknowable labels left failing
    assert again.extra["reason"].startswith("revisit of suffix: C scores")
    # it paid for observing train examples only (no search, no gate): at most its train split, and under half
    # of the first visit (whose search and gate pay each prompt once a run: 36 calls here)
    assert set(again.extra["charged_by_source"]) == {"task:observe"}
    assert again.extra["charged_task_calls"] <= len(stream.tasks[2].train)
    assert again.extra["charged_task_calls"] < first.extra["charged_task_calls"] / 2
    assert result.R[2][2] == result.R[1][2] >= result.r0[2]  # it starts, and stays, from what was kept


def test_a_close_revisit_observes_a_minibatch_twice_as_large_and_pays_only_for_the_new_half(tmp_path, monkeypatch):
    import ctxopt.optimizer as optimizer

    monkeypatch.setattr(optimizer, "REVISIT_CLOSE", 1.01)  # every revisit that shows nothing counts as close
    stream = _toy_recurrence("task-agnostic", noisy=True)
    budget = get_budget("light", n_trials=4, train_minibatch=8, val_minibatch=5, replay_per_task=3,
                        gate_replay_per_task=5)
    events = []
    result = ContinualOptimizer(task_lm(), reflection_lm(), budget=budget, seed=0, num_threads=2,
                                callbacks=[events.append]).fit(program_for(stream), stream, run_dir=tmp_path / "run")
    observed = [e.data["n"] for e in events if e.kind == "observe" and e.task == "suffix@2"]
    again = result.steps[2]
    assert observed == [8, 12]  # 8, then all 12 train examples (twice 8 is more than the split holds)
    assert again.extra["reason"].startswith("revisit of suffix: C scores") and "on 12 train examples" in again.extra[
        "reason"]
    assert again.extra["charged_by_source"]["task:observe"] == 12  # the first 8 are not charged twice


def test_a_revisit_that_lost_ground_learns_in_full():
    from ctxopt.stages import Observed

    opt = ContinualOptimizer(task_lm(), reflection_lm(), budget=get_budget("light"), seed=0)
    stream = _toy_recurrence()
    setup = lambda task: StepSetup(step=3, task=task, base=None, earlier=stream.tasks[:2],  # noqa: E731
                                   scenario="task-aware", scope="suffix", predictor="predict", n_pred=1)
    opt.restore({"ended": {"suffix": 0.9}})
    seen = lambda score, n=10: Observed(score, ("an observation",) * n)  # noqa: E731
    again = setup(stream["suffix@2"])
    # 5 of 10 against a bar of 0.9: binomial p = 0.002, shown forgotten
    assert opt._revisit_cut(again, seen(0.5)) is None and not opt._revisit_close(again, seen(0.5))
    # 8 of 10: p = 0.26, a close call, so the minibatch doubles first; 16 of 20 (p = 0.13) is then cut
    assert opt._revisit_close(again, seen(0.8)) and not opt._revisit_close(again, seen(0.8, 20))
    assert opt._revisit_cut(again, seen(0.8, 20)).startswith("revisit of suffix")
    assert opt._revisit_cut(again, seen(0.6, 20)) is None  # 12 of 20: p = 0.0004
    # 9 of 10: nothing close, nothing forgotten
    assert not opt._revisit_close(again, seen(0.9)) and opt._revisit_cut(again, seen(0.9)).startswith("revisit")
    assert opt._revisit_cut(setup(stream["suffix"]), seen(0.0)) is None  # a first visit is never cut
    assert opt.resume_state()["ended"] == {"suffix": 0.9}


def test_the_matrix_takes_revisit_columns():
    r = RunResult("ctxopt", ["antonyms", "sum", "antonyms@2"], [0.1, 0.0, 0.1],
                  [[0.8, 0.0, 0.7], [0.8, 0.9, 0.7], [0.7, 0.9, 0.9]])
    s = r.summary()
    assert s["acc"] == pytest.approx(2.5 / 3)
    assert s["bwt"] == pytest.approx(((0.7 - 0.8) + (0.9 - 0.9)) / 2)
    assert s["fwt"] == pytest.approx(((0.0 - 0.0) + (0.7 - 0.1)) / 2)
    assert RunResult.from_dict(r.to_dict()) == r
