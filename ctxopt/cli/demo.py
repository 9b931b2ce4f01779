"""``ctxopt demo``: a short continual-learning run on the embedded local models.

Three self-describing reasoning-gym requests (letter counting, number formatting,
number sorting), one after another and **task-agnostic**: the model is never told
which task a request belongs to, and one memory serves all three, each request
seeing what it retrieves. The 0.5B task model and the 1.5B reflection model; the
first run took 35 minutes on one core of a 2-vCPU AMD EPYC beside another run (it
depends on the CPU); a rerun is answered from the caches in seconds.
"""

from __future__ import annotations

import argparse

DEMO_STREAM = "assistant:letter_counting,number_format,number_sorting"
DEMO_SIZES = (40, 30, 30)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="short task-agnostic continual-learning demo on the embedded local models")
    p.add_argument("--run-dir", default="runs/demo", help="where the store, caches and report go")
    p.add_argument("--task-lm", default="local", help="task LM spec (default: local, Qwen2.5-Coder-0.5B)")
    p.add_argument("--reflection-lm", default="local:qwen2.5-coder-1.5b", help="reflection LM spec")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ctxopt.cli.run import execute
    from ctxopt.cli.store import what_is_shown
    from ctxopt.config import RunConfig
    from ctxopt.program import program_for
    from ctxopt.selector import default_selector
    from ctxopt.store import Store
    from ctxopt.streams import load_stream

    console = Console()
    console.print(f"[bold]ctxopt demo[/]: learning {DEMO_STREAM.split(':')[1].replace(',', ' → ')}, task-agnostic, "
                  f"with task LM {args.task_lm} and reflection LM {args.reflection_lm}")
    config = RunConfig(stream=DEMO_STREAM, run_dir=args.run_dir, task_lm=args.task_lm,
                       reflection_lm=args.reflection_lm, sizes=DEMO_SIZES, budget="light")
    execute(config, console=console)
    store = f"{args.run_dir}/store"
    ctx = Store.open(store).current()
    stream = load_stream(DEMO_STREAM, seed=config.seed, sizes=DEMO_SIZES)
    program, selector = program_for(stream), default_selector(stream.scenario)
    name = next(iter(dict(program.named_predictors())))
    field = stream.program_inputs[0]
    console.print(f"\ninstruction: {ctx.predictor(name).instruction}", markup=False, highlight=False)
    for task in stream:
        request = task.val[0][field]  # a val request: what one memory shows it, no task label given
        console.rule(f"{task.name}: what one of its requests retrieves")
        console.print(f"request: {request!r}", markup=False, highlight=False)
        why = selector.explain(ctx, None, {field: request})[name] if hasattr(selector, "explain") else None
        for line in what_is_shown(ctx.predictor(name), None, selector, why, "shown")[1:]:
            console.print(line, markup=False, highlight=False)
    console.print(f"\nthe exact prompt of any request: ctxopt show --store {store} --for-input 'TEXT'",
                  markup=False, highlight=False, soft_wrap=True)  # one line, to copy
    return 0
