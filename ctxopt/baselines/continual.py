"""``ctxopt``: the continual optimizer, run one task at a time by the comparison harness.

Each step builds a :class:`~ctxopt.optimizer.ContinualOptimizer` on the
method's store and folder, hands it the current context and the tasks met so
far, and calls :meth:`~ctxopt.optimizer.ContinualOptimizer.step` without a
stream, so it learns (observe, propose, search, gate, commit) but does not
measure: the harness measures every method the same way. The optimizer
commits its own version (accepted or rolled back) to the store.

Example:
    >>> CtxoptMethod(gate="strict").name
    'ctxopt'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ctxopt.baselines.base import LearnContext, Outcome
from ctxopt.context import LearnedContext

__all__ = ["CtxoptMethod"]


class CtxoptMethod:
    """The continual optimizer as a comparison method.

    Args:
        gate: ``strict``, ``bootstrap`` or a Gate object.
        epsilon: Tolerated drop of an earlier task's score.
        proposers: Override the default proposers (tests).
        callbacks: Receive the optimizer's own events (trials, gate decisions…).
    """

    name = "ctxopt"
    joint = False

    def __init__(self, gate: Any = "strict", epsilon: float = 0.02, proposers: Sequence[Any] | None = None,
                 callbacks: Sequence[Callable[[Any], None]] = ()) -> None:
        self.gate, self.epsilon = gate, epsilon
        self.proposers = proposers
        self.callbacks = list(callbacks)

    def learn(self, program: Any, context: LearnedContext, tasks: Sequence[Any], ctx: LearnContext) -> Outcome:
        from ctxopt.optimizer import ContinualOptimizer

        opt = ContinualOptimizer(ctx.task_lm, ctx.reflection_lm, budget=ctx.budget, gate=self.gate,
                                 epsilon=self.epsilon, seed=ctx.seed, num_threads=ctx.num_threads,
                                 callbacks=self.callbacks, measure_test=False, proposers=self.proposers,
                                 run_dir=ctx.work_dir, store=ctx.store)
        out = opt.step(program, tasks[-1], context=context, seen=tasks[:-1], scenario=ctx.scenario)
        extra = {k: out.record.extra[k] for k in ("charged_task_calls", "charged_reflection_calls")
                 if k in out.record.extra}
        extra["proposals"] = list(out.proposals)
        return Outcome(out.context, note=f"ctxopt: {'accept' if out.accepted else 'roll back'} — {out.reason}",
                       accepted=out.accepted, extra=extra)
