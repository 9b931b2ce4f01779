"""What one ReAct example costs on the tool stream, and what a learning run would take.

Runs the ``tools-8`` program (``dspy.ReAct`` with the calculator and lookup tools) with C0
on the first N train examples of each task, DSPy cache off, and reports per example the
seconds, task-model calls, prompt and completion tokens, the score and the metric's
feedback. From the mean it estimates the wall time of a light-budget ``ctxopt compare``
on the stream: a light step evaluates at most about 160 examples (10 observed, 9 contexts
× 10 val in the search, 30 val × 2 in the gate), and the accuracy matrix measures the test
split of every task after every step (a changed prompt only). Train examples only; no test
split is read.

Usage:
    python experiments/react_cost.py --lm local --per-task 1 --out experiments/results/react_cost_0.5b.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctxopt._atomic import write_json  # noqa: E402

LIGHT_STEP_EXAMPLES = 160


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", default="local", help="task LM spec (default local: the embedded 0.5B)")
    parser.add_argument("--per-task", type=int, default=1)
    parser.add_argument("--stream", default="tools-8")
    parser.add_argument("--test-size", type=int, default=50, help="test examples per task, for the estimate")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import dspy

    from ctxopt.lm import get_lm, usage_of
    from ctxopt.program import program_for
    from ctxopt.streams import load_stream

    stream = load_stream(args.stream, sizes=(args.per_task, 1, 1))
    program, lm = program_for(stream), get_lm(args.lm)
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    rows = []
    for task in stream:
        for ex in task.train[: args.per_task]:
            before, started = usage_of(lm), time.perf_counter()
            with dspy.context(lm=lm):
                try:
                    pred = program(**dict(ex.inputs().items()))
                    score = task.metric(ex, pred)
                    value, feedback = score.score, score.feedback
                except Exception as exc:  # noqa: BLE001 - one failed example is one row
                    value, feedback = 0.0, f"{type(exc).__name__}: {exc}"
            used = usage_of(lm) - before
            rows.append({"task": task.name, "seconds": round(time.perf_counter() - started, 2),
                         "calls": used.model_calls, "prompt_tokens": used.prompt_tokens,
                         "completion_tokens": used.completion_tokens, "score": value, "feedback": feedback[:300]})
            r = rows[-1]
            print(f"{task.name:<16} {r['seconds']:>6.1f} s {r['calls']:>2} calls {r['prompt_tokens']:>6} prompt "
                  f"{r['completion_tokens']:>5} completion tokens, score {value:.0f}: {feedback[:90]}", flush=True)
    mean_s = statistics.mean(r["seconds"] for r in rows)
    n = len(stream)
    learn_h = n * LIGHT_STEP_EXAMPLES * mean_s / 3600
    test_h = sum(k * args.test_size for k in range(1, n + 1)) * mean_s / 3600  # at most: every seen task per row
    out = {"lm": args.lm, "stream": args.stream, "examples": rows, "mean_seconds": round(mean_s, 2),
           "mean_calls": round(statistics.mean(r["calls"] for r in rows), 2),
           "mean_prompt_tokens": round(statistics.mean(r["prompt_tokens"] for r in rows)),
           "solved": sum(r["score"] >= 1 for r in rows),
           "estimate_hours": {"learning_upper": round(learn_h, 1), "test_rows_upper": round(test_h, 1)}}
    print(f"mean {mean_s:.1f} s, {out['mean_calls']} calls, {out['mean_prompt_tokens']} prompt tokens per example; "
          f"{out['solved']}/{len(rows)} solved. A light compare of ctxopt on {args.stream}: up to "
          f"{learn_h:.1f} h of learning and {test_h:.1f} h of test rows on this machine.")
    write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
