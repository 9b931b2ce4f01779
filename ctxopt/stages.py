"""The typed values that flow between the stages of one learning step.

A step of :class:`~ctxopt.optimizer.ContinualOptimizer` is a pipeline; each
stage takes the values of the stages before it and returns its own:

=============  ======================  =====================================================
stage          returns                 what it does
=============  ======================  =====================================================
setup          :class:`StepSetup`      fixes what the step reads: the task, the current C,
                                       the earlier tasks, the scope and target predictor
observe        :class:`Observed`       scores C on a train minibatch (failures + feedback)
propose        :class:`Proposed`       asks every proposer for edits; drops duplicates
search         :class:`Searched`       picks the best combination (:class:`SearchObjective`)
gate           :class:`Gated`          full val of the task + replay of earlier tasks
make room      :class:`Gated`          an accepted C over ``max_context_tokens`` is
                                       consolidated and must pass the same gate again
commit         (the store version)     accepted: the new C; rolled back: an empty commit
=============  ======================  =====================================================

Every stage charges the run's :class:`~ctxopt.budget.Ledger` before it
evaluates, under its own source name (``observe``, ``search``, ``gate``,
``consolidation``, ``proposer:<Name>``), so a step's spending reads per stage
in ``charged_by_source``.

Example:
    >>> Gated.rolled_back(None, "no usable proposals").accepted
    False
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ctxopt.budget import Charge
from ctxopt.context import LearnedContext
from ctxopt.gate import Decision
from ctxopt.proposer import Observation, Proposal
from ctxopt.selector import ContextSelector, ScopeSelector, retrieves

if TYPE_CHECKING:  # pragma: no cover
    import dspy

    from ctxopt.consolidate import PassResult
    from ctxopt.tasks import Task

__all__ = ["Gated", "Observed", "Proposed", "SearchObjective", "Searched", "StepSetup"]


@dataclass(frozen=True)
class StepSetup:
    """What one step reads, fixed before it starts.

    Attributes:
        step: The 1-based stream step.
        task: The newly arrived task (train and val only).
        base: The current context C.
        earlier: The tasks met before, oldest first (their val is the replay set).
        scenario: ``task-aware`` or ``task-agnostic``.
        scope: Where new items go: the task's name (task-aware) or global.
        predictor: The predictor that produces the task's output.
        n_pred: Predictors per program call (each example costs this many calls).
    """

    step: int
    task: Task
    base: LearnedContext
    earlier: tuple[Task, ...]
    scenario: str
    scope: str
    predictor: str
    n_pred: int
    selector: ContextSelector = field(default_factory=ScopeSelector)

    def label(self, task: Task) -> str | None:
        """The task label the program and the selector get for ``task``'s inputs (None: task-agnostic)."""
        return task.family if self.scenario == "task-aware" else None

    def shows(self, ctx: LearnedContext, task: Task, examples: Sequence[dspy.Example]) -> tuple[str, ...]:
        """What the program sees for ``examples`` of ``task`` under ``ctx``: equal values make equal prompts.

        With the scope selector every input of a task sees the same view; a retrieving selector is
        asked per input.
        """
        label = self.label(task)
        if not retrieves(self.selector):
            return (ctx.view(label),)
        return tuple(self.selector.select(ctx, label, dict(ex.inputs().items())).view(label) for ex in examples)

    def differs(self, before: LearnedContext, after: LearnedContext, task: Task,
                examples: Sequence[dspy.Example]) -> bool:
        """Whether some of ``examples`` would see another prompt under ``after`` than under ``before``."""
        return self.shows(before, task, examples) != self.shows(after, task, examples)


@dataclass(frozen=True)
class Observed:
    """C on a train minibatch: the score and every example's outcome."""

    score: float
    observations: tuple[Observation, ...]


@dataclass(frozen=True)
class Proposed:
    """The proposals left after dropping duplicates, and what was dropped (with reasons)."""

    proposals: tuple[Proposal, ...]
    dropped: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Searched:
    """The search's best candidate and the proposals it combines (``best is base`` when none beat C)."""

    best: LearnedContext
    proposals: tuple[Proposal, ...]
    stopped_by_budget: bool = False


