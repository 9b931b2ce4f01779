"""``ctxopt demo``: a short continual-learning run on the embedded local models.

Three Instruction Induction tasks, one after another, with the 0.5B task model
and the 1.5B reflection model. The first run takes 6 to 15 minutes on 2 cores
(it depends on the CPU); a rerun is answered from the caches in seconds.
"""

from __future__ import annotations

import argparse

DEMO_STREAM = "ii:first_word_letter,singular_to_plural,antonyms"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="short continual-learning demo on the embedded local models")
    p.add_argument("--run-dir", default="runs/demo", help="where the store, caches and report go")
    p.add_argument("--task-lm", default="local", help="task LM spec (default: local, Qwen2.5-Coder-0.5B)")
    p.add_argument("--reflection-lm", default="local:qwen2.5-coder-1.5b", help="reflection LM spec")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ctxopt.cli.run import execute
    from ctxopt.config import RunConfig
    from ctxopt.store import Store

    console = Console()
    console.print(f"[bold]ctxopt demo[/]: learning {DEMO_STREAM.split(':')[1].replace(',', ' → ')} "
                  f"with task LM {args.task_lm} and reflection LM {args.reflection_lm}")
    config = RunConfig(stream=DEMO_STREAM, run_dir=args.run_dir, task_lm=args.task_lm,
                       reflection_lm=args.reflection_lm, sizes=(40, 30, 30), budget="light")
    result = execute(config, console=console)
    ctx = Store.open(f"{args.run_dir}/store").current()
    for task in result.tasks:
        console.rule(f"learned context as the model sees it for task {task}")
        console.print(ctx.render("predict", task=task), markup=False, highlight=False)
        demos = ctx.predictor("predict").scoped_demos(task)
        if demos:
            console.print(f"\nDemos ({len(demos)}, shown to the model as example turns):")
            for d in demos[:4]:
                console.print(f"  {d.inputs.get('input')!r} → {d.outputs.get('output')!r}", markup=False,
                              highlight=False)
    return 0
