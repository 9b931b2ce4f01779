"""``append`` and ``summarize``: in-context learning by writing experience into C.

``append`` runs the current context on a seeded train minibatch of the new task
(``budget.train_minibatch`` examples, the same amount of experience the
continual optimizer observes) and appends every failure — input, expected
answer, the model's answer and the metric's feedback — as a ``note`` item
scoped to the task (global in a task-agnostic stream). Notes are appended in
order until the rendered context would exceed ``ctx.max_context_tokens``; the
rest is dropped and the step says so. Long field values are cut to
``max_field_chars`` characters.

``summarize`` appends everything, then, while C is over budget, asks the
reflection LM to rewrite the notes of one scope (largest first) as a few short
rules, at most ``ctx.reflection_calls`` calls per step. If C is still over
budget after that (a small LM may ignore the length), the oldest items are
dropped until it fits, so the budget always holds.

Example:
    >>> from ctxopt.context import LearnedContext, PredictorContext
    >>> parse_summary("1. Answer with one word.\\n- Use lowercase\\nHere you go:")
    ['Answer with one word.', 'Use lowercase', 'Here you go:']
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from ctxopt._text import shorten
from ctxopt.baselines.base import LearnContext, Outcome, sample
from ctxopt.context import Item, LearnedContext, count_tokens
from ctxopt.edits import AddItem, DeleteItem
from ctxopt.errors import EditError, EndpointError

__all__ = ["SUMMARY_PROMPT", "Append", "Summarize", "parse_summary"]

log = logging.getLogger(__name__)

SUMMARY_PROMPT = """You maintain the notes a small language model reads before it solves the task "{task}".
The notes below were collected from its mistakes. Rewrite them as at most {k} short, general rules that would
prevent these mistakes. Keep every concrete fact a rule needs (formats, labels, examples). Use at most {words}
words in total.

Notes:
{notes}

