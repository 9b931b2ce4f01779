"""Benchmark the evaluator: the static program on the ii-8 test split, embedded model.

Prints examples/s, the evaluator's overhead beyond raw LM time, and per-task
static scores; writes ``experiments/results/bench_eval.json``.

Raw LM time is the LM engine's own counter (``lm.usage.snapshot().seconds``:
wall seconds spent inside model calls). Overhead is ``wall - raw LM time`` of
the whole evaluation (prompt formatting, parsing, metrics, threads, cache), as a
share of wall time; the target is < 5%. The local engine serializes calls on
one model, so the default is one thread: with more threads, time spent waiting
for the model lock would count as LM time and hide overhead.

The evaluator's cache lives in a fresh temporary folder, so the first pass runs
every example; ``--no-cache`` also turns off DSPy's request cache so every
example reaches the model (without it, a rerun is answered from that cache and
the timing is meaningless). A second pass over the same examples measures
cache-hit throughput.

Usage:
    python experiments/bench_eval.py --no-cache
    python experiments/bench_eval.py --no-cache --tasks antonyms,sum --n-test 10
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctxopt._atomic import write_json  # noqa: E402
from ctxopt.evaluator import Evaluator  # noqa: E402
from ctxopt.lm import get_lm  # noqa: E402
from ctxopt.program import program_for  # noqa: E402
from ctxopt.streams import load_stream  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lm", default="local", help="LM spec (default: local, the embedded 0.5B model)")
    ap.add_argument("--stream", default="ii-8", help="stream spec (default ii-8)")
    ap.add_argument("--tasks", help="comma-separated subset of the stream's tasks")
    ap.add_argument("--n-test", type=int, default=50, help="test examples per task (default 50)")
    ap.add_argument("--threads", type=int, default=1, help="evaluator threads (default 1, see docstring)")
    ap.add_argument("--no-cache", action="store_true", help="turn off DSPy's LM request cache (for timing)")
    ap.add_argument("--scenario", default=None, help="task-aware (default) or task-agnostic")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_eval.json"))
    args = ap.parse_args(argv)

    stream = load_stream(args.stream, sizes=(1, 1, args.n_test), scenario=args.scenario)
    names = args.tasks.split(",") if args.tasks else list(stream.names)
    lm = get_lm(args.lm, cache=not args.no_cache)
    t_load = time.perf_counter()
    lm("Say OK.")  # load the model before timing
    load_s = time.perf_counter() - t_load
    program = program_for(stream)

    with tempfile.TemporaryDirectory(prefix="ctxopt-bench-") as cache_dir:
        evaluator = Evaluator(lm, num_threads=args.threads, cache_dir=cache_dir, timeout_s=600)
        per_task: dict[str, dict] = {}
        start_usage = lm.usage.snapshot()
        t0 = time.perf_counter()
        results = {}
        for name in names:
            task = stream[name]
            before = lm.usage.snapshot()
            res = evaluator.evaluate_test(program, None, task, scenario=stream.scenario)
            used = lm.usage.snapshot() - before
            results[name] = res
            per_task[name] = {
                "metric": task.metric_name,
                "n": len(res.results),
                "score": round(res.mean, 4),
                "failures": res.failures,
                "wall_s": round(res.wall_s, 3),
                "lm_seconds": round(used.seconds, 3),
                "lm_calls": used.calls,
                "lm_cache_hits": used.cache_hits,
                "prompt_tokens": used.prompt_tokens,
                "completion_tokens": used.completion_tokens,
                "sample": [
                    {"prediction": r.prediction.get(stream.output), "feedback": r.feedback} for r in res.results[:3]
                ],
            }
            print(
                f"{name:<20} {task.metric_name:<12} score {res.mean:.3f}  n={len(res.results)}  "
                f"failures={res.failures}  wall {res.wall_s:6.1f}s  LM {used.seconds:6.1f}s",
                flush=True,
            )
        wall = time.perf_counter() - t0
        used = lm.usage.snapshot() - start_usage

        t1 = time.perf_counter()
        hits = sum(evaluator.evaluate_test(program, None, stream[n], scenario=stream.scenario).cache_hits for n in names)
        cached_wall = time.perf_counter() - t1

    n_examples = sum(v["n"] for v in per_task.values())
    overhead = wall - used.seconds
    summary = {
        "command": "python experiments/bench_eval.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "lm": evaluator.lm_id,
        "stream": args.stream,
        "scenario": stream.scenario,
        "tasks": names,
        "n_test_per_task": args.n_test,
        "threads": args.threads,
        "lm_request_cache": not args.no_cache,
        "model_load_s": round(load_s, 2),
        "examples": n_examples,
        "wall_s": round(wall, 2),
        "raw_lm_s": round(used.seconds, 2),
        "lm_calls": used.calls,
        "lm_cache_hits": used.cache_hits,
        "prompt_tokens": used.prompt_tokens,
        "completion_tokens": used.completion_tokens,
        "examples_per_s": round(n_examples / wall, 3) if wall else None,
        "overhead_s": round(overhead, 3),
        "overhead_pct": round(100 * overhead / wall, 2) if wall else None,
        "overhead_ok": bool(wall and overhead / wall < 0.05),
        "cached_pass": {
            "cache_hits": hits,
            "wall_s": round(cached_wall, 3),
            "examples_per_s": round(hits / cached_wall, 1) if cached_wall else None,
        },
        "mean_score": round(sum(v["score"] for v in per_task.values()) / len(per_task), 4),
        "per_task": per_task,
        "machine": {
            "python": platform.python_version(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        },
    }

    print()
    print(f"examples            {n_examples} ({len(names)} tasks x {args.n_test})")
    print(f"wall                {wall:.1f} s  ->  {summary['examples_per_s']} examples/s")
    print(f"raw LM time         {used.seconds:.1f} s  ({used.calls} calls, {used.cache_hits} LM cache hits)")
    print(
        f"evaluator overhead  {overhead:.2f} s = {summary['overhead_pct']}% of wall "
        f"({'OK' if summary['overhead_ok'] else 'ABOVE'} the 5% target)"
    )
    print(f"cached rerun        {hits} hits in {cached_wall:.3f} s")
    print(f"mean static score   {summary['mean_score']:.3f}")
    if used.cache_hits and not args.no_cache:
        print("warning: DSPy's request cache answered some calls; rerun with --no-cache for timing")
    out = Path(args.out)
    write_json(out, summary)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
