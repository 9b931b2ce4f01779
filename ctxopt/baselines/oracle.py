"""``oracle-human``: the human-written instruction of each Instruction Induction task.

Instruction Induction (Honovich et al., 2023) ships, per task, several
instructions written by people (``ctxopt/data/instruction_induction/annotations/<task>.json``).
When task *i* arrives this method adds one of them — the longest, the most
complete — as a rule scoped to task *i*. It makes no LM calls.

This module is the only code in ctxopt that reads the annotations, and it reads
them only inside :meth:`OracleHuman.learn`, one file per task as the task
arrives (tests assert this by instrumenting file access).

Example:
    >>> OracleHuman().check(["antonyms", "sum"])
    >>> OracleHuman().check(["qa1_single-supporting-fact"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctxopt.errors.ConfigError: oracle-human needs Instruction Induction tasks ...
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ctxopt.baselines.base import LearnContext, Outcome
from ctxopt.context import LearnedContext
from ctxopt.edits import AddItem
from ctxopt.errors import ConfigError, DataError, EditError
from ctxopt.tasks import split_visit

__all__ = ["OracleHuman"]


class OracleHuman:
    """Add the human-written instruction of each arriving task, scoped to that task.

    Args:
        annotations_dir: Folder of ``<task>.json`` files with an ``"annotations"`` list;
            default: the packaged Instruction Induction annotations.
    """

    name = "oracle-human"
    joint = False

    def __init__(self, annotations_dir: str | Path | None = None) -> None:
        self.annotations_dir = Path(annotations_dir) if annotations_dir is not None else None

    def _dir(self) -> Path:
        if self.annotations_dir is not None:
            return self.annotations_dir
        from ctxopt.streams import data_dir

        return data_dir() / "instruction_induction" / "annotations"

    def check(self, task_names: Iterable[str]) -> None:
        """Refuse streams without human instructions (decided from task names only; no file is read)."""
        if self.annotations_dir is not None:
            return
        from ctxopt.streams import II_TASKS

        missing = [t for t in task_names if split_visit(t)[0] not in II_TASKS]  # antonyms@2 is antonyms
        if missing:
            raise ConfigError(f"oracle-human needs Instruction Induction tasks (an ii stream); "
                              f"{', '.join(missing)} have no human-written instructions — drop oracle-human "
                              "from --methods")

    def instruction(self, task: str) -> str:
        """The chosen human instruction of ``task``: the longest annotation, first on ties."""
        path = self._dir() / f"{task}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: no human instructions for task {task!r}") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        texts = [str(a).strip() for a in (data.get("annotations") or []) if str(a).strip()]
        if not texts:
            raise DataError(f"{path}: the 'annotations' list is empty")
        return max(texts, key=len)

    def learn(self, program: Any, context: LearnedContext, tasks: Sequence[Any], ctx: LearnContext) -> Outcome:
        from ctxopt.optimizer import target_predictor

        task = tasks[-1]
        text = self.instruction(task.family)
        predictor = target_predictor(program, task.output)
        edit = AddItem(predictor, text, scope=task.family, kind="rule",
                       rationale="human-written instruction (Instruction Induction annotations)")
        try:
            new = context.apply_edits([edit], step=ctx.step, task=task.name)
        except EditError as exc:  # the same instruction is already there
            return Outcome(context, note=f"oracle-human: instruction already present ({exc})", accepted=False)
        return Outcome(new, note=f"oracle-human: added the human instruction of {task.name}", accepted=True,
                       extra={"instruction": text})
