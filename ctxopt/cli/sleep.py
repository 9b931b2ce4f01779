"""``ctxopt sleep --store DIR``: a gated consolidation pass over a run's learned context, on demand.

The stream, seed, program and LMs come from ``--config CONFIG.yaml`` (the
run's config) or from the run state next to the store (``RUN_DIR/state.json``,
where ``RUN_DIR`` defaults to the store's parent folder); flags override them.
Every candidate is gated on val examples of every learned task (never test);
what lands is committed to the store, rollbacks are recorded as empty commits.
``--dry-run`` only lists the candidates, with no LM evaluation and no commit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ctxopt.cli._args import sizes
from ctxopt.errors import ConfigError
from ctxopt.gate import DEFAULT_GATE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sleep", help="consolidate a run's learned context (dedupe, merge, resolve, compress), gated",
                       description="Run a sleep-time consolidation pass on the store's current context. Each "
                                   "candidate lands only if no learned task's val score falls by more than ε.")
    p.add_argument("--store", required=True, metavar="DIR", help="the run's store (RUN_DIR/store)")
    p.add_argument("--run-dir", metavar="DIR",
                   help="run folder with state.json and caches (default: the store's parent)")
    p.add_argument("--config", metavar="YAML", help="the run's config: stream, sizes, seed, program, LMs, budget")
    p.add_argument("--stream", help="stream spec (default: from --config or state.json)")
    p.add_argument("--sizes", type=sizes, metavar="T,V,X", help="train,val,test sizes of a built-in stream")
    p.add_argument("--seed", type=int, help="the run's seed (default: from state.json or --config, else 0)")
    p.add_argument("--task-lm", help="task LM spec (default: from --config, else local)")
    p.add_argument("--reflection-lm", help="reflection LM spec (default: from --config, else local:qwen2.5-coder-1.5b)")
    p.add_argument("--max-context-tokens", type=int, metavar="N", help="per-predictor budget to compress to")
    p.add_argument("--epsilon", type=float, help="tolerated val drop of any task (default: from --config, else 0.02)")
    p.add_argument("--similarity", choices=("auto", "embedding", "lexical"), default="auto",
                   help="near-duplicate detection: sentence embeddings if installed (auto), or lexical")
    p.add_argument("--no-lm", action="store_true", help="do not use the reflection LM (heuristics only)")
    p.add_argument("--dry-run", action="store_true", help="list the candidates only: no evaluation, no commit")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(func=cmd_sleep)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """Resolve every setting from flags, then the config, then state.json, then defaults."""
    from ctxopt.config import load_config
    from ctxopt.rundir import RunDir

    config = load_config(args.config) if args.config else None
    store = Path(args.store)
    run_dir = Path(args.run_dir or (config.run_dir if config else store.resolve().parent))
    saved = RunDir(run_dir)
    state = saved.identity()
    stream = args.stream or (config.stream if config else None) or state.get("stream")
    if not stream:
        raise ConfigError(f"no stream known for {store}: pass --stream SPEC or --config CONFIG.yaml "
                          f"(no {saved.state_path} to read it from)")
    budget = config.budget_obj() if config else None
    return {
        "store": store, "run_dir": run_dir, "config": config, "stream": stream,
        "sizes": tuple(args.sizes) if args.sizes else (config.sizes if config else None),
        "seed": args.seed if args.seed is not None else state.get("seed", config.seed if config else 0),
        "task_lm": args.task_lm or (config.task_lm if config else "local"),
        "reflection_lm": args.reflection_lm or (config.reflection_lm if config else "local:qwen2.5-coder-1.5b"),
        "epsilon": args.epsilon if args.epsilon is not None else (config.epsilon if config else 0.02),
        "gate": config.gate if config else DEFAULT_GATE,
        "budget": budget, "max_context_tokens": args.max_context_tokens if args.max_context_tokens is not None
        else (budget.max_context_tokens if budget else None),
        "num_threads": config.num_threads if config else 2,
        "program": config.program if config else "builtin",
        "instruction": config.instruction if config else None,
    }


def cmd_sleep(args: argparse.Namespace) -> int:
    from ctxopt.budget import get_budget
    from ctxopt.consolidate import Consolidator
    from ctxopt.lm import get_lm
    from ctxopt.optimizer import ContinualOptimizer
    from ctxopt.program import build_program
    from ctxopt.store import Store
    from ctxopt.streams import load_stream
    from ctxopt.tokens import rendered_tokens

    s = _settings(args)
    store = Store.open(s["store"])
    stream = load_stream(s["stream"], seed=s["seed"], sizes=s["sizes"])
    reflection_lm = None if args.no_lm else get_lm(s["reflection_lm"], max_tokens=768)
    budget = get_budget(s["budget"] or "light", max_context_tokens=s["max_context_tokens"])
    if args.dry_run:
        ctx = store.current()
        if ctx is None:
            raise ConfigError(f"{store.path}: the store has no versions yet")
        cons = Consolidator(reflection_lm, similarity=args.similarity)
        cands = cons.propose(ctx, max_tokens=budget.max_context_tokens)
        if args.json:
            _out(json.dumps([c.to_dict() for c in cands], indent=2, ensure_ascii=False))
        else:
            sizes = ", ".join(f"{n} {rendered_tokens(ctx, n)} tokens" for n in ctx.predictors)
            _out(f"{len(cands)} candidate(s) for {store.path} ({sizes}):")
            for c in cands:
                _out(f"  [{c.kind}] {c.rationale}")
        return 0
    task_lm = get_lm(s["task_lm"])
    program = build_program(s["program"], stream, s["instruction"])
    opt = ContinualOptimizer(task_lm, reflection_lm, budget=budget, gate=s["gate"], epsilon=s["epsilon"],
                             seed=s["seed"], num_threads=s["num_threads"], measure_test=False,
                             run_dir=s["run_dir"], store=store, consolidate=True, consolidator=args.similarity)
    result = opt.sleep(program, stream)
    if args.json:
        _out(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return 0
    for t in result.tried:
        mark = {"accepted": "✓", "rolled_back": "↺", "skipped": "·"}[t.outcome]
        _out(f"{mark} [{t.consolidation.kind}] {t.outcome}: {t.reason}\n    {t.consolidation.rationale}")
    ctx = result.context
    sizes = ", ".join(f"{n} {rendered_tokens(ctx, n)} tokens, {len(pc.items)} items"
                      for n, pc in ctx.predictors.items())
    _out(f"{result.summary()}; now {sizes}; store head {store.head().short}")
    return 0


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
