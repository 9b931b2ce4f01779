"""Typed delta edits of a :class:`~ctxopt.context.LearnedContext`.

Each edit is a frozen dataclass naming its ``predictor`` and carrying a
``rationale``; each implements the :class:`~ctxopt.context.Edit` protocol
(``op``, ``apply(predictors, step=, task=)``, ``to_dict()``), so this module
depends on :mod:`ctxopt.context` and not the reverse. Edits are applied with
:meth:`LearnedContext.apply_edits <ctxopt.context.LearnedContext.apply_edits>`,
which returns a new context; an invalid edit (missing item id, no-op, unknown
predictor) raises :class:`~ctxopt.errors.EditError` and nothing changes.

Item ids are deterministic (``"r-"``/``"n-"``/``"s-"`` + 8 hex of
sha256(predictor, scope, text)), so rerunning the same edits reproduces the
same context hash.

Example:
    >>> from ctxopt.context import LearnedContext, PredictorContext
    >>> ctx = LearnedContext({"qa": PredictorContext("Answer.")})
    >>> edit = AddItem("qa", "Cite the source.", rationale="answers lacked sources")
    >>> edit_from_dict(edit.to_dict()) == edit
    True
    >>> ctx.apply_edits([edit]).items("qa")[0].id == item_id_for("qa", "Cite the source.")
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Union

from ctxopt._text import shorten
from ctxopt.context import GLOBAL, KINDS, Demo, Item, PredictorContext, check_counter_keys, check_retrieval_setting, replace_item
from ctxopt.errors import EditError


def item_id_for(predictor: str, text: str, scope: str = GLOBAL, kind: str = "rule") -> str:
    """Deterministic id of an item: kind letter + 8 hex of sha256(predictor, scope, text)."""
    digest = hashlib.sha256("\x00".join((predictor, scope, text)).encode("utf-8")).hexdigest()[:8]
    return f"{kind[:1] or 'r'}-{digest}"



def _scope_note(scope: str | None) -> str:
    return "" if scope in (None, GLOBAL) else f" [task {scope}]"


@dataclass(frozen=True)
class _EditBase:
    op: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict with an ``"op"`` tag; see :func:`edit_from_dict`."""
        d: dict[str, Any] = {"op": self.op}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("only_when_set") and value == f.default:
                continue  # an optional field added later: old edits keep their dicts (and hashes)
            if isinstance(value, Demo):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            d[f.name] = value
        return d

    def _check(self) -> None:
        if not isinstance(self.predictor, str) or not self.predictor:  # type: ignore[attr-defined]
            raise EditError(f"{self.op}: predictor must be a non-empty string")
        if not isinstance(self.rationale, str):  # type: ignore[attr-defined]
            raise EditError(f"{self.op}: rationale must be a string")

    def __post_init__(self) -> None:
        self._check()

    def apply(
        self, predictors: Mapping[str, PredictorContext], *, step: int = 0, task: str | None = None
    ) -> dict[str, PredictorContext]:
        """Apply the edit to its predictor in ``predictors`` and return a new dict (:class:`~ctxopt.context.Edit`).

        Raises:
            EditError: if the predictor is unknown or the edit is invalid; ``predictors`` is not changed.
        """
        name = self.predictor  # type: ignore[attr-defined]
        if name not in predictors:
            known = ", ".join(sorted(predictors)) or "none"
            raise EditError(f"{self.op}: no predictor named {name!r} (known: {known})")
        return {**predictors, name: self.apply_predictor(predictors[name], step=step, task=task)}

    def apply_predictor(self, pc: PredictorContext, *, step: int, task: str | None) -> PredictorContext:
        """Return the context of the edit's own predictor, ``pc``, with the edit applied."""
        raise NotImplementedError


