"""A cached, threaded evaluator: run a program under a learned context on examples.

:meth:`Evaluator.evaluate` deep-copies the program, applies the context (with
the task's name in a task-aware stream), binds the evaluator's LM and runs the
examples on ``num_threads`` threads. Each example yields an
:class:`ExampleResult`: score, feedback, prediction and a JSON-able trace of
every predictor call.

**One failure is one bad score.** An LM error, a reply the adapter cannot
parse, a metric that raises, or an example running past ``timeout_s`` becomes
score 0 with feedback saying what went wrong and ``error`` set; it is counted
in :attr:`EvalResult.failures` and never stops the run. (A timed-out call
cannot be killed; its thread is abandoned and its late result ignored.)

**Cache.** Results are keyed by what the model actually sees for the
example: the program's state *after* the context is applied (each
predictor's rendered instruction and demos, its fields and config), plus the
example id, :func:`lm_id`, the scenario, the task name and its metric. Two
contexts that render the same prompts for a task share its cached results, so
a change to one task's items never re-runs another task; a changed program or
metric never reuses stale scores. With ``cache_dir`` the cache is a
SQLite file ``cache_dir/evals.sqlite`` (each write is one transaction, so it is
atomic and safe across threads and processes); without it, results are cached
in memory for the evaluator's lifetime. Failed examples are not cached: a
transient LM error is retried on the next evaluation.

**A dead endpoint stops the run.** An :class:`~ctxopt.errors.EndpointError` (bad
credentials, an unknown model, an endpoint still down after retries; see
:mod:`ctxopt.endpoint`) is never a score: the evaluation stops and re-raises it, so
the run ends with one line and resumes from its saved state once the endpoint works.

**A broken program stops the run.** When every example of an evaluation fails
with the same exception (a program that rejects its inputs, a dead LM
endpoint), :meth:`Evaluator.evaluate` raises :class:`~ctxopt.errors.ProgramError`
with one line naming the exception, instead of returning a table of zeros.
Unparseable replies and timeouts stay bad scores: a poor candidate context can
cause them.

**Task label.** In a task-aware stream the example carries its task name in
the ``task`` input; it is passed to the program only if the program's
``forward`` declares a ``task`` parameter (or ``**kwargs``).

**Test data.** :meth:`Evaluator.evaluate_test` is the only door to a task's
sealed test split; use it only to fill the accuracy matrix.

Example:
    >>> import dspy
    >>> from dspy.utils.dummies import DummyLM
    >>> from ctxopt.metrics import get_metric
    >>> from ctxopt.program import TaskProgram
    >>> from ctxopt.tasks import Task, make_example
    >>> ex = make_example({"input": "hot", "output": "cold"}, ["input"])
    >>> task = Task.from_splits("antonyms", ("input",), "output",
    ...                         get_metric("exact_match", "output"), [ex], [ex], [ex])
    >>> ev = Evaluator(DummyLM([{"output": "cold"}]), num_threads=1)
    >>> res = ev.evaluate(TaskProgram(["input"], "output"), None, task, task.val, scenario="task-agnostic")
    >>> res.mean, res.failures
    (1.0, 0)
"""

from __future__ import annotations

import contextvars
import copy
import hashlib
import inspect
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dspy

from ctxopt.endpoint import fatal_in
from ctxopt.errors import ConfigError, ProgramError
from ctxopt.metrics import Score
from ctxopt.selector import ContextSelector, ScopeSelector
from ctxopt.tasks import SCENARIOS, TASK_FIELD, Task, example_id, sealed_test_split

__all__ = [
    "ExampleResult",
    "EvalResult",
    "Evaluator",
    "ContextLike",
    "lm_id",
    "SCHEMA_VERSION",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


class ContextLike(Protocol):
    """What the evaluator needs of a learned context."""

    @property
    def hash(self) -> str: ...

    def apply_to(self, program: dspy.Module, task: str | None = None) -> Any: ...


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ExampleResult:
    """The outcome of one example.

    Attributes:
        example_id: The example's stable id.
        score: In [0, 1]; 0 when the example failed.
        feedback: The metric's feedback, or what went wrong.
        prediction: The program's output fields (empty on failure).
        trace: Per predictor call: ``{"predictor", "inputs", "outputs"}``.
        error: ``"<ExceptionType>: message"`` when the example failed, else None.
        cached: True when this result came from the cache.

    Example:
        >>> r = ExampleResult("t:1", 1.0, "correct", {"output": "a"}, [], None)
        >>> ExampleResult.from_dict(r.to_dict()) == r
        True
    """

    example_id: str
    score: float
    feedback: str
    prediction: dict[str, Any]
    trace: list[dict[str, Any]]
    error: str | None = None
    cached: bool = field(default=False, compare=False)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "example_id": self.example_id,
            "score": self.score,
            "feedback": self.feedback,
            "prediction": self.prediction,
            "trace": self.trace,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, cached: bool = False) -> ExampleResult:
        return cls(
            example_id=str(data["example_id"]),
            score=float(data["score"]),
            feedback=str(data.get("feedback", "")),
            prediction=dict(data.get("prediction") or {}),
            trace=list(data.get("trace") or []),
            error=data.get("error"),
            cached=cached,
        )


