"""``ctxopt run CONFIG.yaml``: a continual-learning run with progress, matrix and report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the continual optimizer from a YAML config (resumable)",
                       description="Run the continual optimizer over a stream. Rerunning the same command "
                                   "resumes a killed run from its last finished task.")
    p.add_argument("config", help="run config YAML (see ctxopt.config)")
    p.set_defaults(func=cmd_run)


def execute(config: Any, *, console: Any = None) -> Any:
    """Run a validated :class:`~ctxopt.config.RunConfig`; print progress, matrix, summary and report path."""
    from rich.console import Console

    from ctxopt.cli._progress import RunProgress, matrix_table, summary_line
    from ctxopt.config import fit_config
    from ctxopt.lm import get_lm
    from ctxopt.report import write_report
    from ctxopt.streams import load_stream

    console = console or Console()
    n_tasks = len(load_stream(config.stream, seed=config.seed, sizes=config.sizes, scenario=config.scenario))
    task_lm, reflection_lm = get_lm(config.task_lm), get_lm(config.reflection_lm, max_tokens=768)
    started = time.perf_counter()
    with RunProgress(n_tasks, task_lm, reflection_lm, console) as progress:
        result = fit_config(config, callbacks=[progress.on_event], lms=(task_lm, reflection_lm))
    console.print(matrix_table(result))
    console.print(summary_line(result, task_lm, reflection_lm, time.perf_counter() - started))
    report = write_report(config.run_dir)
    console.print(f"store: {Path(config.run_dir) / 'store'}  (ctxopt log --store {Path(config.run_dir) / 'store'})")
    console.print(f"report: {report}")
    return result


def cmd_run(args: argparse.Namespace) -> int:
    from ctxopt.config import load_config

    execute(load_config(args.config))
    return 0
