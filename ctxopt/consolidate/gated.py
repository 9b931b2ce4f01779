"""The gated pass: apply consolidation candidates one at a time and keep those the check accepts.

Every consolidation is a candidate, never a fact. :func:`run_pass` applies
them in turn to the running result and keeps one only if
``check(before, after)`` accepts it (the optimizer's check is the run's gate as
a tolerance, :func:`ctxopt.gate.tolerance_gate`). Rejected candidates are
rolled back and recorded in the :class:`PassResult`; with a
:class:`~ctxopt.consolidate.rejections.RejectionMemory` they are also
remembered, so no later pass (in this process or another) evaluates them again.

Example:
    >>> from ctxopt.consolidate.consolidator import Consolidator
    >>> from ctxopt.context import LearnedContext, PredictorContext
    >>> from ctxopt.edits import AddItem
    >>> ctx = LearnedContext({"qa": PredictorContext("Answer.")}).apply_edits(
    ...     [AddItem("qa", "Answer with one word."), AddItem("qa", "Answer with one word!")], step=1)
    >>> run_pass(ctx, Consolidator(similarity="lexical"), lambda b, a: Decision(True, "ok", 0.0)).summary()
    '1 of 1 consolidation(s) accepted (dedupe)'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ctxopt.consolidate.base import Consolidation, ConsolidationProposer
from ctxopt.consolidate.rejections import RejectionMemory
from ctxopt.context import LearnedContext
from ctxopt.errors import BudgetExceeded, EditError
from ctxopt.gate import Decision
from ctxopt.tokens import over_budget, rendered_tokens

__all__ = ["Check", "PassResult", "Tried", "run_pass"]

Check = Callable[[LearnedContext, LearnedContext], Decision]
"""``check(before, after)``: the gate's decision on replacing ``before`` by ``after``."""


@dataclass(frozen=True)
class Tried:
    """One candidate and what became of it: ``accepted``, ``rolled_back`` or ``skipped``."""

    consolidation: Consolidation
    outcome: str
    reason: str
    decision: Decision | None = None

    def to_dict(self) -> dict[str, Any]:
        """The candidate's dict with ``outcome``, ``reason`` and ``decision`` added."""
        return {**self.consolidation.to_dict(), "outcome": self.outcome, "reason": self.reason,
                "decision": self.decision.to_dict() if self.decision else None}


@dataclass(frozen=True)
class PassResult:
    """What one consolidation pass did; ``context`` is the consolidated context (or the input)."""

    context: LearnedContext
    tried: tuple[Tried, ...] = ()
    fits: bool = True

    def count(self, outcome: str) -> int:
        """How many candidates had ``outcome``."""
        return sum(t.outcome == outcome for t in self.tried)

    @property
    def proposed(self) -> int:
        return len(self.tried)

    @property
    def accepted(self) -> int:
        return self.count("accepted")

    @property
    def rolled_back(self) -> int:
        return self.count("rolled_back")

    def counts(self) -> dict[str, int]:
        """The figures a step records: proposed, accepted, rolled back."""
        return {"consolidations_proposed": self.proposed, "consolidations_accepted": self.accepted,
                "consolidations_rolled_back": self.rolled_back}

    def summary(self) -> str:
        """One line: how many were accepted (of which kinds) and rolled back."""
        kinds = [t.consolidation.kind for t in self.tried if t.outcome == "accepted"]
        text = f"{self.accepted} of {self.proposed} consolidation(s) accepted"
        if kinds:
            text += " (" + ", ".join(kinds) + ")"
        if self.rolled_back:
            text += f", {self.rolled_back} rolled back"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible record of the pass (counts, fit, context hash, every candidate)."""
        return {**self.counts(), "fits": self.fits, "context_hash": self.context.hash,
                "tried": [t.to_dict() for t in self.tried]}


class _Stop(Exception):
    pass


def run_pass(context: LearnedContext, consolidator: ConsolidationProposer, check: Check, *,
             max_tokens: int | None = None, protect: Iterable[str] = (), step: int = 0, task: str | None = None,
             on_candidate: Callable[[Tried], None] | None = None,
             memory: RejectionMemory | None = None) -> PassResult:
    """Propose consolidations for ``context`` and keep each one the gate accepts, one at a time.

    Candidates other than compression are proposed on ``context`` and applied
    in turn to the running result (one whose items another accepted candidate
    already changed is skipped). If a predictor is still over ``max_tokens``,
    compression alternatives are proposed on the running result and tried in
    order until one is accepted. A candidate that would leave a predictor over
    ``max_tokens`` (and not smaller than before) is rolled back without
    evaluation. ``fits`` tells whether the result is within the budget. When
    ``check`` raises :class:`~ctxopt.errors.BudgetExceeded` the candidate is
    skipped and the pass ends with what it has.

    Args:
        memory: earlier rejections. The consolidator leaves out what it holds; a
            candidate it holds all the same is skipped without calling ``check``,
            and every candidate ``check`` rejects is added to it.
    """
    protect = frozenset(protect)
    current = context
    tried: list[Tried] = []

    def note(t: Tried) -> None:
        tried.append(t)
        if on_candidate:
            on_candidate(t)

    def attempt(cand: Consolidation) -> bool:
        nonlocal current
        try:
            after = cand.apply(current, step=step, task=task)
        except EditError as exc:
            note(Tried(cand, "skipped", f"no longer applies: {exc}"))
            return False
        if after.hash == current.hash:
            note(Tried(cand, "skipped", "changes nothing"))
            return False
        earlier = memory.rejected(current, cand) if memory is not None else None
        if earlier is not None:
            note(Tried(cand, "skipped", f"rejected before (step {earlier.step}): {earlier.reason}"))
            return False
        if max_tokens is not None:
            grown = {n: t for n, t in over_budget(after, max_tokens).items() if t >= rendered_tokens(current, n)}
            if grown:
                name, tokens = next(iter(grown.items()))
                note(Tried(cand, "rolled_back", f"{name} would be {tokens} tokens > max_context_tokens={max_tokens}"))
                return False
        try:
            decision = check(current, after)
        except BudgetExceeded as exc:
            note(Tried(cand, "skipped", f"budget: {exc}"))
            raise _Stop from None
        if decision.accepted:
            current = after
            note(Tried(cand, "accepted", decision.reason, decision))
            return True
        if memory is not None:
            memory.reject(current, cand, decision.reason, step=step)
        note(Tried(cand, "rolled_back", decision.reason, decision))
        return False

    try:
        for cand in consolidator.propose(current, protect=protect, step=step, memory=memory):
            attempt(cand)
        if max_tokens is not None and over_budget(current, max_tokens):
            for cand in consolidator.compress(current, max_tokens, protect=protect, memory=memory):
                if attempt(cand) and not over_budget(current, max_tokens):
                    break
    except _Stop:  # the budget refused an evaluation: keep what was accepted so far
        pass
    return PassResult(current, tuple(tried), not over_budget(current, max_tokens))
