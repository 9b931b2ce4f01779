"""What the model sees for one input: the messages a predictor sends under a learned context.

:func:`prompt_messages` does what :class:`~ctxopt.evaluator.Evaluator` does
before a call: it lets the selector choose what of C to show for the input,
applies that selection to a copy of the program, and formats the predictor's
call with the adapter DSPy would use (``dspy.settings.adapter``, else
``dspy.ChatAdapter``). The messages are the ones the LM receives for that
input, byte for byte. :func:`format_messages` prints them. ``ctxopt show
--for-input`` is built on both.

Example:
    >>> from ctxopt.context import Item, LearnedContext, PredictorContext
    >>> from ctxopt.program import TaskProgram
    >>> ctx = LearnedContext({"predict": PredictorContext("Answer.", items=(Item(id="r-1", text="Be brief."),))})
    >>> msgs = prompt_messages(TaskProgram(["input"], "output"), ctx, {"input": "hot"})
    >>> [m["role"] for m in msgs], "Be brief." in msgs[0]["content"], "hot" in msgs[-1]["content"]
    (['system', 'user'], True, True)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ctxopt.context import LearnedContext
from ctxopt.errors import ConfigError
from ctxopt.selector import ContextSelector, ScopeSelector

if TYPE_CHECKING:  # pragma: no cover
    import dspy

__all__ = ["format_messages", "prompt_messages"]


def prompt_messages(
    program: dspy.Module,
    context: LearnedContext,
    inputs: Mapping[str, Any],
    *,
    predictor: str | None = None,
    task: str | None = None,
    selector: ContextSelector | None = None,
) -> list[dict[str, Any]]:
    """The messages ``predictor`` of ``program`` sends for ``inputs`` under ``context``.

    Args:
        program: The program; a deep copy gets the context, the original is unchanged.
        context: The learned context.
        inputs: The program's inputs for this call (the selector sees them all;
            the predictor gets those of its signature).
        predictor: A named predictor of the program; default: the first.
        task: The task label of a task-aware call, None for a task-agnostic one.
        selector: Chooses what of C is shown (default: everything in scope).

    Raises:
        ConfigError: no such predictor, or the context does not fit the program.
    """
    import dspy

    shown = (selector or ScopeSelector()).select(context, task, dict(inputs))
    prog = shown.apply_to(copy.deepcopy(program), task=task)
    named = dict(prog.named_predictors())
    name = predictor if predictor is not None else next(iter(named), None)
    if name not in named:
        raise ConfigError(f"the program has no predictor {name!r} (predictors: {', '.join(named) or 'none'})")
    pred = named[name]
    fields = pred.signature.input_fields
    adapter = dspy.settings.adapter or dspy.ChatAdapter()
    return adapter.format(pred.signature, list(pred.demos), {k: v for k, v in inputs.items() if k in fields})


def format_messages(messages: Sequence[Mapping[str, Any]]) -> str:
    """Messages as text: a ``--- role ---`` line, then the content, for each message.

    Example:
        >>> print(format_messages([{"role": "system", "content": "Answer."}, {"role": "user", "content": "hi"}]))
        --- system ---
        Answer.
        --- user ---
        hi
    """
    return "\n".join(f"--- {m.get('role', '?')} ---\n{m.get('content', '')}" for m in messages)
