"""Rich progress and result tables for long-running commands (run, demo)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ctxopt.lm import usage_of

HEARTBEAT_S = 60.0  # at most one progress line a minute when the output is not a terminal


class Heartbeat:
    """What a long stretch is doing, for a log: where the output is not a terminal (so no live display
    shows), :meth:`say` prints its line at most once every ``every_s`` seconds, and not within ``every_s``
    of the last line anything printed (:meth:`printed`). On a terminal it prints nothing."""

    def __init__(self, console: Console, every_s: float = HEARTBEAT_S, clock: Any = time.perf_counter) -> None:
        self.console, self.every_s, self.clock = console, every_s, clock
        self.started = self._said = clock()

    def elapsed(self) -> str:
        """Seconds since the display started, as the lines show them (``[61 s]``)."""
        return f"[{self.clock() - self.started:.0f} s]"

    def say(self, what: str) -> None:
        if not self.console.is_terminal and self.clock() - self._said >= self.every_s:
            self.console.print(f"    … {what}  {self.elapsed()}", markup=False, highlight=False)
            self._said = self.clock()

    def printed(self) -> None:
        """Another line was just printed: the next heartbeat waits ``every_s`` from now."""
        self._said = self.clock()


class RunProgress:
    """An optimizer callback that draws task, phase, trial and LM-call progress.

    Use as a context manager around ``fit``; pass ``progress.on_event`` as a callback.
    """

    def __init__(self, n_tasks: int, task_lm: Any, reflection_lm: Any, console: Console | None = None) -> None:
        self.console = console or Console()
        self.task_lm, self.reflection_lm = task_lm, reflection_lm
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"), console=self.console, transient=False,
        )
        self.tasks_bar = self.progress.add_task("tasks", total=n_tasks, info="")
        self.phase_bar = self.progress.add_task("phase", total=1, info="")
        self.heartbeat = Heartbeat(self.console)
        self._phase = ""

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def _calls(self) -> str:
        t, r = usage_of(self.task_lm), usage_of(self.reflection_lm)
        return f"task-LM {t.calls} calls ({t.cache_hits} cached) · reflection {r.calls}"

    def on_event(self, event: Any) -> None:
        kind, data = event.kind, event.data
        if kind == "run_start" and data.get("resumed_at"):
            self.progress.update(self.tasks_bar, completed=data["resumed_at"])
            self.console.print(f"resuming after {data['resumed_at']} finished task(s)")
        elif kind == "phase":
            total = data.get("total", 1)
            self._phase = label = f"{event.task or 'all tasks'}: {data['phase']}"
            self.progress.update(self.phase_bar, description=label, completed=data.get("done", 0), total=total)
            self.heartbeat.say(f"{label} {data['done']}/{total}" if "done" in data else label)
        elif kind == "propose":
            n = len(data["proposals"])
            self.console.print(f"  {event.task}: {n} proposal(s) after dropping {len(data['dropped'])}")
            self.heartbeat.printed()
        elif kind == "trial":
            self.progress.update(self.phase_bar, advance=1)
            self.heartbeat.say(f"{self._phase}, trial {data['number'] + 1}")
        elif kind == "task_end":
            mark = "[green]✓ accepted[/]" if data["accepted"] else "[yellow]↺ rolled back[/]"
            self.console.print(f"step {event.step} {event.task}: {mark} — {data['reason']}")
            self.progress.update(self.tasks_bar, advance=1)
            self.heartbeat.printed()
        elif kind == "measure":
            self.progress.update(self.phase_bar, completed=1, total=1)
        self.progress.update(self.tasks_bar, info=self._calls())


def matrix_table(result: Any) -> Table:
    """The accuracy matrix: row R0 (before learning), then one row per learned task."""
    table = Table(title=f"accuracy matrix ({result.method}, test splits)")
    table.add_column("after ↓ / on →")
    for name in result.tasks:
        table.add_column(name[:14], justify="right")
    table.add_row("R0 (start)", *(f"{x:.2f}" for x in result.r0))
    for name, row in zip(result.tasks, result.R):
        table.add_row(name[:16], *(f"{x:.2f}" for x in row))
    return table


def summary_line(result: Any, task_lm: Any, reflection_lm: Any, wall_s: float) -> str:
    s = result.summary()
    t, r = usage_of(task_lm), usage_of(reflection_lm)
    fmt = lambda v: "n/a" if v is None else f"{100 * v:+.1f}" if v < 0 else f"{100 * v:.1f}"  # noqa: E731
    return (f"ACC {fmt(s['acc'])}  BWT {fmt(s['bwt'])}  FWT {fmt(s['fwt'])}  (points)\n"
            f"task LM: {t.calls} calls ({t.cache_hits} cache hits, {t.model_calls} model calls, {t.tokens} tokens)\n"
            f"reflection LM: {r.calls} calls ({r.model_calls} model calls, {r.tokens} tokens)\n"
            f"wall time {wall_s:.0f} s")
