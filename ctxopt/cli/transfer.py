"""``ctxopt transfer`` and ``ctxopt distill``: move a learned context to another LM, or towards weights.

Both read the stream from the run directory holding the store (``RUN_DIR/state.json``)
or from the store's metadata; ``--stream/--seed/--sizes`` override it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ctxopt.cli._args import sizes
from ctxopt.errors import ConfigError
from ctxopt.gate import DEFAULT_GATE, GATES

DEFAULT_STORE = "ctxopt-store"


def _tasks(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="DIR", default=os.environ.get("CTXOPT_STORE", DEFAULT_STORE),
                   help="store directory (default: $CTXOPT_STORE or ./ctxopt-store)")
    p.add_argument("--rev", default="HEAD", help="version of C to use (default HEAD)")
    p.add_argument("--stream", default=None, help="stream name or YAML path (default: from the run or store)")
    p.add_argument("--seed", type=int, default=None, help="seed of the stream's train/val draw (default: the run's)")
    p.add_argument("--sizes", type=sizes, default=None, metavar="T,V,X",
                   help="train,val,test sizes the run used, if not the defaults")
    p.add_argument("--tasks", type=_tasks, default=None, metavar="A,B",
                   help="seen tasks (default: the tasks in the history of --rev)")
    p.add_argument("--num-threads", type=int, default=2, metavar="N", help="evaluator threads")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``transfer`` and ``distill`` to the ``ctxopt`` parser."""
    p = subparsers.add_parser(
        "transfer", help="apply the learned context to another task LM; re-validate, optionally adapt",
        description="Apply C (learned with one task LM) to the program on another LM, print per-task val deltas "
                    "(new LM with C vs without C), optionally adapt with a short gated pass, and commit the "
                    "result on the branch transfer/<LM>. A result worse than no C is never kept.")
    _common(p)
    p.add_argument("--to-lm", required=True, metavar="SPEC", help="target task LM, e.g. local:qwen2.5-coder-1.5b")
    p.add_argument("--adapt", action="store_true", help="run a short gated optimizer pass on the new LM")
    p.add_argument("--reflection-lm", default=None, metavar="SPEC",
                   help="reflection LM for --adapt (default: the one C was learned with)")
    p.add_argument("--budget", default="light", help="budget preset of the adapt pass (light, medium, heavy)")
    p.add_argument("--gate", default=DEFAULT_GATE, choices=tuple(GATES), help="gate of the adapt pass")
    p.add_argument("--epsilon", type=float, default=0.02, help="tolerated drop of an earlier task (gate)")
    p.add_argument("--branch", default=None, help="branch to commit on (default transfer/<sanitized LM spec>)")
    p.add_argument("--work-dir", default=None, metavar="DIR", help="caches and Optuna study of this transfer")
    p.add_argument("--measure-test", action="store_true",
                   help="after all decisions, report test accuracy (ACC) of: no C, C, adapted C, kept version")
    p.set_defaults(func=cmd_transfer)

    p = subparsers.add_parser(
        "distill", help="generate the SFT set that would move the learned context into weights",
        description="The teacher (program + C) answers each seen task's train inputs (kept where the metric "
                    "passes) and, with --synthesize N, N new inputs written by the reflection LM (kept where "
                    "--samples answers agree). Writes chat JSONL (system prompt without C), a datasets dataset "
                    "and a card, and reports how often the student without C already agrees (headroom).")
    _common(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--synthesize", type=int, default=0, metavar="N", help="new inputs per task (default 0)")
    p.add_argument("--samples", type=int, default=3, metavar="K", help="teacher samples per synthesized input")
    p.add_argument("--agree", type=float, default=2 / 3, help="majority share needed to keep a synthesized row")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the K samples")
    p.add_argument("--min-score", type=float, default=1.0, help="metric score a labeled row needs (default 1.0)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of kept rows held out for the headroom check")
    p.add_argument("--teacher-lm", default=None, metavar="SPEC", help="default: the task LM C was learned with")
    p.add_argument("--student-lm", default=None, metavar="SPEC", help="default: the teacher LM")
    p.add_argument("--reflection-lm", default=None, metavar="SPEC", help="writes synthesized inputs")
    p.set_defaults(func=cmd_distill)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _delta(v: float | None) -> str:
    return "" if v is None else f"{v:+.3f}"


def cmd_transfer(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ctxopt.portability import measure_test, resolve_stream, transfer
    from ctxopt.store import Store

    if args.num_threads < 1:
        raise ConfigError("--num-threads must be at least 1")
    console = Console(stderr=args.json)

    def on_event(event: Any) -> None:
        if event.kind == "phase" and event.data.get("phase") in ("validate", "adapt"):
            console.print(f"[dim]{event.data['phase']}…[/dim]")
        elif event.kind == "task_end":
            verdict = "accepted" if event.data.get("accepted") else "kept as is"
            console.print(f"[dim]adapt {event.task}: {verdict} — {event.data.get('reason', '')}[/dim]")

    store = Store.open(args.store)
    result = transfer(store, args.to_lm, adapt=args.adapt, stream=args.stream, seed=args.seed, sizes=args.sizes,
                      tasks=args.tasks, reflection_lm=args.reflection_lm, budget=args.budget, gate=args.gate,
                      epsilon=args.epsilon, rev=args.rev, branch=args.branch, work_dir=args.work_dir,
                      num_threads=args.num_threads, callbacks=[on_event])
    test = None
    if args.measure_test:
        stream, _, _ = resolve_stream(store, result.source_rev, stream=args.stream, seed=result.seed,
                                      sizes=args.sizes, tasks=list(result.tasks))
        test = measure_test(result, args.to_lm, stream, num_threads=args.num_threads)
    if args.json:
        _print_json({**result.to_dict(), **({"test": test} if test else {})})
        return 0
    table = Table(title=f"val on {result.to_lm}: with C (learned with {result.from_lm}) vs without C")
    for col in ("task", "without C", "with C", "Δ", *(("adapted", "Δ adapted") if result.adapted else ()), "kept"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for r in result.rows:
        cells = [r.task, _fmt(r.without), _fmt(r.with_c), _delta(r.delta)]
        if result.adapted:
            cells += [_fmt(r.adapted), _delta(r.adapted_delta)]
        table.add_row(*cells, _fmt(r.final))
    mean_cells = ["mean", _fmt(result.mean("without")), _fmt(result.mean("with_c")),
                  _delta((result.mean("with_c") or 0) - (result.mean("without") or 0))]
    if result.adapted:
        mean_cells += [_fmt(result.mean("adapted")), _delta((result.mean("adapted") or 0) - (result.mean("without") or 0))]
    table.add_row(*mean_cells, _fmt(result.mean("final")), style="bold")
    console.print(table)
    style = "bold red" if result.fell_back else "bold"
    console.print(f"[{style}]kept: {result.kept}[/{style}] — {result.reason}")
    console.print(f"committed on branch {result.branch} at {result.final_rev[:10]} "
                  f"(use it: ctxopt checkout {result.branch} --store {args.store})")
    if test:
        t = Table(title="test accuracy (reporting only; measured after every decision)")
        for col in ("version", *result.tasks, "ACC"):
            t.add_column(col, justify="left" if col == "version" else "right")
        for name, m in test.items():
            t.add_row(name, *(f"{v:.3f}" for v in m["row"]), f"{m['acc']:.3f}")
        console.print(t)
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ctxopt.distill import distill
    from ctxopt.store import Store

    for name in ("synthesize", "samples", "num_threads"):
        if getattr(args, name) < (0 if name == "synthesize" else 1):
            raise ConfigError(f"--{name.replace('_', '-')} must be {'≥ 0' if name == 'synthesize' else '≥ 1'}")
    console = Console(stderr=args.json)
    result = distill(Store.open(args.store), args.out, rev=args.rev, stream=args.stream, seed=args.seed,
                     sizes=args.sizes, tasks=args.tasks, teacher_lm=args.teacher_lm, student_lm=args.student_lm,
                     reflection_lm=args.reflection_lm, synthesize=args.synthesize, samples=args.samples,
                     agree=args.agree, temperature=args.temperature, min_score=args.min_score,
                     holdout=args.holdout, num_threads=args.num_threads)
    if args.json:
        _print_json(result.to_dict())
        return 0
    table = Table(title=f"distillation set from {result.source_rev[:10]} (teacher {result.teacher_lm})")
    for col in ("task", "train kept", "pass rate", "synth kept", "agree rate", "held out", "student agrees"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for s in result.tasks:
        table.add_row(s.task, f"{s.train_kept}/{s.train_total}", _fmt(s.train_pass_rate),
                      f"{s.synth_kept}/{s.synth_total}", _fmt(s.synth_agree_rate), str(s.heldout),
                      _fmt(s.student_agreement))
    console.print(table)
    console.print(f"{result.rows} rows ({result.heldout} held out) → {result.out}; "
                  f"student without C agrees on {_fmt(result.student_agreement)} of held-out rows "
                  f"(headroom {_fmt(result.headroom)})")
    return 0
