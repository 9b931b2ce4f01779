"""``ctxopt streams`` (list or inspect task streams) and ``ctxopt report RUN_DIR``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ctxopt.cli._args import sizes

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``streams`` and ``report`` subcommands."""
    p = subparsers.add_parser(
        "streams",
        help="list the built-in task streams, or show one stream's tasks",
        description="Without SPEC, list the built-in streams. With SPEC (a built-in name such as "
        "ii-8, ii:antonyms,sum, babi:1,4, assistant-8, rg:letter_counting,spell_backward, ii-8x2, "
        "or a stream .yaml file), load it and show its tasks, "
        "metrics and split sizes; this also validates a YAML stream.",
    )
    p.add_argument("spec", nargs="?", help="stream to load and show")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val draw (default 0)")
    p.add_argument("--sizes", type=sizes, help="train,val,test examples per task, e.g. 40,30,50")
    p.add_argument("--scenario", choices=["task-aware", "task-agnostic"], help="override the stream's scenario")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_streams)

    r = subparsers.add_parser(
        "report",
        help="write an HTML report (and summary.md) for a run folder",
        description="Read RUN_DIR/results.json (and method subfolders) and write a self-contained "
        "report.html with plots, plus summary.md with the methods table.",
    )
    r.add_argument("run_dir", metavar="RUN_DIR", help="folder holding results.json")
    r.add_argument("-o", "--out", help="HTML path (default RUN_DIR/report.html)")
    r.set_defaults(func=_report)


def _streams(args: argparse.Namespace) -> int:
    from ctxopt.streams import builtin_streams, load_stream

    if not args.spec:
        streams = builtin_streams()
        if args.json:
            print(json.dumps(streams, indent=2))
            return 0
        width = max(map(len, streams))
        for name, desc in streams.items():
            print(f"{name:<{width}}  {desc}")
        print("\nRecurrence: a suffix xN runs a built-in's tasks N times over with fresh examples (ii-8x2), and a\n"
              "name repeated in ii:, babi: or rg: is a revisit (ii:antonyms,sum,antonyms); visit k is the task\n"
              "<name>@k, its own column of the accuracy matrix, and sees what was learned for <name>.")
        print("\nAlso: a stream .yaml file. `ctxopt streams SPEC` shows a stream's tasks.")
        return 0
    stream = load_stream(args.spec, seed=args.seed, sizes=args.sizes, scenario=args.scenario)
    info = stream.describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{stream.name}  ({stream.scenario}; {', '.join(stream.program_inputs)} -> {stream.output})")
    width = max(len(t.name) for t in stream)
    print(f"  {'task':<{width}}  {'metric':<12} train  val  test")
    for t in info["tasks"]:
        sz = t["sizes"]
        print(f"  {t['name']:<{width}}  {t['metric']:<12} {sz['train']:>5} {sz['val']:>4} {sz['test']:>5}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from ctxopt.report import write_report

    path = write_report(args.run_dir, args.out)
    print(path)
    return 0
