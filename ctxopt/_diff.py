"""Semantic difference between two learned contexts.

Items and demos are matched by id: a diff lists, per predictor, whether the
instruction changed, which items were added, removed or changed (and which
fields), whether the item order changed, and which demos came or went.
:class:`ContextDiff` is re-exported by :mod:`ctxopt.store`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ctxopt._text import shorten
from ctxopt.context import Demo, Item, LearnedContext, PredictorContext

_EMPTY = PredictorContext(instruction="")



@dataclass(frozen=True)
class ItemChange:
    """One item present on both sides with different fields."""

    old: Item
    new: Item
    fields: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict."""
        return {"old": self.old.to_dict(), "new": self.new.to_dict(), "fields": list(self.fields)}


@dataclass(frozen=True)
class PredictorDiff:
    """What changed in one predictor."""

    name: str
    status: str = "changed"  # "added" | "removed" | "changed"
    instruction: tuple[str, str] | None = None
    items_added: tuple[Item, ...] = ()
    items_removed: tuple[Item, ...] = ()
    items_changed: tuple[ItemChange, ...] = ()
    items_reordered: bool = False
    demos_added: tuple[Demo, ...] = ()
    demos_removed: tuple[Demo, ...] = ()
    demos_changed: tuple[Demo, ...] = ()  # the new side of demos kept with other counter-keys

    @property
    def is_empty(self) -> bool:
        """True if nothing changed."""
        return not (
            self.instruction
            or self.items_added
            or self.items_removed
            or self.items_changed
            or self.items_reordered
            or self.demos_added
            or self.demos_removed
            or self.demos_changed
        ) and self.status == "changed"

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict."""
        return {
            "name": self.name,
            "status": self.status,
            "instruction": None if self.instruction is None else {"old": self.instruction[0], "new": self.instruction[1]},
            "items_added": [it.to_dict() for it in self.items_added],
            "items_removed": [it.to_dict() for it in self.items_removed],
            "items_changed": [c.to_dict() for c in self.items_changed],
            "items_reordered": self.items_reordered,
            "demos_added": [d.to_dict() for d in self.demos_added],
            "demos_removed": [d.to_dict() for d in self.demos_removed],
            "demos_changed": [d.to_dict() for d in self.demos_changed],
        }


@dataclass(frozen=True)
class ContextDiff:
    """Semantic (and optionally textual) difference between contexts ``a`` and ``b``.

    Example:
        >>> from ctxopt.edits import AddItem
        >>> a = LearnedContext({"qa": PredictorContext("Answer.")})
        >>> b = a.apply_edits([AddItem("qa", "Cite sources.")])
        >>> d = diff_contexts(a, b)
        >>> [it.text for it in d.predictors[0].items_added]
        ['Cite sources.']
    """

    a_hash: str
    b_hash: str
    predictors: tuple[PredictorDiff, ...] = ()
    a_rev: str = ""
    b_rev: str = ""
    textual: str = field(default="", repr=False)

    @property
    def is_empty(self) -> bool:
        """True if the two contexts are equal."""
        return self.a_hash == self.b_hash

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (textual diff included)."""
        return {
            "a": {"rev": self.a_rev, "context_hash": self.a_hash},
            "b": {"rev": self.b_rev, "context_hash": self.b_hash},
            "predictors": [p.to_dict() for p in self.predictors],
            "textual": self.textual,
        }

    def to_text(self) -> str:
        """Human-readable summary, one line per change."""
        a = (self.a_rev[:10] + " " if self.a_rev else "") + f"(context {self.a_hash[:12]})"
        b = (self.b_rev[:10] + " " if self.b_rev else "") + f"(context {self.b_hash[:12]})"
        lines = [f"diff {a} -> {b}"]
        if self.is_empty:
            lines.append("no differences")
            return "\n".join(lines)
        for p in self.predictors:
            lines.append(f"predictor {p.name}" + ("" if p.status == "changed" else f" ({p.status})") + ":")
            if p.instruction:
                lines.append(f"  instruction: {shorten(p.instruction[0], 70)!r}")
                lines.append(f"            -> {shorten(p.instruction[1], 70)!r}")
            for it in p.items_added:
                lines.append(f"  + {it.id} [{it.kind}, {it.scope}] {shorten(it.text, 70)}")
            for it in p.items_removed:
                lines.append(f"  - {it.id} [{it.kind}, {it.scope}] {shorten(it.text, 70)}")
            for c in p.items_changed:
                detail = f"{shorten(c.old.text, 40)!r} -> {shorten(c.new.text, 40)!r}" if "text" in c.fields else ""
                lines.append(f"  ~ {c.new.id} ({', '.join(c.fields)}) {detail}".rstrip())
            if p.items_reordered:
                lines.append("  ~ item order changed")
            for d in p.demos_added:
                lines.append(f"  + demo {d.id} [{d.scope}]")
            for d in p.demos_removed:
                lines.append(f"  - demo {d.id} [{d.scope}]")
            for d in p.demos_changed:
                lines.append(f"  ~ demo {d.id} (unless: {len(d.unless)} counter-keys)")
        return "\n".join(lines)


def diff_predictor(name: str, old: PredictorContext, new: PredictorContext, status: str = "changed") -> PredictorDiff:
    """Diff one predictor's context (items and demos matched by id)."""
    old_items = {it.id: it for it in old.items}
    new_items = {it.id: it for it in new.items}
    changed = []
    for it in new.items:
        prev = old_items.get(it.id)
        if prev is not None and prev != it:
            a, b = prev.to_dict(), it.to_dict()
            changed.append(ItemChange(prev, it, tuple(k for k in {**a, **b} if a.get(k) != b.get(k))))
    common_old = [i for i in old_items if i in new_items]
    common_new = [i for i in new_items if i in old_items]
    old_demos = {d.id: d for d in old.demos}
    new_demos = {d.id for d in new.demos}
    return PredictorDiff(
        name=name,
        status=status,
        instruction=(old.instruction, new.instruction) if old.instruction != new.instruction else None,
        items_added=tuple(it for it in new.items if it.id not in old_items),
        items_removed=tuple(it for it in old.items if it.id not in new_items),
        items_changed=tuple(changed),
        items_reordered=common_old != common_new,
        demos_added=tuple(d for d in new.demos if d.id not in old_demos),
        demos_removed=tuple(d for d in old.demos if d.id not in new_demos),
        demos_changed=tuple(d for d in new.demos if d.id in old_demos and old_demos[d.id] != d),
    )


def diff_contexts(a: LearnedContext, b: LearnedContext, *, a_rev: str = "", b_rev: str = "", textual: str = "") -> ContextDiff:
    """Semantic diff of two contexts."""
    diffs = []
    for name in sorted(set(a.predictors) | set(b.predictors)):
        if name not in a.predictors:
            d = diff_predictor(name, _EMPTY, b.predictors[name], "added")
        elif name not in b.predictors:
            d = diff_predictor(name, a.predictors[name], _EMPTY, "removed")
        else:
            d = diff_predictor(name, a.predictors[name], b.predictors[name])
        if not d.is_empty:
            diffs.append(d)
    return ContextDiff(a.hash, b.hash, tuple(diffs), a_rev=a_rev, b_rev=b_rev, textual=textual)