Reply ONLY with the rules, one per line."""



def parse_summary(text: str, max_lines: int = 12) -> list[str]:
    """The rule lines of a summary reply: list markers stripped, empty and duplicate lines dropped."""
    out: list[str] = []
    for line in str(text).splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip("*").strip()
        if line and not line.startswith("```") and line not in out:
            out.append(line)
    return out[:max_lines]


class Append:
    """Append raw failures (with feedback) to C until the context budget is full.

    Args:
        max_field_chars: Longest value of one field kept in a note.
    """

    name = "append"
    joint = False
    summarize = False

    def __init__(self, max_field_chars: int = 200) -> None:
        self.max_field_chars = max_field_chars

    # -- experience -------------------------------------------------------------------
    def _notes(self, program: Any, context: LearnedContext, task: Any, ctx: LearnContext,
               n_pred: int) -> tuple[list[str], dict[str, Any]]:
        n = min(ctx.budget.train_minibatch, len(task.train), ctx.task_calls // max(1, n_pred))
        batch = sample(task.train, n, ctx.seed, "append", ctx.step, task.name)
        result = ctx.evaluator.evaluate(program, context, task, batch, scenario=ctx.scenario)
        by_id = {r.example_id: r for r in result.results}
        from ctxopt.tasks import example_id

        notes = []
        for ex in batch:
            r = by_id[example_id(ex)]
            if r.score >= 1.0:
                continue
            shown = "; ".join(f"{k}: {shorten(ex.get(k), self.max_field_chars)}" for k in task.inputs)
            got = shorten(r.prediction.get(task.output, ""), self.max_field_chars) or "(no answer)"
            notes.append(f"{shown} -> expected: {shorten(ex.get(task.output), self.max_field_chars)}; "
                         f"model answered: {got}; feedback: {shorten(r.feedback, self.max_field_chars)}")
        return notes, {"observed": len(batch), "train_score": round(result.mean, 4), "failures": len(notes)}

    @staticmethod
    def _add(context: LearnedContext, predictor: str, text: str, scope: str, step: int, task: str,
             rationale: str) -> LearnedContext | None:
        try:
            return context.apply_edits([AddItem(predictor, text, scope=scope, kind="note", rationale=rationale)],
                                       step=step, task=task)
        except EditError:  # the same note is already in C
            return None

    def learn(self, program: Any, context: LearnedContext, tasks: Sequence[Any], ctx: LearnContext) -> Outcome:
        from ctxopt.optimizer import target_predictor

        task = tasks[-1]
        predictor = target_predictor(program, task.output)
        n_pred = len(program.named_predictors())
        notes, extra = self._notes(program, context, task, ctx, n_pred)
        scope, cap = ctx.scope(task), ctx.max_context_tokens
        new, added, full = context, 0, False
        for text in notes:
            candidate = self._add(new, predictor, text, scope, ctx.step, task.name, "failed train example")
            if candidate is None:
                continue
            if not self.summarize and candidate.token_count() > cap:
                full = True
                break
            new, added = candidate, added + 1
        extra.update(appended=added, context_budget=cap)
        if self.summarize and new.token_count() > cap:
            new, more = self._shrink(new, predictor, task, ctx)
            extra.update(more)
        note = f"{self.name}: appended {added} of {len(notes)} failure note(s)"
        if full:
            note += f"; context budget of {cap} tokens is full"
        if "summaries" in extra:
            note += f"; {extra['summaries']} summary call(s), {extra['dropped_items']} item(s) dropped"
        return Outcome(new, note=note, accepted=new.hash != context.hash, extra=extra)

    def _shrink(self, context: LearnedContext, predictor: str, task: Any, ctx: LearnContext
                ) -> tuple[LearnedContext, dict[str, Any]]:  # pragma: no cover - Append never shrinks
        raise NotImplementedError


class Summarize(Append):
    """Append everything, then let the reflection LM summarize C back into the budget.

    Args:
        max_field_chars: Longest value of one field kept in a note.
        max_rules: Most rules one summary may keep.
    """

    name = "summarize"
    summarize = True

    def __init__(self, max_field_chars: int = 200, max_rules: int = 6) -> None:
        super().__init__(max_field_chars)
        self.max_rules = max_rules

    @staticmethod
    def _scope_tokens(items: Sequence[Item]) -> int:
        return sum(count_tokens(it.text) for it in items)

    def _shrink(self, context: LearnedContext, predictor: str, task: Any, ctx: LearnContext
                ) -> tuple[LearnedContext, dict[str, Any]]:
        cap, calls, done = ctx.max_context_tokens, 0, set()
        errors: list[str] = []
        while context.token_count() > cap and calls < ctx.reflection_calls:
            items = context.items(predictor)
            by_scope: dict[str, list[Item]] = {}
            for it in items:
                by_scope.setdefault(it.scope, []).append(it)
            todo = [s for s in by_scope if s not in done and len(by_scope[s]) > 1]
            if not todo:
                break
            scope = max(todo, key=lambda s: self._scope_tokens(by_scope[s]))
            done.add(scope)
            share = max(32, cap // max(1, len(by_scope)))
            prompt = SUMMARY_PROMPT.format(task=scope if scope != "global" else task.name, k=self.max_rules,
                                           words=max(20, share * 3 // 4),
                                           notes="\n".join(f"- {it.text}" for it in by_scope[scope]))
            calls += 1
            try:
                reply = ctx.reflection_lm(prompt)[0]
            except EndpointError:
                raise  # a dead endpoint stops the run (ctxopt.endpoint)
            except Exception as exc:  # noqa: BLE001 - one failed summary is one lost call, never a crash
                log.warning("summary of %s failed: %s", scope, exc)
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            rules = parse_summary(reply if isinstance(reply, str) else str(reply), self.max_rules)
            if not rules:
                errors.append(f"empty summary for {scope}")
                continue
            edits: list[Any] = [DeleteItem(predictor, it.id, rationale="summarized") for it in by_scope[scope]]
            edits += [AddItem(predictor, r, scope=scope, kind="rule",
                              rationale=f"summary of {len(by_scope[scope])} item(s)") for r in rules]
            try:
                context = context.apply_edits(edits, step=ctx.step, task=task.name)
            except EditError as exc:
                errors.append(str(exc))
        dropped = 0
        while context.token_count() > cap and context.items(predictor):
            oldest = min(context.items(predictor), key=lambda it: it.created_step)
            context = context.apply_edits([DeleteItem(predictor, oldest.id, rationale="over the context budget")],
                                          step=ctx.step, task=task.name)
            dropped += 1
        out: dict[str, Any] = {"summaries": calls, "dropped_items": dropped}
        if errors:
            out["summary_errors"] = errors[:5]
        return context, out