@dataclass(frozen=True)
class EvalResult:
    """The results of one evaluation, in the order of the examples given.

    Example:
        >>> r = EvalResult((ExampleResult("a", 1.0, "ok", {}, []), ExampleResult("b", 0.0, "x", {}, [], "E: x")))
        >>> r.mean, r.failures, EvalResult.from_dict(r.to_dict()) == r
        (0.5, 1, True)
    """

    results: tuple[ExampleResult, ...]
    task: str = ""
    context_hash: str = "none"
    lm: str = ""
    wall_s: float = field(default=0.0, compare=False)

    @property
    def mean(self) -> float:
        """Mean score; 0.0 for no examples."""
        return sum(r.score for r in self.results) / len(self.results) if self.results else 0.0

    @property
    def failures(self) -> int:
        """How many examples failed (LM error, parse failure, timeout, metric error)."""
        return sum(1 for r in self.results if r.failed)

    @property
    def cache_hits(self) -> int:
        return sum(1 for r in self.results if r.cached)

    @property
    def scores(self) -> list[float]:
        return [r.score for r in self.results]


    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "task": self.task,
            "context_hash": self.context_hash,
            "lm": self.lm,
            "wall_s": self.wall_s,
            "mean": self.mean,
            "failures": self.failures,
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        return cls(
            results=tuple(ExampleResult.from_dict(r) for r in data.get("results", ())),
            task=str(data.get("task", "")),
            context_hash=str(data.get("context_hash", "none")),
            lm=str(data.get("lm", "")),
            wall_s=float(data.get("wall_s", 0.0)),
        )


# --------------------------------------------------------------------------- helpers


def lm_id(lm: Any) -> str:
    """Identify an LM for caching: its model plus temperature and max_tokens.

    Example:
        >>> from dspy.utils.dummies import DummyLM
        >>> lm_id(DummyLM([]))
        'dummy|temperature=0.0|max_tokens=1000'
    """
    model = getattr(lm, "model", None) or type(lm).__name__
    kwargs = getattr(lm, "kwargs", None) or {}
    temperature = kwargs.get("temperature")
    max_tokens = kwargs.get("max_tokens", kwargs.get("max_completion_tokens"))
    return f"{model}|temperature={temperature}|max_tokens={max_tokens}"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if hasattr(value, "toDict"):
        return _jsonable(value.toDict())
    if hasattr(value, "model_dump"):
        return _jsonable(value.model_dump())
    return str(value)


def _prediction_dict(pred: Any) -> dict[str, Any]:
    if pred is None:
        return {}
    if isinstance(pred, Mapping):
        return _jsonable(dict(pred))
    if hasattr(pred, "toDict"):
        return _jsonable(pred.toDict())
    if hasattr(pred, "items"):
        return _jsonable(dict(pred.items()))
    return {"value": _jsonable(pred)}


def _predictor_state(pred: Any) -> dict[str, Any]:
    """What shapes a predictor's prompts: instructions, fields and demos (never its LM)."""
    sig = getattr(pred, "signature", None)
    fields = []
    for name, info in (getattr(sig, "fields", None) or {}).items():
        extra = getattr(info, "json_schema_extra", None) or {}
        fields.append([name, _jsonable({k: v for k, v in extra.items()}), str(getattr(info, "annotation", ""))])
    demos = [_jsonable(d) for d in (getattr(pred, "demos", None) or [])]
    return {
        "class": type(pred).__name__,
        "instructions": getattr(sig, "instructions", None),
        "fields": fields,
        "demos": demos,
        "config": _jsonable(getattr(pred, "config", None) or {}),
    }


def _program_fingerprint(program: dspy.Module) -> str:
    """Hash of a program's class and its predictors' instructions, fields and demos."""
    parts: list[Any] = [type(program).__module__ + "." + type(program).__qualname__]
    parts += [[name, _predictor_state(pred)] for name, pred in program.named_predictors()]
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _metric_name(task: Task) -> str:
    m = task.metric
    return str(getattr(m, "name", None) or getattr(m, "path", None) or getattr(m, "__qualname__", type(m).__name__))