@dataclass(frozen=True)
class AddItem(_EditBase):
    """Append a new item (rule, note or strategy) to a predictor.

    ``keys`` (retrieval keys: an "applies when …" text, the inputs that produced
    the item), ``unless`` (counter-keys) and ``pinned`` (core memory) go to the
    new item; see :class:`~ctxopt.context.Item`. They are in :meth:`to_dict`
    only when set.

    Example:
        >>> AddItem("qa", "Always give units.", scope="physics").item_id.startswith("r-")
        True
        >>> "keys" in AddItem("qa", "Be brief.").to_dict(), AddItem("qa", "Be brief.", keys=("hi",)).to_dict()["keys"]
        (False, ['hi'])
    """

    op: ClassVar[str] = "add_item"
    predictor: str
    text: str
    scope: str = GLOBAL
    kind: str = "rule"
    rationale: str = ""
    keys: tuple[str, ...] = field(default=(), metadata={"only_when_set": True})
    pinned: bool = field(default=False, metadata={"only_when_set": True})
    unless: tuple[str, ...] = field(default=(), metadata={"only_when_set": True})

    def __post_init__(self) -> None:
        self._check()
        if self.kind not in KINDS:
            raise EditError(f"add_item: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if isinstance(self.keys, str) or not all(isinstance(k, str) for k in self.keys):
            raise EditError(f"add_item: keys must be a list of strings, got {self.keys!r}")
        object.__setattr__(self, "keys", tuple(self.keys))
        object.__setattr__(self, "unless", check_counter_keys(self.unless, "add_item"))

    @property
    def item_id(self) -> str:
        """The deterministic id the new item gets."""
        return item_id_for(self.predictor, self.text, self.scope, self.kind)

    def apply_predictor(self, pc: PredictorContext, *, step: int, task: str | None) -> PredictorContext:
        for it in pc.items:
            if it.scope == self.scope and it.text == self.text:
                raise EditError(f"add_item is a no-op: item {it.id} already has this text in scope {self.scope!r}")
            if it.id == self.item_id:
                raise EditError(f"add_item: item id {self.item_id} already exists")
        new = Item(
            id=self.item_id,
            text=self.text,
            scope=self.scope,
            kind=self.kind,
            source_task=task,
            source_step=step,
            rationale=self.rationale,
            created_step=step,
            updated_step=step,
            pinned=self.pinned,
            keys=self.keys,
            unless=self.unless,
        )
        return replace(pc, items=pc.items + (new,))


@dataclass(frozen=True)
class UpdateItem(_EditBase):
    """Replace the text of an existing item; its id and provenance stay.

    Example:
        >>> UpdateItem("qa", "r-1a2b3c4d", "Give SI units.").op
        'update_item'
    """

    op: ClassVar[str] = "update_item"
    predictor: str
    item_id: str
    text: str
    rationale: str = ""

    def apply_predictor(self, pc: PredictorContext, *, step: int, task: str | None) -> PredictorContext:
        old = pc.item(self.item_id)
        if old.text == self.text:
            raise EditError(f"update_item is a no-op: item {self.item_id} already has this text")
        new = replace(old, text=self.text, updated_step=step, rationale=self.rationale or old.rationale)
        return replace_item(pc, self.item_id, new)


@dataclass(frozen=True)
class DeleteItem(_EditBase):
    """Remove an item.

    Example:
        >>> DeleteItem("qa", "r-1a2b3c4d", rationale="hurt accuracy").to_dict()["op"]
        'delete_item'
    """

    op: ClassVar[str] = "delete_item"
    predictor: str
    item_id: str
    rationale: str = ""

    def apply_predictor(self, pc: PredictorContext, *, step: int, task: str | None) -> PredictorContext:
        return replace_item(pc, self.item_id, None)


@dataclass(frozen=True)
class MergeItems(_EditBase):
    """Replace two or more items by one new item at the position of the first.

    The new item's scope is ``scope`` if given, else the common scope of the
    merged items (global if they differ). Its counters are the sums; it keeps
    the retrieval keys of all merged items and is pinned if any of them was.
    It keeps counter-keys (``unless``) only if every merged item had some: the
    union, less the keys it now holds.

    Example:
        >>> MergeItems("qa", ("r-1", "r-2"), "Be exact and cite.").op
        'merge_items'
    """

    op: ClassVar[str] = "merge_items"
    predictor: str
    item_ids: tuple[str, ...]
    text: str
    rationale: str = ""
    scope: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "item_ids", tuple(self.item_ids))
        self._check()

    def apply_predictor(self, pc: PredictorContext, *, step: int, task: str | None) -> PredictorContext:
        if len(self.item_ids) < 2 or len(set(self.item_ids)) != len(self.item_ids):
            raise EditError(f"merge_items needs two or more distinct item ids, got {list(self.item_ids)}")
        olds = [pc.item(i) for i in self.item_ids]
        scopes = {it.scope for it in olds}
        scope = self.scope or (scopes.pop() if len(scopes) == 1 else GLOBAL)
        kinds = {it.kind for it in olds}
        kind = kinds.pop() if len(kinds) == 1 else "rule"
        new = Item(
            id=item_id_for(self.predictor, self.text, scope, kind),
            text=self.text,
            scope=scope,
            kind=kind,
            source_task=task,
            source_step=step,
            rationale=self.rationale,
            created_step=step,
            updated_step=step,
            helpful=sum(it.helpful for it in olds),
            harmful=sum(it.harmful for it in olds),
            pinned=any(it.pinned for it in olds),
            keys=(keys := tuple(dict.fromkeys(k for it in olds for k in it.keys))),
            unless=tuple(dict.fromkeys(k for it in olds for k in it.unless if k not in keys))
            if all(it.unless for it in olds) else (),
        )
        merged = set(self.item_ids)
        if any(it.id == new.id for it in pc.items if it.id not in merged):
            raise EditError(f"merge_items: the merged item {new.id} already exists")
        first = min(i for i, it in enumerate(pc.items) if it.id in merged)
        items = [it for it in pc.items if it.id not in merged]
        items.insert(first, new)
        return replace(pc, items=tuple(items))


