"""The accept-or-rollback gate: does a candidate context help now without hurting before?

A gate sees paired per-example scores: for the current task and for every
earlier task's replay set, the scores of the current context and of the
candidate on *the same* examples (``{example_id: score}``). It returns a
:class:`Decision` with its reason and its ``outcome``: ``accepted``,
``rejected`` or ``undecided``. The optimizer commits on accept and keeps the
old context otherwise; on ``undecided`` it first grows the samples of the
tasks the decision names (``Decision.grow``: earlier tasks' replay samples,
and the current task's with train examples no proposer was shown) and asks
again.

Three gates ship, resolved by name through :func:`get_gate`:

* ``paired`` (the default, :class:`PairedTestGate`): paired tests on the
  per-example differences after − before, so that one flipped answer cannot
  veto a step. It accepts iff

  (a) the current task gains with evidence: its mean rises, and of its
      examples that changed, the candidate fixes (after > before) enough more
      than it breaks (after < before) that a one-sided exact sign test gives
      p < ``alpha`` = 0.25 (0/10 → 8/10: p = 0.004; 0/10 → 3/10: p = 0.125;
      0/10 → 2/10: p = 0.25, rejected). 3:1 evidence, not the 9:1 of
      α = 0.1, because the two errors do not cost alike on the current task:
      a null edit let through costs its tokens (tests (b) and (c) guard the
      earlier tasks), while a real gain turned away is lost for the rest of
      the stream. At α = 0.1, ii-8 task-aware (stop 29) turned away
      first_word_letter 9 fixed / 5 broken (p = 0.21), letters_list 3 / 0
      and negation 10 / 5 (p = 0.15);
  (b) the replayed earlier tasks do not lose, on average, significantly more
      than ``epsilon`` = 0.02: the mean over tasks of each task's mean drop
      (before − after), with its paired standard error se, gives
      z = (drop − ε) / se and p = 1 − Φ(z);
  (c) no single earlier task loses more than ``max_drop`` = 0.25: the same
      test on that task alone, against 0.25, and the sample must show it:
      the drop's one-sided upper confidence bound at ``alpha_safe`` = 0.05,
      drop + 1.645·se, must be under 0.25.

  A harm test with p < ``alpha_harm`` = 0.05 rejects. One with
  p < ``alpha_close`` = 0.15, or a task whose drop's upper bound exceeds
  ``max_drop`` without the drop being significantly over it, is *close*: the
  decision is ``undecided`` and names the tasks to grow (those close alone,
  and, when the average is close, every task with a broken example). So a
  replay sample is as large as the paired differences' variance needs: a task
  with no broken answer stays at its first sample, and one with broken
  answers grows until the bound clears ``max_drop`` or the drop is shown.
  ε is finer than a small replay sample can resolve (one answer of 10 is
  0.1), so for (b) only significance counts. A gain that fails (a) is
  rejected at once: the current task's val is used whole, nothing can grow.
  On the only earlier task, one broken answer of 10 is undecided (bound
  0.1 + 1.645 × 0.1 = 0.26) and accepted once the sample has 20 and no
  other broken answer (0.05 + 1.645 × 0.05 = 0.13); 1.0 → 0.5 gives
  p = 0.002 (rejected).

  The gain test grows too. A gain with α ≤ p < ``alpha_grow`` = 0.5 is
  *close* (0/20 → 2/20 with nothing broken: p = 0.25; 5 fixed, 3 broken:
  p = 0.36): unless a harm test rejects, the decision is ``undecided`` and
  names the current task first in ``grow``. The optimizer then adds train
  examples that no proposer of the step was shown and decides again at α/2,
  so a null edit lands at most α/2 × P(close) more often than under one
  test at α. 4 fixed and 3 broken (p = 0.5) is not close.
* ``strict``: the current task's paired mean must rise by at least
  ``min_gain`` and no earlier task may fall by more than ``epsilon``
  (on 10 replay examples, a single flipped answer vetoes).
* ``bootstrap``: like ``strict``, but the gain on the current task must also be
  significant under a paired bootstrap (one-sided p < ``alpha``).

Consolidation (:mod:`ctxopt.consolidate`) uses the run's gate as a tolerance,
:func:`tolerance_gate`: no gain needed, only that no task, the current one
included, falls by more than ``epsilon`` (:class:`ToleranceGate`), or for the
``paired`` gate, does not fall significantly by tests (b) and (c) over every
task (:class:`PairedToleranceGate`; there, undecided does not land).

Example:
    >>> gate = PairedTestGate()
    >>> ids = [f"x{k}" for k in range(10)]
    >>> def scores(task, before, after):  # after: 1.0 on the first ``after`` examples
    ...     return PairedScores(task, {i: float(k < before) for k, i in enumerate(ids)},
    ...                         {i: float(k < after) for k, i in enumerate(ids)})
    >>> new = scores("new", 0, 8)                                  # 0/10 → 8/10
    >>> gate.decide(new, [scores("old", 10, 10)]).outcome          # no replay answer broken
    'accepted'
    >>> gate.decide(new, [scores("old", 10, 5)]).outcome           # a real regression
    'rejected'
    >>> d = gate.decide(new, [scores("old", 10, 9)])               # one flipped: no veto, but grow old's sample
    >>> d.outcome, d.grow
    ('undecided', ('old',))
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Protocol

from ctxopt.errors import ConfigError

__all__ = ["DEFAULT_GATE", "GATES", "OUTCOMES", "BootstrapGate", "Decision", "DropTest", "Gate", "PairedScores",
           "PairedTestGate", "PairedToleranceGate", "StrictGate", "ToleranceGate", "get_gate", "paired_bootstrap_p",
           "sign_test_p", "tolerance_gate"]

DEFAULT_GATE = "paired"
OUTCOMES = ("accepted", "rejected", "undecided")


@dataclass(frozen=True)
class PairedScores:
    """Scores of the current and the candidate context on the same examples of one task."""

    task: str
    before: Mapping[str, float]
    after: Mapping[str, float]

    def __post_init__(self) -> None:
        if set(self.before) != set(self.after):
            raise ValueError(f"unpaired scores for task {self.task!r}: example ids differ")

    @property
    def ids(self) -> list[str]:
        return sorted(self.before)

    def only(self, ids: Iterable[str]) -> PairedScores:
        """These scores on the examples of ``ids`` alone (a grown sample's original part, say)."""
        keep = set(ids)
        return PairedScores(self.task, {i: v for i, v in self.before.items() if i in keep},
                            {i: v for i, v in self.after.items() if i in keep})

    @property
    def mean_before(self) -> float:
        return sum(self.before.values()) / len(self.before) if self.before else 0.0

    @property
    def mean_after(self) -> float:
        return sum(self.after.values()) / len(self.after) if self.after else 0.0

    @property
    def delta(self) -> float:
        return self.mean_after - self.mean_before

    @property
    def fixed(self) -> int:
        """Examples the candidate scores higher on."""
        return sum(self.after[i] > self.before[i] for i in self.before)

    @property
    def broken(self) -> int:
        """Examples the candidate scores lower on."""
        return sum(self.after[i] < self.before[i] for i in self.before)


@dataclass(frozen=True)
class Decision:
    """The gate's verdict, with the figures behind it (stored in the run and the store).

    ``outcome`` is ``accepted``, ``rejected`` or ``undecided`` (default: from ``accepted``); an
    undecided decision is not accepted and names in ``grow`` the tasks whose samples should grow (earlier
    tasks' replay samples; the current task's, first, when its gain test was close).
    """

    accepted: bool
    reason: str
    current_gain: float
    replay_deltas: dict[str, float] = field(default_factory=dict)
    p_value: float | None = None
    outcome: str = ""
    grow: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        outcome = self.outcome or ("accepted" if self.accepted else "rejected")
        if outcome not in OUTCOMES or (outcome == "accepted") != self.accepted:
            raise ValueError(f"decision outcome {outcome!r} does not fit accepted={self.accepted}")
        object.__setattr__(self, "outcome", outcome)
        object.__setattr__(self, "grow", tuple(self.grow))

    def to_dict(self) -> dict:
        return {**asdict(self), "grow": list(self.grow)}


class Gate(Protocol):
    """Decides whether a candidate context lands."""

    def decide(self, current: PairedScores, replay: Sequence[PairedScores]) -> Decision: ...


@dataclass(frozen=True)
class StrictGate:
    """Accept iff the current task gains ≥ ``min_gain`` and no replay task drops > ``epsilon``."""

    min_gain: float = 1e-9
    epsilon: float = 0.02

    def _replay_check(self, replay: Sequence[PairedScores]) -> tuple[dict[str, float], str | None]:
        deltas = {r.task: round(r.delta, 6) for r in replay}
        worst = min(replay, key=lambda r: r.delta, default=None)
        if worst is not None and worst.delta < -self.epsilon:
            return deltas, (f"earlier task {worst.task} drops {worst.mean_before:.3f} → {worst.mean_after:.3f} "
                            f"({worst.delta:+.3f} < -ε={self.epsilon})")
        return deltas, None

    def decide(self, current: PairedScores, replay: Sequence[PairedScores]) -> Decision:
        deltas, forgetting = self._replay_check(replay)
        gain = current.delta
        if gain < self.min_gain:
            return Decision(False, f"no gain on {current.task}: {current.mean_before:.3f} → "
                                   f"{current.mean_after:.3f}", gain, deltas)
        if forgetting:
            return Decision(False, forgetting, gain, deltas)
        return Decision(True, f"{current.task} {current.mean_before:.3f} → {current.mean_after:.3f}; "
                              f"no earlier task drops more than ε={self.epsilon}", gain, deltas)


def paired_bootstrap_p(current: PairedScores, *, samples: int = 2000, seed: int = 0) -> float:
    """One-sided p-value that the candidate is no better, by paired bootstrap over examples."""
    diffs = [current.after[i] - current.before[i] for i in current.ids]
    if not diffs:
        return 1.0
    rng = random.Random(seed)
    n = len(diffs)
    not_better = sum(1 for _ in range(samples) if sum(rng.choice(diffs) for _ in range(n)) <= 0)
    return (not_better + 1) / (samples + 1)


@dataclass(frozen=True)
class BootstrapGate(StrictGate):
    """:class:`StrictGate` plus significance: paired bootstrap p < ``alpha`` on the current task."""

    alpha: float = 0.1
    samples: int = 2000
    seed: int = 0

    def decide(self, current: PairedScores, replay: Sequence[PairedScores]) -> Decision:
        strict = super().decide(current, replay)
        p = paired_bootstrap_p(current, samples=self.samples, seed=self.seed)
        if strict.accepted and p >= self.alpha:
            return Decision(False, f"gain on {current.task} ({strict.current_gain:+.3f}) not significant: "
                                   f"p={p:.3f} ≥ α={self.alpha}", strict.current_gain, strict.replay_deltas, p)
        return Decision(strict.accepted, strict.reason, strict.current_gain, strict.replay_deltas, p)


def sign_test_p(fixed: int, broken: int) -> float:
    """One-sided exact sign test: the chance of ``fixed`` or more fixes among the ``fixed + broken``
    changed examples, were fixing and breaking equally likely (1.0 when nothing changed).

    Example:
        >>> sign_test_p(8, 0), sign_test_p(3, 0), sign_test_p(1, 0), sign_test_p(0, 0)
        (0.00390625, 0.125, 0.5, 1.0)
    """
    n = fixed + broken
    return sum(math.comb(n, k) for k in range(fixed, n + 1)) / 2 ** n


def binomial_below_p(passed: float, n: int, rate: float) -> float:
    """One-sided exact binomial test: the chance of ``passed`` or fewer passes in ``n`` tries at a true
    pass rate of ``rate`` (``passed`` is rounded: a mean score times ``n``).

    Example:
        >>> round(binomial_below_p(6, 10, 0.8), 3), round(binomial_below_p(1, 10, 0.233), 3), binomial_below_p(3, 10, 0.0)
        (0.121, 0.285, 1.0)
    """
    k, rate = round(passed), min(max(rate, 0.0), 1.0)
    return min(1.0, sum(math.comb(n, i) * rate ** i * (1 - rate) ** (n - i) for i in range(0, min(k, n) + 1)))


@dataclass(frozen=True)
class DropTest:
    """The mean drop (before − after) over some tasks' paired examples, tested against a tolerance.

    ``drop`` averages each task's mean drop, so tasks weigh the same whatever their sample size;
    ``se`` is its paired standard error (per task: the sample standard deviation of the differences
    over √n, with the largest variance of a difference in [−1, 1], 1, for a single example; averaged:
    √Σ se_k² / K). ``p`` is the one-sided p-value of "the drop is at most ``tolerance``" under the normal
    approximation; with se = 0 (every example moved alike) it is 0 or 1.

    Example:
        >>> t = DropTest.of([PairedScores("t", dict.fromkeys("abcdefghij", 1.0), {**dict.fromkeys("abcdefghi", 1.0),
        ...                                                                       "j": 0.0})], 0.02)
        >>> round(t.drop, 2), round(t.se, 2), round(t.p, 2)
        (0.1, 0.1, 0.21)
    """

    drop: float
    se: float
    tolerance: float

    @classmethod
    def of(cls, scores: Sequence[PairedScores], tolerance: float) -> DropTest:
        drops, variances = [], []
        for s in scores:
            diffs = [s.before[i] - s.after[i] for i in s.ids]
            n = len(diffs)
            mean = sum(diffs) / n
            var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 1.0  # n = 1: the bound
            drops.append(mean)
            variances.append(var / n)
        k = len(drops)
        return cls(sum(drops) / k, math.sqrt(sum(variances)) / k, tolerance)

    @property
    def p(self) -> float:
        if self.se == 0:
            return 0.0 if self.drop > self.tolerance + 1e-12 else 1.0
        return 1.0 - NormalDist().cdf((self.drop - self.tolerance) / self.se)


@dataclass(frozen=True)
class PairedTestGate:
    """The default gate: a significant gain now, no significant loss before (see the module docstring).

    Args:
        epsilon: Tolerated mean drop over the replayed earlier tasks.
        max_drop: Tolerated drop of any one earlier task.
        alpha: Level of the one-sided sign test on the current task's gain.
        alpha_harm: A harm test below this p-value rejects.
        alpha_close: A harm test below this p-value (and not below ``alpha_harm``) leaves the decision undecided.
        min_gain: The current task's mean must rise by at least this much.
        alpha_safe: One earlier task's drop is within ``max_drop`` only if its one-sided upper confidence bound
            at this level is (else the decision is undecided and the task's sample grows).
        alpha_grow: A gain whose sign test gives ``alpha`` ≤ p < ``alpha_grow`` is close: undecided, naming the
            current task first in ``grow`` (``alpha_grow`` = ``alpha``: never close, a gain test that fails
            rejects at once).
    """

    epsilon: float = 0.02
    max_drop: float = 0.25
    alpha: float = 0.25
    alpha_harm: float = 0.05
    alpha_close: float = 0.15
    min_gain: float = 1e-9
    alpha_safe: float = 0.05
    alpha_grow: float = 0.5

    def decide(self, current: PairedScores, replay: Sequence[PairedScores]) -> Decision:
        deltas = {r.task: round(r.delta, 6) for r in replay}
        gain, p = current.delta, sign_test_p(current.fixed, current.broken)
        moved = (f"{current.task} {current.mean_before:.3f} → {current.mean_after:.3f} "
                 f"({current.fixed} fixed, {current.broken} broken")
        if gain < self.min_gain:
            return Decision(False, f"no gain on {moved})", gain, deltas, p)
        close = self.alpha <= p < self.alpha_grow
        if p >= self.alpha and not close:
            return Decision(False, f"gain on {moved}) not significant: sign test p={p:.3f} ≥ α={self.alpha}",
                            gain, deltas, p)
        outcome, why, grow = self._harm(replay, "earlier task")
        if close and outcome != "rejected":
            return Decision(False, f"undecided: gain on {moved}) close: sign test α={self.alpha} ≤ p={p:.3f} < "
                                   f"{self.alpha_grow}; grow {current.task}", gain, deltas, p, "undecided",
                            (current.task, *grow))
        reason = {"accepted": f"{moved}, sign test p={p:.3f}); {why}", "rejected": why,
                  "undecided": f"undecided: {why}"}[outcome]
        return Decision(outcome == "accepted", reason, gain, deltas, p, outcome, grow)

    def _zone(self, test: DropTest, hard: bool = False) -> str:
        """``beyond`` (p < alpha_harm), ``close`` (p < alpha_close, or with ``hard`` a drop whose one-sided
        upper confidence bound at ``alpha_safe`` is over the tolerance), else ``within``."""
        if test.p < self.alpha_harm:
            return "beyond"
        bound = test.drop + NormalDist().inv_cdf(1 - self.alpha_safe) * test.se
        return "close" if test.p < self.alpha_close or (hard and bound > test.tolerance + 1e-12) else "within"

    def _harm(self, scores: Sequence[PairedScores], what: str) -> tuple[str, str, tuple[str, ...]]:
        """Tests (b) and (c) over ``scores``: the outcome, why, and the tasks to grow when undecided."""
        scores = [s for s in scores if s.before]
        if not scores:
            return "accepted", f"no {what} replayed", ()
        pooled = DropTest.of(scores, self.epsilon)
        each = {s.task: DropTest.of([s], self.max_drop) for s in scores}
        zone = {s.task: self._zone(each[s.task], hard=True) for s in scores}
        worst = min(scores, key=lambda s: s.delta)

        def drops(s: PairedScores) -> str:
            return f"{what} {s.task} drops {s.mean_before:.3f} → {s.mean_after:.3f}"

        mean = f"mean drop over {len(scores)} {what}(s) {pooled.drop:+.3f} vs ε={self.epsilon} (p={pooled.p:.3f})"
        beyond = [s for s in scores if zone[s.task] == "beyond"]
        if beyond:
            s = min(beyond, key=lambda s: each[s.task].p)
            return "rejected", (f"{drops(s)}, significantly more than {self.max_drop} "
                                f"(p={each[s.task].p:.3f} < {self.alpha_harm})"), ()
        if self._zone(pooled) == "beyond":
            return "rejected", f"{drops(worst)}: {mean}, significantly more (p < {self.alpha_harm})", ()
        pooled_close = self._zone(pooled) == "close"
        grow = tuple(s.task for s in scores if zone[s.task] == "close" or (pooled_close and s.broken))
        if grow:
            return "undecided", (f"{drops(worst)}: {mean}; neither clearly within nor beyond ε={self.epsilon} "
                                 f"and {self.max_drop} per task; grow {', '.join(grow)}"), grow
        return "accepted", f"{mean}: not significantly more; no {what} over {self.max_drop}", ()

    def tolerance(self, epsilon: float | None = None) -> PairedToleranceGate:
        """This gate's harm tests for consolidations (:class:`PairedToleranceGate`), with ``epsilon`` if given."""
        return PairedToleranceGate(self.epsilon if epsilon is None else epsilon, self.max_drop, self.alpha,
                                   self.alpha_harm, self.alpha_close, self.min_gain, alpha_safe=0.5)


@dataclass(frozen=True)
class PairedToleranceGate(PairedTestGate):
    """:class:`PairedTestGate` for consolidations: no gain needed; every task, the current one included,
    must pass the harm tests. An undecided consolidation does not land (nothing grows for it), so a task's
    observed drop, not its upper bound, is held to ``max_drop`` (``alpha_safe`` = 0.5, as
    :meth:`PairedTestGate.tolerance` builds it): a bound that no growth can clear would block every
    consolidation that flips one answer.

    Example:
        >>> tol = tolerance_gate(PairedTestGate())
        >>> tol.decide(PairedScores("t2", dict.fromkeys("ab", 1.0), dict.fromkeys("ab", 0.0)), []).reason
        'task t2 drops 1.000 → 0.000, significantly more than 0.25 (p=0.000 < 0.05)'
    """

    def decide(self, current: PairedScores, replay: Sequence[PairedScores]) -> Decision:
        every = [current, *replay]
        outcome, why, grow = self._harm(every, "task")
        return Decision(outcome == "accepted", f"undecided: {why}" if outcome == "undecided" else why,
                        current.delta, {r.task: round(r.delta, 6) for r in every}, None, outcome, grow)


GATES = {"paired": PairedTestGate, "strict": StrictGate, "bootstrap": BootstrapGate}


def get_gate(gate: str | Gate, **options: float) -> Gate:
    """Resolve a gate given by name (``paired``, ``strict``, ``bootstrap``) or as an object."""
    if not isinstance(gate, str):
        return gate
    if gate not in GATES:
        raise ConfigError(f"unknown gate {gate!r}; valid gates: {', '.join(sorted(GATES))}")
    return GATES[gate](**options)


@dataclass(frozen=True)
class ToleranceGate(StrictGate):
    """:class:`StrictGate` for consolidations: no gain needed, and the current task is held to ε too.

    Example:
        >>> ToleranceGate(epsilon=0.1).decide(PairedScores("t2", {"a": 1.0}, {"a": 0.0}), []).reason
        't2 drops 1.000 → 0.000 (-1.000 < -ε=0.1)'
    """

    def decide(self, current: PairedScores, replay: Sequence[PairedScores]) -> Decision:
        every = [current, *replay]
        deltas = {r.task: round(r.delta, 6) for r in every}
        worst = min(every, key=lambda r: r.delta)
        if worst.delta < -self.epsilon:
            return Decision(False, f"{worst.task} drops {worst.mean_before:.3f} → {worst.mean_after:.3f} "
                                   f"({worst.delta:+.3f} < -ε={self.epsilon})", current.delta, deltas)
        return Decision(True, f"no seen task drops more than ε={self.epsilon} "
                              f"(worst: {worst.task} {worst.delta:+.3f})", current.delta, deltas)


def tolerance_gate(gate: Gate, epsilon: float | None = None) -> Gate:
    """The run's gate for consolidations, as a tolerance: :class:`ToleranceGate` with the gate's ε,
    or for a :class:`PairedTestGate`, its harm tests (:class:`PairedToleranceGate`).

    A consolidation need not improve anything; it lands when no seen task —
    the newest included — falls by more than ε on its held-out val examples
    (for the paired gate: not significantly, by the same tests as a step's replay).
    ε is the run gate's own (``epsilon`` overrides it).

    Example:
        >>> tolerance_gate(StrictGate(epsilon=0.05))
        ToleranceGate(min_gain=-0.05, epsilon=0.05)
        >>> type(tolerance_gate(PairedTestGate(), epsilon=0.05)).__name__
        'PairedToleranceGate'
    """
    if isinstance(gate, PairedTestGate):
        return gate.tolerance(epsilon)
    eps = epsilon if epsilon is not None else getattr(gate, "epsilon", 0.02)
    return ToleranceGate(min_gain=-eps, epsilon=eps)
