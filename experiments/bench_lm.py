"""Benchmark the embedded local LMs on this machine (prints figures, writes JSON).

For each embedded model it measures, with the model already loaded:
  * short prompts (~30 prompt tokens): calls/s and completion tokens/s;
  * DSPy ChatAdapter prompts (~250 prompt tokens) through dspy.Predict;
  * the time of a rerun of the same calls answered from DSPy's cache.

Usage:
    python experiments/bench_lm.py [--models qwen2.5-coder-0.5b,qwen2.5-coder-1.5b] [--n 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import dspy

from ctxopt.lm import available_cores, get_lm, usage_of

SHORT = [
    "Give the antonym of the word '{w}'. Answer with one word.",
]
WORDS = ["happy", "cold", "early", "strong", "quiet", "heavy", "bright", "narrow", "simple", "rich", "young", "soft"]

CHAT_INSTRUCTION = (
    "You are given a task name and an input. Produce the output for the task. "
    "Follow these rules: answer with the output only; keep the same format as the examples; "
    "do not explain your answer; if the task asks for a single word, give a single word; "
    "preserve the capitalization conventions of the examples; never add quotes around the output."
)


class TaskSig(dspy.Signature):
    __doc__ = CHAT_INSTRUCTION
    task: str = dspy.InputField()
    input: str = dspy.InputField()
    output: str = dspy.OutputField()


def _measure(fn, items):
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
    return times


def bench_model(spec: str, n: int) -> dict:
    lm = get_lm(spec, cache=False, max_tokens=64)
    lm("warm up")  # load the weights outside the timing
    words = WORDS[:n]

    before = usage_of(lm)
    t_short = _measure(lambda w: lm(SHORT[0].format(w=w)), words)
    short = usage_of(lm) - before

    predict = dspy.Predict(TaskSig)
    predict.set_lm(lm)
    before = usage_of(lm)
    t_chat = _measure(lambda w: predict(task="antonyms", input=w), words)
    chat = usage_of(lm) - before

    cached = get_lm(spec, cache=True, max_tokens=64)
    cpredict = dspy.Predict(TaskSig)
    cpredict.set_lm(cached)
    _measure(lambda w: cpredict(task="antonyms-cache", input=w), words)  # fill the cache
    before = usage_of(cached)
    t_hit = _measure(lambda w: cpredict(task="antonyms-cache", input=w), words)
    hits = usage_of(cached) - before

    def rates(times, usage):
        total = sum(times)
        return {
            "calls": usage.calls,
            "calls_per_s": round(usage.calls / total, 3),
            "completion_tokens_per_s": round(usage.completion_tokens / total, 2),
            "mean_prompt_tokens": round(usage.prompt_tokens / max(usage.calls, 1), 1),
            "median_call_s": round(statistics.median(times), 4),
        }

    return {
        "spec": spec,
        "short": rates(t_short, short),
        "chat_adapter": rates(t_chat, chat),
        "cache_hit": {"calls": hits.calls, "model_calls": hits.model_calls,
                      "median_call_ms": round(1000 * statistics.median(t_hit), 3)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    parser.add_argument("--n", type=int, default=8, help="calls per measurement")
    parser.add_argument("--out", default="experiments/results/bench_lm.json")
    args = parser.parse_args()
    results = {"cores": available_cores(), "models": []}
    for name in args.models.split(","):
        r = bench_model(f"local:{name}", args.n)
        results["models"].append(r)
        print(f"{name} ({results['cores']} cores)")
        for kind in ("short", "chat_adapter"):
            k = r[kind]
            print(f"  {kind:13s} prompt≈{k['mean_prompt_tokens']:6.1f} tok  {k['calls_per_s']:6.2f} calls/s  "
                  f"{k['completion_tokens_per_s']:7.2f} completion tok/s  median {k['median_call_s']:.3f} s")
        c = r["cache_hit"]
        print(f"  cache-hit rerun: {c['calls']} calls, {c['model_calls']} model calls, median {c['median_call_ms']:.2f} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
