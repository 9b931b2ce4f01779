"""The ``compress`` kind: alternatives that bring an over-budget predictor back to ``max_tokens``.

Proposed only for predictors whose rendered context
(:func:`ctxopt.tokens.rendered_tokens`) exceeds the budget. In order: an LM
summary of the largest scope's items (if that alone fits); dropping items
(lowest evidence first) then demos; thinning demos then items; dropping the
longest items first (fewest items lost). An alternative that cannot reach the
target without touching a protected item or demo is not proposed.

Example:
    >>> from ctxopt.consolidate.base import ReflectionAllowance
    >>> from ctxopt.context import LearnedContext, PredictorContext
    >>> from ctxopt.edits import AddItem
    >>> ctx = LearnedContext({"qa": PredictorContext("Answer.")}).apply_edits(
    ...     [AddItem("qa", f"Rule {i}: " + "say more " * 10) for i in range(4)])
    >>> cands = Compression().propose(ctx, 40, lm=ReflectionAllowance())
    >>> {c.kind for c in cands}, all(rendered_tokens(c.apply(ctx), "qa") <= 40 for c in cands)
    ({'compress'}, True)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ctxopt.consolidate.base import Consolidation, ReflectionAllowance, reply_line
from ctxopt.consolidate.evidence import evidence
from ctxopt.context import GLOBAL, Item, LearnedContext
from ctxopt.edits import AddItem, DeleteItem, Edit, RemoveDemo
from ctxopt.errors import EditError
from ctxopt.tokens import over_budget, rendered_tokens

if TYPE_CHECKING:  # pragma: no cover
    from ctxopt.consolidate.rejections import RejectionMemory

__all__ = ["COMPRESS_PROMPT", "DROP_ORDERS", "Compression"]

COMPRESS_PROMPT = """These rules were learned for a language-model prompt{where}:
{rules}

Rewrite them as at most {k} short rules that keep every instruction, using fewer words.
Reply ONLY with lines of the form
RULE: <rule>"""

DROP_ORDERS = (("items", "demos"), ("demos", "items"), ("largest", "demos"))
"""The dropping alternatives, in order: what goes first (``largest``: the longest items), then what next."""


@dataclass(frozen=True)
class Compression:
    """Proposes the ``compress`` alternatives for every predictor over ``max_tokens``."""

    kind: ClassVar[str] = "compress"

    def propose(self, context: LearnedContext, max_tokens: int, *, lm: ReflectionAllowance,
                protect: Iterable[str] = (), memory: RejectionMemory | None = None) -> list[Consolidation]:
        """Alternatives that each bring every predictor to ``max_tokens`` or below (see the module docstring)."""
        protect = frozenset(protect)
        out: list[Consolidation] = []
        for name in over_budget(context, max_tokens):
            summary = self._summarize(context, name, max_tokens, protect, lm)
            if summary is not None:
                out.append(summary)
            for order in DROP_ORDERS:
                cand = self._drop(context, name, max_tokens, protect, order)
                if cand is not None and all(cand.edits != c.edits for c in out):
                    out.append(cand)
        if memory is not None:
            out = [c for c in out if memory.rejected(context, c) is None]
        return out

    def _summarize(self, context: LearnedContext, predictor: str, max_tokens: int, protect: frozenset[str],
                   lm: ReflectionAllowance) -> Consolidation | None:
        pc = context.predictor(predictor)
        by_scope: dict[str, list[Item]] = {}
        for it in pc.items:
            if it.id not in protect:
                by_scope.setdefault(it.scope, []).append(it)
        scopes = [s for s, its in by_scope.items() if len(its) >= 2]
        if not scopes or not lm.available:
            return None
        scope = max(scopes, key=lambda s: sum(len(it.text) for it in by_scope[s]))
        group = by_scope[scope]
        where = "" if scope == GLOBAL else f" on the task {scope!r}"
        reply = lm.ask(COMPRESS_PROMPT.format(where=where, rules="\n".join(f"- {it.text}" for it in group),
                                              k=max(1, len(group) // 2)))
        rules: list[str] = []
        for line in (reply or "").splitlines():
            body = reply_line(line, "RULE")
            if body and body not in rules:
                rules.append(body)
        if not rules or sum(len(r) for r in rules) >= sum(len(it.text) for it in group):
            return None
        edits: list[Edit] = [DeleteItem(predictor, it.id, rationale="summarized") for it in group]
        edits += [AddItem(predictor, r, scope=scope, kind="rule", rationale="LM summary of "
                          + ", ".join(it.id for it in group)) for r in rules]
        try:
            after = context.apply_edits(edits)
        except EditError:
            return None
        if rendered_tokens(after, predictor) > max_tokens:
            return None
        rationale = (f"compress to {max_tokens} tokens: the reflection LM summarized {len(group)} items of scope "
                     f"{scope} into {len(rules)}")
        return Consolidation(self.kind, predictor, tuple(edits), rationale, tuple(it.id for it in group))

    def _drop(self, context: LearnedContext, predictor: str, max_tokens: int, protect: frozenset[str],
              order: tuple[str, str]) -> Consolidation | None:
        pc = context.predictor(predictor)
        items = sorted((it for it in pc.items if it.id not in protect), key=evidence)
        if "largest" in order:
            items.sort(key=lambda it: (-len(it.text), evidence(it)))
        # Demos: the scope with the most demos first, its longest demo first; every scope keeps one while it can.
        demos = [d for d in pc.demos if d.id not in protect]
        edits: list[Edit] = []
        current = context

        def fits() -> bool:
            return rendered_tokens(current, predictor) <= max_tokens

        def drop_items() -> None:
            nonlocal current
            for it in items:
                if fits():
                    return
                why = ("longest item" if "largest" in order else
                       f"lowest net helpful ({it.helpful - it.harmful}), oldest (step {it.created_step})")
                edit = DeleteItem(predictor, it.id, rationale=f"compress to {max_tokens} tokens: {why}")
                current = current.apply_edits([edit])
                edits.append(edit)

        def drop_demos() -> None:
            nonlocal current
            left = list(demos)
            while left and not fits():
                counts: dict[str, int] = {}
                for d in current.predictor(predictor).demos:
                    counts[d.scope] = counts.get(d.scope, 0) + 1
                d = max(left, key=lambda d: (counts.get(d.scope, 0) > 1, counts.get(d.scope, 0),
                                             len(str(d.inputs)) + len(str(d.outputs)), d.id))
                left.remove(d)
                edit = RemoveDemo(predictor, d.id, rationale=f"compress to {max_tokens} tokens: thin the demos of "
                                  f"scope {d.scope}")
                current = current.apply_edits([edit])
                edits.append(edit)

        for part in order:
            (drop_demos if part == "demos" else drop_items)()
        if not edits or not fits():
            return None
        n_items = sum(isinstance(e, DeleteItem) for e in edits)
        n_demos = len(edits) - n_items
        rationale = (f"compress {predictor} to {max_tokens} tokens ({rendered_tokens(context, predictor)} → "
                     f"{rendered_tokens(current, predictor)}): drop {n_items} item(s) and {n_demos} demo(s), "
                     f"{'longest items' if order[0] == 'largest' else order[0]} first")
        ids = tuple(getattr(e, "item_id", None) or getattr(e, "demo_id", "") for e in edits)
        return Consolidation(self.kind, predictor, tuple(edits), rationale, ids)
