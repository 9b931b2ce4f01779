"""Issue 7 acceptance: a hard context budget on a 20-task stream, against no budget and against ``append``.

Runs three things on the stream of ``experiments/configs/ii-20.yaml`` (each resumable and cached, so a
finished one costs seconds), then reports::

    python experiments/context_budget.py

1. ``ctxopt run experiments/configs/ii-20.yaml``             ctxopt, no context budget
2. ``ctxopt run experiments/configs/ii-20-budget.yaml``      ctxopt, ``max_context_tokens: 1200`` + consolidation
   ``ctxopt run experiments/configs/ii-20-budget1500.yaml``  the same with 1500 (``--budget-config`` repeats)
3. ``ctxopt compare --stream <same> --methods append --context-tokens 1000000 ...``  append, unbounded

The report checks the three acceptance claims from the runs' own records:

* every version committed by each budgeted run renders within its budget (read back from its git store,
  not from the optimizer's bookkeeping);
* ACC of each budgeted run is within 2 points of the unbudgeted run (test splits, from ``results.json``);
* ``append``'s context grows roughly linearly (least-squares slope and R² of tokens over steps).

It prints a table, writes ``experiments/results/context_budget_<name>.json`` and the plot
``experiments/results/context_tokens_<name>.png`` (context tokens over steps) shown in the README.
``--report-only`` skips the runs and reports on what is on disk.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctxopt._atomic import write_json  # noqa: E402
from ctxopt.config import load_config  # noqa: E402
from ctxopt.consolidate import rendered_tokens  # noqa: E402
from ctxopt.errors import DataError  # noqa: E402
from ctxopt.matrix import RunResult, load_results  # noqa: E402
from ctxopt.store import Store  # noqa: E402

RESULTS = ROOT / "experiments" / "results"


def _ctxopt(*args: str) -> None:
    cmd = [sys.executable, "-m", "ctxopt", *args]
    print("$ ctxopt " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def _one(run_dir: Path, method: str) -> RunResult:
    try:
        runs = [r for r in load_results(run_dir) if r.method == method]
    except DataError as exc:
        raise SystemExit(f"{exc}; run without --report-only first") from None
    if not runs:
        raise SystemExit(f"{run_dir}: no {method} results; run without --report-only first")
    return runs[0]


def store_max_tokens(store_dir: Path) -> tuple[int, int, str]:
    """Largest rendered context over every version in the store's history: (tokens, versions, rev)."""
    store = Store.open(store_dir)
    worst, worst_rev, versions = 0, "", store.log()
    for v in versions:
        ctx = store.show(v.rev)
        tokens = max((rendered_tokens(ctx, p) for p in ctx.predictors), default=0)
        if tokens > worst:
            worst, worst_rev = tokens, v.rev
    return worst, len(versions), worst_rev


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and R² of ys over xs."""
    n = len(xs)
    if n < 2:
        return 0.0, 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx if sxx else 0.0
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (my + slope * (x - mx))) ** 2 for x, y in zip(xs, ys))
    return slope, (1.0 - ss_res / ss_tot) if ss_tot else 1.0


def plot(series: dict[str, RunResult], budgets: list[int], path: Path) -> None:
    """Left: every run, on one scale. Right: the ctxopt runs only, with their budgets."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    colors = {label: f"C{i}" for i, label in enumerate(series)}
    for ax, labels in ((left, list(series)), (right, [k for k in series if k != "append"])):
        for label in labels:
            run = series[label]
            style = "s--" if label == "append" else "o-" if label == "ctxopt" else "^-"
            ax.plot([s.step for s in run.steps], [s.context_tokens for s in run.steps], style, ms=3, label=label,
                    color=colors[label])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(bottom=0)
        ax.set_xlabel("step (task #)")
        ax.grid(alpha=0.3)
    for limit in budgets:
        right.axhline(limit, color="red", lw=0.8, ls=":")
        right.annotate(f"max_context_tokens={limit}", (1, limit), fontsize=7, color="red", va="bottom")
    left.set_ylabel("context tokens (all tasks' scopes)")
    left.set_title("every run", fontsize=10)
    right.set_title("ctxopt with and without a budget", fontsize=10)
    left.legend(fontsize=8, loc="upper left")
    fig.suptitle("learned context size over a 20-task stream", fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="experiments/configs/ii-20.yaml", help="run config without a budget")
    p.add_argument("--budget-config", action="append", default=None,
                   help="run config with max_context_tokens (repeat for several budgets; default: "
                        "experiments/configs/ii-20-budget.yaml and ii-20-budget1500.yaml)")
    p.add_argument("--append-dir", default=None, help="default: <config run_dir>-append")
    p.add_argument("--report-only", action="store_true", help="do not run; report on the runs on disk")
    args = p.parse_args(argv)
    budget_configs = args.budget_config or ["experiments/configs/ii-20-budget.yaml",
                                            "experiments/configs/ii-20-budget1500.yaml"]

    free = load_config(ROOT / args.config)
    if free.budget_obj().max_context_tokens is not None:
        raise SystemExit(f"{args.config} must not set max_context_tokens")
    bounded = {}
    for path in budget_configs:
        cfg = load_config(ROOT / path)
        limit = cfg.budget_obj().max_context_tokens
        if limit is None:
            raise SystemExit(f"{path} must set max_context_tokens")
        if (free.stream, free.seed, free.sizes, free.task_lm) != (cfg.stream, cfg.seed, cfg.sizes, cfg.task_lm):
            raise SystemExit(f"{args.config} and {path} must share stream, seed, sizes and task LM")
        bounded[limit] = (path, cfg)
    append_dir = Path(args.append_dir or free.run_dir + "-append")
    name = Path(free.run_dir).name
    if not args.report_only:
        _ctxopt("run", args.config)
        for path, _ in bounded.values():
            _ctxopt("run", path)
        extra = ["--sizes", ",".join(map(str, free.sizes))] if free.sizes else []
        _ctxopt("compare", "--stream", free.stream, "--methods", "append", "--context-tokens", "1000000",
                "--budget", "light", "--seed", str(free.seed), "--task-lm", free.task_lm,
                "--reflection-lm", free.reflection_lm, "--run-dir", str(append_dir), *extra)

    runs = {"ctxopt": _one(ROOT / free.run_dir, "ctxopt")}
    for limit, (_, cfg) in sorted(bounded.items()):
        runs[f"ctxopt, budget {limit}"] = _one(ROOT / cfg.run_dir, "ctxopt")
    runs["append"] = _one(ROOT / append_dir, "append")
    acc = {k: r.summary()["acc"] for k, r in runs.items()}
    budgets = {}
    for limit, (path, cfg) in sorted(bounded.items()):
        worst, n_versions, worst_rev = store_max_tokens(ROOT / cfg.run_dir / "store")
        steps = runs[f"ctxopt, budget {limit}"].steps
        budgets[str(limit)] = {
            "config": path, "run_dir": cfg.run_dir, "versions": n_versions, "max_rendered_tokens": worst,
            "at": worst_rev, "within_budget": worst <= limit,
            "acc_gap_points": round(100 * (acc["ctxopt"] - acc[f"ctxopt, budget {limit}"]), 2),
            "consolidations": {k: sum(int(s.extra.get(f"consolidations_{k}", 0) or 0) for s in steps)
                               for k in ("proposed", "accepted", "rolled_back")},
            "steps_rejected_for_room": sum("could not make room" in str(s.extra.get("reason", "")) for s in steps),
        }
    steps = runs["append"].steps
    slope, r2 = linear_fit([float(s.step) for s in steps], [float(s.context_tokens) for s in steps])
    png = RESULTS / f"context_tokens_{name}.png"
    plot(runs, sorted(bounded), png)
    out = {
        "command": "python experiments/context_budget.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "stream": free.stream,
        "runs": {k: {**r.summary(), "context_tokens": [s.context_tokens for s in r.steps],
                     "accepted": [s.accepted for s in r.steps]} for k, r in runs.items()},
        "budgets": budgets,
        "append_growth": {"slope_tokens_per_step": round(slope, 1), "r2": round(r2, 4)},
        "plot": str(png.relative_to(ROOT)),
    }
    path = RESULTS / f"context_budget_{name}.json"
    write_json(path, out)

    print(f"\n{'run':<22} {'ACC':>6} {'BWT':>7} {'final tokens':>13} {'max tokens':>11}")
    for k, r in runs.items():
        tokens = [s.context_tokens for s in r.steps] or [0]
        print(f"{k:<22} {acc[k]:>6.3f} {r.summary()['bwt']:>7.3f} {tokens[-1]:>13} {max(tokens):>11}")
    for limit, b in budgets.items():
        print(f"budget {limit}: {b['versions']} versions in the store, largest rendered context {b['max_rendered_tokens']} "
              f"tokens ({'within' if b['within_budget'] else 'OVER'} the budget); ACC {b['acc_gap_points']:+.2f} points "
              f"below no budget; consolidations {b['consolidations']}; {b['steps_rejected_for_room']} step(s) "
              "rejected for want of room")
    print(f"append: {slope:.1f} tokens/step, R² {r2:.3f} (linear fit of context tokens over steps)")
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
