"""The run engine: one loop that drives any method over a stream, in a run directory.

``ctxopt run`` (:meth:`ContinualOptimizer.fit <ctxopt.optimizer.ContinualOptimizer.fit>`)
and every method of ``ctxopt compare`` run through :class:`Engine`; only the
method's ``learn`` differs (:class:`~ctxopt.baselines.Method`). A method with a
``selector_for(scenario)`` (ctxopt) is learned and measured with that
:class:`~ctxopt.selector.ContextSelector`. The engine owns everything else:

1. the :class:`~ctxopt.rundir.RunDir`: ``state.json``, the store and its first
   version C₀ (the program's own context), resume and the step clock;
2. row R₀, measured on test splits through :func:`measure_row`, the one
   function that measures a test row;
3. for each task in order: the method learns from the tasks' train/val under
   the run's LMs, seed and per-task budget; the new C is committed (unless the
   method committed it itself); the test row is measured; the state is saved;
4. the same cost figures for every method (:class:`StepCosts`), and the
   final context's redundancy (``meta["redundancy"]``: near-duplicate and
   contradicting item pairs, :func:`~ctxopt.consolidate.redundancy.redundancy`).

**Costs.** LM usage is read from the LMs' own counters around learning
(:func:`ctxopt.lm.usage_of`), so calls DSPy's optimizers make count like any
other. Each step record holds, for every method:

* ``extra["task_model_calls"]``: task-LM requests that reached the model (in
  a cold run: empty run directory and caches, the comparable cost);
* ``task_calls``: requests the program made (DSPy-cache hits included;
  evaluator-cache hits never become requests);
* ``extra["charged_task_calls"]``: what the method's budget counted (the
  optimizer charges every program call on one example, cached or not; a method
  without a ledger is charged its requests);
* ``extra["task_prompt_tokens"]``, ``extra["task_completion_tokens"]`` and the
  same for the reflection LM.

Measuring test rows is not learning: its calls are in
``extra["measure_task_calls"]`` only.

**One failure is one bad step.** With ``catch_errors`` (``compare``), a
method that raises while learning keeps its context for that step; the error
is logged and recorded (``extra["error"]``) and the run goes on. ``fit`` lets
errors through.

Example:
    >>> StepCosts.of(None, None).to_extra()["task_model_calls"]
    0
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctxopt.baselines.base import LearnContext, Method, Outcome
from ctxopt.budget import Budget
from ctxopt.consolidate.redundancy import redundancy
from ctxopt.context import LearnedContext
from ctxopt.endpoint import fatal_in
from ctxopt.evaluator import Evaluator
from ctxopt.lm import UsageSnapshot, lm_name, usage_of
from ctxopt.matrix import RunResult, StepRecord
from ctxopt.retrieval import RetrievalSelector, hit_rates
from ctxopt.rundir import RunDir
from ctxopt.similarity import Similarity, get_similarity
from ctxopt.tokens import TOKENIZER

if TYPE_CHECKING:  # pragma: no cover
    import dspy

    from ctxopt.tasks import TaskStream

__all__ = ["Engine", "RunEvent", "StepCosts", "measure_row"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunEvent:
    """Progress of a run, delivered to callbacks.

    ``kind`` is one of ``method_start`` (``data["resumed_at"]``), ``method_skip``
    (a finished run), ``measure`` (``data["row"]``), ``learn_start`` and
    ``learn_end`` (around the method's learning only), ``step_end``
    (``data["record"]``: the step record, ``data["row"]``: the test row),
    ``method_end`` (``data["summary"]``) and ``progress`` (``data["what"]``: one
    line on what a long stretch is doing, e.g. ``measuring test splits 3/8
    (antonyms)`` with ``data["done"]`` and ``data["total"]``, or a ctxopt
    step's phase or search trial).
    """

    kind: str
    method: str
    step: int = 0
    task: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def measure_row(evaluator: Evaluator, program: dspy.Module, stream: TaskStream,
                context: LearnedContext | None, on_task: Callable[[int, str], None] | None = None) -> list[float]:
    """One row of the accuracy matrix: the test score of ``context`` on every task of ``stream``.

    This is the only place learning code reaches test splits, through
    :meth:`Evaluator.evaluate_test`; every method measures with it. ``on_task(done, name)`` is called
    after each task's test split is scored (progress).
    """
    row = []
    for i, task in enumerate(stream.tasks):
        row.append(round(evaluator.evaluate_test(program, context, task, scenario=stream.scenario).mean, 6))
        if on_task is not None:
            on_task(i + 1, task.name)
    return row


@dataclass(frozen=True)
class StepCosts:
    """What learning one task cost, in the same units for every method (see the module docstring)."""

    task: UsageSnapshot
    reflection: UsageSnapshot
    charged_task_calls: int

    @classmethod
    def of(cls, task: UsageSnapshot | None, reflection: UsageSnapshot | None,
           charged: int | None = None) -> StepCosts:
        task, reflection = task or UsageSnapshot(), reflection or UsageSnapshot()
        return cls(task, reflection, task.calls if charged is None else int(charged))

    def to_extra(self) -> dict[str, int]:
        return {"task_model_calls": self.task.model_calls, "task_cache_hits": self.task.cache_hits,
                "charged_task_calls": self.charged_task_calls,
                "task_prompt_tokens": self.task.prompt_tokens, "task_completion_tokens": self.task.completion_tokens,
                "reflection_model_calls": self.reflection.model_calls,
                "reflection_prompt_tokens": self.reflection.prompt_tokens,
                "reflection_completion_tokens": self.reflection.completion_tokens}


@dataclass
class Engine:
    """Drives methods over one stream with shared LMs, budget and seed.

    Args:
        program: The ``dspy.Module`` every method starts from (its context is C₀).
        stream: The tasks, in order.
        task_lm: The LM that runs the program.
        reflection_lm: The LM that reflects, summarizes or proposes.
        budget: Every method gets its per-task limits.
        seed: Seeds every method.
        measure_evaluator: Measures the test rows (None: no measurement, no accuracy matrix).
        num_threads: Evaluation threads handed to methods.
        max_context_tokens: Context budget of methods that grow C by appending.
        callbacks: Receive :class:`RunEvent` s.
        catch_errors: A method that raises keeps its context for the step (see the module docstring).
        meta: Extra figures for every result's ``meta``.
    """

    program: dspy.Module
    stream: TaskStream
    task_lm: Any
    reflection_lm: Any
    budget: Budget
    seed: int
    measure_evaluator: Evaluator | None
    num_threads: int = 2
    max_context_tokens: int = 0
    callbacks: Sequence[Callable[[RunEvent], None]] = ()
    catch_errors: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lms = {"task_lm": lm_name(self.task_lm), "reflection_lm": lm_name(self.reflection_lm)}
        self._measurer = self.measure_evaluator
        self._sim: Similarity | None = None
        self._redundancy: dict[str, dict[str, Any]] = {}  # by context hash: computed once per distinct context

    def _similarity(self) -> Similarity:
        if self._sim is None:
            self._sim = get_similarity("auto")
        return self._sim

    def _redundancy_of(self, context: LearnedContext) -> dict[str, Any]:
        if context.hash not in self._redundancy:
            self._redundancy[context.hash] = redundancy(context, self._similarity())
        return dict(self._redundancy[context.hash])

    def emit(self, kind: str, method: str, step: int = 0, task: str = "", **data: Any) -> None:
        event = RunEvent(kind, method, step, task, data)
        for cb in self.callbacks:
            cb(event)

    def identity(self, method: Method) -> dict[str, Any]:
        """What a resumed run must share with the run it resumes."""
        return {"method": method.name, "stream": self.stream.name, "tasks": list(self.stream.names),
                "scenario": self.stream.scenario, "seed": self.seed, "budget": self.budget.to_dict(),
                "max_context_tokens": self.max_context_tokens, "lms": self.lms}

    # ------------------------------------------------------------------ the loop

    def run(self, method: Method, run: RunDir, learn_evaluator: Evaluator,
            results_dir: str | Path | None = None) -> RunResult:
        """Run (or resume) ``method`` over the stream in ``run``; return its result.

        The result is added to ``results.json`` in ``results_dir`` (default: the run directory) after every step.
        """
        name, n = method.name, len(self.stream)
        results = Path(results_dir) if results_dir is not None else run.path
        # A method that shows each input its own part of C is learned and measured with its selector.
        select = getattr(method, "selector_for", None)
        selector = select(self.stream.scenario) if callable(select) else None
        if selector is not None:
            learn_evaluator = learn_evaluator.using(selector)
        self._measurer = (self.measure_evaluator.using(selector) if selector is not None and
                          self.measure_evaluator is not None else self.measure_evaluator)
        store = run.store
        state = run.load(self.identity(method))
        if state is not None and state["done"] == n:
            self.emit("method_skip", name, done=n)
            return self._save(method, run, state, store.show(state["rev"]), results)
        if state is None:
            context = store.current() if store.head() is not None else None
            if context is None:
                context = LearnedContext.from_program(self.program)
                store.commit(context, f"initial context C0 ({name})",
                             {"step": 0, "task": None, "method": name, "stream": self.stream.name,
                              "scenario": self.stream.scenario, "stream_meta": dict(self.stream.meta),
                              "predictors": [n for n, _ in self.program.named_predictors()], "lms": self.lms})
            state = run.new_state(self.identity(method), store.head().rev)
        else:
            context = store.show(state["rev"])
        restore = getattr(method, "restore", None)
        if callable(restore):
            restore(state.get("method_state") or {})
        self.emit("method_start", name, resumed_at=state["done"], tasks=list(self.stream.names))
        if state["r0"] is None and self.measure_evaluator is not None:
            state["r0"] = self._measure(name, 0, "", context)[0]
            run.save(state)
        joint = bool(getattr(method, "joint", False))
        for i in range(state["done"], n):
            step = i + 1
            context, record, row = self._step(method, context, i, run, learn_evaluator, joint)
            snapshot = getattr(method, "state", None)
            state.update(done=step, rev=store.head().rev,
                         method_state=snapshot() if callable(snapshot) else state.get("method_state", {}))
            state["R"].append(row)
            state["steps"].append(record.to_dict())
            run.save(state)
            run.clock(step).finish()  # only once the step is saved
            self._save(method, run, state, context, results)
        result = self._save(method, run, state, context, results)
        self.emit("method_end", name, summary=result.summary() if result.R else {})
        return result

    def _save(self, method: Method, run: RunDir, state: dict[str, Any], context: LearnedContext,
              results: Path) -> RunResult:
        result = self.result(method, state, context, run)
        if result.tasks:
            result.save(results)
        return result

    def result(self, method: Method, state: dict[str, Any], context: LearnedContext | None, run: RunDir) -> RunResult:
        """The method's :class:`RunResult` from its saved state (no matrix when nothing was measured)."""
        head = run.store.head()
        measured = state["r0"] is not None
        meta = {"stream": self.stream.name, "stream_tasks": list(self.stream.names),
                "scenario": self.stream.scenario, "seed": self.seed, "budget": self.budget.to_dict(),
                "lms": self.lms, "joint": bool(getattr(method, "joint", False)),
                "max_context_tokens": self.max_context_tokens, "tokenizer": TOKENIZER,
                "errors": sum(1 for s in state["steps"] if s.get("extra", {}).get("error")),
                **self.meta}
        if context is not None:
            meta.update(final_context_hash=context.hash, final_context_tokens=context.token_count(),
                        redundancy=self._redundancy_of(context))
        if head is not None:
            meta["final_rev"] = head.rev
        return RunResult(method=method.name, tasks=list(self.stream.names) if measured else [],
                         r0=list(state["r0"] or []), R=[list(r) for r in state["R"] if r is not None],
                         steps=[StepRecord.from_dict(s) for s in state["steps"]], meta=meta)

    # ------------------------------------------------------------------ one step

    def _measure(self, name: str, step: int, task: str, context: LearnedContext
                 ) -> tuple[list[float], UsageSnapshot, float]:
        assert self._measurer is not None
        t0, started = usage_of(self.task_lm), time.perf_counter()
        n = len(self.stream)
        row = measure_row(self._measurer, self.program, self.stream, context, on_task=lambda done, on: self.emit(
            "progress", name, step, task, what=f"measuring test splits {done}/{n} ({on})", done=done, total=n))
        used, secs = usage_of(self.task_lm) - t0, time.perf_counter() - started
        self.emit("measure", name, step, task, row=row)
        return row, used, secs

    def _step(self, method: Method, context: LearnedContext, i: int, run: RunDir, evaluator: Evaluator, joint: bool
              ) -> tuple[LearnedContext, StepRecord, list[float] | None]:
        name, task, step = method.name, self.stream.tasks[i], i + 1
        n = len(self.stream)
        store = run.store
        ctx = LearnContext(task_lm=self.task_lm, reflection_lm=self.reflection_lm, budget=self.budget,
                           task_calls=self.budget.task_calls_per_task * (n if joint else 1),
                           reflection_calls=self.budget.reflection_calls_per_task * (n if joint else 1),
                           max_context_tokens=self.max_context_tokens, seed=self.seed, step=step,
                           scenario=self.stream.scenario, evaluator=evaluator, store=store, work_dir=run.path,
                           num_threads=self.num_threads,
                           emit=lambda kind, **data: self.emit(kind, name, step, task.name, **data))
        self.emit("learn_start", name, step, task.name)
        before = usage_of(self.task_lm), usage_of(self.reflection_lm)
        with run.clock(step) as clock:
            if joint and i > 0:
                outcome = Outcome(context, note=f"{name}: joint method, learned once at step 1")
            else:
                tasks = self.stream.tasks if joint else self.stream.tasks[: i + 1]
                outcome = self._learn(method, context, tasks, ctx)
        costs = StepCosts.of(usage_of(self.task_lm) - before[0], usage_of(self.reflection_lm) - before[1],
                             outcome.extra.get("charged_task_calls"))
        self.emit("learn_end", name, step, task.name, note=outcome.note)
        new = outcome.context
        head_meta = store.metadata("HEAD")
        if not (head_meta.get("step") == step and head_meta.get("task") == task.name):
            meta = {"step": step, "task": task.name, "method": name, "accepted": outcome.accepted,
                    "note": outcome.note, "lms": self.lms,
                    "usage": {"task_calls": costs.task.calls, "reflection_calls": costs.reflection.calls}}
            store.commit(new, f"step {step} {task.name}: {outcome.note}", meta, allow_empty=True)
        row = None
        extra = {**outcome.extra, **costs.to_extra(), "note": outcome.note, "context_hash": new.hash,
                 "rev": store.head().rev, "budget_task_calls": ctx.task_calls, "learn_attempts": clock.attempts}
        if isinstance(evaluator.selector, RetrievalSelector):  # which task's items each seen task's inputs retrieve
            extra["retrieval_hits"] = hit_rates(evaluator.selector, new, self.stream.tasks[: i + 1],
                                                self.stream.scenario == "task-aware")
        if self.measure_evaluator is not None:
            row, m_used, m_secs = self._measure(name, step, task.name, new)
            extra.update(measure_task_calls=m_used.calls, measure_s=round(m_secs, 3))
        record = StepRecord(step=step, task=task.name, context_tokens=new.token_count(),
                            task_calls=costs.task.calls, task_tokens=costs.task.tokens,
                            reflection_calls=costs.reflection.calls, reflection_tokens=costs.reflection.tokens,
                            wall_s=round(clock.seconds, 3), accepted=outcome.accepted, extra=extra)
        self.emit("step_end", name, step, task.name, record=record.to_dict(), row=row)
        return new, record, row

    def _learn(self, method: Method, context: LearnedContext, tasks: Sequence[Any], ctx: LearnContext) -> Outcome:
        try:
            outcome = method.learn(self.program, context, tasks, ctx)
            if not isinstance(outcome, Outcome) or not isinstance(outcome.context, LearnedContext):
                raise TypeError(f"{method.name}.learn returned {type(outcome).__name__}, expected an Outcome")
            if set(outcome.context.predictors) != set(context.predictors):
                raise ValueError(f"{method.name} returned a context for predictors "
                                 f"{sorted(outcome.context.predictors)}, expected {sorted(context.predictors)}")
            return outcome
        except Exception as exc:
            if not self.catch_errors or fatal_in(exc) is not None:
                raise  # a dead endpoint stops every method (ctxopt.endpoint)
            log.warning("%s failed on step %d (%s): %s", method.name, ctx.step, tasks[-1].name, exc, exc_info=True)
            text = " ".join(str(exc).split())[:500]
            return Outcome(context, note=f"{method.name} failed, context kept ({type(exc).__name__})",
                           accepted=False, extra={"error": f"{type(exc).__name__}: {text}"})
