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
gate           :class:`Gated`          held-out val of the task + replay of earlier tasks
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

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ctxopt.budget import Charge
from ctxopt.context import LearnedContext, canonical_json
from ctxopt.gate import Decision
from ctxopt.proposer import Observation, Proposal
from ctxopt.selector import ContextSelector, ScopeSelector, retrieves
from ctxopt.tasks import example_id

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
        fresh: The task's train examples that no proposer of the step was shown, in a seeded order (set once the
            step has proposed): where the gate's sample of the current task grows when its gain test is close.
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
    fresh: tuple[dspy.Example, ...] = ()

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

    def keys(self, ctx: LearnedContext, task: Task, examples: Sequence[dspy.Example]) -> list[str]:
        """One key per example for the prompt ``ctx`` gives it: equal keys are one model call in a cold run
        (the evaluator caches by the example and what the program sees), so a run charges each key once."""
        views = self.shows(ctx, task, examples)
        views = views if len(views) == len(examples) else views * len(examples)
        return [hashlib.sha256(canonical_json([task.name, example_id(ex), v]).encode()).hexdigest()[:24]
                for ex, v in zip(examples, views, strict=True)]

    def differs(self, before: LearnedContext, after: LearnedContext, task: Task,
                examples: Sequence[dspy.Example]) -> bool:
        """Whether some of ``examples`` would see another prompt under ``after`` than under ``before``."""
        return self.shows(before, task, examples) != self.shows(after, task, examples)

    def differing(self, before: LearnedContext, after: LearnedContext, task: Task,
                  examples: Sequence[dspy.Example]) -> list[dspy.Example]:
        """The ``examples`` that would see another prompt under ``after`` than under ``before``, in order."""
        b, a = self.shows(before, task, examples), self.shows(after, task, examples)
        if len(b) != len(examples):  # one view for every input of the task
            return list(examples) if b != a else []
        return [ex for ex, x, y in zip(examples, b, a, strict=True) if x != y]


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
    task's score on the gate's val examples (those the search did not score; never the train examples a
    close gain test grew into) with the context the step ends with (None when the gate did not run).
    ``fallback`` names what the gate's one fallback after a harm rejection changed (empty if none ran);
    it landed iff the step is accepted with a first outcome other than ``accepted``.
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
    fallback: tuple[str, ...] = ()  # the gate's fallback after harm: what it swapped ("a → b") or left out

    @classmethod
    def rolled_back(cls, base: LearnedContext | None, reason: str, proposals: Sequence[Proposal] = (),
                    decision: Decision | None = None, room: PassResult | None = None) -> Gated:
        return cls(False, base, reason, tuple(proposals), decision, room)


PHASES = ("head", "val", "all")  # how far the search has scored (and charged) a context: val's head, val, replay


def unpaid(keys: Iterable[str], paid: set[str]) -> list[str]:
    """The prompt keys among ``keys`` (once each, in order) that no charge of the run paid for yet."""
    return [k for k in dict.fromkeys(keys) if k not in paid]


