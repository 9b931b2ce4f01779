"""Budgets: how many LM calls learning may spend, per task and in total.

A :class:`Budget` is a frozen set of limits and search sizes; ``light``,
``medium`` and ``heavy`` are presets (:func:`get_budget`). A :class:`Ledger`
charges spending against it and refuses (:class:`BudgetExceeded`) anything
that would go over, so a run never exceeds its budget: it stops at the limit
with what it has and says so.

The unit of task-LM spending is one *program call on one example* per
predictor, charged whether or not a cache answered it. That keeps the ledger,
and so every decision that depends on it, identical when a killed run is
resumed from cache. Measuring the accuracy matrix on test splits is not
learning and is not charged (the LM's own usage counters still count it).

Example:
    >>> ledger = Ledger(get_budget("light"))
    >>> ledger.start_task("antonyms")
    >>> ledger.charge("task", 10)
    >>> ledger.remaining("task")
    290
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from ctxopt.errors import BudgetExceeded, ConfigError

__all__ = ["PRESETS", "Budget", "Charge", "Kind", "Ledger", "get_budget"]

Kind = Literal["task", "reflection"]


@dataclass(frozen=True)
class Budget:
    """Limits on learning, and the sizes of the samples the optimizer draws."""

    task_calls_per_task: int = 300
    reflection_calls_per_task: int = 3
    total_task_calls: int | None = None
    total_reflection_calls: int | None = None
    n_trials: int = 8
    train_minibatch: int = 10
    val_minibatch: int = 10
    replay_per_task: int = 3
    gate_replay_per_task: int = 10
    max_context_tokens: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Budget:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown budget key(s): {', '.join(sorted(unknown))}")
        return cls(**data)


PRESETS: dict[str, Budget] = {
    "light": Budget(),
    "medium": Budget(task_calls_per_task=800, reflection_calls_per_task=6, n_trials=16, train_minibatch=16,
                     val_minibatch=16, replay_per_task=5, gate_replay_per_task=15),
    "heavy": Budget(task_calls_per_task=2000, reflection_calls_per_task=12, n_trials=32, train_minibatch=24,
                    val_minibatch=30, replay_per_task=8, gate_replay_per_task=30),
}


def get_budget(budget: str | Budget | dict | None = "light", **overrides: int | None) -> Budget:
    """Resolve a preset name, a dict of fields, or a :class:`Budget`, then apply overrides."""
    if budget is None:
        budget = "light"
    if isinstance(budget, str):
        if budget not in PRESETS:
            raise ConfigError(f"unknown budget {budget!r}; valid presets: {', '.join(PRESETS)}")
        budget = PRESETS[budget]
    elif isinstance(budget, dict):
        budget = Budget.from_dict(budget)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(budget, **overrides) if overrides else budget


@dataclass
class Ledger:
    """Spending against a :class:`Budget`; owned by one optimizer run."""

    budget: Budget
    task: str | None = None
    spent_task: dict[str, int] = field(default_factory=dict)
    spent_reflection: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)  # task -> "kind:source" -> calls

    def start_task(self, task: str) -> None:
        self.task = task
        self.spent_task.setdefault(task, 0)
        self.spent_reflection.setdefault(task, 0)

    def _limits(self, kind: Kind) -> tuple[dict[str, int], int, int | None]:
        if kind == "task":
            return self.spent_task, self.budget.task_calls_per_task, self.budget.total_task_calls
        return self.spent_reflection, self.budget.reflection_calls_per_task, self.budget.total_reflection_calls

    def remaining(self, kind: Kind) -> int:
        spent, per_task, total = self._limits(kind)
        left = per_task - spent.get(self.task or "", 0)
        if total is not None:
            left = min(left, total - sum(spent.values()))
        return max(left, 0)

    def can_spend(self, kind: Kind, n: int) -> bool:
        return n <= self.remaining(kind)

    def charge(self, kind: Kind, n: int, source: str | None = None) -> None:
        """Record ``n`` calls (under ``source``, if named); raise :class:`BudgetExceeded` (charging nothing) if over."""
        if self.task is None:
            raise RuntimeError("Ledger.start_task must be called before charging")
        if not self.can_spend(kind, n):
            raise BudgetExceeded(f"{kind}-LM budget for task {self.task} exhausted: "
                                 f"{n} calls requested, {self.remaining(kind)} left")
        spent, _, _ = self._limits(kind)
        spent[self.task] = spent.get(self.task, 0) + n
        if source is not None:
            mine = self.by_source.setdefault(self.task, {})
            mine[f"{kind}:{source}"] = mine.get(f"{kind}:{source}", 0) + n

    def handle(self, source: str, keep: int = 0) -> Charge:
        """A charge handle that books calls under ``source`` (given to proposers on their ProposalContext).

        ``keep`` calls stay out of its reach: reserved for what runs after it (the gate, consolidation).
        """
        return Charge(self, source, keep)

    def to_dict(self) -> dict:
        return {"budget": self.budget.to_dict(), "task": self.task,
                "spent_task": dict(self.spent_task), "spent_reflection": dict(self.spent_reflection),
                "by_source": {t: dict(v) for t, v in self.by_source.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Ledger:
        return cls(Budget.from_dict(data["budget"]), data.get("task"), dict(data["spent_task"]),
                   dict(data["spent_reflection"]), {t: dict(v) for t, v in data.get("by_source", {}).items()})


@dataclass(frozen=True)
class Charge:
    """One source's handle on a :class:`Ledger`: ``charge(n)`` books ``n`` reflection calls (or
    ``charge(n, "task")`` task-LM calls) and says whether the budget allowed them. It never spends
    the last ``keep`` calls of either kind: they are reserved for what runs after its owner.

    Example:
        >>> ledger = Ledger(get_budget("light"))
        >>> ledger.start_task("t")
        >>> charge = ledger.handle("proposer:Mine")
        >>> charge(2), charge(5), ledger.by_source["t"]
        (True, False, {'reflection:proposer:Mine': 2})
        >>> ledger.handle("proposer:Other", keep=1)(1)  # one call left, and it is kept for later
        False
    """

    ledger: Ledger
    source: str
    keep: int = 0

    def share(self, parts: int, kind: Kind = "task") -> Charge:
        """A handle that may spend only ``1/parts`` of what this one may spend of ``kind`` now (one of
        ``parts`` search workers): it keeps the rest back, on top of this handle's own ``keep``."""
        room = max(0, self.ledger.remaining(kind) - self.keep)
        return Charge(self.ledger, self.source, self.keep + room - room // max(1, parts))

    def __call__(self, n: int, kind: Kind = "reflection") -> bool:
        if self.ledger.task is None or not self.ledger.can_spend(kind, n + self.keep):
            return False
        self.ledger.charge(kind, n, self.source)
        return True
