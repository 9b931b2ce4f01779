"""Which part of the learned context C the model sees for one input.

A :class:`ContextSelector` is the seam between a learned context and a single
program call: given C, the task label (``None`` in a task-agnostic stream) and
the example's inputs, it returns the context to render for that input, a
:class:`~ctxopt.context.LearnedContext` holding only the chosen items and
demos. The evaluator applies the selection per example, and caches each result
under what was rendered (:mod:`ctxopt.evaluator`), so a selector that picks
different demos for different inputs is cached and charged correctly.

:class:`ScopeSelector`, the default, renders everything in scope: the context
as it is (rendering keeps the global items and, in a task-aware stream, those of
the input's task). :class:`ctxopt.retrieval.RetrievalSelector` shows the pinned
items and retrieves the rest per input.

Example:
    >>> from ctxopt.context import Item, LearnedContext, PredictorContext
    >>> ctx = LearnedContext({"p": PredictorContext("Answer.", items=(Item(id="r-1", text="Be brief."),))})
    >>> ScopeSelector().select(ctx, None, {"input": "hi"}) is ctx
    True
    >>> only_demos = KeepItems(lambda item, inputs: False)
    >>> only_demos.select(ctx, None, {"input": "hi"}).items("p")
    ()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

from ctxopt.context import Item, LearnedContext

__all__ = ["ContextSelector", "KeepItems", "ScopeSelector", "default_selector", "retrieves"]


@runtime_checkable
class ContextSelector(Protocol):
    """Chooses, per input, what of C is rendered for the program."""

    def select(self, context: LearnedContext, task: str | None, inputs: Mapping[str, Any]) -> LearnedContext:
        """The context to render for one input (a subset of ``context``'s items and demos)."""
        ...


class ScopeSelector:
    """Everything in scope: the context unchanged (the default)."""

    def select(self, context: LearnedContext, task: str | None, inputs: Mapping[str, Any]) -> LearnedContext:
        return context


class KeepItems:
    """Keep the items for which ``keep(item, inputs)`` is true; demos and instructions are unchanged.

    Args:
        keep: Decides per item and input; must be deterministic.
    """

    def __init__(self, keep: Callable[[Item, Mapping[str, Any]], bool]) -> None:
        self.keep = keep

    def select(self, context: LearnedContext, task: str | None, inputs: Mapping[str, Any]) -> LearnedContext:
        out = context
        for name, pc in context.predictors.items():
            items = tuple(it for it in pc.items if self.keep(it, inputs))
            if items != pc.items:
                out = out.with_predictor(name, replace(pc, items=items))
        return out


def default_selector(scenario: str, similarity: Any = "auto") -> ContextSelector:
    """The selector a scenario gets unless one is given.

    A task-aware stream renders everything in the input's task scope
    (:class:`ScopeSelector`). A task-agnostic stream has one memory for every
    input, so each input sees its core memory and what it retrieves
    (:class:`~ctxopt.retrieval.RetrievalSelector` on ``similarity``).

    Example:
        >>> type(default_selector("task-aware")).__name__, type(default_selector("task-agnostic")).__name__
        ('ScopeSelector', 'RetrievalSelector')
    """
    if scenario == "task-aware":
        return ScopeSelector()
    from ctxopt.retrieval import RetrievalSelector

    return RetrievalSelector(similarity)


def retrieves(selector: ContextSelector) -> bool:
    """Whether ``selector`` may show different parts of C to different inputs of one task scope."""
    return not isinstance(selector, ScopeSelector)