@dataclass(frozen=True)
class RewriteInstruction(_EditBase):
    """Replace the predictor's base instruction.

    Example:
        >>> RewriteInstruction("qa", "Answer in one word.").op
        'rewrite_instruction'
    """

    op: ClassVar[str] = "rewrite_instruction"
    predictor: str
    text: str
    rationale: str = ""

    def apply_predictor(self, pc: PredictorContext, *, step: int, task: str | None) -> PredictorContext:
        if not isinstance(self.text, str):
            raise EditError("rewrite_instruction: text must be a string")
        if pc.instruction == self.text:
            raise EditError("rewrite_instruction is a no-op: the instruction already has this text")
        return replace(pc, instruction=self.text)


@dataclass(frozen=True)
class SetRetrieval(_EditBase):
    """Set one of the predictor's retrieval settings (``k_items``, ``k_demos``, ``min_score``, ``max_tokens``).

    The settings are part of C's versioned state; a retrieving selector reads them per input
    (:class:`ctxopt.retrieval.RetrievalSelector`), so the search can choose them like any edit.

    Example:
        >>> from ctxopt.context import PredictorContext
        >>> SetRetrieval("qa", "k_demos", 8).apply_predictor(PredictorContext("A."), step=1, task=None).retrieval
        (('k_demos', 8),)
    """

    op: ClassVar[str] = "set_retrieval"
    predictor: str
    setting: str
    value: int | float
    rationale: str = ""

    def __post_init__(self) -> None:
        self._check()
        check_retrieval_setting(self.setting, self.value)

    def apply_predictor(self, pc: PredictorContext, *, step: int, task: str | None) -> PredictorContext:
        settings = pc.retrieval_settings()
        if settings.get(self.setting) == self.value:
            raise EditError(f"set_retrieval is a no-op: {self.setting} is already {self.value}")
        return replace(pc, retrieval=tuple({**settings, self.setting: self.value}.items()))


