"""Issue 7 acceptance: a hard context budget on a 20-task stream, against no budget and against ``append``.

Runs three things on the stream of ``experiments/configs/ii-20.yaml`` (each resumable and cached, so a
finished one costs seconds), then reports::

    python experiments/context_budget.py

1. ``ctxopt run experiments/configs/ii-20.yaml``         ctxopt, no context budget
2. ``ctxopt run experiments/configs/ii-20-budget.yaml``  ctxopt, ``max_context_tokens`` + consolidation
3. ``ctxopt compare --stream <same> --methods append --context-tokens 1000000 ...``  append, unbounded

The report checks the three acceptance claims from the runs' own records:

* every version committed by the budgeted run renders within the budget (read back from its git store,
  not from the optimizer's bookkeeping);
* ACC of the budgeted run is within 2 points of the unbudgeted run (test splits, from ``results.json``);
* ``append``'s context grows roughly linearly (least-squares slope and R² of tokens over steps).

It prints a table, writes ``experiments/results/context_budget_<name>.json`` and the plot
``experiments/results/context_tokens_<name>.png`` (context tokens over steps) shown in the README.
``--report-only`` skips the runs and reports on what is on disk.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def plot(series: dict[str, RunResult], budget: int, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    styles = {"append": "s--", "ctxopt": "o-", "ctxopt + budget": "^-"}
    for label, run in series.items():
        ax.plot([s.step for s in run.steps], [s.context_tokens for s in run.steps], styles.get(label, "o-"), ms=3,
                label=label)
    ax.axhline(budget, color="red", lw=1, ls=":", label=f"max_context_tokens = {budget}")
    ax.set_yscale("symlog", linthresh=100)
    ax.set_xlabel("step (task #)")
    ax.set_ylabel("context tokens (all tasks' scopes)")
    ax.set_title("learned context size over a 20-task stream", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="experiments/configs/ii-20.yaml", help="run config without a budget")
    p.add_argument("--budget-config", default="experiments/configs/ii-20-budget.yaml")
    p.add_argument("--append-dir", default=None, help="default: <config run_dir>-append")
    p.add_argument("--report-only", action="store_true", help="do not run; report on the runs on disk")
    args = p.parse_args(argv)

    free, bounded = load_config(ROOT / args.config), load_config(ROOT / args.budget_config)
    limit = bounded.budget_obj().max_context_tokens
    if limit is None or free.budget_obj().max_context_tokens is not None:
        raise SystemExit(f"{args.budget_config} must set max_context_tokens and {args.config} must not")
    if (free.stream, free.seed, free.sizes, free.task_lm) != (bounded.stream, bounded.seed, bounded.sizes, bounded.task_lm):
        raise SystemExit("the two configs must share stream, seed, sizes and task LM")
    append_dir = Path(args.append_dir or free.run_dir + "-append")
    name = Path(free.run_dir).name
    if not args.report_only:
        _ctxopt("run", args.config)
        _ctxopt("run", args.budget_config)
        extra = ["--sizes", ",".join(map(str, free.sizes))] if free.sizes else []
        _ctxopt("compare", "--stream", free.stream, "--methods", "append", "--context-tokens", "1000000",
                "--budget", "light", "--seed", str(free.seed), "--task-lm", free.task_lm,
                "--reflection-lm", free.reflection_lm, "--run-dir", str(append_dir), *extra)

    runs = {"ctxopt": _one(ROOT / free.run_dir, "ctxopt"), "ctxopt + budget": _one(ROOT / bounded.run_dir, "ctxopt"),
            "append": _one(ROOT / append_dir, "append")}
    worst, n_versions, worst_rev = store_max_tokens(ROOT / bounded.run_dir / "store")
    steps = runs["append"].steps
    slope, r2 = linear_fit([float(s.step) for s in steps], [float(s.context_tokens) for s in steps])
    acc = {k: r.summary()["acc"] for k, r in runs.items()}
    consolidations = {k: sum(int(s.extra.get(f"consolidations_{k}", 0) or 0) for s in runs["ctxopt + budget"].steps)
                      for k in ("proposed", "accepted", "rolled_back")}
    png = RESULTS / f"context_tokens_{name}.png"
    plot(runs, limit, png)
    out = {
        "command": "python experiments/context_budget.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stream": free.stream, "max_context_tokens": limit,
        "runs": {k: {"run_dir": str(r.meta.get("run_dir", "")), **r.summary(),
                     "context_tokens": [s.context_tokens for s in r.steps],
                     "accepted": [s.accepted for s in r.steps]} for k, r in runs.items()},
        "budgeted_store": {"versions": n_versions, "max_rendered_tokens": worst, "at": worst_rev,
                           "within_budget": worst <= limit},
        "acc_gap_points": round(100 * (acc["ctxopt"] - acc["ctxopt + budget"]), 2),
        "append_growth": {"slope_tokens_per_step": round(slope, 1), "r2": round(r2, 4)},
        "consolidations": consolidations, "plot": str(png.relative_to(ROOT)),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"context_budget_{name}.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")

    print(f"\n{'run':<16} {'ACC':>6} {'BWT':>7} {'final tokens':>13} {'max tokens':>11}")
    for k, r in runs.items():
        tokens = [s.context_tokens for s in r.steps] or [0]
        print(f"{k:<16} {acc[k]:>6.3f} {r.summary()['bwt']:>7.3f} {tokens[-1]:>13} {max(tokens):>11}")
    print(f"budgeted store: {n_versions} versions, largest rendered context {worst} tokens "
          f"({'within' if worst <= limit else 'OVER'} max_context_tokens={limit})")
    print(f"ACC without budget − with budget: {out['acc_gap_points']:+.2f} points")
    print(f"append: {slope:.1f} tokens/step, R² {r2:.3f} (linear fit of context tokens over steps)")
    print(f"consolidations (budgeted run): {consolidations}")
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
