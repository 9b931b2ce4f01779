"""Benchmark the embedded local LMs on this machine (prints figures, writes JSON).

For each embedded model it measures, with the model already loaded:
  * short prompts (~30 prompt tokens): calls/s and completion tokens/s;
  * DSPy ChatAdapter prompts (~250 prompt tokens) through dspy.Predict;
  * the time of a rerun of the same calls answered from DSPy's cache;
  * prefix reuse (``--kv``): per-call seconds with two contexts C of about 100, 500, 1,000
    and 2,000 tokens interleaved (A, B, A, B, ...), DSPy cache off, one output token, in
    three modes: ``cold`` (``reset()`` and no saved state before each call), ``previous``
    (llama.cpp's reuse of the previous prompt only, ``CTXOPT_KV_PREFIXES=0``) and ``recent``
    (:mod:`ctxopt.kv_cache`, the default 4 saved prefixes; averaged over C ending at 4 offsets
    within a 64-token block); the slope is seconds per 1,000 tokens of C, and the ratio is the
    2,000-token time over the 100-token time.

Usage:
    python experiments/bench_lm.py [--models qwen2.5-coder-0.5b,qwen2.5-coder-1.5b] [--n 8] [--kv]
"""

from __future__ import annotations

import argparse
import statistics
import time

import dspy

from ctxopt._atomic import write_json
from ctxopt.kv_cache import DEFAULT_PREFIXES
from ctxopt.lm import available_cores, get_lm, llama_threads, loaded_llama, usage_of

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


KV_SIZES = (100, 500, 1000, 2000)
OFFSETS = (0, 16, 32, 48)


def _context_of(tag: str, tokens: int, count) -> str:
    """A system prompt of about ``tokens`` tokens: an instruction, then numbered rules unique to ``tag``."""
    text, i = f"You are assistant {tag}. Answer with one word. Rules:", 0
    while count(text) < tokens - 30:
        i += 1
        text += f"\n- Rule {tag}{i}: if the input names item {tag}-{i * 7 % 97}, answer with its colour."
    text += "\nEnd of rules."
    while count(text) < tokens:
        text += " ok"
    return text


def bench_prefixes(spec: str, calls: int) -> dict:
    """Per-call seconds with two interleaved contexts per size, cold / previous-prompt / recent-prefixes reuse."""
    lm = get_lm(spec, cache=False, max_tokens=1)
    lm("warm up")
    llama = loaded_llama(spec)
    cache = llama.ctxopt_prefix_cache

    def count(text: str) -> int:
        return len(llama.tokenize(text.encode()))

    def timed(contexts: list[str], mode: str) -> float:
        """Median seconds per call, contexts taking turns; their first sight is not timed."""
        cache.keep = 0 if mode == "previous" else DEFAULT_PREFIXES
        cache.saved.clear()
        llama.reset()
        for c in contexts:
            lm(messages=[{"role": "system", "content": c}, {"role": "user", "content": "item first"}])
        times = []
        for i in range(calls):
            if mode == "cold":
                llama.reset()
                cache.saved.clear()
            msgs = [{"role": "system", "content": contexts[i % 2]}, {"role": "user", "content": f"item {i}"}]
            t0 = time.perf_counter()
            lm(messages=msgs)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    out: dict = {"calls_per_cell": calls, "recent_offsets": list(OFFSETS), "sizes": {}}
    for size in KV_SIZES:
        contexts = [_context_of("A", size, count), _context_of("B", size, count)]
        row: dict = {"tokens": [count(c) for c in contexts]}
        for mode in ("cold", "previous"):
            row[mode] = round(timed(contexts, mode), 4)
        # With reuse a call evaluates what follows the last whole 64-token block it shares, so its time
        # depends on where C ends within a block: average over C sizes that end at several offsets.
        per_offset = [timed([_context_of("A", size + o, count), _context_of("B", size + o, count)], "recent")
                      for o in OFFSETS]
        row["recent_by_offset"] = [round(t, 4) for t in per_offset]
        row["recent"] = round(statistics.mean(per_offset), 4)
        out["sizes"][str(size)] = row
        print(f"  C≈{size:5d} tok  cold {row['cold']:.3f} s  previous {row['previous']:.3f} s  "
              f"recent {row['recent']:.3f} s (mean over C ending at +{', +'.join(map(str, OFFSETS))} tokens)")
    cache.keep = DEFAULT_PREFIXES
    lo, hi = out["sizes"][str(KV_SIZES[0])], out["sizes"][str(KV_SIZES[-1])]
    span = (sum(hi["tokens"]) - sum(lo["tokens"])) / 2 / 1000
    for mode in ("cold", "previous", "recent"):
        out[f"{mode}_slope_s_per_1k_tokens"] = round((hi[mode] - lo[mode]) / span, 4)
        out[f"{mode}_ratio_2000_over_100"] = round(hi[mode] / lo[mode], 2)
    print(f"  ratio 2,000 / 100 tokens: cold {out['cold_ratio_2000_over_100']}×, previous "
          f"{out['previous_ratio_2000_over_100']}×, recent {out['recent_ratio_2000_over_100']}×")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    parser.add_argument("--n", type=int, default=8, help="calls per measurement")
    parser.add_argument("--kv", action="store_true", help="also measure prefix reuse with interleaved contexts")
    parser.add_argument("--kv-calls", type=int, default=6, help="timed calls per size and mode")
    parser.add_argument("--out", default="experiments/results/bench_lm.json")
    args = parser.parse_args()
    results = {"cores": available_cores(), "llama_threads": llama_threads(), "models": []}
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
        if args.kv:
            r["prefix_reuse"] = bench_prefixes(f"local:{name}", args.kv_calls)
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