@dataclass(frozen=True)
class Narrow(_EditBase):
    """Add counter-keys to an item or demo already in memory (``target``: its id), so that the inputs nearer
    to them than to its keys no longer retrieve it (:func:`ctxopt.retrieval.shield`).

    Example:
        >>> from ctxopt.context import Item, PredictorContext
        >>> pc = PredictorContext("A.", items=(Item("r-1", "One letter.", keys=("cat",)),))
        >>> Narrow("qa", "r-1", ("A fine film.",)).apply_predictor(pc, step=2, task=None).items[0].unless
        ('A fine film.',)
    """

    op: ClassVar[str] = "narrow"
    predictor: str
    target: str
    unless: tuple[str, ...]
    rationale: str = ""

    def __post_init__(self) -> None:
        self._check()
        object.__setattr__(self, "unless", check_counter_keys(self.unless, "narrow"))

    def apply_predictor(self, pc: PredictorContext, *, step: int, task: str | None) -> PredictorContext:
        def more(entry: Any) -> Any:
            unless = tuple(dict.fromkeys((*entry.unless, *self.unless)))
            if unless == entry.unless:
                raise EditError(f"narrow is a no-op: {self.target} already has these counter-keys")
            return replace(entry, unless=unless)

        if any(it.id == self.target for it in pc.items):
            return replace(pc, items=tuple(more(it) if it.id == self.target else it for it in pc.items))
        if any(d.id == self.target for d in pc.demos):
            return replace(pc, demos=tuple(more(d) if d.id == self.target else d for d in pc.demos))
        raise EditError(f"narrow: no item or demo {self.target!r}")


@dataclass(frozen=True)
class AddDemo(_EditBase):
    """Append a demo; applied during a task, it records that task as the demo's ``source_task``.

    Example:
        >>> AddDemo("qa", Demo(inputs={"q": "1+1"}, outputs={"a": "2"})).op
        'add_demo'
    """

    op: ClassVar[str] = "add_demo"
    predictor: str
    demo: Demo
    rationale: str = ""

    def __post_init__(self) -> None:
        self._check()
        if not isinstance(self.demo, Demo):
            raise EditError(f"add_demo: demo must be a Demo, got {type(self.demo).__name__}")

    def apply_predictor(self, pc: PredictorContext, *, step: int, task: str | None) -> PredictorContext:
        if any(d.id == self.demo.id for d in pc.demos):
            raise EditError(f"add_demo is a no-op: demo {self.demo.id} already exists")
        demo = self.demo if self.demo.source_task is not None or task is None else replace(self.demo, source_task=task)
        return replace(pc, demos=pc.demos + (demo,))


@dataclass(frozen=True)
class RemoveDemo(_EditBase):
    """Remove a demo by id.

    Example:
        >>> RemoveDemo("qa", "d-1a2b3c4d").op
        'remove_demo'
    """

    op: ClassVar[str] = "remove_demo"
    predictor: str
    demo_id: str
    rationale: str = ""

    def apply_predictor(self, pc: PredictorContext, *, step: int, task: str | None) -> PredictorContext:
        if all(d.id != self.demo_id for d in pc.demos):
            known = ", ".join(d.id for d in pc.demos[:10]) or "none"
            raise EditError(f"no demo with id {self.demo_id!r} (known ids: {known})")
        return replace(pc, demos=tuple(d for d in pc.demos if d.id != self.demo_id))


@dataclass(frozen=True)
class CountItem(_EditBase):
    """Add to an item's helpful/harmful counters (not in the core contract; an extra).

    Example:
        >>> CountItem("qa", "r-1a2b3c4d", helpful=1).op
        'count_item'
    """

    op: ClassVar[str] = "count_item"
    predictor: str
    item_id: str
    helpful: int = 0
    harmful: int = 0
    rationale: str = ""

    def apply_predictor(self, pc: PredictorContext, *, step: int, task: str | None) -> PredictorContext:
        old = pc.item(self.item_id)
        if self.helpful == 0 and self.harmful == 0:
            raise EditError("count_item is a no-op: both increments are 0")
        new = replace(old, helpful=old.helpful + self.helpful, harmful=old.harmful + self.harmful)
        if new.helpful < 0 or new.harmful < 0:
            raise EditError(f"count_item: counters of item {self.item_id} would become negative")
        return replace_item(pc, self.item_id, new)


Edit = Union[AddItem, UpdateItem, DeleteItem, MergeItems, RewriteInstruction, AddDemo, RemoveDemo, CountItem, SetRetrieval,
             Narrow]
