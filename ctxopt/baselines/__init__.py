"""Comparison methods: baselines and the continual optimizer behind one small seam.

Every method implements :class:`Method` — ``learn(program, context, tasks, ctx)
-> Outcome`` — and differs from the others only in how it updates the learned
context C. The harness :mod:`ctxopt.compare` runs them all through the same
stream, evaluator, metrics, LM-usage accounting and store.

==============  ================================================================
name            how C changes
==============  ================================================================
static          never: C is the program's initial context
append          failures of a train minibatch, with feedback, appended as notes
                until the context budget is full
summarize       append, then the reflection LM summarizes C back into the budget
gepa-seq        ``dspy.GEPA`` on each task in turn (current task's train/val only)
mipro-seq       ``dspy.MIPROv2`` on each task in turn
gepa-joint      ``dspy.GEPA`` once on all tasks' train/val (upper reference)
oracle-human    the human-written instruction of each Instruction Induction task
labeled-fewshot k labelled train examples of each task as demos (DSPy's LabeledFewShot)
ctxopt          the continual optimizer (propose, search, gate, commit)
==============  ================================================================

Example:
    >>> [get_method(n).name for n in ("static", "append")]
    ['static', 'append']
    >>> get_method("nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctxopt.errors.ConfigError: unknown method 'nope'; valid methods: static, append, ...
"""

from __future__ import annotations

import importlib
from typing import Any

from ctxopt.baselines.base import DEFAULT_CONTEXT_TOKENS, LearnContext, Method, Outcome
from ctxopt.errors import ConfigError

__all__ = [
    "DEFAULT_CONTEXT_TOKENS",
    "METHODS",
    "LearnContext",
    "Method",
    "Outcome",
    "get_method",
    "get_methods",
]

# name -> "module:class"; modules are imported only when a method is asked for.
METHODS: dict[str, str] = {
    "static": "ctxopt.baselines.static:Static",
    "append": "ctxopt.baselines.append:Append",
    "summarize": "ctxopt.baselines.append:Summarize",
    "gepa-seq": "ctxopt.baselines.dspy_optimizers:GepaSeq",
    "mipro-seq": "ctxopt.baselines.dspy_optimizers:MiproSeq",
    "gepa-joint": "ctxopt.baselines.dspy_optimizers:GepaJoint",
    "oracle-human": "ctxopt.baselines.oracle:OracleHuman",
    "labeled-fewshot": "ctxopt.baselines.fewshot:LabeledFewShot",
    "ctxopt": "ctxopt.baselines.continual:CtxoptMethod",
}


def get_method(method: str | Method, **options: Any) -> Method:
    """A method by name (with constructor options), or a :class:`Method` object as is.

    Raises:
        ConfigError: Unknown name; the message lists the valid ones.

    ``ctxopt-<policy>`` is ctxopt with another stage policy (:mod:`ctxopt.credit`): ``ctxopt-output``
    edits only the output predictor, ``ctxopt-rotate`` goes round the stages. ``ctxopt-grounded`` (or
    ``ctxopt-<policy>-grounded``) also proposes data-grounded instructions (:mod:`ctxopt.grounding`).
    """
    if not isinstance(method, str):
        return method
    name = method.strip()
    if name.startswith("ctxopt-"):  # a ctxopt variant: ctxopt-output, ctxopt-grounded, ctxopt-output-grounded
        variant = name.removeprefix("ctxopt-")
        if variant == "grounded" or variant.endswith("-grounded"):
            options = {**options, "grounded": True}
            variant = variant.removesuffix("grounded").removesuffix("-")
        options = {**options, "stages": variant} if variant else options
        name = "ctxopt"
    target = METHODS.get(name)
    if target is None:
        raise ConfigError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(**options)


def get_methods(spec: str | list[Any]) -> list[Method]:
    """Methods from a comma-separated list of names, or a list of names/objects; duplicates refused."""
    items = [s.strip() for s in spec.split(",") if s.strip()] if isinstance(spec, str) else list(spec)
    if not items:
        raise ConfigError(f"no methods given; valid methods: {', '.join(METHODS)}")
    methods = [get_method(m) for m in items]
    names = [m.name for m in methods]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"method(s) listed twice: {', '.join(dup)}")
    return methods
