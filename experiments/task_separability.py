"""How well per-input retrieval can tell a stream's tasks apart, before any learning.

Task-agnostic memory retrieves what an input sees by the similarity of the input to
each memory entry's keys, and a learned entry's keys are the train inputs that produced
it. So retrieval can keep tasks apart only as far as one task's inputs are closer to its
own train inputs than to other tasks'. This prints, for every pair of tasks (query task
i, key task j), the mean over i's val inputs of the best similarity to j's first train
inputs: a row whose diagonal does not stand out is a task retrieval cannot isolate.

It also measures what counter-keys add (``narrowing``): for each task after the first,
a rule keyed by its first train inputs, and each of 8 demos keyed by its own input, get
as ``unless`` the earlier tasks' inputs nearest their keys, drawn from the back of their
val (as the optimizer's search pool is). Then, through the real ``RetrievalSelector``:
*recall*, the share of the task's own val inputs that still retrieve the rule (or some
demo), and *leak*, the share of earlier tasks' other val inputs that do; without
counter-keys both are 1.0 when nothing else is in memory.

And what the selector's floor (``reach``) does alone, with no counter-keys: for every
task, the same rule and demos, and the shares of its own val inputs and of every other
task's val inputs (earlier or not yet seen) that retrieve them.

Only train and val inputs are read (never test, never labels). No LM calls; the
similarity is the run default (all-MiniLM-L6-v2 embeddings when installed).

Usage:
    python experiments/task_separability.py STREAM [--keys 6] [--queries 8]

Writes ``experiments/results/separability_<stream>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctxopt._atomic import write_json  # noqa: E402
from ctxopt.context import Demo, Item, LearnedContext, PredictorContext  # noqa: E402
from ctxopt.retrieval import MAX_KEYS, RetrievalSelector, _nearest, input_text  # noqa: E402
from ctxopt.similarity import get_similarity  # noqa: E402
from ctxopt.streams import load_stream  # noqa: E402


def separability(stream: str, keys: int = 6, queries: int = 8, similarity: str = "auto") -> dict:
    """The query-task × key-task matrix of mean best similarities, and each task's margin over its best rival."""
    tasks = list(load_stream(stream).tasks)
    sim = get_similarity(similarity)

    def texts(examples, n):
        return [input_text(dict(e.inputs().items())) for e in list(examples)[:n]]

    key_texts = {t.name: texts(t.train, keys) for t in tasks}
    matrix = []
    for t in tasks:
        qs = texts(t.val, queries)
        matrix.append([round(statistics.mean(max(sim.scores(q, key_texts[k.name])) for q in qs), 4) for k in tasks])
    names = [t.name for t in tasks]
    margin = {n: round(row[i] - max(x for j, x in enumerate(row) if j != i), 4) for i, (n, row) in enumerate(zip(names, matrix))}
    return {"stream": stream, "similarity": sim.name, "keys": keys, "queries": queries, "tasks": names,
            "matrix": matrix, "own_minus_best_other": margin}


def _shares(selector: RetrievalSelector, ctx: LearnedContext, xs: list[dict]) -> tuple[float, float, float]:
    """The shares of ``xs`` that retrieve the rule and some demo, and the mean number of demos they retrieve."""
    got = [selector.explain(ctx, None, x)["p"] for x in xs]
    return (round(sum(bool(w.items) for w in got) / len(got), 3), round(sum(bool(w.demos) for w in got) / len(got), 3),
            round(sum(len(w.demos) for w in got) / len(got), 2))


def _inputs(examples) -> list[dict]:
    return [dict((k, v) for k, v in e.inputs().items() if k != "task") for e in examples]


def floors(stream: str, queries: int = 15, reach: float = 0.1, similarity: str = "auto") -> dict:
    """Per task, with no counter-keys: recall on its own val and leak to every other task's val (seen or not)."""
    tasks = list(load_stream(stream).tasks)
    selector = RetrievalSelector(similarity, k_items=1, k_demos=8, margin=1.0, reach=reach)
    rows = {}
    for task in tasks:
        rule = Item(id="r-rule", text="A rule.", keys=tuple(input_text(x) for x in _inputs(task.train[:MAX_KEYS])))
        demos = tuple(Demo(inputs=x, outputs={"output": "?"}, source_task=task.name)
                      for x in _inputs(task.train[MAX_KEYS:MAX_KEYS + 8]))
        ctx = LearnedContext({"p": PredictorContext("Answer.", items=(rule,), demos=demos)})
        own = _inputs(list(task.val)[:queries])
        others = [x for t in tasks if t is not task for x in _inputs(list(t.val)[:queries])]
        (rule_recall, demo_recall, _), (rule_leak, demo_leak, _) = _shares(selector, ctx, own), _shares(selector, ctx, others)
        rows[task.name] = {"rule_recall": rule_recall, "rule_leak": rule_leak, "demo_recall": demo_recall,
                           "demo_leak": demo_leak}
    mean = {k: round(statistics.mean(r[k] for r in rows.values()), 3) for k in next(iter(rows.values()))}
    return {"stream": stream, "queries": queries, "reach": reach, "tasks": rows, "mean": mean}