"""Any of the typed edits above; each satisfies the :class:`ctxopt.context.Edit` protocol."""

EDIT_TYPES: dict[str, type] = {
    cls.op: cls
    for cls in (AddItem, UpdateItem, DeleteItem, MergeItems, RewriteInstruction, AddDemo, RemoveDemo, CountItem,
                SetRetrieval, Narrow)
}


def edit_from_dict(d: Mapping[str, Any]) -> Edit:
    """Rebuild an edit from :meth:`to_dict` output.

    Raises:
        EditError: if ``op`` is unknown or fields are missing or unexpected.
    """
    if not isinstance(d, Mapping):
        raise EditError(f"an edit must be a mapping, got {type(d).__name__}")
    op = d.get("op")
    cls = EDIT_TYPES.get(op)  # type: ignore[arg-type]
    if cls is None:
        raise EditError(f"unknown edit op {op!r}; valid ops: {', '.join(sorted(EDIT_TYPES))}")
    kwargs = {k: v for k, v in d.items() if k != "op"}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(kwargs) - names
    if unknown:
        raise EditError(f"{op}: unknown fields {', '.join(sorted(unknown))}")
    if "demo" in kwargs and isinstance(kwargs["demo"], Mapping):
        kwargs["demo"] = Demo.from_dict(kwargs["demo"])
    try:
        return cls(**kwargs)  # type: ignore[return-value]
    except TypeError as exc:
        raise EditError(f"{op}: {exc}") from None


def describe(edit: Edit) -> str:
    """One human-readable line describing ``edit``."""
    p = edit.predictor
    if isinstance(edit, AddItem):
        return f"{p}: add {edit.kind} {edit.item_id}{_scope_note(edit.scope)}: {shorten(edit.text, 60)!r}"
    if isinstance(edit, UpdateItem):
        return f"{p}: update item {edit.item_id}: {shorten(edit.text, 60)!r}"
    if isinstance(edit, DeleteItem):
        return f"{p}: delete item {edit.item_id}"
    if isinstance(edit, MergeItems):
        return f"{p}: merge items {', '.join(edit.item_ids)}{_scope_note(edit.scope)}: {shorten(edit.text, 60)!r}"
    if isinstance(edit, RewriteInstruction):
        return f"{p}: rewrite instruction: {shorten(edit.text, 60)!r}"
    if isinstance(edit, AddDemo):
        return f"{p}: add demo {edit.demo.id}{_scope_note(edit.demo.scope)}"
    if isinstance(edit, RemoveDemo):
        return f"{p}: remove demo {edit.demo_id}"
    if isinstance(edit, SetRetrieval):
        return f"{p}: set retrieval {edit.setting} = {edit.value}"
    if isinstance(edit, Narrow):
        return f"{p}: narrow {edit.target}: not for {len(edit.unless)} input(s) like {shorten(edit.unless[0], 40)!r}"
    if isinstance(edit, CountItem):
        return f"{p}: count item {edit.item_id} helpful {edit.helpful:+d} harmful {edit.harmful:+d}"
    raise EditError(f"not an edit: {edit!r}")


def apply_edit(
    predictors: Mapping[str, PredictorContext], edit: Edit, *, step: int = 0, task: str | None = None
) -> dict[str, PredictorContext]:
    """Apply one edit to a name -> PredictorContext mapping; return a new dict.

    Raises:
        EditError: if the edit is invalid; ``predictors`` is not changed.
    """
    if not isinstance(edit, _EditBase):
        raise EditError(f"not an edit: {edit!r}")
    return edit.apply(predictors, step=step, task=task)


__all__ = [
    "Edit",
    "AddItem",
    "UpdateItem",
    "DeleteItem",
    "MergeItems",
    "RewriteInstruction",
    "SetRetrieval",
    "Narrow",
    "AddDemo",
    "RemoveDemo",
    "CountItem",
    "EDIT_TYPES",
    "apply_edit",
    "describe",
    "edit_from_dict",
    "item_id_for",
]