@dataclass
class SearchObjective:
    """The search's score for a candidate, charged to the budget as it goes.

    The score is the mean on the current task's val minibatch minus twice the
    estimated drop of each earlier task whose view the candidate changes. A
    candidate whose estimated drop on one earlier task exceeds ``max_drop`` (the
    gate's per-task tolerance) is one the gate would turn away: it scores below
    every candidate within it, so the search does not trade an earlier task for
    the current one and then lose the whole step at the gate (ii-8 task-agnostic,
    stop 30: sentiment's pinned "Answer with a single word only" scored best at
    first_word_letter's expense, and the gate rejected the step).

    **Replay where the prompt changes, and where there is something to lose.**
    Each earlier task has a replay *pool*; a candidate is replayed on the first
    ``replay_k`` pool examples whose prompt it changes (with a retrieving
    selector, often a few inputs, not the task's all) and that the current
    context scores above 0. The others cannot drop: an unchanged prompt scores
    as before, and a score of 0 cannot fall. So the task's drop is estimated as
    the mean drop on the replayed examples times their share of the pool. Gains
    on inputs the current context gets wrong are not counted, so the estimate
    is at least the drop a full replay would show (the gate, which replays all,
    counts them). A candidate whose demos leak to 3 of 10 earlier inputs is
    replayed on those 3, where a fixed sample of 3 would often miss every one
    of them; on an earlier task the current context answers 0.2 of, a
    candidate that reaches all 10 inputs is replayed on about 2.

    **Hopeless candidates stop early.** A candidate is first scored on the head
    of the val minibatch (its first half). If even a perfect tail and no replay
    drop could not reach the best score seen so far, its score is that upper bound
    and nothing more is evaluated: it cannot be the best, and parsimony (which keeps
    a smaller candidate only at a score at least the best's) could not keep it
    either, so no decision changes. Only what TPE learns from it differs: the
    bound instead of the exact score. The same holds after the tail: replay only
    lowers a score (a drop counts, a gain does not), so a candidate whose val
    mean is below the best is not replayed, and its val mean is its bound. On a
    long task-agnostic stream that is most of the search's cost: a candidate
    whose items reach every earlier input replays every pool (ii-8 at step 8:
    2 × 70 calls against 30 for val), and most candidates lose on val.

    **Charging.** A context is charged in turn for the head, then, unless it
    stops there, the tail, then, unless it stops there, the current context on
    the pool examples whose prompt it changes (their scores pick the examples to
    replay) and itself on those it is replayed on. Each charge counts only the
    prompts not paid for yet in this run (``paid``, keys from
    :meth:`StepSetup.keys`, shared with the optimizer's gate and kept across
    steps): a cold run computes each prompt once, so two contexts that show an
    example the same prompt, or the current context replayed on a pool it was
    replayed on at an earlier step, cost one call, not two.
    Contexts an earlier (killed) process scored are charged through
    :meth:`resumed`, which scores them again from the evaluator's cache in the
    order the search met them, so it takes the same early stops and charges what
    a fresh search does. Once the next charge would eat into the calls ``charge``
    keeps for the gate, the objective returns None and the search stops.

    Args:
        setup: The step.
        evaluate: ``evaluate(ctx, task, examples) -> mean score`` (cached by the evaluator).
        val: The current task's val minibatch.
        replay: The replay pool of every earlier task, by name.
        charge: The ledger's ``search`` handle, keeping the gate's reserve.
        replay_k: How many changed pool examples a candidate is replayed on (default: the whole pool).
        max_drop: The largest estimated drop of one earlier task a feasible candidate may have (None: no limit).
    """

    setup: StepSetup
    evaluate: Callable[[LearnedContext, Task, Sequence[dspy.Example]], float]
    val: list[dspy.Example]
    replay: dict[str, list[dspy.Example]]
    charge: Charge
    replay_k: int | None = None
    max_drop: float | None = None
    values: dict[str, float] = field(default_factory=dict)  # context hash -> its score (an upper bound if cut)
    charged: dict[str, str] = field(default_factory=dict)  # context hash -> "head", "val" or "all"
    paid: set[str] = field(default_factory=set)  # prompt keys charged in this run (the optimizer's set)

    def __post_init__(self) -> None:
        self._tasks = {t.name: t for t in self.setup.earlier}
        self._targets: dict[str, dict[str, list[dspy.Example]]] = {}
        self._base: dict[tuple[str, str], float] = {}  # (earlier task, example id) -> the current C's score

    @property
    def head(self) -> list[dspy.Example]:
        """The first half of the val minibatch (all of it when it has fewer than 2 examples)."""
        return self.val[: (len(self.val) + 1) // 2] if len(self.val) >= 2 else list(self.val)

    @property
    def cut(self) -> set[str]:
        """Contexts whose scoring stopped after the head or after val (not replayed)."""
        return {h for h, phase in self.charged.items() if phase != "all" and h in self.values}

    def targets(self, ctx: LearnedContext) -> dict[str, list[dspy.Example]]:
        """For each earlier task whose pool ``ctx`` changes: the pool examples whose prompt it changes, in order."""
        if ctx.hash not in self._targets:
            out = {}
            for n, pool in self.replay.items():
                diff = self.setup.differing(self.setup.base, ctx, self._tasks[n], pool)
                if diff:
                    out[n] = diff
            self._targets[ctx.hash] = out
        return self._targets[ctx.hash]

    def changed(self, ctx: LearnedContext) -> list[str]:
        """The earlier tasks for some of whose replay pool ``ctx`` changes what the program sees."""
        return list(self.targets(ctx))

    def replayed(self, ctx: LearnedContext, name: str) -> tuple[list[dspy.Example], int]:
        """Earlier task ``name``'s examples ``ctx`` is replayed on (the first ``replay_k`` of those whose
        prompt it changes and the current context scores above 0), and how many such the pool has.
        Scores the current context on the changed examples: charge them first."""
        task, base, changed = self._tasks[name], self.setup.base, self.targets(ctx)[name]
        if any((name, example_id(ex)) not in self._base for ex in changed):
            self.evaluate(base, task, changed)  # one batch; the per-example scores below come from the cache
            self._base.update({(name, example_id(ex)): self.evaluate(base, task, [ex]) for ex in changed})
        right = [ex for ex in changed if self._base[name, example_id(ex)] > 0]
        return (right[: self.replay_k] if self.replay_k is not None else right), len(right)

    def _charges(self, ctx: LearnedContext, parts: Sequence[str]) -> Iterator[list[str]]:
        """The prompt keys scoring ``ctx``'s ``parts`` needs, in the charges that pay for them: one for all that
        is known before anything runs, then (with replay) one for the examples the current context's scores
        pick."""
        task, base, targets = self.setup.task, self.setup.base, self.targets(ctx) if "all" in parts else {}
        known = []
        for part in parts:
            if part == "head":
                known += self.setup.keys(ctx, task, self.head)
            elif part == "val":
                known += self.setup.keys(ctx, task, self.val[len(self.head):])
        yield known + [k for n, exs in targets.items() for k in self.setup.keys(base, self._tasks[n], exs)]
        if targets:
            yield [k for n in targets for k in self.setup.keys(ctx, self._tasks[n], self.replayed(ctx, n)[0])]

    def least(self) -> int:
        """The calls below which no search is worth starting: one val minibatch and every replay sample."""
        per = [len(v) if self.replay_k is None else min(self.replay_k, len(v)) for v in self.replay.values()]
        return self.setup.n_pred * (len(self.val) + sum(per))

    def _admit(self, ctx: LearnedContext, phase: str) -> bool:
        """Charge ``ctx`` up to ``phase`` (one of :data:`PHASES`), each prompt not paid for yet in this run;
        False if the budget refuses (what was charged before the refusal stays charged)."""
        have = self.charged.get(ctx.hash)
        start = PHASES.index(have) + 1 if have is not None else 0
        for keys in self._charges(ctx, PHASES[start:PHASES.index(phase) + 1]):
            keys = unpaid(keys, self.paid)
            if keys and not self.charge(self.setup.n_pred * len(keys), "task"):
                return False
            self.paid.update(keys)
        self.charged[ctx.hash] = phase
        return True

    def share(self, parts: int) -> SearchObjective:
        """This objective for one of ``parts`` search workers: it may charge ``1/parts`` of what is left."""
        share = getattr(self.charge, "share", None)
        return replace(self, charge=share(parts) if share else self.charge, values=dict(self.values),
                       charged=dict(self.charged), paid=set(self.paid))

    def resumed(self, ctx: LearnedContext) -> None:
        """A context an earlier process scored for this search: score and charge it as then (evaluations cached)."""
        self(ctx)

    def replay_drop(self, ctx: LearnedContext, name: str) -> float:
        """Estimated drop of earlier task ``name``'s pool mean: the drop on the examples ``ctx`` is replayed on,
        times the share of the pool that could drop (changed prompt, current score above 0)."""
        examples, n_right = self.replayed(ctx, name)
        if not examples:
            return 0.0
        task = self._tasks[name]
        drop = self.evaluate(self.setup.base, task, examples) - self.evaluate(ctx, task, examples)
        return drop * n_right / len(self.replay[name])

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
        if not self._admit(ctx, "val"):
            return None
        cur = self.evaluate(ctx, task, self.val)
        if self.values and cur < max(self.values.values()) and self.changed(ctx):  # replay could only lower it
            self.values[ctx.hash] = cur
            return cur
        if not self._admit(ctx, "all"):
            return None
        drops = [self.replay_drop(ctx, n) for n in self.changed(ctx)]
        value = cur - 2.0 * sum(max(0.0, d) for d in drops)
        if self.max_drop is not None and any(d > self.max_drop + 1e-9 for d in drops):
            value -= 1.0 + 2.0 * len(self.replay)  # below any candidate within it (its penalty is at most 2 per task)
        self.values[ctx.hash] = value
        return value
