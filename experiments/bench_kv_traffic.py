"""Serve-like traffic on the embedded model: what the engine's prefix reuse saves per call.

Unlabelled requests from several tasks arrive round-robin (one test input of each task in
turn; val inputs, as the test split is sealed), as a deployed agent meets them. One context C with per-input retrieval answers all
of them: each call shows the pinned core, the rules retrieved for its input and the demos
retrieved for it, so consecutive prompts differ in their rules and demos.

C is synthetic and serves cost only; nothing here is scored as learning and nothing reads
a human instruction. Per task, ``--demos`` train examples become global demos (keyed by
their inputs), and one archival rule, keyed by the same inputs, says to answer such inputs
in the format of the examples. One pinned rule is the core.

Each mode runs the same calls (DSPy cache off, evaluator cache off, one thread):
  * ``cold``: ``reset()`` and no saved state before each call;
  * ``previous``: llama.cpp's reuse of the previous prompt only (``keep=0``);
  * ``recent``: :mod:`ctxopt.kv_cache`'s default, the 4 most recent prompts.
Reported: seconds per call (median, mean), prompt tokens per call, the share of prompt
tokens reused, and whether every answer equals the cold answer.

Usage:
    python experiments/bench_kv_traffic.py [--stream ii-8] [--per-task 4] [--demos 6]
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
from ctxopt.context import GLOBAL, Demo, Item, LearnedContext, PredictorContext  # noqa: E402
from ctxopt.evaluator import Evaluator  # noqa: E402
from ctxopt.kv_cache import DEFAULT_PREFIXES  # noqa: E402
from ctxopt.lm import available_cores, get_lm, llama_threads, loaded_llama  # noqa: E402
from ctxopt.program import program_for  # noqa: E402
from ctxopt.retrieval import RetrievalSelector, input_text  # noqa: E402
from ctxopt.streams import load_stream  # noqa: E402
from ctxopt.tasks import TASK_FIELD  # noqa: E402

MODES = ("cold", "previous", "recent")


def synthetic_context(program, stream, n_demos: int) -> LearnedContext:
    """The pinned core rule, and per task ``n_demos`` global demos and one archival rule keyed by their inputs."""
    base = LearnedContext.from_program(program)
    name = next(iter(base.predictors))
    pc = base.predictor(name)
    items = [Item(id="r-core", text="Answer with the output only, in the format of the examples.", pinned=True)]
    demos = []
    for t, task in enumerate(stream.tasks):
        inputs = []
        for ex in list(task.train)[:n_demos]:
            fields = {f: ex.get(f) for f in stream.program_inputs if f != TASK_FIELD}
            demos.append(Demo(inputs=fields, outputs={stream.output: ex.get(stream.output)}, scope=GLOBAL))
            inputs.append(input_text(fields))
        items.append(Item(id=f"r-{t:03d}", text=f"For inputs like {', '.join(repr(i[:40]) for i in inputs[:3])}, "
                                                 "give the output the examples give for such inputs.",
                          keys=inputs))
    return base.with_predictor(name, PredictorContext(pc.instruction, items=tuple(items), demos=tuple(demos)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="ii-8")
    parser.add_argument("--per-task", type=int, default=4, help="val inputs per task (the traffic)")
    parser.add_argument("--demos", type=int, default=6, help="demos per task in C")
    parser.add_argument("--out", default="experiments/results/bench_kv_traffic.json")
    args = parser.parse_args()

    stream = load_stream(args.stream, sizes=(args.demos, args.per_task, 1), scenario="task-agnostic")
    program = program_for(stream)
    ctx = synthetic_context(program, stream, args.demos)
    traffic = [(task, task.val[i]) for i in range(args.per_task) for task in stream.tasks]
    lm = get_lm("local", cache=False, max_tokens=32)
    lm("warm up")
    llama = loaded_llama("local")
    cache = llama.ctxopt_prefix_cache
    selector = RetrievalSelector()

    results: dict = {"stream": args.stream, "calls": len(traffic), "cores": available_cores(),
                     "llama_threads": llama_threads(), "context_tokens": ctx.token_count(), "modes": {}}
    answers: dict[str, list] = {}
    for mode in MODES:
        evaluator = Evaluator(lm, num_threads=1, selector=selector)  # its own in-memory cache: every call runs
        cache.keep = 0 if mode == "previous" else DEFAULT_PREFIXES
        cache.saved.clear()
        llama.reset()
        before = dict(cache.stats)
        times, out = [], []
        for n, (task, ex) in enumerate(traffic, 1):
            if mode == "cold":
                llama.reset()
                cache.saved.clear()
            t0 = time.perf_counter()
            res = evaluator.evaluate(program, ctx, task, [ex], scenario="task-agnostic")
            times.append(time.perf_counter() - t0)
            out.append(res.results[0].prediction)
            print(f"\r  {mode:8s} {n}/{len(traffic)}", end="", flush=True)
        prompt = cache.stats["prompt_tokens"] - before["prompt_tokens"]
        reused = cache.stats["reused_tokens"] - before["reused_tokens"]
        answers[mode] = out
        results["modes"][mode] = {
            "median_call_s": round(statistics.median(times), 4), "mean_call_s": round(statistics.mean(times), 4),
            "prompt_tokens_per_call": round(prompt / len(traffic), 1), "reused_share": round(reused / prompt, 3),
            "restores": cache.stats["restores"] - before["restores"],
        }
        m = results["modes"][mode]
        print(f"\r  {mode:8s} median {m['median_call_s']:.3f} s  mean {m['mean_call_s']:.3f} s  "
              f"prompt {m['prompt_tokens_per_call']:.0f} tok/call  reused {100 * m['reused_share']:.0f}%")
    cache.keep = DEFAULT_PREFIXES
    results["answers_equal_cold"] = {mode: answers[mode] == answers["cold"] for mode in MODES}
    print(f"  answers equal to cold: {results['answers_equal_cold']}")
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
