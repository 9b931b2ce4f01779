"""ctxopt: continual learning in token space for DSPy programs.

A DSPy program meets tasks one after another; ctxopt carries a learned,
itemized, versioned context C forward and refines it with gated delta edits.

Example:
    >>> import ctxopt
    >>> lm = ctxopt.lm.get_lm("local")            # doctest: +SKIP
    >>> lm("Say hi")                               # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it. Resolved lazily so `import ctxopt`
# stays fast and does not import dspy/optuna until they are needed.
_EXPORTS = {
    "get_lm": "ctxopt.lm",
    "LearnedContext": "ctxopt.context",
    "Item": "ctxopt.context",
    "Demo": "ctxopt.context",
    "Store": "ctxopt.store",
    "Task": "ctxopt.tasks",
    "TaskStream": "ctxopt.tasks",
    "load_stream": "ctxopt.streams",
    "Evaluator": "ctxopt.evaluator",
    "ContinualOptimizer": "ctxopt.optimizer",
    "transfer": "ctxopt.portability",
    "Consolidator": "ctxopt.consolidate",
}
_SUBMODULES = {
    "lm", "models", "errors", "context", "edits", "store", "tasks", "streams", "benchmarks",
    "metrics", "matrix", "evaluator", "report", "program", "optimizer", "gate", "proposer",
    "search", "budget", "config", "compare", "baselines", "consolidate", "portability", "distill", "cli",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"ctxopt.{name}")
    raise AttributeError(f"module 'ctxopt' has no attribute {name!r}")
