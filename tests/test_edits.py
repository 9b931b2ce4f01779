"""Typed delta edits: semantics, rejection of invalid edits, atomicity, serialization."""

from __future__ import annotations

import pytest

from ctxopt.context import Demo, Edit, Item, LearnedContext, PredictorContext
from ctxopt.edits import (
    EDIT_TYPES,
    AddDemo,
    AddItem,
    CountItem,
    DeleteItem,
    MergeItems,
    Narrow,
    RemoveDemo,
    RewriteInstruction,
    SetRetrieval,
    UpdateItem,
    apply_edit,
    describe,
    edit_from_dict,
    item_id_for,
)
from ctxopt.errors import EditError

DEMO = Demo(inputs={"q": "1+1"}, outputs={"a": "2"})


@pytest.fixture
def ctx() -> LearnedContext:
    items = (Item("r-a", "Be exact.", helpful=2), Item("r-b", "Be brief.", harmful=1))
    return LearnedContext({"qa": PredictorContext("Answer.", items)})


def test_add_item_has_deterministic_id_and_provenance(ctx):
    new = ctx.apply_edits([AddItem("qa", "Cite.", scope="bio", kind="note", rationale="no sources")], step=7, task="bio")
    item = new.items("qa")[-1]
    assert item.id == item_id_for("qa", "Cite.", "bio", "note") and item.id.startswith("n-") and len(item.id) == 10
    provenance = (item.scope, item.source_task, item.source_step, item.created_step, item.rationale)
    assert provenance == ("bio", "bio", 7, 7, "no sources")
    again = ctx.apply_edits([AddItem("qa", "Cite.", scope="bio", kind="note", rationale="no sources")], step=7, task="bio")
    assert again.hash == new.hash


def test_update_keeps_id_and_sets_updated_step(ctx):
    new = ctx.apply_edits([UpdateItem("qa", "r-a", "Be very exact.")], step=3)
    item = new.predictor("qa").item("r-a")
    assert item.text == "Be very exact." and item.updated_step == 3 and item.helpful == 2
    assert ctx.predictor("qa").item("r-a").text == "Be exact."  # old context untouched


def test_delete_merge_rewrite_demos_and_counts(ctx):
    new = ctx.apply_edits(
        [
            MergeItems("qa", ("r-a", "r-b"), "Be exact and brief."),
            RewriteInstruction("qa", "Answer the question."),
            AddDemo("qa", DEMO),
            CountItem("qa", item_id_for("qa", "Be exact and brief."), helpful=1),
        ],
        step=5,
    )
    (merged,) = new.items("qa")
    assert merged.text == "Be exact and brief." and merged.helpful == 3 and merged.harmful == 1
    assert new.predictor("qa").instruction == "Answer the question." and new.predictor("qa").demos == (DEMO,)
    newer = new.apply_edits([RemoveDemo("qa", DEMO.id), DeleteItem("qa", merged.id)])
    assert newer.items("qa") == () and newer.predictor("qa").demos == ()


def test_merge_keeps_position_of_first_item():
    ctx = LearnedContext({"p": PredictorContext("i", (Item("r-1", "a"), Item("r-2", "b"), Item("r-3", "c")))})
    new = ctx.apply_edits([MergeItems("p", ("r-3", "r-1"), "a and c")])
    assert [it.text for it in new.items("p")] == ["a and c", "b"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (UpdateItem("qa", "r-missing", "x"), "no item with id 'r-missing'"),
        (DeleteItem("qa", "r-missing"), "no item with id"),
        (UpdateItem("qa", "r-a", "Be exact."), "no-op"),
        (AddItem("qa", "Be exact."), "no-op"),
        (AddItem("nope", "x"), "no predictor named 'nope'"),
        (MergeItems("qa", ("r-a",), "x"), "two or more"),
        (MergeItems("qa", ("r-a", "r-zz"), "x"), "no item with id 'r-zz'"),
        (RewriteInstruction("qa", "Answer."), "no-op"),
        (RemoveDemo("qa", "d-0000"), "no demo with id"),
        (AddItem("qa", "   "), "must not be empty"),
        (CountItem("qa", "r-b", harmful=-5), "negative"),
    ],
)
def test_invalid_edits_are_rejected_with_a_clear_error(ctx, edit, message):
    with pytest.raises(EditError, match=message):
        ctx.apply_edits([edit])


def test_a_bad_edit_anywhere_rejects_the_whole_batch(ctx):
    before = ctx.hash
    with pytest.raises(EditError, match="edit 2 of 2 rejected, nothing applied"):
        ctx.apply_edits([AddItem("qa", "Fine."), DeleteItem("qa", "r-missing")])
    assert ctx.hash == before and len(ctx.items("qa")) == 2


