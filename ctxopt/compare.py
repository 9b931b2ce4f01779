"""Run several methods side by side over one stream: one harness, one measurement, one table.

:func:`compare` runs each method (:mod:`ctxopt.baselines`) through the same
loop, and only the method's ``learn`` differs:

1. the method's folder ``RUN_DIR/<method>/`` gets a git-backed store whose
   first version is C₀, the program's own context;
2. row R₀ is measured (test splits, through :func:`ctxopt.optimizer.measure_row`,
   the one function that measures a test row);
3. for each task in order: the method learns from the tasks' train/val
   (``Method.learn``), under the same task LM, reflection LM, seed and per-task
   budget of task-LM calls; the usage of both LMs during learning is counted
   from their counters (:func:`ctxopt.lm.usage_of`), so calls DSPy's
   optimizers make are counted like any other; the new C is committed (unless
   the method committed it itself) and the test row is measured;
4. after each task, the method's state is written atomically
   (``state.json``) and its :class:`~ctxopt.matrix.RunResult` is added to
   ``RUN_DIR/results.json``.

**One failure is one bad step.** A method that raises while learning (a DSPy
optimizer choking on a small model's replies, say) keeps its context for that
step; the error is logged and recorded in the step record (``extra["error"]``)
and the run goes on.

**Resume and cache.** A finished method is skipped on rerun; a killed one
restarts from its last finished task. Test rows are cached in
``RUN_DIR/eval_cache`` (shared by all methods, so equal contexts are measured
once), a method's own evaluations in ``RUN_DIR/<method>/eval_cache`` (so its
call count does not depend on which methods ran before it), and LM requests in DSPy's request cache (the CLI points it at
``RUN_DIR/dspy_cache``), so a rerun costs next to nothing. A step cut off
mid-learning starts again from its beginning, its cached requests answered at
once. For the DSPy optimizers and the append/summarize baselines its call
counts are then those of one clean attempt (DSPy-cache hits are counted).
ctxopt's own evaluation cache answers what the killed attempt evaluated, so a
resumed ctxopt step counts fewer task-LM calls; its budget charge
(``extra["charged_task_calls"]``) is exact either way. Its ``wall_s`` adds
the seconds the killed attempts spent (:class:`ctxopt._clock.StepClock`,
``RUN_DIR/<method>/learn_clock.json``) and ``extra["learn_attempts"]`` says
how many attempts it took.

Step records count *learning* only: ``task_calls``/``reflection_calls`` are
LM requests made while the method learned (DSPy-cache hits included,
evaluator-cache hits are not requests); what measuring the test row cost is
in ``extra["measure_task_calls"]``.

Example:
    >>> from ctxopt.matrix import RunResult
    >>> print(comparison_table([RunResult("static", ["a"], [0.5], [[0.5]])]).splitlines()[2])
    | static | 0.500 | 0.000 | 0.000 | 0 | 0 | 0 | 0.0 s |
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

from ctxopt._atomic import write_json, write_text
from ctxopt._clock import StepClock
from ctxopt.baselines import (
    DEFAULT_CONTEXT_TOKENS,
    LearnContext,
    Method,
    Outcome,
    get_methods,
)
from ctxopt.budget import Budget, get_budget
from ctxopt.context import LearnedContext
from ctxopt.errors import ConfigError
from ctxopt.evaluator import Evaluator
from ctxopt.lm import UsageSnapshot, lm_name, usage_of
from ctxopt.matrix import RunResult, StepRecord
from ctxopt.optimizer import measure_row
from ctxopt.store import Store
from ctxopt.tasks import TaskStream
from ctxopt.tokens import TOKENIZER

__all__ = ["STATE_VERSION", "TABLE_FILE", "CompareEvent", "compare", "comparison_table"]

log = logging.getLogger(__name__)

STATE_VERSION = 1
TABLE_FILE = "comparison.md"
CLOCK_FILE = "learn_clock.json"


@dataclass(frozen=True)
class CompareEvent:
    """Progress of a comparison, delivered to callbacks.

    ``kind`` is one of ``method_start``, ``method_skip``, ``measure``,
    ``learn_start`` and ``learn_end`` (around the method's learning only),
    ``step_end`` (``data["record"]``: the step record, ``data["row"]``: the
    test row), ``method_end`` (``data["summary"]``).
    """

    kind: str
    method: str
    step: int = 0
    task: str = ""
    data: dict[str, Any] = field(default_factory=dict)


Callback = Callable[[CompareEvent], None]



def _usage(task_lm: Any, reflection_lm: Any) -> tuple[UsageSnapshot, UsageSnapshot]:
    return usage_of(task_lm), usage_of(reflection_lm)


class _Run:
    """One comparison: shared LMs, evaluator, budget and run folder; runs methods one by one."""

    def __init__(self, program: dspy.Module, stream: TaskStream, *, task_lm: Any, reflection_lm: Any,
                 run_dir: Path, budget: Budget, seed: int, num_threads: int, max_context_tokens: int,
                 callbacks: Sequence[Callback]) -> None:
        self.program, self.stream = program, stream
        self.task_lm, self.reflection_lm = task_lm, reflection_lm
        self.run_dir, self.budget, self.seed = run_dir, budget, seed
        self.num_threads, self.max_context_tokens = num_threads, max_context_tokens
        self.callbacks = list(callbacks)
        # Test rows: one cache for all methods (equal contexts are measured once). Learning: one cache
        # per method, so no method's call count depends on which methods ran before it.
        self.evaluator = Evaluator(task_lm, num_threads=num_threads, cache_dir=run_dir / "eval_cache")
        self._learn_evaluators: dict[Path, Evaluator] = {}
        self.lms = {"task_lm": lm_name(task_lm), "reflection_lm": lm_name(reflection_lm)}

    def emit(self, kind: str, method: str, step: int = 0, task: str = "", **data: Any) -> None:
        event = CompareEvent(kind, method, step, task, data)
        for cb in self.callbacks:
            cb(event)

    # ---------------------------------------------------------------- state
    def _identity(self, method: Method) -> dict[str, Any]:
        return {"method": method.name, "stream": self.stream.name, "tasks": list(self.stream.names),
                "scenario": self.stream.scenario, "seed": self.seed, "budget": self.budget.to_dict(),
                "max_context_tokens": self.max_context_tokens, "lms": self.lms}

    def _load_state(self, path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
        if not path.exists():
            return None
        state = json.loads(path.read_text(encoding="utf-8"))
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"{path}: comparison state version {state.get('version')} is not {STATE_VERSION}; "
                              "use a new --run-dir")
        differs = [k for k, v in identity.items() if state.get("identity", {}).get(k) != v]
        if differs:
            raise ConfigError(f"{path}: this run directory holds a different run ({', '.join(differs)} differ); "
                              "use a new --run-dir or the original settings")
        return state

    def _result(self, method: Method, state: dict[str, Any], context: LearnedContext | None, store: Store
                ) -> RunResult:
        head = store.head()
        meta = {"stream": self.stream.name, "stream_tasks": list(self.stream.names),
                "scenario": self.stream.scenario, "seed": self.seed, "budget": self.budget.to_dict(),
                "lms": self.lms, "joint": bool(getattr(method, "joint", False)),
                "max_context_tokens": self.max_context_tokens, "tokenizer": TOKENIZER,
                "errors": sum(1 for s in state["steps"] if s.get("extra", {}).get("error"))}
        if context is not None:
            meta.update(final_context_hash=context.hash, final_context_tokens=context.token_count())
        if head is not None:
            meta["final_rev"] = head.rev
        return RunResult(method=method.name, tasks=list(self.stream.names), r0=list(state["r0"]),
                         R=[list(r) for r in state["R"]], steps=[StepRecord.from_dict(s) for s in state["steps"]],
                         meta=meta)

    # ---------------------------------------------------------------- one method
    def run_method(self, method: Method) -> RunResult:
        name, n = method.name, len(self.stream)
        work = self.run_dir / name
        state_path = work / "state.json"
        identity = self._identity(method)
        state = self._load_state(state_path, identity)
        store = Store.init(work / "store")
        if state is not None and state["done"] == n:
            self.emit("method_skip", name, done=n)
            result = self._result(method, state, store.show(state["rev"]), store)
            result.save(self.run_dir)
            return result
        if state is None:
            context = store.current() if store.head() is not None else None
            if context is None:
                context = LearnedContext.from_program(self.program)
                store.commit(context, f"initial context C0 ({name})",
                             {"step": 0, "task": None, "method": name, "stream": self.stream.name, "lms": self.lms})
            state = {"version": STATE_VERSION, "identity": identity, "done": 0, "r0": None, "R": [], "steps": [],
                     "rev": store.head().rev}
        else:
            context = store.show(state["rev"])
        self.emit("method_start", name, resumed_at=state["done"], tasks=list(self.stream.names))
        if state["r0"] is None:
            state["r0"] = self._measure(name, 0, "", context)[0]
            write_json(state_path, state)
        joint = bool(getattr(method, "joint", False))
        for i in range(state["done"], len(self.stream.tasks)):
            step = i + 1
            context, record = self._step(method, context, i, store, work, joint)
            state["done"] = step
            state["R"].append(record.extra.pop("row"))
            state["steps"].append(record.to_dict())
            state["rev"] = store.head().rev
            write_json(state_path, state)
            StepClock(work / CLOCK_FILE, step).finish()
            self._result(method, state, context, store).save(self.run_dir)
        result = self._result(method, state, context, store)
        result.save(self.run_dir)
        self.emit("method_end", name, summary=result.summary())
        return result

    def _learner_evaluator(self, work: Path) -> Evaluator:
        ev = self._learn_evaluators.get(work)
        if ev is None:
            ev = self._learn_evaluators[work] = Evaluator(self.task_lm, num_threads=self.num_threads,
                                                          cache_dir=work / "eval_cache")
        return ev

    def close(self) -> None:
        for ev in (self.evaluator, *self._learn_evaluators.values()):
            ev.close()

    def _measure(self, name: str, step: int, task: str, context: LearnedContext
                 ) -> tuple[list[float], UsageSnapshot, float]:
        t0, started = usage_of(self.task_lm), time.perf_counter()
        row = measure_row(self.evaluator, self.program, self.stream, context)
        used, secs = usage_of(self.task_lm) - t0, time.perf_counter() - started
        self.emit("measure", name, step, task, row=row)
        return row, used, secs

    def _step(self, method: Method, context: LearnedContext, i: int, store: Store, work: Path, joint: bool
              ) -> tuple[LearnedContext, StepRecord]:
        name, task, step = method.name, self.stream.tasks[i], i + 1
        n = len(self.stream)
        ctx = LearnContext(task_lm=self.task_lm, reflection_lm=self.reflection_lm, budget=self.budget,
                           task_calls=self.budget.task_calls_per_task * (n if joint else 1),
                           reflection_calls=self.budget.reflection_calls_per_task * (n if joint else 1),
                           max_context_tokens=self.max_context_tokens, seed=self.seed, step=step,
                           scenario=self.stream.scenario, evaluator=self._learner_evaluator(work), store=store,
                           work_dir=work,
                           num_threads=self.num_threads,
                           emit=lambda kind, **data: self.emit(kind, name, step, task.name, **data))
        self.emit("learn_start", name, step, task.name)
        before = _usage(self.task_lm, self.reflection_lm)
        with StepClock(work / CLOCK_FILE, step) as clock:
            if joint and i > 0:
                outcome = Outcome(context, note=f"{name}: joint method, learned once at step 1")
            else:
                tasks = self.stream.tasks if joint else self.stream.tasks[: i + 1]
                outcome = self._learn(method, context, tasks, ctx)
        wall = clock.seconds
        after = _usage(self.task_lm, self.reflection_lm)
        t_used, r_used = after[0] - before[0], after[1] - before[1]
        self.emit("learn_end", name, step, task.name, note=outcome.note)
        new = outcome.context
        head_meta = store.metadata("HEAD")
        if not (head_meta.get("step") == step and head_meta.get("task") == task.name):
            meta = {"step": step, "task": task.name, "method": name, "accepted": outcome.accepted,
                    "note": outcome.note, "lms": self.lms,
                    "usage": {"task_calls": t_used.calls, "reflection_calls": r_used.calls}}
            store.commit(new, f"step {step} {task.name}: {outcome.note}", meta, allow_empty=True)
        row, m_used, m_secs = self._measure(name, step, task.name, new)
        extra = {**outcome.extra, "note": outcome.note, "context_hash": new.hash, "rev": store.head().rev,
                 "task_model_calls": t_used.model_calls, "task_cache_hits": t_used.cache_hits,
                 "reflection_model_calls": r_used.model_calls, "budget_task_calls": ctx.task_calls,
                 "measure_task_calls": m_used.calls, "measure_s": round(m_secs, 3),
                 "learn_attempts": clock.attempts}
        record = StepRecord(step=step, task=task.name, context_tokens=new.token_count(), task_calls=t_used.calls,
                            task_tokens=t_used.tokens, reflection_calls=r_used.calls,
                            reflection_tokens=r_used.tokens, wall_s=round(wall, 3), accepted=outcome.accepted,
                            extra={**extra, "row": row})
        self.emit("step_end", name, step, task.name, record={**record.to_dict(), "extra": extra}, row=row)
        return new, record

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
            log.warning("%s failed on step %d (%s): %s", method.name, ctx.step, tasks[-1].name, exc, exc_info=True)
            text = " ".join(str(exc).split())[:500]
            return Outcome(context, note=f"{method.name} failed, context kept ({type(exc).__name__})",
                           accepted=False, extra={"error": f"{type(exc).__name__}: {text}"})


def compare(
    program: dspy.Module,
    stream: TaskStream,
    methods: str | Sequence[str | Method],
    *,
    task_lm: Any,
    reflection_lm: Any,
    run_dir: str | Path,
    budget: str | Budget | dict | None = "light",
    seed: int = 0,
    num_threads: int = 2,
    max_context_tokens: int | None = None,
    callbacks: Sequence[Callback] = (),
    report: bool = True,
) -> list[RunResult]:
    """Run ``methods`` side by side over ``stream``; resumable, cached.

    Args:
        program: The ``dspy.Module`` every method starts from (its context is C₀).
        stream: The tasks, in order.
        methods: Names (``"static,append"`` or a list) or :class:`~ctxopt.baselines.Method` objects.
        task_lm: The LM that runs the program (shared by all methods).
        reflection_lm: The LM that reflects/summarizes/proposes (shared by all methods).
        run_dir: Holds ``results.json``, the table, the report, the caches and one folder per method.
        budget: Preset name, dict or :class:`Budget`; every method gets its per-task limits.
        seed: Seeds every method.
        num_threads: Evaluation threads.
        max_context_tokens: Context budget of ``append``/``summarize`` (default: the budget's
            ``max_context_tokens``, else :data:`~ctxopt.baselines.DEFAULT_CONTEXT_TOKENS`).
        callbacks: Receive :class:`CompareEvent` s.
        report: Write ``comparison.md`` and the HTML report at the end.

    Returns:
        One :class:`RunResult` per method, in the order given.

    Raises:
        ConfigError: Unknown or duplicate method, a method that does not fit the stream,
            or a run directory that holds a different run.
    """
    chosen = get_methods(methods if isinstance(methods, str) else list(methods))
    for m in chosen:
        check = getattr(m, "check", None)
        if callable(check):
            check(stream.names)
    if getattr(task_lm, "usage", None) is not None and task_lm is reflection_lm:
        log.warning("the task LM and the reflection LM are one object; their call counts cannot be told apart")
    budget_obj = get_budget(budget)
    tokens = max_context_tokens or budget_obj.max_context_tokens or DEFAULT_CONTEXT_TOKENS
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    run = _Run(program, stream, task_lm=task_lm, reflection_lm=reflection_lm, run_dir=folder, budget=budget_obj,
               seed=seed, num_threads=num_threads, max_context_tokens=tokens, callbacks=callbacks)
    try:
        results = [run.run_method(m) for m in chosen]
    finally:
        run.close()
    if report:
        write_comparison(folder, results)
    return results


def _fmt(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def comparison_table(results: Sequence[RunResult]) -> str:
    """The comparison as Markdown: method | ACC | BWT | FWT | task-LM calls | reflection calls |
    final context tokens | wall time (learning only; test measurement excluded).
    """
    header = ["method", "ACC", "BWT", "FWT", "task-LM calls", "reflection calls", "final context tokens",
              "wall time"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r in results:
        s = r.summary()
        cells = [r.method, _fmt(s["acc"]), _fmt(s["bwt"]), _fmt(s["fwt"]), str(s["task_calls"]),
                 str(s["reflection_calls"]), str(r.meta.get("final_context_tokens", s["context_tokens"])),
                 f"{s['wall_s']:.1f} s"]
        if not r.complete:
            cells[0] += f" ({len(r.R)}/{len(r.tasks)} tasks)"
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(run_dir: str | Path, results: Sequence[RunResult]) -> tuple[Path, Path]:
    """Write ``comparison.md`` (table + per-method budget notes) and the HTML report; return both paths."""
    from ctxopt.report import write_report

    folder = Path(run_dir)
    budget = results[0].meta.get("budget", {}) if results else {}
    meta = results[0].meta if results else {}
    intro = (f"Stream {meta.get('stream', '?')}, seed {meta.get('seed', '?')}, per-task budget "
             f"{budget.get('task_calls_per_task')} task-LM program calls. Calls are LM requests made while "
             "learning (DSPy-cache hits included); measuring the test rows is not counted. "
             "Wall time is learning time.")
    lines = [f"# Comparison: {folder.resolve().name}", "", intro, "", comparison_table(results)]
    errors = [(r.method, s.step, s.task, s.extra["error"]) for r in results for s in r.steps if s.extra.get("error")]
    if errors:
        lines += ["", "Failed steps (context kept):", ""]
        lines += [f"- {m} step {st} ({t}): {e}" for m, st, t, e in errors]
    table = folder / TABLE_FILE
    write_text(table, "\n".join(lines) + "\n")
    return table, write_report(folder)
