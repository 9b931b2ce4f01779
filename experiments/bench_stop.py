"""Benchmark the end-of-answer stop: the same calls with and without it, embedded model.

The local engine stops decoding at DSPy's end-of-answer marker (:data:`ctxopt.lm.END_OF_ANSWER`).
This script measures what that saves and checks that it changes no answer: for each task, the
first ``--n-test`` test examples are evaluated twice under the static context (or a run's learned
one, ``--store``), with DSPy's request cache off and a fresh evaluator cache, once with the stop
and once without it (the engine's stop list patched back to the request's own). The two passes
alternate task by task, and which goes first alternates too, so a machine shared with other work
slows both alike.

Prints per-task seconds, completion tokens and score for both, and how many examples got a
different score; writes ``experiments/results/bench_stop.json``.

Usage:
    python experiments/bench_stop.py                          # babi:1,2,3, 20 test examples each
    python experiments/bench_stop.py --stream assistant-8 --n-test 10
    python experiments/bench_stop.py --scenario task-agnostic --store runs/babi123-fwt/ctxopt/store --rev dffdd44fe5
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctxopt import lm as lm_module  # noqa: E402
from ctxopt._atomic import write_json  # noqa: E402
from ctxopt.evaluator import Evaluator  # noqa: E402
from ctxopt.lm import get_lm  # noqa: E402
from ctxopt.program import program_for  # noqa: E402
from ctxopt.selector import default_selector  # noqa: E402
from ctxopt.store import Store  # noqa: E402
from ctxopt.streams import load_stream  # noqa: E402


def _pass(lm, program, context, task, scenario: str, *, stop: bool) -> dict:
    """One uncached evaluation of ``task``'s test split, with or without the end-of-answer stop."""
    patched = lm_module.with_answer_stop
    if not stop:
        lm_module.with_answer_stop = lambda s: [s] if isinstance(s, str) else list(s or ())
    try:
        with tempfile.TemporaryDirectory(prefix="ctxopt-bench-stop-") as cache_dir:
            before = lm.usage.snapshot()
            evaluator = Evaluator(lm, num_threads=1, cache_dir=cache_dir, timeout_s=900,
                                  selector=default_selector(scenario))
            res = evaluator.evaluate_test(program, context, task, scenario=scenario)
            used = lm.usage.snapshot() - before
    finally:
        lm_module.with_answer_stop = patched
    return {"wall_s": round(res.wall_s, 2), "lm_seconds": round(used.seconds, 2), "calls": used.model_calls,
            "completion_tokens": used.completion_tokens, "score": round(res.mean, 4), "scores": list(res.scores)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lm", default="local", help="LM spec (default: local, the embedded 0.5B model)")
    ap.add_argument("--stream", default="babi:1,2,3")
    ap.add_argument("--n-test", type=int, default=20, help="test examples per task (default 20)")
    ap.add_argument("--scenario", default=None, help="task-aware (default) or task-agnostic")
    ap.add_argument("--store", type=Path, default=None,
                    help="a run's store: evaluate with its learned context instead of the static one")
    ap.add_argument("--rev", default=None, help="the store version to use (default: its newest)")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_stop.json"))
    args = ap.parse_args(argv)

    stream = load_stream(args.stream, sizes=(1, 1, args.n_test), scenario=args.scenario)
    lm = get_lm(args.lm, cache=False)
    lm("Say OK.")  # load the model before timing
    program = program_for(stream)
    context = Store.open(args.store).show(args.rev or "HEAD") if args.store else None
    per_task, totals = {}, {"with_stop": [0.0, 0], "without_stop": [0.0, 0]}
    changed = 0
    for i, task in enumerate(stream.tasks):
        row = {}
        order = (("without_stop", False), ("with_stop", True))
        for side, stop in (order if i % 2 == 0 else order[::-1]):
            row[side] = _pass(lm, program, context, task, stream.scenario, stop=stop)
            totals[side][0] += row[side]["lm_seconds"]
            totals[side][1] += row[side]["completion_tokens"]
        diff = sum(a != b for a, b in zip(row["with_stop"].pop("scores"), row["without_stop"].pop("scores")))
        changed += diff
        row["examples_scored_differently"] = diff
        per_task[task.name] = row
        w, o = row["with_stop"], row["without_stop"]
        print(f"{task.name:<30} without: {o['lm_seconds']:7.1f}s {o['completion_tokens']:6d} tok score {o['score']:.2f}"
              f" | with: {w['lm_seconds']:7.1f}s {w['completion_tokens']:6d} tok score {w['score']:.2f}"
              f" | {diff} scored differently", flush=True)
    (ws, wt), (os_, ot) = totals["with_stop"], totals["without_stop"]
    summary = {
        "command": "python experiments/bench_stop.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "lm": args.lm, "stream": args.stream,
        "store": str(args.store) if args.store else None, "rev": args.rev,
        "scenario": stream.scenario, "n_test_per_task": args.n_test,
        "lm_seconds": {"without_stop": round(os_, 2), "with_stop": round(ws, 2)},
        "completion_tokens": {"without_stop": ot, "with_stop": wt},
        "speedup": round(os_ / ws, 3) if ws else None,
        "examples_scored_differently": changed,
        "per_task": per_task,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    print(f"LM seconds {os_:.1f} → {ws:.1f} ({summary['speedup']}×), completion tokens {ot} → {wt}, "
          f"{changed} example(s) scored differently")
    write_json(Path(args.out), summary)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
