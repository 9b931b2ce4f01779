"""The accept-or-rollback gate: does a candidate context help now without hurting before?

A gate sees paired per-example scores: for the current task and for every
earlier task's replay set, the scores of the current context and of the
candidate on *the same* examples (``{example_id: score}``). It returns a
:class:`Decision` with its reason; the optimizer commits on accept and keeps
the old context otherwise.

Two gates ship, resolved by name through :func:`get_gate`:

* ``strict`` (default): the current task's paired mean must rise by at least
  ``min_gain`` and no earlier task may fall by more than ``epsilon``.
* ``bootstrap``: like ``strict``, but the gain on the current task must also be
  significant under a paired bootstrap (one-sided p < ``alpha``).

Consolidation (:mod:`ctxopt.consolidate`) uses the run's gate as a tolerance,
:func:`tolerance_gate`: a :class:`ToleranceGate` needs no gain, only that no
task, the current one included, falls by more than ``epsilon``.

Example:
    >>> gate = StrictGate(min_gain=0.01, epsilon=0.02)
    >>> d = gate.decide(PairedScores("t2", {"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 0.0}), [])
    >>> d.accepted, round(d.current_gain, 2)
    (True, 0.5)
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from ctxopt.errors import ConfigError

__all__ = ["GATES", "BootstrapGate", "Decision", "Gate", "PairedScores", "StrictGate", "ToleranceGate", "get_gate",
           "paired_bootstrap_p", "tolerance_gate"]


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

    @property
    def mean_before(self) -> float:
        return sum(self.before.values()) / len(self.before) if self.before else 0.0

    @property
    def mean_after(self) -> float:
        return sum(self.after.values()) / len(self.after) if self.after else 0.0

    @property
    def delta(self) -> float:
        return self.mean_after - self.mean_before


@dataclass(frozen=True)
class Decision:
    """The gate's verdict, with the figures behind it (stored in the run and the store)."""

    accepted: bool
    reason: str
    current_gain: float
    replay_deltas: dict[str, float] = field(default_factory=dict)
    p_value: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


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


GATES = {"strict": StrictGate, "bootstrap": BootstrapGate}


def get_gate(gate: str | Gate, **options: float) -> Gate:
    """Resolve a gate given by name (``strict``, ``bootstrap``) or as an object."""
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
    """The run's gate for consolidations, as a tolerance: :class:`ToleranceGate` with the gate's ε.

    A consolidation need not improve anything; it lands when no seen task —
    the newest included — falls by more than ε on its held-out val examples.
    ε is the run gate's own (``epsilon`` overrides it).

    Example:
        >>> tolerance_gate(StrictGate(epsilon=0.05))
        ToleranceGate(min_gain=-0.05, epsilon=0.05)
    """
    eps = epsilon if epsilon is not None else getattr(gate, "epsilon", 0.02)
    return ToleranceGate(min_gain=-eps, epsilon=eps)
