"""``ctxopt compare``: run baselines and the continual optimizer side by side (resumable, cached)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ctxopt.cli._args import sizes
from ctxopt.gate import DEFAULT_GATE, GATES

ALL_METHODS = "static,append,summarize,labeled-fewshot,gepa-seq,mipro-seq,gepa-joint,oracle-human,ctxopt"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="compare baselines and ctxopt on one stream (resumable)",
        description="Run several methods over one stream with the same task LM, reflection LM, seed and per-task "
                    "budget of task-LM calls; write results.json (all methods), comparison.md and report.html. "
                    "Rerunning the same command skips finished methods and resumes a killed one from its last "
                    "finished task.")
    p.add_argument("--stream", required=True, help="ii-8, babi-10, ii:a,b, babi:1,4 or a stream YAML")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated methods (default: all that fit the stream: {ALL_METHODS}; "
                        "oracle-human only for ii streams)")
    p.add_argument("--budget", default="light", help="budget preset: light, medium or heavy (default light)")
    p.add_argument("--seed", type=_seeds, default=[0],
                   help="seed, or several (0,1,2): each seed is its own run (RUN_DIR/s<seed> with --run-dir)")
    p.add_argument("--run-dir", default=None, help="default runs/compare-<stream>-<budget>-s<seed>")
    p.add_argument("--task-lm", default="local", help="LM spec of the task model (default local, 0.5B)")
    p.add_argument("--reflection-lm", default="local:qwen2.5-coder-1.5b", help="LM spec of the reflection model")
    p.add_argument("--sizes", type=sizes, default=None, help="train,val,test examples per task, e.g. 40,30,50")
    p.add_argument("--scenario", choices=("task-aware", "task-agnostic"), default=None)
    p.add_argument("--context-tokens", type=int, default=None,
                   help="context budget of append/summarize (default: the budget's max_context_tokens or 1500)")
    p.add_argument("--num-threads", type=int, default=2)
    p.add_argument("--gate", choices=tuple(GATES), default=DEFAULT_GATE,
                   help=f"ctxopt's gate (default {DEFAULT_GATE}; strict: the gate before paired tests)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage of ctxopt's search studies, e.g. postgresql+psycopg://USER@HOST/DB "
                        "(default: SQLite in the run directory)")
    p.add_argument("--search-workers", type=int, default=1,
                   help="processes that search each step at once, on the same study (default 1; more than one "
                        "needs --storage on a database server, and is not bit-identical to one)")
    p.add_argument("--program", default="builtin",
                   help="builtin (the stream's default: one Predict, or ReAct for tools streams), predict, cot, "
                        "two-stage, react, or package.module:factory")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: methods one after another in this process (default); ray: each method and seed "
                        "is a Ray task with its own process and one llama thread (resumes if a worker dies)")
    p.add_argument("--ray-cpus", type=int, default=None,
                   help="slots of the local Ray cluster, one job each (default: every core; $RAY_ADDRESS joins "
                        "an existing cluster)")
    p.set_defaults(func=cmd_compare)


def default_methods(stream_names: Any) -> str:
    """Every method that fits the stream: oracle-human only where every task has human instructions."""
    from ctxopt.streams import II_TASKS

    names = ALL_METHODS.split(",")
    if not all(t in II_TASKS for t in stream_names):
        names.remove("oracle-human")
    return ",".join(names)


class _Printer:
    """Turns comparison events into console lines: one per step, and what a long stretch is doing now (the
    measurement's task, a ctxopt step's phase or search trial): a live status line on a terminal, and in a
    log (output not a terminal) a :class:`~ctxopt.cli._progress.Heartbeat` line at most once a minute, so
    a step that runs for many minutes still shows it is alive."""

    def __init__(self, console: Any, n_tasks: int, heartbeat_s: float | None = None,
                 clock: Any = time.perf_counter) -> None:
        from ctxopt.cli._progress import HEARTBEAT_S, Heartbeat

        self.console, self.n = console, n_tasks
        self.heartbeat = Heartbeat(console, HEARTBEAT_S if heartbeat_s is None else heartbeat_s, clock)
        self._status: Any = None

    def _where(self, event: Any) -> str:
        return f"{event.method} R0" if not event.step else f"{event.method} {event.step}/{self.n} {event.task}"

    def _show(self, what: str) -> None:
        if not self.console.is_terminal:
            self.heartbeat.say(what)
            return
        from rich.text import Text

        line = Text(f"{what}  {self.heartbeat.elapsed()}")
        if self._status is None:
            self._status = self.console.status(line)
            self._status.start()
        else:
            self._status.update(line)

    def close(self) -> None:
        """Take the live status line down (idempotent)."""
        if self._status is not None:
            self._status.stop()
            self._status = None

    def __call__(self, event: Any) -> None:
        kind, d = event.kind, event.data
        if kind == "method_skip":
            self.console.print(f"[dim]{event.method}: finished earlier, skipped[/]")
        elif kind == "method_start":
            resumed = f" (resuming after {d['resumed_at']} task(s))" if d.get("resumed_at") else ""
            self.console.print(f"[bold]{event.method}[/]{resumed}")
        elif kind == "learn_start":
            self._show(f"{self._where(event)}: learning")
        elif kind == "progress":
            self._show(f"{self._where(event)}: {d['what']}")
        elif kind == "step_end":
            rec = d["record"]
            err = " [red]error[/]" if rec["extra"].get("error") else ""
            row = " ".join(f"{x:.2f}" for x in d["row"])
            self.console.print(f"  {event.method} {event.step}/{self.n} {event.task}: {rec['extra']['note']}{err}\n"
                               f"    task-LM {rec['task_calls']} calls, reflection {rec['reflection_calls']}, "
                               f"{rec['wall_s']:.0f} s; test row {row}  {self.heartbeat.elapsed()}")
            self.heartbeat.printed()
        elif kind == "method_end":
            self.close()


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers, e.g. 0 or 0,1,2; got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"give one seed or several distinct ones, e.g. 0,1,2; got {text!r}")
    return seeds


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ctxopt.baselines import get_methods
    from ctxopt.cli._progress import matrix_table
    from ctxopt.compare import compare_specs, write_comparison
    from ctxopt.executor import Job, run_jobs
    from ctxopt.matrix import load_results
    from ctxopt.rundir import STATE_FILE
    from ctxopt.search import check_workers
    from ctxopt.streams import load_stream

    console = Console()
    check_workers(args.search_workers, args.storage)
    seeds = args.seed
    safe = args.stream.replace("/", "_").replace(":", "-").replace(",", "_")
    base = {"stream": args.stream, "task_lm": args.task_lm, "reflection_lm": args.reflection_lm,
            "budget": args.budget, "sizes": list(args.sizes) if args.sizes else None, "scenario": args.scenario,
            "context_tokens": args.context_tokens, "num_threads": args.num_threads, "gate": args.gate,
            "storage": args.storage, "search_workers": args.search_workers, "program": args.program}
    runs = []  # (seed, run dir, stream, methods)
    for seed in seeds:
        stream = load_stream(args.stream, seed=seed, sizes=args.sizes, scenario=args.scenario)
        methods = args.methods or default_methods(stream.names)
        get_methods(methods)  # an unknown or repeated name fails here, before any folder is made
        if args.run_dir:
            run_dir = Path(args.run_dir) if len(seeds) == 1 else Path(args.run_dir) / f"s{seed}"
        else:
            run_dir = Path(f"runs/compare-{safe}-{args.budget}-s{seed}")
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.append((seed, run_dir, stream, [m.strip() for m in methods.split(",") if m.strip()]))
    for seed, run_dir, stream, methods in runs:
        console.print(f"comparing {','.join(methods)} on {stream.name} ({len(stream)} tasks), budget {args.budget}, "
                      f"seed {seed}; run dir {run_dir}" + (f"; executor {args.executor}" if args.executor != "local"
                                                           else ""))
    if args.executor == "local":
        for seed, run_dir, stream, methods in runs:
            printer = _Printer(console, len(stream))
            try:
                compare_specs(**base, methods=",".join(methods), run_dir=str(run_dir), seed=seed, callbacks=[printer])
            finally:
                printer.close()
    else:  # one job per method and seed; each writes its own folder and its entry in results.json
        jobs = [Job(f"{m} s{seed}", "ctxopt.compare:compare_specs",
                    {**base, "methods": m, "run_dir": str(run_dir.resolve()), "seed": seed, "report": False},
                    state_file=str((run_dir / m / STATE_FILE).resolve()), total=len(stream))
                for seed, run_dir, stream, methods in runs for m in methods]
        run_jobs(jobs, args.executor, cpus=args.ray_cpus, progress=True)
        for _, run_dir, _, methods in runs:
            by_name = {r.method: r for r in load_results(run_dir)}
            write_comparison(run_dir, [by_name[m] for m in methods if m in by_name])
    for _, run_dir, _, methods in runs:
        by_name = {r.method: r for r in load_results(run_dir)}
        for m in methods:
            if m in by_name:
                console.print(matrix_table(by_name[m]))
        console.print((run_dir / "comparison.md").read_text(encoding="utf-8"))
        console.print(f"results: {run_dir / 'results.json'}\nreport: {run_dir / 'report.html'}")
    return 0
