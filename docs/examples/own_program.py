"""Your own DSPy program, learning a task-aware YAML stream with ctxopt.

Run it on the embedded local models (0.5B task model, 1.5B reflection model)::

    .venv/bin/python docs/examples/own_program.py [RUN_DIR]

It is resumable: run it again and it continues where it stopped (a finished
run reprints its result from the caches in seconds).
"""

from __future__ import annotations

import sys
from pathlib import Path

import dspy

import ctxopt


class QA(dspy.Module):
    """A plain program: one predictor, and a forward that knows nothing of tasks."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = dspy.Predict("question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        return self.answer(question=question)


def main(run_dir: str = "runs/own-program", task_lm: object = "local",
         reflection_lm: object = "local:qwen2.5-coder-1.5b") -> ctxopt.RunResult:
    stream = ctxopt.load_stream(str(Path(__file__).parent / "qa_stream" / "stream.yaml"))
    opt = ctxopt.ContinualOptimizer(task_lm=task_lm, reflection_lm=reflection_lm, budget="light", seed=0)
    result = opt.fit(QA(), stream, run_dir=run_dir)
    s = result.summary()
    print("tasks:", result.tasks)
    print("R0:", result.r0)
    print("R:", result.R)
    print(f"ACC {s['acc']:.3f}  BWT {s['bwt']:+.3f}  FWT {s['fwt']:+.3f}  "
          f"task-LM calls {s['task_calls']}  reflection calls {s['reflection_calls']}")
    print("accepted:", [st.accepted for st in result.steps])
    return result


if __name__ == "__main__":
    main(*sys.argv[1:2])
