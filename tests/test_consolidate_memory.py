"""Consolidation remembers what it lost: a rejected candidate is never proposed or evaluated again."""

from __future__ import annotations

import json

import pytest

from ctxopt.consolidate import Consolidation, Consolidator, RejectionMemory, run_pass
from ctxopt.context import LearnedContext, PredictorContext
from ctxopt.edits import AddItem, DeleteItem, UpdateItem
from ctxopt.errors import DataError
from ctxopt.gate import Decision
from ctxopt.similarity import LexicalSimilarity


def ctx_with(*texts: str) -> LearnedContext:
    ctx = LearnedContext({"predict": PredictorContext("Given the input, produce the output.")})
    for step, text in enumerate(texts, 1):
        ctx = ctx.apply_edits([AddItem("predict", text, scope="t1")], step=step, task="t1")
    return ctx


class CountingCheck:
    """A gate that always rejects and counts its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[LearnedContext, LearnedContext]] = []

    def __call__(self, before: LearnedContext, after: LearnedContext) -> Decision:
        self.calls.append((before, after))
        return Decision(False, "t1 drops", -0.5)


DUPES = ("Answer with a single word only.", "Answer with a single word only!")


def test_a_rejected_candidate_is_not_checked_again_in_a_later_pass_of_another_process(tmp_path):
    ctx = ctx_with(*DUPES)
    path = tmp_path / "run" / "consolidation_rejections.json"
    check = CountingCheck()
    first = run_pass(ctx, Consolidator(similarity="lexical"), check, step=1, memory=RejectionMemory(path))
    assert first.rolled_back == 1 and len(check.calls) == 1
    saved = json.loads(path.read_text())
    [(_, record)] = saved["candidates"].items()
    assert record["kind"] == "dedupe" and record["reason"] == "t1 drops" and record["step"] == 1

    # A new optimizer (new Consolidator, new memory object read from the same file) after the next task.
    second = run_pass(ctx, Consolidator(similarity="lexical"), check, step=2, memory=RejectionMemory(path))
    assert len(check.calls) == 1  # not evaluated again
    assert second.context == ctx and second.rolled_back == 0 and second.proposed == 0


def test_a_candidate_on_changed_items_is_new_and_checked(tmp_path):
    ctx = ctx_with(*DUPES)
    memory = RejectionMemory(tmp_path / "rejections.json")
    check = CountingCheck()
    run_pass(ctx, Consolidator(similarity="lexical"), check, memory=memory)
    first_id = ctx.items("predict")[0].id
    changed = ctx.apply_edits([UpdateItem("predict", first_id, "Answer with a single word, only.")], step=3)
    run_pass(changed, Consolidator(similarity="lexical"), check, memory=memory)
    assert len(check.calls) == 2 and len(memory) == 2


def test_a_remembered_rejection_frees_the_slot_for_another_candidate(tmp_path):
    # Only one candidate per call: once the dedupe is known to lose, the next candidate gets the slot.
    ctx = ctx_with(*DUPES, "Write the answer in lowercase.", "Write the answer in lowercase!")
    memory = RejectionMemory()
    first = Consolidator(similarity="lexical", max_candidates=1).propose(ctx, memory=memory)
    memory.reject(ctx, first[0], "t1 drops")
    second = Consolidator(similarity="lexical", max_candidates=1).propose(ctx, memory=memory)
    assert len(first) == len(second) == 1 and set(first[0].item_ids).isdisjoint(second[0].item_ids)


def test_run_pass_skips_a_remembered_candidate_from_a_proposer_that_ignores_the_memory():
    ctx = ctx_with(*DUPES)
    rid = ctx.items("predict")[0].id
    cand = Consolidation("compress", "predict", (DeleteItem("predict", rid),), "drop it", (rid,))

    class Fixed:
        lm_calls_per_pass = 0

        def propose(self, context, *, max_tokens=None, protect=(), step=0, memory=None):
            return [cand]

        def compress(self, context, max_tokens, *, protect=(), memory=None):
            return []

    memory, check = RejectionMemory(), CountingCheck()
    run_pass(ctx, Fixed(), check, memory=memory)
    result = run_pass(ctx, Fixed(), check, memory=memory)
    assert len(check.calls) == 1
    assert [t.outcome for t in result.tried] == ["skipped"] and "rejected before" in result.tried[0].reason


def test_the_lm_is_not_asked_again_about_a_pair_it_judged_different(tmp_path):
    prompts = []

    def lm(prompt):
        prompts.append(prompt)
        return ["DIFFERENT"]

    ctx = ctx_with("Answer with one word in lowercase.", "Reply using a single lowercase word.")
    sim = LexicalSimilarity(dedupe=0.99, merge=0.2, related=0.1)
    path = tmp_path / "rejections.json"
    assert Consolidator(lm, similarity=sim, kinds=("merge",)).propose(ctx, memory=RejectionMemory(path)) == []
    assert len(prompts) == 1
    assert Consolidator(lm, similarity=sim, kinds=("merge",)).propose(ctx, memory=RejectionMemory(path)) == []
    assert len(prompts) == 1


def test_a_damaged_memory_file_is_a_one_line_data_error(tmp_path):
    path = tmp_path / "rejections.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match="not a consolidation rejection memory") as info:
        RejectionMemory(path)
    assert "\n" not in str(info.value)