def _short_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:299] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _failure_feedback(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "AdapterParseError" or "parse" in name.lower():
        return (
            "the model's reply could not be parsed into the output fields; "
            "answer in the required field format with only the requested fields"
        )
    return f"the example failed before it could be scored ({_short_error(exc)})"


# --------------------------------------------------------------------------- cache


_OPEN_CACHES: weakref.WeakSet[_Cache] = weakref.WeakSet()


def _reconnect_caches_after_fork() -> None:
    for cache in list(_OPEN_CACHES):
        cache._after_fork()


os.register_at_fork(after_in_child=_reconnect_caches_after_fork)


class _Cache:
    """Example results by key: in memory, and in SQLite when a folder is given."""

    def __init__(self, cache_dir: str | Path | None) -> None:
        self._lock = threading.Lock()
        self._memory: dict[str, dict[str, Any]] = {}
        self._db: sqlite3.Connection | None = None
        self.path: Path | None = None
        if cache_dir is not None:
            folder = Path(cache_dir).expanduser()
            folder.mkdir(parents=True, exist_ok=True)
            self.path = folder / "evals.sqlite"
            self._connect()
            _OPEN_CACHES.add(self)

    def _connect(self) -> None:
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def _after_fork(self) -> None:
        """In a forked child (a search worker): a connection of its own, never the parent's."""
        self._lock = threading.Lock()
        if self._db is not None:
            self._connect()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            hit = self._memory.get(key)
            if hit is not None or self._db is None:
                return hit
            row = self._db.execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value = json.loads(row[0])
        with self._lock:
            self._memory[key] = value
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        with self._lock:
            self._memory[key] = value
            if self._db is not None:
                with self._db:  # one transaction: the row is written whole or not at all
                    self._db.execute("INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)", (key, text))

    def __len__(self) -> int:
        with self._lock:
            if self._db is not None:
                return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
            return len(self._memory)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


# --------------------------------------------------------------------------- evaluator


class Evaluator:
    """Runs a program under a learned context over examples, in threads, with a cache.

    Args:
        lm: The LM that runs the program (bound to a deep copy of it).
        num_threads: Worker threads.
        cache_dir: Folder of the persistent cache; None keeps it in memory.
        timeout_s: Seconds one example may run before it counts as failed.
        selector: What of the context is rendered for each input (:mod:`ctxopt.selector`); default: all in scope.

    Example:
        >>> from dspy.utils.dummies import DummyLM
        >>> Evaluator(DummyLM([]), num_threads=2).num_threads
        2
    """

    def __init__(
        self,
        lm: Any,
        *,
        num_threads: int = 4,
        cache_dir: str | Path | None = None,
        timeout_s: float = 120.0,
        selector: ContextSelector | None = None,
    ) -> None:
        self.lm = lm
        self.selector: ContextSelector = selector or ScopeSelector()
        self.num_threads = max(1, int(num_threads))
        self.timeout_s = float(timeout_s)
        self._cache = _Cache(cache_dir)
        self.lm_id = lm_id(lm)

    @property
    def cache_path(self) -> Path | None:
        return self._cache.path

    def using(self, selector: ContextSelector) -> Evaluator:
        """This evaluator with another selector, sharing its LM and cache (results are keyed by what is shown)."""
        if selector is self.selector:
            return self
        other = copy.copy(self)
        other.selector = selector
        return other

    def close(self) -> None:
        """Close the cache file (the evaluator keeps working from memory)."""
        self._cache.close()

    # -- public ---------------------------------------------------------------
    def evaluate(
        self,
        program: dspy.Module,
        context: ContextLike | None,
        task: Task,
        examples: Sequence[dspy.Example],
        *,
        scenario: str = "task-aware",
    ) -> EvalResult:
        """Evaluate ``program`` under ``context`` on ``examples`` of ``task``.

        Args:
            program: The program; it is deep-copied, never changed.
            context: The learned context to apply, or None for the program as is.
            task: The task the examples belong to (name and metric).
            examples: The examples to run (train or val; see :meth:`evaluate_test`).
            scenario: ``"task-aware"`` gives the program the input ``task`` and
                applies the context for this task; ``"task-agnostic"`` gives neither.

        Returns:
            An :class:`EvalResult` with one result per example, in order.

        Raises:
            ConfigError: Unknown scenario, or the context does not fit the program.
        """
        if scenario not in SCENARIOS:
            raise ConfigError(f"unknown scenario '{scenario}'; use one of {', '.join(SCENARIOS)}")
        start = time.perf_counter()
        aware = scenario == "task-aware"
        label = task.family if aware else None  # every visit of a task shares its label and scope
        ctx_hash = str(context.hash) if context is not None else "none"
        takes_task = aware and _accepts(program, TASK_FIELD)
        # One program copy per distinct selection (the default selector makes one per evaluation).
        built: dict[str, tuple[dspy.Module, str]] = {}
        progs: list[dspy.Module] = []

        results: list[ExampleResult | None] = [None] * len(examples)
        keys: list[str] = []
        todo: list[int] = []
        for i, ex in enumerate(examples):
            eid = example_id(ex)
            shown = None if context is None else self.selector.select(context, label, dict(ex.inputs().items()))
            sel = shown.hash if shown is not None else "none"
            if sel not in built:
                prog = copy.deepcopy(program)
                if shown is not None:
                    shown.apply_to(prog, task=label)
                prog.set_lm(self.lm)
                # Keyed by the rendered view (the applied program's fingerprint), not by the whole context's hash.
                built[sel] = prog, json.dumps(
                    [_program_fingerprint(prog), self.lm_id, scenario, takes_task, task.name, _metric_name(task)],
                    ensure_ascii=False)
            prog, base = built[sel]
            progs.append(prog)
            key = hashlib.sha256(f"{base}|{eid}".encode()).hexdigest()
            keys.append(key)
            hit = self._cache.get(key)
            if hit is not None:
                results[i] = ExampleResult.from_dict(hit, cached=True)
            else:
                todo.append(i)

        if todo:
            names = {id(p): n for prog, _ in built.values() for n, p in prog.named_predictors()}
            run = _Run(self, progs, task, examples, todo, takes_task, names)
            for i, res in run.execute().items():
                results[i] = res
                if res.error is None:
                    self._cache.put(keys[i], res.to_dict())

        final = tuple(r for r in results if r is not None)
        out = EvalResult(final, task=task.name, context_hash=ctx_hash, lm=self.lm_id, wall_s=time.perf_counter() - start)
        _raise_if_broken(out, task)
        if out.failures:
            logger.warning("task %s: %d of %d examples failed", task.name, out.failures, len(final))
        logger.debug(
            "task %s: %d examples, %d cached, mean %.3f, %.2fs", task.name, len(final), out.cache_hits, out.mean, out.wall_s
        )
        return out

    def evaluate_test(
        self,
        program: dspy.Module,
        context: ContextLike | None,
        task: Task,
        *,
        scenario: str = "task-aware",
    ) -> EvalResult:
        """Evaluate on the task's sealed test split: the only way to reach it.

        Use it only to fill the accuracy matrix, never to choose or gate edits.
        """
        return self.evaluate(program, context, task, sealed_test_split(task), scenario=scenario)

    # -- one example ------------------------------------------------------------
    def _run_one(
        self,
        prog: dspy.Module,
        task: Task,
        example: dspy.Example,
        aware: bool,
        names: Mapping[int, str],
    ) -> ExampleResult:
        eid = example_id(example)
        inputs = dict(example.inputs().items())
        if aware:  # the program declares the task label (see Evaluator.evaluate)
            inputs.setdefault(TASK_FIELD, task.family)
        else:
            inputs.pop(TASK_FIELD, None)
        trace: list[Any] = []
        pred: Any = None
        try:
            with dspy.context(trace=trace, lm=self.lm):
                pred = prog(**inputs)
        except Exception as exc:  # noqa: BLE001 - one failure is one bad score
            if (fatal := fatal_in(exc)) is not None:
                raise fatal from None  # a dead endpoint is not a score
            return ExampleResult(eid, 0.0, _failure_feedback(exc), {}, _trace(trace, names), _short_error(exc))
        try:
            score = task.metric(example, pred)
            if not isinstance(score, Score):
                raise TypeError(f"metric returned {type(score).__name__}, expected Score")
            value = min(1.0, max(0.0, float(score.score)))
        except Exception as exc:  # noqa: BLE001
            return ExampleResult(
                eid, 0.0, f"the metric failed on this example ({_short_error(exc)})",
                _prediction_dict(pred), _trace(trace, names), _short_error(exc),
            )
        return ExampleResult(eid, value, score.feedback, _prediction_dict(pred), _trace(trace, names), None)


def _accepts(program: dspy.Module, name: str) -> bool:
    """Whether ``program``'s ``forward`` takes a keyword ``name`` (declared, or through ``**kwargs``)."""
    try:  # read off the class: touching ``program.forward`` makes DSPy log "calling forward directly"
        params = list(inspect.signature(type(program).forward).parameters.values())[1:]
    except (AttributeError, TypeError, ValueError):
        return True
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


_SCORE_ONLY = ("AdapterParseError", "TimeoutError")  # a poor context can cause these: they stay bad scores


def _raise_if_broken(result: EvalResult, task: Task) -> None:
    """Stop with one line when every example failed with the same exception (never a table of zeros).

    One failed example alone is not enough evidence: it may be an odd input.
    """
    errors = {r.error for r in result.results}
    if len(result.results) < 2 or None in errors or len(errors) != 1:
        return
    error = errors.pop()
    if str(error).split(":", 1)[0] in _SCORE_ONLY:
        return
    raise ProgramError(
        f"all {len(result.results)} examples of task {task.name} failed with the same error: {error}; "
        "fix the program (its forward() must accept the stream's input fields) or the LM it calls, then rerun")


def _trace(trace: Sequence[Any], names: Mapping[int, str]) -> list[dict[str, Any]]:
    out = []
    for entry in trace:
        try:
            predictor, inputs, outputs = entry
        except (TypeError, ValueError):
            continue
        out.append(
            {
                "predictor": names.get(id(predictor), type(predictor).__name__),
                "inputs": _jsonable(dict(inputs)),
                "outputs": _prediction_dict(outputs),
            }
        )
    return out


class _Run:
    """One evaluation's worker threads, with per-example timeouts.

    Workers are daemon threads pulling example indices from a shared list. When
    an example runs past the timeout it is recorded as failed and a replacement
    worker is started, so a hung call neither blocks the run nor the process.
    An :class:`~ctxopt.errors.EndpointError` in any worker stops the others from
    starting new examples and is re-raised by :meth:`execute`.
    """

    def __init__(
        self,
        ev: Evaluator,
        progs: Sequence[dspy.Module],
        task: Task,
        examples: Sequence[dspy.Example],
        todo: list[int],
        aware: bool,
        names: Mapping[int, str],
    ) -> None:
        self.ev, self.progs, self.task, self.examples = ev, progs, task, examples
        self.aware, self.names = aware, names
        self.pending = list(reversed(todo))
        self.total = len(todo)
        self.done: dict[int, ExampleResult] = {}
        self.started: dict[int, float] = {}
        self.fatal: BaseException | None = None
        self.cond = threading.Condition()

    def _worker(self) -> None:
        while True:
            with self.cond:
                if not self.pending or self.fatal is not None:
                    return
                i = self.pending.pop()
                self.started[i] = time.monotonic()
            try:
                res = self.ev._run_one(self.progs[i], self.task, self.examples[i], self.aware, self.names)
            except BaseException as exc:  # noqa: BLE001 - never lose an example
                if (fatal := fatal_in(exc)) is not None:
                    with self.cond:
                        self.fatal = self.fatal or fatal
                        self.started.pop(i, None)
                        self.cond.notify_all()
                    return
                res = ExampleResult(example_id(self.examples[i]), 0.0, _failure_feedback(exc), {}, [], _short_error(exc))
            with self.cond:
                if i not in self.done:  # a timed-out example keeps its timeout result
                    self.done[i] = res
                self.started.pop(i, None)
                self.cond.notify_all()

    def _spawn(self) -> None:
        ctx = contextvars.copy_context()  # carry dspy.context overrides into the thread
        threading.Thread(target=ctx.run, args=(self._worker,), daemon=True, name="ctxopt-eval").start()

    def execute(self) -> dict[int, ExampleResult]:
        for _ in range(min(self.ev.num_threads, self.total)):
            self._spawn()
        timeout = self.ev.timeout_s
        with self.cond:
            while len(self.done) < self.total:
                if self.fatal is not None:
                    raise self.fatal
                self.cond.wait(timeout=min(1.0, max(0.05, timeout / 4)))
                now = time.monotonic()
                for i, t0 in list(self.started.items()):
                    if i not in self.done and now - t0 > timeout:
                        self.done[i] = ExampleResult(
                            example_id(self.examples[i]),
                            0.0,
                            f"the example timed out after {timeout:g}s; the model must answer faster or shorter",
                            {},
                            [],
                            f"TimeoutError: no result after {timeout:g}s",
                        )
                        self.started.pop(i, None)
                        if self.pending:
                            self._spawn()  # replace the stuck worker
        return self.done
