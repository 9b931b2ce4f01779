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
    by task (tasks not named keep the budget's ``gate_replay_per_task``). ``val_after`` is the current
    task's score on its full val with the context the step ends with (None when the gate did not run).
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
    val_after: float | None = None

    @classmethod
    def rolled_back(cls, base: LearnedContext | None, reason: str, proposals: Sequence[Proposal] = (),
                    decision: Decision | None = None, room: PassResult | None = None) -> Gated:
        return cls(False, base, reason, tuple(proposals), decision, room)


@dataclass
class SearchObjective:
    """The search's score for a candidate, charged to the budget as it goes.

    The score is the mean on the current task's val minibatch minus twice the
    drop on the replay sample of each earlier task whose view the candidate
    changes.

    **Hopeless candidates stop early.** A candidate is first scored on the head
    of the val minibatch (its first half). If even a perfect tail and no replay
    drop could not reach the best score seen so far, its score is that upper bound
    and nothing more is evaluated: it cannot be the best, and parsimony (which keeps
    a smaller candidate only at a score at least the best's) could not keep it
    either, so no decision changes. Only what TPE learns from it differs: the
    bound instead of the exact score.

    **Charging.** Each distinct context is charged once, for what it adds: the
    head, then, unless it stops there, the tail, its changed tasks' replay samples
    and, the first time a task is replayed, the current context on that sample.
    Contexts an earlier (killed) process scored are charged through
    :meth:`resumed`, which scores them again from the evaluator's cache in the
    order the search met them, so it takes the same early stops and charges what
    a fresh search does. Once the next charge would eat into the calls ``charge``
    keeps for the gate, the objective returns None and the search stops.

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
    values: dict[str, float] = field(default_factory=dict)  # context hash -> its score (an upper bound if cut)
    charged: dict[str, str] = field(default_factory=dict)  # context hash -> "head" or "all"
    replayed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._tasks = {t.name: t for t in self.setup.earlier}
        self._changed: dict[str, list[str]] = {}

    @property
    def head(self) -> list[dspy.Example]:
        """The first half of the val minibatch (all of it when it has fewer than 2 examples)."""
        return self.val[: (len(self.val) + 1) // 2] if len(self.val) >= 2 else list(self.val)

    @property
    def cut(self) -> set[str]:
        """Contexts whose scoring stopped after the head."""
        return {h for h, phase in self.charged.items() if phase == "head" and h in self.values}

    def changed(self, ctx: LearnedContext) -> list[str]:
        """The earlier tasks for whose replay sample ``ctx`` changes what the program sees."""
        if ctx.hash not in self._changed:
            self._changed[ctx.hash] = [n for n in self.replay
                                       if self.setup.differs(self.setup.base, ctx, self._tasks[n], self.replay[n])]
        return self._changed[ctx.hash]

    def cost(self, ctx: LearnedContext) -> int:
        """Calls that scoring ``ctx`` in full adds to what was charged already (0 if it was)."""
        if self.charged.get(ctx.hash) == "all":
            return 0
        head = len(self.head) if ctx.hash not in self.charged else 0
        return self.setup.n_pred * head + self._rest(ctx)

    def _rest(self, ctx: LearnedContext) -> int:
        changed = self.changed(ctx)
        new = [n for n in changed if n not in self.replayed]
        return self.setup.n_pred * (len(self.val) - len(self.head) + sum(len(self.replay[n]) for n in changed)
                                    + sum(len(self.replay[n]) for n in new))

    def least(self) -> int:
        """The calls below which no search is worth starting: one val minibatch and every replay sample."""
        return self.setup.n_pred * (len(self.val) + sum(len(v) for v in self.replay.values()))

    def _admit(self, ctx: LearnedContext, phase: str) -> bool:
        """Charge ``ctx`` up to ``phase`` ("head" or "all"); False (nothing charged) if the budget refuses."""
        have = self.charged.get(ctx.hash)
        if have == "all" or have == phase:
            return True
        n = self.setup.n_pred * len(self.head) if phase == "head" else self.cost(ctx)
        if n and not self.charge(n, "task"):
            return False
        self.charged[ctx.hash] = phase
        if phase == "all":
            self.replayed.update(self.changed(ctx))
        return True

    def share(self, parts: int) -> SearchObjective:
        """This objective for one of ``parts`` search workers: it may charge ``1/parts`` of what is left."""
        share = getattr(self.charge, "share", None)
        return replace(self, charge=share(parts) if share else self.charge, values=dict(self.values),
                       charged=dict(self.charged), replayed=set(self.replayed))

    def resumed(self, ctx: LearnedContext) -> None:
        """A context an earlier process scored for this search: score and charge it as then (evaluations cached)."""
        self(ctx)

    def replay_mean(self, ctx: LearnedContext, name: str) -> float:
        return self.evaluate(ctx, self._tasks[name], self.replay[name])

    def __call__(self, ctx: LearnedContext) -> float | None:
        if ctx.hash in self.values:
            return self.values[ctx.hash]
        task, head = self.setup.task, self.head
        tail = len(self.val) - len(head)
        if self.values and tail:
            if not self._admit(ctx, "head"):
                return None
            bound = (self.evaluate(ctx, task, head) * len(head) + tail) / len(self.val)
            if bound < max(self.values.values()):
                self.values[ctx.hash] = bound
                return bound
        if not self._admit(ctx, "all"):
            return None
        cur = self.evaluate(ctx, task, self.val)
        penalty = sum(max(0.0, self.replay_mean(self.setup.base, n) - self.replay_mean(ctx, n))
                      for n in self.changed(ctx))
        self.values[ctx.hash] = cur - 2.0 * penalty
        return self.values[ctx.hash]