def test_add_demo_twice_is_a_no_op_error(ctx):
    new = ctx.apply_edits([AddDemo("qa", DEMO)])
    with pytest.raises(EditError, match="already exists"):
        new.apply_edits([AddDemo("qa", DEMO)])


ALL_EDITS = [
    AddItem("qa", "t", scope="s", kind="strategy", rationale="why"),
    UpdateItem("qa", "r-a", "t2", rationale="r"),
    DeleteItem("qa", "r-a"),
    MergeItems("qa", ("r-a", "r-b"), "t3", scope="s"),
    RewriteInstruction("qa", "new"),
    AddDemo("qa", DEMO, rationale="demo"),
    RemoveDemo("qa", DEMO.id),
    CountItem("qa", "r-a", helpful=1, harmful=2),
    SetRetrieval("qa", "k_demos", 8, rationale="more demos"),
    Narrow("qa", "r-a", ("an input of another task",), rationale="reached it"),
]


@pytest.mark.parametrize("edit", ALL_EDITS, ids=lambda e: e.op)
def test_edit_dict_round_trip_and_description(edit):
    d = edit.to_dict()
    assert d["op"] == edit.op and d["predictor"] == "qa"
    assert edit_from_dict(d) == edit
    line = describe(edit)
    assert line.startswith("qa: ") and "\n" not in line


def test_edit_from_dict_rejects_unknown_ops_and_fields():
    with pytest.raises(EditError, match="unknown edit op 'explode'"):
        edit_from_dict({"op": "explode"})
    with pytest.raises(EditError, match="unknown fields"):
        edit_from_dict({"op": "delete_item", "predictor": "qa", "item_id": "x", "extra": 1})
    with pytest.raises(EditError, match="delete_item"):
        edit_from_dict({"op": "delete_item", "predictor": "qa"})
    with pytest.raises(EditError, match="kind"):
        AddItem("qa", "x", kind="law")


@pytest.mark.parametrize("edit", ALL_EDITS, ids=lambda e: e.op)
def test_every_edit_implements_the_context_edit_protocol(edit, ctx):
    assert isinstance(edit, Edit) and edit.to_dict()["op"] == edit.op
    predictors = dict(ctx.predictors)
    if isinstance(edit, (RemoveDemo, UpdateItem, MergeItems, CountItem, DeleteItem)):
        predictors = AddDemo("qa", DEMO).apply(predictors, step=0, task=None)
    after = edit.apply(predictors, step=4, task="t")
    assert after is not predictors and set(after) == {"qa"} and after["qa"] != predictors["qa"]
    assert LearnedContext(after) == LearnedContext(predictors).apply_edits([edit], step=4, task="t")


def test_every_edit_type_is_covered_and_apply_edit_still_works_for_old_callers(ctx):
    assert sorted(EDIT_TYPES) == sorted(e.op for e in ALL_EDITS)
    after = apply_edit(ctx.predictors, AddItem("qa", "Cite."), step=1)
    assert [it.text for it in after["qa"].items] == ["Be exact.", "Be brief.", "Cite."] and len(ctx.items("qa")) == 2
    with pytest.raises(EditError, match="not an edit"):
        apply_edit(ctx.predictors, {"op": "add_item"})  # type: ignore[arg-type]
    with pytest.raises(EditError, match="add_item: no predictor named 'nope' \\(known: qa\\)"):
        apply_edit(ctx.predictors, AddItem("nope", "x"))


def test_retrieval_settings_are_versioned_state_validated_and_absent_until_set(ctx):
    before = ctx.predictor("qa")
    assert "retrieval" not in before.to_dict() and before.retrieval_settings() == {}
    after = ctx.apply_edits([SetRetrieval("qa", "k_demos", 8), SetRetrieval("qa", "min_score", 0.25)], step=1, task="t")
    pc = after.predictor("qa")
    assert pc.retrieval_settings() == {"k_demos": 8, "min_score": 0.25}
    assert pc.to_dict()["retrieval"] == {"k_demos": 8, "min_score": 0.25}
    assert LearnedContext.from_dict(after.to_dict()) == after and after.hash != ctx.hash
    with pytest.raises(EditError, match="no-op"):
        after.apply_edits([SetRetrieval("qa", "k_demos", 8)], step=2, task="t")
    for bad in (("k_demos", -1), ("k_items", 2.5), ("min_score", 1.5), ("top_p", 1)):
        with pytest.raises(EditError):
            SetRetrieval("qa", *bad)
