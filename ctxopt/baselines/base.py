"""The seam every comparison method implements, and what the harness hands it.

A method is a small object with a ``name`` and one method,
``learn(program, context, tasks, ctx) -> Outcome``. The harness
(:mod:`ctxopt.compare`) owns everything else — the loop over tasks, the store,
LM-usage accounting and the test-row measurement — so methods differ only in
how they update the learned context C.

``tasks`` holds what the method may learn from at this step, oldest first: the
tasks met so far, the newly arrived one last (a joint method gets every task of
the stream once). A :class:`~ctxopt.tasks.Task` exposes train and val only;
its test split is sealed, so a method cannot reach test data.

Example:
    >>> from ctxopt.context import LearnedContext, PredictorContext
    >>> class Keep:
    ...     name, joint = "keep", False
    ...     def learn(self, program, context, tasks, ctx):
    ...         return Outcome(context, note="kept C")
    >>> Keep().learn(None, LearnedContext({"p": PredictorContext("Do it.")}), (), None).note
    'kept C'
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ctxopt.context import GLOBAL, LearnedContext

if TYPE_CHECKING:  # pragma: no cover
    import dspy

    from ctxopt.budget import Budget
    from ctxopt.evaluator import Evaluator
    from ctxopt.store import Store
    from ctxopt.tasks import Task

__all__ = ["DEFAULT_CONTEXT_TOKENS", "LearnContext", "Method", "Outcome", "sample"]

DEFAULT_CONTEXT_TOKENS = 1500
"""Context budget (tokens of the rendered C) of ``append``/``summarize`` when the Budget sets none."""


@dataclass(frozen=True)
class Outcome:
    """What one learning step produced.

    Attributes:
        context: The learned context after the step (the input context if nothing changed).
        note: One line on what happened, stored in the commit message and step record.
        accepted: Whether the method took a proposed change (None where that is meaningless).
        extra: JSON-able figures (budget plan, counts, an error message…).

    Example:
        >>> from ctxopt.context import LearnedContext
        >>> Outcome(LearnedContext({}), "no learning").accepted is None
        True
    """

    context: LearnedContext
    note: str = ""
    accepted: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LearnContext:
    """Everything the harness lends a method for one step.

    Attributes:
        task_lm: The LM that runs the program (all methods share it).
        reflection_lm: The LM that reflects, summarizes or proposes instructions.
        budget: The run's budget preset.
        task_calls: Program calls on one example (per predictor) this step may spend
            on learning: ``budget.task_calls_per_task``, times the number of tasks
            for a joint method.
        reflection_calls: Reflection-LM calls this step may spend, where the method's API can cap them.
        max_context_tokens: Size limit of the rendered context for methods that grow it by appending.
        seed: The run's seed.
        step: 1-based index of the task being learned.
        scenario: ``task-aware`` or ``task-agnostic``.
        evaluator: The shared cached evaluator (train/val only; test rows are the harness's job).
        store: The method's own store (a method may commit to it itself; the harness then does not).
        work_dir: The method's folder in the run directory, for its own files.
        num_threads: Threads for evaluation.
        emit: Progress callback ``emit(kind, **data)``.
    """

    task_lm: Any
    reflection_lm: Any
    budget: Budget
    task_calls: int
    reflection_calls: int
    max_context_tokens: int
    seed: int
    step: int
    scenario: str
    evaluator: Evaluator
    store: Store
    work_dir: Path
    num_threads: int = 2
    emit: Callable[..., None] = lambda kind, **data: None

    @property
    def aware(self) -> bool:
        return self.scenario == "task-aware"

    def scope(self, task: Task) -> str:
        """Item/demo scope for ``task``: its family (the name without ``@k``) in a task-aware stream, else global."""
        return task.family if self.aware else GLOBAL


@runtime_checkable
class Method(Protocol):
    """How a comparison method updates the learned context C.

    ``joint`` methods are not continual: the harness calls them once, at the
    first step, with every task of the stream and the whole stream's budget, and
    keeps their context for the remaining steps.
    """

    name: str
    joint: bool

    def learn(self, program: dspy.Module, context: LearnedContext, tasks: Sequence[Task],
              ctx: LearnContext) -> Outcome: ...


def sample(examples: Sequence[Any], n: int, *salt: Any) -> list[Any]:
    """A seeded, order-independent sample of ``n`` examples (the optimizer's convention).

    Example:
        >>> sample(["a", "b", "c"], 2, 0, "t") == sample(["c", "b", "a"], 2, 0, "t")
        True
    """
    from ctxopt.tasks import example_id

    pool = sorted(examples, key=lambda e: example_id(e) if not isinstance(e, str) else e)
    random.Random(":".join(map(str, salt))).shuffle(pool)
    return pool[: max(0, n)]