def narrowing(stream: str, queries: int = 15, pool: int = 10, similarity: str = "auto") -> dict:
    """Per task after the first: recall on its own val and leak to earlier tasks' val, rule and demos (no floor)."""
    tasks = list(load_stream(stream).tasks)
    selector = RetrievalSelector(similarity, k_items=1, k_demos=8, margin=1.0, reach=1.0)

    rows = {}
    for i, task in enumerate(tasks[1:], start=1):
        keys = [input_text(x) for x in _inputs(task.train[:MAX_KEYS])]
        others = [input_text(x) for t in tasks[:i] for x in _inputs(list(t.val)[-pool:])]
        rule = Item(id="r-rule", text="A rule.", keys=tuple(keys), unless=_nearest(keys, others, selector.sim))
        demos = tuple(Demo(inputs=x, outputs={"output": "?"}, unless=_nearest([input_text(x)], others, selector.sim),
                           source_task=task.name) for x in _inputs(task.train[MAX_KEYS:MAX_KEYS + 8]))
        ctx = LearnedContext({"p": PredictorContext("Answer.", items=(rule,), demos=demos)})

        own = _inputs(list(task.val)[:queries])
        earlier = [x for t in tasks[:i] for x in _inputs(list(t.val)[:max(0, len(t.val) - pool)][:queries])]
        (rule_recall, demo_recall, demos_own), (rule_leak, demo_leak, demos_leaked) = (_shares(selector, ctx, own),
                                                                                     _shares(selector, ctx, earlier))
        rows[task.name] = {"rule_recall": rule_recall, "rule_leak": rule_leak, "demo_recall": demo_recall,
                           "demo_leak": demo_leak, "demos_shown_own": demos_own, "demos_shown_leaked": demos_leaked}
    mean = {k: round(statistics.mean(r[k] for r in rows.values()), 3) for k in next(iter(rows.values()))}
    return {"stream": stream, "queries": queries, "pool": pool, "tasks": rows, "mean": mean}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stream")
    ap.add_argument("--keys", type=int, default=6, help="train inputs per task used as keys")
    ap.add_argument("--queries", type=int, default=8, help="val inputs per task used as queries")
    args = ap.parse_args(argv)
    r = separability(args.stream, args.keys, args.queries)
    short = [n[:8] for n in r["tasks"]]
    print(f"{args.stream}: mean best {r['similarity']} similarity of a task's val inputs (rows) to each task's train inputs")
    print(" " * 24 + " ".join(f"{s:>8}" for s in short) + "   own − best other")
    for name, row in zip(r["tasks"], r["matrix"]):
        print(f"{name[:24]:<24}" + " ".join(f"{x:8.2f}" for x in row) + f"   {r['own_minus_best_other'][name]:+.2f}")
    n = narrowing(args.stream)
    m = n["mean"]
    print(f"counter-keys (mean over tasks 2..): rule recall {m['rule_recall']:.2f}, leak {m['rule_leak']:.2f}; "
          f"some demo: recall {m['demo_recall']:.2f}, leak {m['demo_leak']:.2f} (both 1.00 without them); "
          f"demos shown of 8: own inputs {m['demos_shown_own']:.2f}, earlier tasks' {m['demos_shown_leaked']:.2f}")
    f = floors(args.stream)
    m = f["mean"]
    print(f"floors (reach {f['reach']:g}, no counter-keys, mean over all tasks): rule recall {m['rule_recall']:.2f}, "
          f"leak to every other task {m['rule_leak']:.2f}; some demo: recall {m['demo_recall']:.2f}, "
          f"leak {m['demo_leak']:.2f} (all 1.00 without a floor)")
    out = ROOT / "experiments" / "results" / f"separability_{args.stream}.json"
    write_json(out, {**r, "narrowing": n, "floors": f})
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
