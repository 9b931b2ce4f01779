"""How well per-input retrieval can tell a stream's tasks apart, before any learning.

Task-agnostic memory retrieves what an input sees by the similarity of the input to
each memory entry's keys, and a learned entry's keys are the train inputs that produced
it. So retrieval can keep tasks apart only as far as one task's inputs are closer to its
own train inputs than to other tasks'. This prints, for every pair of tasks (query task
i, key task j), the mean over i's val inputs of the best similarity to j's first train
inputs: a row whose diagonal does not stand out is a task retrieval cannot isolate.

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
from ctxopt.retrieval import input_text  # noqa: E402
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
    out = ROOT / "experiments" / "results" / f"separability_{args.stream}.json"
    write_json(out, r)
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
