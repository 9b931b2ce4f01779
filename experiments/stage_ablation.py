"""Which predictors' edits matter: val of the final C with each predictor's edits removed.

For a multi-stage program learned by ``ctxopt compare`` (method ``ctxopt``), this takes
the final context C of the run and, for every predictor whose context differs from the
initial C0, builds C with that predictor put back to C0 (its rules, demos, instruction and
retrieval settings all removed, the other predictors' kept). It scores every task's whole
val split under C and under each ablation, with the run's own evaluator cache (keyed by
the rendered prompt, so what the gate already scored costs nothing). Val only: the test
splits are never read here.

It prints one row per task and writes ``experiments/results/stage_ablation_<name>.json``.

Usage (the same stream, sizes, seed and program as the compare command):
    python experiments/stage_ablation.py runs/tools-8 --stream tools-8 --sizes 10,8,20 --name tools-8
    python experiments/stage_ablation.py runs/babi2 --stream babi-10 --scenario task-agnostic \\
        --program two-stage --name babi-10-two-stage
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctxopt._atomic import write_json  # noqa: E402


def main() -> int:
    from ctxopt.cli._args import sizes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the compare run directory (holds ctxopt/store)")
    parser.add_argument("--stream", required=True)
    parser.add_argument("--sizes", type=sizes, default=None)
    parser.add_argument("--scenario", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--program", default="builtin")
    parser.add_argument("--method", default="ctxopt")
    parser.add_argument("--task-lm", default="local")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()

    from ctxopt.evaluator import Evaluator
    from ctxopt.lm import get_lm
    from ctxopt.program import build_program
    from ctxopt.selector import default_selector
    from ctxopt.store import Store
    from ctxopt.streams import load_stream

    stream = load_stream(args.stream, seed=args.seed, sizes=args.sizes, scenario=args.scenario)
    program = build_program(args.program, stream)
    folder = args.run_dir / args.method
    store = Store.open(folder / "store")
    final, initial = store.current(), store.log()[-1]
    c0 = store.show(initial.rev)
    changed = [n for n in final.predictors if final.predictor(n) != c0.predictor(n)]
    contexts = {"final": final, **{f"without {n}": final.with_predictor(n, c0.predictor(n)) for n in changed}}
    ev = Evaluator(get_lm(args.task_lm), num_threads=args.num_threads, cache_dir=folder / "eval_cache",
                   selector=default_selector(stream.scenario))
    rows: dict[str, dict[str, float]] = {label: {} for label in contexts}
    for task in stream:
        for label, ctx in contexts.items():
            rows[label][task.name] = round(ev.evaluate(program, ctx, task, list(task.val),
                                                       scenario=stream.scenario).mean, 4)
        print(f"{task.name:<18} " + "  ".join(f"{label} {rows[label][task.name]:.3f}" for label in contexts),
              flush=True)
    means = {label: round(sum(r.values()) / len(r), 4) for label, r in rows.items()}
    print("mean val: " + ", ".join(f"{label} {m:.3f}" for label, m in means.items()))
    for n in changed:
        print(f"removing {n}'s edits changes mean val by {means[f'without {n}'] - means['final']:+.3f}")
    out = {"run_dir": str(args.run_dir), "stream": args.stream, "program": args.program, "seed": args.seed,
           "changed_predictors": changed, "val": rows, "mean_val": means,
           "items": {n: len(final.predictor(n).items) for n in final.predictors},
           "demos": {n: len(final.predictor(n).demos) for n in final.predictors}}
    path = ROOT / "experiments" / "results" / f"stage_ablation_{args.name}.json"
    write_json(path, out)
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
