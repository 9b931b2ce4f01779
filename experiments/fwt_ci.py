"""Forward transfer with a 95% bootstrap interval, and a control: is the transfer only output-format rules?

For a finished ctxopt run (``ctxopt run`` run directory, or ``runs/compare-…/ctxopt``), on each
task ``j ≥ 1`` of its stream:

* **before** — per-example test scores of C₀ (the r0 row);
* **after** — per-example test scores of the version committed after step ``j`` (the context
  that met task ``j+1``; ``R[j-1][j]`` of the accuracy matrix);
* **format only** (the control) — the same version with every demo removed and only the items
  that state an output format kept (:data:`FORMAT_WORDS`), retrieved as the version retrieves them;
* **format everywhere** (the stronger control) — those items pinned, without keys or counter-keys,
  so that every input sees them.

The first two re-read the run's own measurements from its evaluation cache (no model calls
when the run finished); the control is measured on the test splits (it is part of the
measurement, never of learning). FWT and its paired bootstrap interval come from
:func:`ctxopt.matrix.fwt_interval`. Transfer beyond format is ``after − format only``.

Usage:
    python experiments/fwt_ci.py RUN_DIR [--eval-cache DIR] [--sizes 40,30,50] [--no-control] [--name NAME]

Writes ``experiments/results/fwt_<name>.json``. Name the stream you will read this on *before*
running it; a stream chosen after looking at FWT figures proves nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dspy  # noqa: E402

from ctxopt._atomic import write_json  # noqa: E402
from ctxopt.errors import DataError  # noqa: E402
from ctxopt.evaluator import Evaluator  # noqa: E402
from ctxopt.lm import get_lm  # noqa: E402
from ctxopt.matrix import fwt_interval  # noqa: E402
from ctxopt.program import program_for  # noqa: E402
from ctxopt.rundir import RunDir  # noqa: E402
from ctxopt.selector import default_selector  # noqa: E402
from ctxopt.store import Store  # noqa: E402
from ctxopt.streams import load_stream  # noqa: E402

FORMAT_WORDS = re.compile(r"\b(format|one word|single (word|letter|character|number)|only the|just the|lowercase|"
                          r"uppercase|capital|punctuation|no explanation|comma|separated|output only|answer only|"
                          r"digits?|quotes?)\b", re.IGNORECASE)
"""An item that says how to write the answer, not what the answer is."""


def format_only(context, *, everywhere: bool = False):
    """``context`` with no demos and only its output-format items.

    As learned, an item reaches only the inputs its keys retrieve; ``everywhere`` pins each format item
    and drops its keys and counter-keys, so every input sees it (the strongest format-only context).
    """
    out = context
    for name, pc in context.predictors.items():
        kept = tuple(it for it in pc.items if FORMAT_WORDS.search(it.text))
        if everywhere:
            kept = tuple(replace(it, pinned=True, keys=(), unless=()) for it in kept)
        out = out.with_predictor(name, replace(pc, demos=(), items=kept))
    return out


def _beside(run_dir: Path, name: str) -> Path | None:
    """The run's folder ``name``: in the run directory, else beside it (``ctxopt compare`` keeps caches there)."""
    return next((p for p in (run_dir / name, run_dir.parent / name) if p.is_dir()), None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--eval-cache", type=Path, default=None,
                    help="the run's measurement cache (default: RUN_DIR/eval_cache, else RUN_DIR/../eval_cache)")
    ap.add_argument("--sizes", default=None, help="train,val,test the run used, if not the stream's default")
    ap.add_argument("--no-control", action="store_true", help="skip the format-only control (no model calls)")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "experiments" / "results")
    args = ap.parse_args(argv)

    store = Store.open(args.run_dir / "store")
    run = RunDir(args.run_dir, store)
    identity = run.identity()
    if not identity.get("stream"):
        raise SystemExit(f"fwt_ci: {args.run_dir} has no run state naming its stream")
    scenario = identity.get("scenario", "task-aware")
    sizes = tuple(int(x) for x in args.sizes.split(",")) if args.sizes else None
    stream = load_stream(identity["stream"], seed=int(identity.get("seed", 0)), sizes=sizes, scenario=scenario)
    cache = args.eval_cache or _beside(args.run_dir, "eval_cache") or args.run_dir / "eval_cache"
    # the request cache of the run (``ctxopt compare`` keeps it beside the method folders): a finished run's
    # test calls are answered from it, so only the control costs model calls
    requests = _beside(args.run_dir, "dspy_cache")
    if requests is not None:
        dspy.configure_cache(disk_cache_dir=str(requests))
    task_lm = get_lm((identity.get("lms") or {}).get("task_lm", "local"))
    evaluator = Evaluator(task_lm, num_threads=2, cache_dir=cache, selector=default_selector(scenario))
    program = program_for(stream)

    versions = list(reversed(store.log()))  # oldest first
    def after_step(step: int):
        found = [v for v in versions if isinstance(v.metadata.get("step"), int) and v.metadata["step"] <= step]
        if not found:
            raise DataError(f"no version of step {step} in {store.path}")
        return store.show(found[-1].rev)

    c0 = after_step(0)
    # a stopped run: the context after its last finished step met the task after it (the store may hold a
    # commit of the step under way, whose version must not stand in for a step not finished)
    n = min(len(stream), run.done() + 1)
    before, after, control, pinned, per_task = [], [], [], [], []
    for j in range(1, n):
        task = stream.tasks[j]
        ctx = after_step(j)
        b = evaluator.evaluate_test(program, c0, task, scenario=scenario)
        a = evaluator.evaluate_test(program, ctx, task, scenario=scenario)
        row = {"task": task.name, "r0": b.mean, "before_arrival": a.mean, "from_cache": a.cache_hits == len(a.results)}
        before.append(list(b.scores))
        after.append(list(a.scores))
        if not args.no_control:
            f = evaluator.evaluate_test(program, format_only(ctx), task, scenario=scenario)
            e = evaluator.evaluate_test(program, format_only(ctx, everywhere=True), task, scenario=scenario)
            control.append(list(f.scores))
            pinned.append(list(e.scores))
            row.update(format_only=f.mean, format_everywhere=e.mean)
        per_task.append(row)
        print(f"  {task.name:<26} r0 {b.mean:.3f}  before arrival {a.mean:.3f}"
              + (f"  format only {row['format_only']:.3f}  format everywhere {row['format_everywhere']:.3f}"
                 if control else ""), file=sys.stderr)

    fwt, lo, hi = fwt_interval(before, after, resamples=args.resamples)
    result = {"run_dir": str(args.run_dir), "stream": identity["stream"], "scenario": scenario,
              "tasks": per_task, "fwt": fwt, "fwt_ci95": [lo, hi], "resamples": args.resamples}
    print(f"FWT {fwt * 100:+.1f} points, 95% bootstrap interval [{lo * 100:+.1f}, {hi * 100:+.1f}]")
    if control:
        beyond, blo, bhi = fwt_interval(control, after, resamples=args.resamples)
        fmt, flo, fhi = fwt_interval(before, control, resamples=args.resamples)
        result.update(format_only_fwt=fmt, format_only_ci95=[flo, fhi], beyond_format=beyond,
                      beyond_format_ci95=[blo, bhi])
        print(f"format-only control: FWT {fmt * 100:+.1f} [{flo * 100:+.1f}, {fhi * 100:+.1f}]; "
              f"transfer beyond format {beyond * 100:+.1f} [{blo * 100:+.1f}, {bhi * 100:+.1f}]")
        beyond_e, belo, behi = fwt_interval(pinned, after, resamples=args.resamples)
        fmt_e, felo, fehi = fwt_interval(before, pinned, resamples=args.resamples)
        result.update(format_everywhere_fwt=fmt_e, format_everywhere_ci95=[felo, fehi],
                      beyond_format_everywhere=beyond_e, beyond_format_everywhere_ci95=[belo, behi])
        print(f"format items shown to every input: FWT {fmt_e * 100:+.1f} [{felo * 100:+.1f}, {fehi * 100:+.1f}]; "
              f"transfer beyond them {beyond_e * 100:+.1f} [{belo * 100:+.1f}, {behi * 100:+.1f}]")
    name = args.name or args.run_dir.resolve().name
    out = args.out_dir / f"fwt_{name}.json"
    write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
