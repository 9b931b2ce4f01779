"""``ctxopt demo``: a short run on the embedded local models."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

_WORDS = [("hot", "cold"), ("early", "late"), ("happy", "sad"), ("strong", "weak"), ("open", "closed")]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run a short demo on the embedded local models")
    p.add_argument("--task-lm", default="local", help="LM spec of the task model (default: local)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dspy

    from ctxopt.lm import get_lm, usage_of

    console = Console()
    lm = get_lm(args.task_lm)
    predict = dspy.Predict("word -> antonym")
    predict.set_lm(lm)
    table = Table(title=f"antonyms with {lm.model}")
    for col in ("input", "expected", "model answer", "ok"):
        table.add_column(col)
    correct = 0
    with console.status("asking the model…"):
        for word, expected in _WORDS:
            answer = predict(word=word).antonym.strip()
            ok = answer.lower().strip(".") == expected
            correct += ok
            table.add_row(word, expected, answer, "✓" if ok else "✗")
    console.print(table)
    used = usage_of(lm)
    console.print(f"accuracy {correct}/{len(_WORDS)}; {used.calls} calls "
                  f"({used.cache_hits} cache hits), {used.tokens} tokens, {used.seconds:.1f} s in the model")
    return 0
