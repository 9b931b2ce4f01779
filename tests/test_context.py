"""LearnedContext: rendering, scoping, hashing, serialization and DSPy round-trips."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dspy
import pytest

import ctxopt.context
from ctxopt.context import GLOBAL, Demo, Edit, Item, LearnedContext, PredictorContext, count_tokens
from ctxopt.edits import AddItem
from ctxopt.errors import ConfigError, EditError


def make_ctx() -> LearnedContext:
    items = (
        Item("r-1", "Be exact."),
        Item("n-1", "Dates are ISO.", kind="note"),
        Item("r-2", "Give units.", scope="physics"),
        Item("s-1", "Check the sign.", scope="algebra", kind="strategy"),
    )
    demos = (Demo(inputs={"q": "1+1"}, outputs={"a": "2"}), Demo(inputs={"q": "v?"}, outputs={"a": "3 m/s"}, scope="physics"))
    return LearnedContext({"qa": PredictorContext("Answer the question.", items, demos), "cls": PredictorContext("Label it.")})


class QA(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qa = dspy.ChainOfThought("question -> answer")
        self.cls = dspy.Predict("text -> label")


def test_render_with_known_task_shows_global_and_that_tasks_items_only():
    text = make_ctx().render("qa", task="physics")
    assert text == "Answer the question.\n\nRules:\n- Be exact.\n- Give units.\n\nNotes:\n- Dates are ISO."


def test_render_with_unknown_task_groups_task_items_under_headers():
    text = make_ctx().render("qa")
    assert text.endswith("For task algebra:\n- (strategy) Check the sign.\n\nFor task physics:\n- Give units.")
    assert text.index("Rules:\n- Be exact.") < text.index("For task algebra:")


def test_render_without_items_is_the_instruction_itself():
    assert make_ctx().render("cls") == "Label it."


def test_render_of_unknown_predictor_is_an_edit_error():
    with pytest.raises(EditError, match="no predictor named 'nope'"):
        make_ctx().render("nope")


def test_hash_is_content_addressed_and_ignores_construction_order():
    a = make_ctx()
    b = LearnedContext(dict(reversed(list(a.predictors.items()))))
    assert a == b and a.hash == b.hash and len(a.hash) == 64
    assert list(b.predictors) == ["cls", "qa"]
    c = a.apply_edits([AddItem("cls", "New rule.")])
    assert c.hash != a.hash


def test_dict_round_trip_is_exact():
    ctx = make_ctx()
    again = LearnedContext.from_dict(ctx.to_dict())
    assert again == ctx and again.hash == ctx.hash


def test_context_is_immutable():
    ctx = make_ctx()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.predictors = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        ctx.predictors["x"] = PredictorContext("y")  # type: ignore[index]


def test_duplicate_item_ids_and_bad_kinds_are_rejected():
    with pytest.raises(EditError, match="duplicate item id"):
        PredictorContext("i", (Item("r-1", "a"), Item("r-1", "b")))
    with pytest.raises(EditError, match="kind"):
        Item("x", "text", kind="law")
    with pytest.raises(EditError, match="unknown fields"):
        Item.from_dict({"id": "x", "text": "t", "evil": 1})


def test_demo_id_is_a_stable_content_hash():
    a = Demo(inputs={"q": "1"}, outputs={"a": "2"})
    assert a.id == Demo(inputs={"q": "1"}, outputs={"a": "2"}).id
    assert a.id != Demo(inputs={"q": "1"}, outputs={"a": "2"}, scope="t").id
    assert Demo.from_dict(a.to_dict()) == a


def test_token_count_is_deterministic_and_sums_over_predictors():
    ctx = make_ctx()
    total = ctx.token_count()
    assert total == ctx.token_count("qa") + ctx.token_count("cls") > 0
    assert ctx.token_count("qa", task="physics") < ctx.token_count("qa")
    assert count_tokens("hello world") == count_tokens("hello world") > 0


def test_from_program_extracts_instructions_and_splits_demos():
    prog = QA()
    prog.qa.predict.demos = [dspy.Example(question="2+2?", reasoning="add", answer="4").with_inputs("question")]
    prog.cls.demos = [{"text": "great", "label": "pos"}]
    ctx = LearnedContext.from_program(prog)
    assert set(ctx.predictors) == {"qa.predict", "cls"}
    assert ctx.predictors["qa.predict"].instruction == prog.qa.predict.signature.instructions
    (demo,) = ctx.predictors["qa.predict"].demos
    assert demo.inputs == {"question": "2+2?"} and demo.outputs == {"reasoning": "add", "answer": "4"}
    assert ctx.predictors["cls"].demos[0].inputs == {"text": "great"}


def test_apply_to_a_fresh_program_is_portable_and_respects_task_scope():
    src = QA()
    ctx = LearnedContext.from_program(src).apply_edits(
        [AddItem("cls", "Sarcasm is negative."), AddItem("cls", "Emoji count.", scope="tweets")]
    )
    ctx = ctx.with_predictor(
        "cls",
        dataclasses.replace(
            ctx.predictors["cls"],
            demos=(
                Demo(inputs={"text": "ok"}, outputs={"label": "neu"}),
                Demo(inputs={"text": "lol"}, outputs={"label": "pos"}, scope="tweets"),
            ),
        ),
    )
    fresh = QA()
    out = ctx.apply_to(fresh, task="reviews")
    assert out is fresh
    assert fresh.cls.signature.instructions == ctx.render("cls", "reviews")
    assert "Emoji" not in fresh.cls.signature.instructions
    assert [d.toDict() for d in fresh.cls.demos] == [{"text": "ok", "label": "neu"}]
    assert fresh.cls.demos[0].inputs().toDict() == {"text": "ok"}
    ctx.apply_to(fresh, task="tweets")
    assert "Emoji count." in fresh.cls.signature.instructions and len(fresh.cls.demos) == 2
    # extracting again from a program with an empty context gives the same context back
    base = LearnedContext.from_program(QA())
    assert LearnedContext.from_program(base.apply_to(QA())) == base


def test_apply_to_a_program_with_other_predictor_names_fails_naming_them():
    ctx = LearnedContext({"other": PredictorContext("x")})
    with pytest.raises(ConfigError, match="other") as info:
        ctx.apply_to(QA())
    assert "qa.predict" in str(info.value)


def test_global_constant():
    assert GLOBAL == "global" and Item("a", "b").scope == GLOBAL


def _imported_modules(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_context_module_never_imports_the_edits_module():
    """Not at the top, not lazily inside a function, not under TYPE_CHECKING: edits depend on the context only."""
    imported = _imported_modules(Path(ctxopt.context.__file__).read_text(encoding="utf-8"))
    assert not {name for name in imported if name == "ctxopt.edits" or name.startswith("ctxopt.edits.")}
    assert "ctxopt.tokens.count_tokens" in imported  # the one token measure


@dataclasses.dataclass(frozen=True)
class Shout:
    """An edit defined outside ctxopt.edits: anything with the Edit protocol can be applied."""

    predictor: str
    op: str = "shout"

    def apply(self, predictors: Mapping[str, PredictorContext], *, step: int, task: str | None) -> dict[str, PredictorContext]:
        pc = predictors[self.predictor]
        return {**predictors, self.predictor: dataclasses.replace(pc, instruction=pc.instruction.upper())}

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "predictor": self.predictor}


def test_any_object_with_the_edit_protocol_can_be_applied_and_others_are_rejected():
    ctx = make_ctx()
    assert isinstance(Shout("cls"), Edit) and isinstance(AddItem("cls", "x"), Edit)
    new = ctx.apply_edits([Shout("cls"), AddItem("cls", "New rule.")], step=2)
    assert new.render("cls") == "LABEL IT.\n\nRules:\n- New rule." and ctx.predictor("cls").instruction == "Label it."
    with pytest.raises(EditError, match="edit 2 of 2 rejected, nothing applied: not an edit"):
        ctx.apply_edits([Shout("cls"), {"op": "add_item", "predictor": "cls", "text": "x"}])


def test_task_scopes_are_the_sorted_non_global_scopes_of_items_and_demos():
    assert make_ctx().predictor("qa").task_scopes() == ("algebra", "physics")
    assert make_ctx().predictor("cls").task_scopes() == ()
