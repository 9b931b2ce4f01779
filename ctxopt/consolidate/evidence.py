"""Evidence on items: crediting the gate's paired outcomes to helpful/harmful, and ranking items by it.

Every :class:`~ctxopt.context.Item` carries ``helpful`` and ``harmful``
counters. :func:`credit` fills them from what the gate measured when the
proposal that added or changed an item was accepted, and :func:`evidence` is
the order consolidation uses whenever it keeps one of two items (a
contradiction, a duplicate, a paraphrase): net helpful first, then recency.

**The counting rule.** For one accepted proposal, every paired example the
gate scored (the current task and each replay task) counts once: ``helpful``
grows by the number of examples whose score rose (``after > before``) and
``harmful`` by the number whose score fell. With pass/fail scores (0 or 1)
these are the fail → pass and pass → fail examples. Every item the proposal
added or changed gets the same increments: the gate measured the proposal,
not its items one by one.

Example:
    >>> from ctxopt.context import LearnedContext, PredictorContext
    >>> from ctxopt.edits import AddItem
    >>> from ctxopt.gate import PairedScores
    >>> before = LearnedContext({"qa": PredictorContext("Answer.")})
    >>> after = before.apply_edits([AddItem("qa", "Answer with one word.")], step=1)
    >>> outcome = [PairedScores("t1", {"a": 0.0, "b": 1.0, "c": 0.0}, {"a": 1.0, "b": 1.0, "c": 1.0})]
    >>> [(it.helpful, it.harmful) for it in credit(after, changed_item_ids(before, after), outcome).items("qa")]
    [(2, 0)]
"""

from __future__ import annotations

from collections.abc import Iterable

from ctxopt.context import Item, LearnedContext
from ctxopt.edits import CountItem
from ctxopt.gate import PairedScores

__all__ = ["changed_item_ids", "count_changes", "credit", "evidence"]


def evidence(item: Item) -> tuple[int, int, int]:
    """How well supported ``item`` is, as a sort key: net helpful (helpful − harmful), then updated, then created step.

    Example:
        >>> old = Item("r-00000001", "Use digits.", created_step=1, updated_step=1, helpful=3)
        >>> new = Item("r-00000002", "Use words.", created_step=4, updated_step=4)
        >>> max((old, new), key=evidence).id
        'r-00000001'
    """
    return (item.helpful - item.harmful, item.updated_step, item.created_step)


def changed_item_ids(before: LearnedContext, after: LearnedContext) -> tuple[str, ...]:
    """Ids of the items of ``after`` that ``before`` lacks or holds with another text, scope or kind.

    These are the items a proposal added, updated or merged into, in the order of ``after``.

    Example:
        >>> from ctxopt.context import PredictorContext
        >>> from ctxopt.edits import AddItem
        >>> c0 = LearnedContext({"qa": PredictorContext("Answer.")}).apply_edits([AddItem("qa", "Be brief.")])
        >>> c1 = c0.apply_edits([AddItem("qa", "Cite a source.")])
        >>> [c1.predictor("qa").item(i).text for i in changed_item_ids(c0, c1)]
        ['Cite a source.']
    """
    out: list[str] = []
    for name, pc in after.predictors.items():
        old = {it.id: (it.text, it.scope, it.kind) for it in before.predictors[name].items} \
            if name in before.predictors else {}
        out += [it.id for it in pc.items if old.get(it.id) != (it.text, it.scope, it.kind)]
    return tuple(out)


def count_changes(outcome: Iterable[PairedScores]) -> tuple[int, int]:
    """``(rose, fell)``: how many paired examples of ``outcome`` scored higher, and lower, after than before.

    Example:
        >>> count_changes([PairedScores("t", {"a": 0.0, "b": 1.0, "c": 0.5}, {"a": 1.0, "b": 0.0, "c": 0.5})])
        (1, 1)
    """
    rose = fell = 0
    for scores in outcome:
        for example, before in scores.before.items():
            after = scores.after[example]
            rose += after > before
            fell += after < before
    return rose, fell


def credit(context: LearnedContext, item_ids: Iterable[str], outcome: Iterable[PairedScores]) -> LearnedContext:
    """``context`` with the gate's paired ``outcome`` added to the counters of ``item_ids`` (see the module docstring).

    Args:
        context: The accepted context (the one that holds the items).
        item_ids: The items the accepted proposal added or changed (:func:`changed_item_ids`); ids
            ``context`` does not hold are ignored.
        outcome: The gate's paired scores of that proposal: the current task's and every replay task's.

    Returns:
        A new context with :class:`~ctxopt.edits.CountItem` edits applied (no step is recorded: counting
        is not an update), or ``context`` itself when no example changed or no item is held.
    """
    helpful, harmful = count_changes(outcome)
    ids = set(item_ids)
    if not ids or not (helpful or harmful):
        return context
    edits = [CountItem(name, it.id, helpful=helpful, harmful=harmful, rationale="paired gate outcome")
             for name, pc in context.predictors.items() for it in pc.items if it.id in ids]
    return context.apply_edits(edits) if edits else context
