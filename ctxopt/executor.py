"""Where independent jobs run: one after another in this process, or as Ray tasks.

A :class:`Job` is plain data: the dotted path of a function and keyword arguments
made of strings and numbers (LM specs, a stream spec, a run directory). Any process
can run it, so the same job runs in-process (``executor="local"``, the default) or
on Ray (``executor="ray"``): ``ctxopt compare --executor ray`` runs one job per
method and seed, ``ctxopt fleet`` one job per agent.

Each job owns its run directory (``state.json``, git store, caches), so jobs share
no state but the files they are told to share (a comparison's test-row cache, which
is SQLite in WAL mode, and its ``results.json``, written under a file lock).

**Ray.** ``ray.init`` starts a local cluster with ``cpus`` slots (default: every
core), or joins the one at ``$RAY_ADDRESS``. Each job takes one slot and its
in-process llama.cpp models one thread each (``CTXOPT_LLAMA_THREADS=1``), so jobs
do not fight over cores. Workers start in this process's working directory with it
on ``PYTHONPATH``, so ``py:MODULE:FACTORY`` LM specs and program factories resolve
as they do here. A worker that dies (killed, out of memory) is retried by Ray
(``max_retries``), and the retried job resumes from its run directory's last
finished step, as a rerun of the same command does. An error a job raises is
raised here unchanged (one line for the CLI).

Progress: while jobs run, a bar per job counts its finished steps, read from the
``state.json`` its run directory keeps.

Example:
    >>> run_jobs([Job("gcd", "math:gcd", {}), Job("json", "json:dumps", {"obj": [1, 2]})])
    [0, '[1, 2]']
"""

from __future__ import annotations

import importlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxopt.errors import ConfigError, CtxoptError, MissingDependencyError

__all__ = ["EXECUTORS", "Job", "call", "run_jobs"]

EXECUTORS = ("local", "ray")
MAX_RETRIES = 3  # a job whose worker dies is retried this often (it resumes from its run directory)


@dataclass(frozen=True)
class Job:
    """One independent unit of work.

    Args:
        name: Shown in progress and errors.
        fn: ``"package.module:function"``, called as ``function(**kwargs)``.
        kwargs: Plain data (strings, numbers, lists, dicts).
        state_file: A ``state.json`` whose ``done`` says how many steps the job finished (progress).
        total: Steps in all (progress).
    """

    name: str
    fn: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    state_file: str | None = None
    total: int = 0


def call(fn: str, kwargs: dict[str, Any]) -> Any:
    """Import ``package.module:function`` and call it with ``kwargs``."""
    module, _, name = fn.partition(":")
    return getattr(importlib.import_module(module), name)(**kwargs)


def _done(job: Job) -> int:
    if not job.state_file:
        return 0
    try:
        done = json.loads(Path(job.state_file).read_text(encoding="utf-8")).get("done", 0)
        return int(done if isinstance(done, int) else len(done))
    except (OSError, ValueError, TypeError):
        return 0


def run_jobs(jobs: Sequence[Job], executor: str = "local", *, cpus: int | None = None,
             progress: bool = False) -> list[Any]:
    """Run ``jobs``; return their results in order.

    Args:
        jobs: What to run.
        executor: ``local`` (in this process, in order) or ``ray``.
        cpus: Ray slots of a local cluster (default: every core); one job per slot.
        progress: Show a bar per job (finished steps) while they run.

    Raises:
        ConfigError: Unknown executor.
        MissingDependencyError: ``ray`` is not installed.
        Exception: The first error a job raised, unchanged.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    if executor == "local":
        if not progress or len(jobs) < 2:
            return [call(job.fn, job.kwargs) for job in jobs]
        from rich.progress import Progress

        with Progress() as bars:
            bar = bars.add_task("jobs", total=len(jobs))
            out = []
            for job in jobs:
                bars.update(bar, description=job.name)
                out.append(call(job.fn, job.kwargs))
                bars.advance(bar)
            return out
    return _run_on_ray(list(jobs), cpus=cpus, progress=progress)


def _run_on_ray(jobs: list[Job], *, cpus: int | None, progress: bool) -> list[Any]:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("the ray executor needs Ray: pip install 'ctxopt[scale]'") from None
    path = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
    owns = not ray.is_initialized()
    if owns:
        address = os.environ.get("RAY_ADDRESS") or None
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster: no token file to write
        ray.init(address=address, num_cpus=None if address else (cpus or os.cpu_count() or 1),
                 include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"CTXOPT_LLAMA_THREADS": "1", "PYTHONPATH": path}})
    try:
        remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(call)
        refs = [remote.options(name=job.name).remote(job.fn, job.kwargs) for job in jobs]
        _wait(ray, refs, jobs, progress)
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:  # the job's own error, unchanged
            cause = getattr(exc, "cause", None)
            if not isinstance(cause, BaseException):
                raise
            if not isinstance(cause, CtxoptError):  # a bug, not bad input: keep where it happened in the job
                where = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # the worker's traceback, without colours
                cause.add_note(f"in the Ray job: {where}".rstrip())
            raise cause from None
    finally:
        if owns:
            ray.shutdown()


def _wait(ray: Any, refs: list[Any], jobs: list[Job], progress: bool) -> None:
    """Wait for every job; with ``progress``, one bar per job (finished steps)."""
    pending = list(refs)
    if not progress:
        ray.wait(pending, num_returns=len(pending))
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    ids = {job.name: bars.add_task(job.name, total=job.total or None) for job in jobs}
    update: Callable[[], None] = lambda: [bars.update(ids[j.name], completed=_done(j)) for j in jobs]  # noqa: E731
    with bars:
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=2.0)
            update()
            time.sleep(0.1)
        update()