@dataclass(frozen=True)
class Gated:
    """The step's verdict: the context it ends with, whether that is a change, and why.

    ``decision`` is None when there was nothing to gate; ``room`` is the consolidation pass
    of the make-room stage, if it ran. ``gate_outcome`` is the gate's first outcome (``accepted``,
    ``rejected`` or ``undecided``, before any growth; None when the gate did not run), ``gate_rounds``
    how many times an undecided gate grew replay samples, and ``replay_sizes`` the grown sample sizes
    by task (tasks not named keep the budget's ``gate_replay_per_task``).
    """

    accepted: bool
    context: LearnedContext | None
    reason: str
    proposals: tuple[Proposal, ...] = ()
    decision: Decision | None = None
    room: PassResult | None = None
    gate_outcome: str | None = None
    gate_rounds: int = 0
    replay_sizes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def rolled_back(cls, base: LearnedContext | None, reason: str, proposals: Sequence[Proposal] = (),
                    decision: Decision | None = None, room: PassResult | None = None) -> Gated:
        return cls(False, base, reason, tuple(proposals), decision, room)


@dataclass
class SearchObjective:
    """The search's score for a candidate, charged to the budget as it goes.

    The score is the mean on the current task's val minibatch minus twice the
    drop on the replay sample of each earlier task whose view the candidate
    changes. Each distinct context is charged once, for what it adds: its val
    minibatch, its changed tasks' replay samples, and the first time a task is
    replayed, the current context on that sample. Contexts an earlier (killed)
    process scored are charged through :meth:`resumed`, so a resumed search
    costs what a fresh one does. Once the next context would eat into the
    calls ``charge`` keeps for the gate, the objective returns None and the
    search stops.

    Args:
        setup: The step.
        evaluate: ``evaluate(ctx, task, examples) -> mean score`` (cached by the evaluator).
        val: The current task's val minibatch.
        replay: The replay sample of every earlier task, by name.
        charge: The ledger's ``search`` handle, keeping the gate's reserve.
    """

    setup: StepSetup
    evaluate: Callable[[LearnedContext, Task, Sequence[dspy.Example]], float]
    val: list[dspy.Example]
    replay: dict[str, list[dspy.Example]]
    charge: Charge
    scored: dict[str, LearnedContext] = field(default_factory=dict)
    replayed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._tasks = {t.name: t for t in self.setup.earlier}
        self._changed: dict[str, list[str]] = {}

    def changed(self, ctx: LearnedContext) -> list[str]:
        """The earlier tasks for whose replay sample ``ctx`` changes what the program sees."""
        if ctx.hash not in self._changed:
            self._changed[ctx.hash] = [n for n in self.replay
                                       if self.setup.differs(self.setup.base, ctx, self._tasks[n], self.replay[n])]
        return self._changed[ctx.hash]

    def cost(self, ctx: LearnedContext) -> int:
        """Calls that scoring ``ctx`` adds to what was scored already (0 if it was)."""
        if ctx.hash in self.scored:
            return 0
        changed = self.changed(ctx)
        new = [n for n in changed if n not in self.replayed]
        return self.setup.n_pred * (len(self.val) + sum(len(self.replay[n]) for n in changed)
                                    + sum(len(self.replay[n]) for n in new))

    def least(self) -> int:
        """The calls below which no search is worth starting: one val minibatch and every replay sample."""
        return self.setup.n_pred * (len(self.val) + sum(len(v) for v in self.replay.values()))

    def admit(self, ctx: LearnedContext) -> bool:
        """Charge ``ctx``'s cost and record it as scored; False (nothing charged) if the budget refuses."""
        if ctx.hash in self.scored:
            return True
        n = self.cost(ctx)
        if n and not self.charge(n, "task"):
            return False
        self.scored[ctx.hash] = ctx
        self.replayed.update(self.changed(ctx))
        return True

    def share(self, parts: int) -> SearchObjective:
        """This objective for one of ``parts`` search workers: it may charge ``1/parts`` of what is left."""
        share = getattr(self.charge, "share", None)
        return replace(self, charge=share(parts) if share else self.charge, scored=dict(self.scored),
                       replayed=set(self.replayed))

    def resumed(self, ctx: LearnedContext) -> None:
        """A context an earlier process scored for this search: charge it as if scored now."""
        self.admit(ctx)

    def replay_mean(self, ctx: LearnedContext, name: str) -> float:
        return self.evaluate(ctx, self._tasks[name], self.replay[name])

    def __call__(self, ctx: LearnedContext) -> float | None:
        if not self.admit(ctx):
            return None
        cur = self.evaluate(ctx, self.setup.task, self.val)
        penalty = sum(max(0.0, self.replay_mean(self.setup.base, n) - self.replay_mean(ctx, n))
                      for n in self.changed(ctx))
        return cur - 2.0 * penalty
