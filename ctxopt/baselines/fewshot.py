"""``labeled-fewshot``: k labelled train examples of each task as demos, the floor a learner has to beat.

When task *i* arrives, ``k`` (default 8) of its train examples, drawn with a seeded
shuffle, become demos of the predictor that writes the task's output (DSPy's
``LabeledFewShot``, kept per task). No model call is made.

* **Task-aware** streams: the demos are scoped to task *i* and kept, so each task sees
  its own k demos and nothing is forgotten.
* **Task-agnostic** streams: there is no label to scope by, so the demos are global,
  and a new task's demos replace the previous task's, as re-compiling ``LabeledFewShot``
  on each task in turn would.

Example:
    >>> LabeledFewShot().name, LabeledFewShot(k=4).k
    ('labeled-fewshot', 4)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ctxopt.baselines.base import LearnContext, Outcome
from ctxopt.context import GLOBAL, Demo, LearnedContext
from ctxopt.edits import AddDemo, RemoveDemo
from ctxopt.errors import ConfigError

__all__ = ["LabeledFewShot"]


class LabeledFewShot:
    """Per task, ``k`` labelled demos drawn from its train split (seeded)."""

    name = "labeled-fewshot"
    joint = False

    def __init__(self, k: int = 8) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"labeled-fewshot: k must be a positive integer, got {k!r}")
        self.k = k

    def learn(self, program: Any, context: LearnedContext, tasks: Sequence[Any], ctx: LearnContext) -> Outcome:
        from ctxopt.optimizer import program_inputs, target_predictor
        from ctxopt.tasks import TASK_FIELD

        task = tasks[-1]
        predictor = target_predictor(program, task.output)
        fields = program_inputs(program, predictor)
        scope = task.family if ctx.aware else GLOBAL
        train = list(task.train)
        random.Random(f"{ctx.seed}:{task.name}").shuffle(train)
        demos: dict[str, Demo] = {}
        for ex in train:
            inputs = {f: task.family if f == TASK_FIELD else ex.get(f) for f in fields}
            demo = Demo(inputs=inputs, outputs={task.output: ex.get(task.output)}, scope=scope)
            demos.setdefault(demo.id, demo)
            if len(demos) == self.k:
                break
        have = {d.id for d in context.predictor(predictor).demos}
        stale = [] if ctx.aware else [d.id for d in context.predictor(predictor).demos
                                      if d.scope == GLOBAL and d.id not in demos]
        edits: list[Any] = [RemoveDemo(predictor, i, rationale="the previous task's demos") for i in stale]
        edits += [AddDemo(predictor, d, rationale=f"labelled train example of {task.name}")
                  for i, d in demos.items() if i not in have]
        if not edits:
            return Outcome(context, note=f"labeled-fewshot: {task.name}'s demos are already there", accepted=False)
        new = context.apply_edits(edits, step=ctx.step, task=task.name)
        return Outcome(new, note=f"labeled-fewshot: {len(demos)} demos of {task.name}", accepted=True,
                       extra={"demos": len(demos)})
