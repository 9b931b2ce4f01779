"""Evidence on items: the gate's paired outcomes credited to helpful/harmful, and consolidation keeping by it."""

from __future__ import annotations

from ctxopt.consolidate import Consolidator, changed_item_ids, credit
from ctxopt.context import LearnedContext, PredictorContext
from ctxopt.edits import AddItem, CountItem, DeleteItem, UpdateItem
from ctxopt.gate import PairedScores
from ctxopt.similarity import LexicalSimilarity


def base() -> LearnedContext:
    return LearnedContext({"predict": PredictorContext("Given the input, produce the output."),
                           "other": PredictorContext("Check the output.")})


def test_credit_counts_fail_to_pass_as_helpful_and_pass_to_fail_as_harmful():
    before = base().apply_edits([AddItem("predict", "Keep this old rule.")], step=1)
    after = before.apply_edits([AddItem("predict", "Answer in one word."), AddItem("other", "Be strict.")], step=2)
    outcome = [
        PairedScores("t2", {"a": 0.0, "b": 0.0, "c": 1.0, "d": 1.0}, {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0}),
        PairedScores("t1", {"e": 1.0, "f": 0.0}, {"e": 0.0, "f": 0.0}),  # replay: one pass -> fail
    ]
    ids = changed_item_ids(before, after)
    assert len(ids) == 2
    credited = credit(after, ids, outcome)
    counters = {it.text: (it.helpful, it.harmful) for name in ("predict", "other") for it in credited.items(name)}
    assert counters == {"Keep this old rule.": (0, 0), "Answer in one word.": (2, 2), "Be strict.": (2, 2)}
    # counting is not an update: recency is untouched
    assert [it.updated_step for it in credited.items("predict")] == [it.updated_step for it in after.items("predict")]


def test_credit_of_partial_scores_and_of_nothing():
    ctx = base().apply_edits([AddItem("predict", "Answer in one word.")], step=1)
    rid = ctx.items("predict")[0].id
    graded = [PairedScores("t1", {"a": 0.2, "b": 0.9, "c": 0.5}, {"a": 0.6, "b": 0.4, "c": 0.5})]
    [item] = credit(ctx, [rid], graded).items("predict")
    assert (item.helpful, item.harmful) == (1, 1)  # a rose, b fell, c unchanged
    same = [PairedScores("t1", {"a": 1.0}, {"a": 1.0})]
    assert credit(ctx, [rid], same) is ctx
    assert credit(ctx, ["r-00000000"], graded) is ctx  # an id the context does not hold (deleted by the proposal)
    assert credit(ctx, [], graded) is ctx


def test_changed_item_ids_are_new_updated_and_merged_items_only():
    c0 = base().apply_edits([AddItem("predict", "Rule one."), AddItem("predict", "Rule two."),
                             AddItem("predict", "Rule three.")], step=1)
    one, two, three = (it.id for it in c0.items("predict"))
    c1 = c0.apply_edits([UpdateItem("predict", one, "Rule one, revised."), DeleteItem("predict", two),
                         CountItem("predict", three, helpful=1), AddItem("predict", "Rule four.")], step=2)
    assert [c1.predictor("predict").item(i).text for i in changed_item_ids(c0, c1)] == ["Rule one, revised.",
                                                                                        "Rule four."]


def test_a_contradiction_keeps_the_item_with_more_net_helpful_evidence_even_if_older():
    ctx = base().apply_edits([AddItem("predict", "Write the answer in lowercase.")], step=1)
    old = ctx.items("predict")[0].id
    ctx = ctx.apply_edits([CountItem("predict", old, helpful=3)])
    ctx = ctx.apply_edits([AddItem("predict", "Write the answer in uppercase.", scope="t3")], step=3, task="t3")
    [cons] = [c for c in Consolidator(similarity="lexical").propose(ctx) if c.kind == "contradiction"]
    [edit] = cons.edits
    assert isinstance(edit, DeleteItem) and edit.item_id != old
    assert "more net helpful evidence" in cons.rationale


def test_a_merge_without_the_lm_keeps_the_text_with_more_net_helpful_evidence():
    ctx = base().apply_edits([AddItem("predict", "Answer with one lowercase word."),
                              AddItem("predict", "Reply using just a single lowercase word, nothing else.")], step=1)
    short = ctx.items("predict")[0].id
    sim = LexicalSimilarity(dedupe=0.99, merge=0.2, related=0.1)
    [plain] = Consolidator(similarity=sim, kinds=("merge",)).propose(ctx)
    assert plain.edits[0].text == "Reply using just a single lowercase word, nothing else."  # the longer one
    helped = ctx.apply_edits([CountItem("predict", short, helpful=2)])
    [merge] = Consolidator(similarity=sim, kinds=("merge",)).propose(helped)
    assert merge.edits[0].text == "Answer with one lowercase word." and "net helpful" in merge.rationale
