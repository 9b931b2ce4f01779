"""Continual-learning metrics over the accuracy matrix, and run results on disk.

``R[i][j]`` is the test score on task ``j`` after learning task ``i`` (0-based,
``n`` tasks, ``R`` is ``n × n``: every row scores every task, future ones
included); ``r0[j]`` is the test score on task ``j`` before any learning. All
metric functions are pure.

========================  ====================================================
metric                    definition
========================  ====================================================
:func:`acc`               ``(1/n) Σ_j R[n-1][j]``
:func:`bwt`               ``(1/(n-1)) Σ_{j<n-1} (R[n-1][j] - R[j][j])``
                          (Lopez-Paz & Ranzato, 2017); 0.0 when n = 1
:func:`fwt`               ``(1/(n-1)) Σ_{j≥1} (R[j-1][j] - r0[j])``; 0.0 when
                          n = 1 (r0 stands in for the paper's random-init b)
:func:`forgetting`        per task ``j < n-1``: ``max_{j≤l<n-1} R[l][j] -
                          R[n-1][j]`` (Chaudhry et al., 2018); 0.0 for the
                          last task; negative when a task improved later
:func:`cumulative_loss`   ``Σ_i (1/(i+1)) Σ_{j≤i} (1 - R[i][j])``
========================  ====================================================

A run folder holds ``results.json``: ``{"schema": 1, "runs": [RunResult, …]}``,
one entry per method. :meth:`RunResult.save` adds or replaces its method's
entry atomically (under a lock file), so several methods can share one folder.
:func:`load_results` also reads method subfolders (``RUN_DIR/<name>/results.json``)
and a bare ``RunResult`` object or list.

Example:
    >>> R = [[0.5, 0.1], [0.4, 0.9]]
    >>> acc(R), round(bwt(R), 2), round(fwt(R, [0.0, 0.0]), 2)
    (0.65, -0.1, 0.1)
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxopt._atomic import write_text
from ctxopt.errors import DataError

__all__ = [
    "acc",
    "bwt",
    "fwt",
    "fwt_interval",
    "forgetting",
    "cumulative_loss",
    "StepRecord",
    "RunResult",
    "load_results",
    "RESULTS_FILE",
    "SCHEMA_VERSION",
]

RESULTS_FILE = "results.json"
SCHEMA_VERSION = 1

Matrix = Sequence[Sequence[float]]


def _square(R: Matrix) -> int:
    n = len(R)
    if n == 0:
        raise DataError("the accuracy matrix is empty")
    for i, row in enumerate(R):
        if len(row) != n:
            raise DataError(f"the accuracy matrix must be square: row {i} has {len(row)} entries, expected {n}")
    return n


def acc(R: Matrix) -> float:
    """Average accuracy after the last task: ``(1/n) Σ_j R[n-1][j]`` (divisor n).

    Example:
        >>> acc([[1.0, 0.0], [0.5, 1.0]])
        0.75
    """
    n = _square(R)
    return sum(R[n - 1]) / n


def bwt(R: Matrix) -> float:
    """Backward transfer: ``(1/(n-1)) Σ_{j=0}^{n-2} (R[n-1][j] - R[j][j])`` (divisor n-1).

    Negative values mean forgetting. Returns 0.0 for a single task.

    Example:
        >>> bwt([[1.0, 0.0], [0.5, 1.0]])
        -0.5
    """
    n = _square(R)
    if n < 2:
        return 0.0
    return sum(R[n - 1][j] - R[j][j] for j in range(n - 1)) / (n - 1)


def fwt(R: Matrix, r0: Sequence[float]) -> float:
    """Forward transfer: ``(1/(n-1)) Σ_{j=1}^{n-1} (R[j-1][j] - r0[j])`` (divisor n-1).

    How much learning tasks ``0..j-1`` helped task ``j`` before it was met,
    relative to the score before any learning. Returns 0.0 for a single task.

    Example:
        >>> fwt([[1.0, 0.5], [0.5, 1.0]], [0.2, 0.25])
        0.25
    """
    n = _square(R)
    if len(r0) != n:
        raise DataError(f"r0 has {len(r0)} entries, expected {n}")
    if n < 2:
        return 0.0
    return sum(R[j - 1][j] - r0[j] for j in range(1, n)) / (n - 1)


def fwt_interval(before: Sequence[Sequence[float]], after: Sequence[Sequence[float]], *, resamples: int = 2000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """FWT with a paired bootstrap interval over test examples: ``(fwt, low, high)``.

    ``before[j]`` and ``after[j]`` are the per-example test scores of one unseen task
    (the same examples, in the same order) before any learning (r0) and just before the
    task arrived (``R[j-1][j]``). FWT is the mean over tasks of ``mean(after) - mean(before)``,
    as :func:`fwt`. Each resample draws every task's examples with replacement, the same
    draw for both sides (paired), and recomputes FWT; the interval is the central ``level``
    share of the resamples. Deterministic for a ``seed``.

    Example:
        >>> fwt_interval([[0, 0, 0, 0]], [[1, 1, 1, 1]])
        (1.0, 1.0, 1.0)
        >>> f, lo, hi = fwt_interval([[0, 1, 0, 1], [0, 0]], [[1, 1, 0, 1], [0, 1]])
        >>> f, lo <= f <= hi
        (0.375, True)
    """
    if len(before) != len(after) or not before:
        raise DataError(f"need the same, non-zero number of tasks before and after, got {len(before)} and {len(after)}")
    for b, a in zip(before, after):
        if len(b) != len(a) or not b:
            raise DataError("every task needs the same, non-zero number of examples before and after")
    diffs = [[float(x) - float(y) for x, y in zip(a, b)] for b, a in zip(before, after)]
    point = sum(sum(d) / len(d) for d in diffs) / len(diffs)
    rng = random.Random(seed)
    stats = sorted(sum(sum(rng.choice(d) for _ in d) / len(d) for d in diffs) / len(diffs) for _ in range(resamples))
    tail = (1.0 - level) / 2
    low, high = stats[int(tail * (resamples - 1))], stats[int(round((1 - tail) * (resamples - 1)))]
    return round(point, 6), round(low, 6), round(high, 6)


def forgetting(R: Matrix) -> list[float]:
    """Per-task forgetting: ``max_{j≤l<n-1} R[l][j] - R[n-1][j]`` for ``j < n-1``; 0.0 for the last.

    The best score a task had at any step since it was learned, minus its final
    score (Chaudhry et al., 2018). Positive means forgotten.

    Example:
        >>> forgetting([[0.8, 0.0, 0.0], [0.9, 0.7, 0.0], [0.6, 0.7, 1.0]])
        [0.30000000000000004, 0.0, 0.0]
    """
    n = _square(R)
    out = []
    for j in range(n):
        if j == n - 1:
            out.append(0.0)
        else:
            out.append(max(R[l][j] for l in range(j, n - 1)) - R[n - 1][j])  # noqa: E741
    return out


def cumulative_loss(R: Matrix) -> float:
    """Cumulative loss: ``Σ_{i=0}^{n-1} mean_{j≤i} (1 - R[i][j])``.

    At each step the mean loss over the tasks seen so far, summed over steps;
    0 is perfect, ``n`` is worst.

    Example:
        >>> cumulative_loss([[1.0, 0.0], [0.5, 1.0]])
        0.25
    """
    n = _square(R)
    return sum(sum(1.0 - R[i][j] for j in range(i + 1)) / (i + 1) for i in range(n))


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class StepRecord:
    """Cost and size figures of one step (learning one task).

    Attributes:
        step: 1-based step number (task i of the stream is step i + 1; step 0 is C0).
        task: Name of the task learned at this step.
        context_tokens: Tokens of the learned context after the step.
        task_calls: LM calls made by the task program (evaluation, rollouts).
        task_tokens: Prompt + completion tokens of those calls.
        reflection_calls: LM calls made by the reflection/proposal LM.
        reflection_tokens: Tokens of those calls.
        wall_s: Wall-clock seconds of the step.
        accepted: Whether the step's proposal was accepted (None if n/a).
        extra: Free-form JSON-able figures.

    Example:
        >>> s = StepRecord(0, "antonyms", 120, 70, 9000, 3, 4000, 12.5, True)
        >>> StepRecord.from_dict(s.to_dict()) == s
        True
    """

    step: int
    task: str
    context_tokens: int = 0
    task_calls: int = 0
    task_tokens: int = 0
    reflection_calls: int = 0
    reflection_tokens: int = 0
    wall_s: float = 0.0
    accepted: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def calls(self) -> int:
        return self.task_calls + self.reflection_calls

    @property
    def tokens(self) -> int:
        return self.task_tokens + self.reflection_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "task": self.task,
            "context_tokens": self.context_tokens,
            "task_calls": self.task_calls,
            "task_tokens": self.task_tokens,
            "reflection_calls": self.reflection_calls,
            "reflection_tokens": self.reflection_tokens,
            "wall_s": self.wall_s,
            "accepted": self.accepted,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepRecord:
        try:
            return cls(
                step=int(d["step"]),
                task=str(d["task"]),
                context_tokens=int(d.get("context_tokens", 0)),
                task_calls=int(d.get("task_calls", 0)),
                task_tokens=int(d.get("task_tokens", 0)),
                reflection_calls=int(d.get("reflection_calls", 0)),
                reflection_tokens=int(d.get("reflection_tokens", 0)),
                wall_s=float(d.get("wall_s", 0.0)),
                accepted=None if d.get("accepted") is None else bool(d["accepted"]),
                extra=dict(d.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"invalid step record ({type(exc).__name__}: {exc})") from None


@dataclass
class RunResult:
    """One method's run over a stream: the accuracy matrix, r0 and per-step records.

    ``R`` may have fewer rows than tasks while a run is in progress;
    :meth:`summary` then scores the square part learned so far.

    Example:
        >>> r = RunResult("static", ["a", "b"], [0.2, 0.1], [[0.5, 0.1], [0.4, 0.9]])
        >>> r.summary()["acc"]
        0.65
        >>> RunResult.from_dict(r.to_dict()) == r
        True
    """

    method: str
    tasks: list[str]
    r0: list[float]
    R: list[list[float]] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.tasks)
        if len(self.r0) != n:
            raise DataError(f"run '{self.method}': r0 has {len(self.r0)} entries for {n} tasks")
        if len(self.R) > n:
            raise DataError(f"run '{self.method}': R has {len(self.R)} rows for {n} tasks")
        for i, row in enumerate(self.R):
            if len(row) != n:
                raise DataError(f"run '{self.method}': R row {i} has {len(row)} entries for {n} tasks")

    @property
    def complete(self) -> bool:
        return len(self.R) == len(self.tasks)

    def square(self) -> tuple[list[list[float]], list[float]]:
        """The k×k part of R learned so far (k = rows) and the matching r0."""
        k = len(self.R)
        return [list(row[:k]) for row in self.R], list(self.r0[:k])

    def gate_counts(self) -> dict[str, int]:
        """How often the gate's first decision of a step was ``accepted``, ``rejected`` or ``undecided``
        (before any growth), how many ``rounds`` of growing replay samples the run took, and how many
        ``fallbacks`` after a harm rejection the gate judged and how many of them ``landed``.

        Read from the steps' ``extra`` (``gate_outcome``, ``gate_rounds``, ``gate_fallback``); a step
        without them (a peer method, a step with nothing to gate) counts nowhere.

        Example:
            >>> steps = [StepRecord(1, "a", extra={"gate_outcome": "undecided", "gate_rounds": 1}), StepRecord(2, "b"),
            ...          StepRecord(3, "c", accepted=True, extra={"gate_outcome": "rejected", "gate_fallback": ["r"]})]
            >>> RunResult("m", ["a", "b", "c"], [0, 0, 0], steps=steps).gate_counts()
            {'accepted': 0, 'rejected': 1, 'undecided': 1, 'rounds': 1, 'fallbacks': 1, 'landed': 1}
        """
        counts = {"accepted": 0, "rejected": 0, "undecided": 0, "rounds": 0, "fallbacks": 0, "landed": 0}
        for s in self.steps:
            if s.extra.get("gate_outcome") in ("accepted", "rejected", "undecided"):
                counts[s.extra["gate_outcome"]] += 1
            counts["rounds"] += int(s.extra.get("gate_rounds") or 0)
            if s.extra.get("gate_fallback"):
                counts["fallbacks"] += 1
                counts["landed"] += int(bool(s.accepted))
        return counts

    def summary(self) -> dict[str, Any]:
        """ACC, BWT, FWT, cumulative loss and per-task forgetting, plus cost totals and :meth:`gate_counts`."""
        R, r0 = self.square()
        totals = {
            "steps": len(self.steps),
            "task_calls": sum(s.task_calls for s in self.steps),
            "reflection_calls": sum(s.reflection_calls for s in self.steps),
            "calls": sum(s.calls for s in self.steps),
            "tokens": sum(s.tokens for s in self.steps),
            "wall_s": sum(s.wall_s for s in self.steps),
            "context_tokens": self.steps[-1].context_tokens if self.steps else 0,
            "gate_counts": self.gate_counts(),
        }
        if not R:
            return {"acc": None, "bwt": None, "fwt": None, "cumulative_loss": None, "forgetting": [], **totals}
        return {
            "acc": acc(R),
            "bwt": bwt(R),
            "fwt": fwt(R, r0),
            "cumulative_loss": cumulative_loss(R),
            "forgetting": forgetting(R),
            **totals,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "tasks": list(self.tasks),
            "r0": list(self.r0),
            "R": [list(row) for row in self.R],
            "steps": [s.to_dict() for s in self.steps],
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunResult:
        try:
            return cls(
                method=str(d["method"]),
                tasks=[str(t) for t in d["tasks"]],
                r0=[float(x) for x in d["r0"]],
                R=[[float(x) for x in row] for row in d.get("R", [])],
                steps=[StepRecord.from_dict(s) for s in d.get("steps", [])],
                meta=dict(d.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"invalid run result ({type(exc).__name__}: {exc})") from None

    def save(self, run_dir: str | Path) -> Path:
        """Add or replace this method's entry in ``run_dir/results.json``, atomically.

        Returns:
            The path of ``results.json``.
        """
        folder = Path(run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / RESULTS_FILE
        with _locked(folder / ".results.lock"):
            runs = _read_runs(path) if path.exists() else []
            runs = [r for r in runs if r.method != self.method] + [self]
            write_text(path, json.dumps({"schema": SCHEMA_VERSION, "runs": [r.to_dict() for r in runs]}, indent=1))
        return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no cross-process lock
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_umask() -> int:
    try:  # Linux: read it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # at import time, before worker threads exist
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _read_runs(path: Path) -> list[RunResult]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if isinstance(data, Mapping) and "runs" in data:
        schema = data.get("schema", SCHEMA_VERSION)
        if schema != SCHEMA_VERSION:
            raise DataError(f"{path}: unsupported results schema {schema!r}; this ctxopt reads schema {SCHEMA_VERSION}")
        items = data["runs"]
    elif isinstance(data, Mapping):
        items = [data]
    else:
        items = data
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a run result, a list of them, or {{'runs': [...]}}")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(RunResult.from_dict(item))
        except DataError as exc:
            raise DataError(f"{path}: run {i + 1}: {exc}") from None
    return out


def load_results(run_dir: str | Path) -> list[RunResult]:
    """All run results of a run folder: ``results.json`` plus ``<sub>/results.json`` folders.

    Raises:
        DataError: The folder is missing, holds no results, or a file is invalid.
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: run folder not found")
    runs: list[RunResult] = []
    top = folder / RESULTS_FILE
    if top.is_file():
        runs.extend(_read_runs(top))
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if (sub / RESULTS_FILE).is_file():
            runs.extend(_read_runs(sub / RESULTS_FILE))
    if not runs:
        raise DataError(f"{folder}: no {RESULTS_FILE} here or in its subfolders; is this a run folder?")
    seen: dict[str, int] = {}
    for r in runs:  # keep method names unique so tables and plots stay readable
        if r.method in seen:
            seen[r.method] += 1
            r.method = f"{r.method} ({seen[r.method]})"
        else:
            seen[r.method] = 1
    return runs
