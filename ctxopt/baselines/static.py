"""``static``: no learning; C stays the program's initial context.

Example:
    >>> from ctxopt.context import LearnedContext, PredictorContext
    >>> c0 = LearnedContext({"predict": PredictorContext("Answer.")})
    >>> Static().learn(None, c0, (), None).context == c0
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ctxopt.baselines.base import LearnContext, Outcome
from ctxopt.context import LearnedContext

__all__ = ["Static"]


class Static:
    """The no-learning reference: every row of R scores C₀."""

    name = "static"
    joint = False

    def learn(self, program: Any, context: LearnedContext, tasks: Sequence[Any], ctx: LearnContext | None
              ) -> Outcome:
        return Outcome(context, note="static: no learning")
