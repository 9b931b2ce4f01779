"""``ctxopt``: the continual optimizer as a method of the run engine.

``ctxopt run`` (:meth:`~ctxopt.optimizer.ContinualOptimizer.fit`) and
``ctxopt compare`` both run the optimizer through this adapter: each step
calls :meth:`~ctxopt.optimizer.ContinualOptimizer.step` with the current
context and the tasks met so far, so it learns (observe, propose, search,
gate, commit) but does not measure: the engine measures every method the
same way. The optimizer commits its own version (accepted or rolled back) to
the store, and its budget ledger travels in the run state, so a resumed run
charges exactly like an uninterrupted one.

Example:
    >>> CtxoptMethod(gate="paired").name
    'ctxopt'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ctxopt.baselines.base import LearnContext, Outcome
from ctxopt.context import LearnedContext
from ctxopt.gate import DEFAULT_GATE

if TYPE_CHECKING:  # pragma: no cover
    from ctxopt.optimizer import ContinualOptimizer

__all__ = ["CtxoptMethod"]


class CtxoptMethod:
    """The continual optimizer as a run-engine method.

    Args:
        gate: ``paired`` (default), ``strict``, ``bootstrap`` or a Gate object.
        epsilon: Tolerated drop of an earlier task's score.
        proposers: Override the default proposers (tests).
        callbacks: Receive the optimizer's own events (trials, gate decisions…).
        optimizer: Drive this optimizer (``fit``); by default one is built on the engine's LMs, budget,
            seed, store and evaluator at the first step.
        storage: Optuna storage URL of the search studies (default: SQLite in the run directory).
        search_workers: Search processes per step (more than one needs a database server in ``storage``).
        stages: Which predictors of a multi-stage program are edited (:mod:`ctxopt.credit`); a policy other
            than the default ``credit`` names the method ``ctxopt-<policy>`` (``ctxopt-output``: today's
            single-predictor learning, the ablation of multi-stage credit).
        grounded: Also propose data-grounded instructions (:mod:`ctxopt.grounding`); names the method
            ``ctxopt-grounded`` (with another stage policy, ``ctxopt-<policy>-grounded``).
    """

    name = "ctxopt"
    joint = False

    def __init__(self, gate: Any = DEFAULT_GATE, epsilon: float = 0.02, proposers: Sequence[Any] | None = None,
                 callbacks: Sequence[Callable[[Any], None]] = (), optimizer: ContinualOptimizer | None = None,
                 storage: str | None = None, search_workers: int = 1, stages: str = "credit",
                 grounded: bool = False) -> None:
        from ctxopt.credit import check_policy
        from ctxopt.search import check_workers

        check_workers(search_workers, storage)
        self.stages = check_policy(stages)
        self.grounded = bool(grounded)
        self.name = "-".join(["ctxopt", *([stages] if stages != "credit" else []), *(["grounded"] if grounded else [])])
        self.gate, self.epsilon = gate, epsilon
        self.storage, self.search_workers = storage, search_workers
        self.proposers = proposers
        self.callbacks = list(callbacks)
        self.optimizer = optimizer
        self._saved: dict[str, Any] = {}

    def _optimizer(self, ctx: LearnContext) -> ContinualOptimizer:
        if self.optimizer is None:
            from ctxopt.optimizer import ContinualOptimizer

            self.optimizer = ContinualOptimizer(
                ctx.task_lm, ctx.reflection_lm, budget=ctx.budget, gate=self.gate, epsilon=self.epsilon,
                seed=ctx.seed, num_threads=ctx.num_threads, callbacks=self.callbacks, measure_test=False,
                proposers=self.proposers, run_dir=ctx.work_dir, store=ctx.store, evaluator=ctx.evaluator,
                storage=self.storage, search_workers=self.search_workers, stages=self.stages,
                grounded=self.grounded)
            self.optimizer.restore(self._saved)
        return self.optimizer

    def selector_for(self, scenario: str) -> Any:
        """The selector the optimizer learns and is measured with (see :meth:`ContinualOptimizer.selector_for`)."""
        if self.optimizer is not None:
            return self.optimizer.selector_for(scenario)
        from ctxopt.selector import default_selector

        return default_selector(scenario)

    def state(self) -> dict[str, Any]:
        """What a resumed run needs (the budget ledger)."""
        return self.optimizer.resume_state() if self.optimizer is not None else dict(self._saved)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` output saved by an earlier process."""
        self._saved = dict(state)
        if self.optimizer is not None:
            self.optimizer.restore(self._saved)

    def learn(self, program: Any, context: LearnedContext, tasks: Sequence[Any], ctx: LearnContext) -> Outcome:
        optimizer = self._optimizer(ctx)
        relay = _progress_relay(ctx.emit, ctx.budget.n_trials)
        optimizer.callbacks.append(relay)  # the step's phases and trials, as the engine's progress events
        try:
            out = optimizer.step(program, tasks[-1], context=context, seen=tasks[:-1], scenario=ctx.scenario)
        finally:
            optimizer.callbacks.remove(relay)
        extra = {**out.record.extra, "proposals": list(out.proposals)}
        return Outcome(out.context, note=f"ctxopt: {'accept' if out.accepted else 'roll back'} — {out.reason}",
                       accepted=out.accepted, extra=extra)


def _progress_relay(emit: Callable[..., None], n_trials: int) -> Callable[[Any], None]:
    """The optimizer's ``phase`` and ``trial`` events as the engine's ``progress`` events (a line each).

    Trials are counted as they are scored: the study's trial numbers also count suggestions it answered
    from contexts already scored, and the search scores up to ``n_trials`` contexts, then the parsimony
    checks of its best (one per proposal it holds)."""
    scored = 0

    def relay(event: Any) -> None:
        nonlocal scored
        d = event.data
        if event.kind == "phase":
            if d["phase"] == "search":
                scored = 0
            what = d["phase"]
            if d.get("grow"):
                what += f": growing the samples of {', '.join(d['grow'])}"
            elif "fallback" in d:
                what += f": fallback ({', '.join(d.get('without') or ())})"
            emit("progress", what=what)
        elif event.kind == "trial":
            scored += 1
            emit("progress", what=f"search trial {scored}/{n_trials}" if scored <= n_trials else
                 f"search: parsimony check {scored - n_trials}")
    return relay
