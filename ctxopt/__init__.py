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
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> module that defines it. At run time names resolve lazily, so `import ctxopt` (and
# `import ctxopt.context`) stays fast and does not import dspy/optuna until they are needed; type
# checkers see the real imports below.
_EXPORTS = {
    # running
    "ContinualOptimizer": "ctxopt.optimizer",
    "RunResult": "ctxopt.matrix",
    "StepRecord": "ctxopt.matrix",
    "Event": "ctxopt.optimizer",
    "compare": "ctxopt.compare",
    "transfer": "ctxopt.portability",
    "get_lm": "ctxopt.lm",
    "load_stream": "ctxopt.streams",
    "Task": "ctxopt.tasks",
    "TaskStream": "ctxopt.tasks",
    # the learned context and its history
    "LearnedContext": "ctxopt.context",
    "Item": "ctxopt.context",
    "Demo": "ctxopt.context",
    "Edit": "ctxopt.context",
    "AddItem": "ctxopt.edits",
    "UpdateItem": "ctxopt.edits",
    "MergeItems": "ctxopt.edits",
    "DeleteItem": "ctxopt.edits",
    "RewriteInstruction": "ctxopt.edits",
    "AddDemo": "ctxopt.edits",
    "RemoveDemo": "ctxopt.edits",
    "Store": "ctxopt.store",
    # extension points
    "Proposer": "ctxopt.proposer",
    "Proposal": "ctxopt.proposer",
    "ProposalContext": "ctxopt.proposer",
    "Observation": "ctxopt.proposer",
    "Gate": "ctxopt.gate",
    "Decision": "ctxopt.gate",
    "PairedScores": "ctxopt.gate",
    "Search": "ctxopt.search",
    "SearchResult": "ctxopt.search",
    "ContextSelector": "ctxopt.selector",
    "ScopeSelector": "ctxopt.selector",
    "RetrievalSelector": "ctxopt.retrieval",
    "Evaluator": "ctxopt.evaluator",
    "Budget": "ctxopt.budget",
    "Ledger": "ctxopt.budget",
    "Method": "ctxopt.baselines.base",
    "Outcome": "ctxopt.baselines.base",
    "Consolidator": "ctxopt.consolidate",
    "CtxoptError": "ctxopt.errors",
}

if TYPE_CHECKING:  # pragma: no cover - the same names, for type checkers and IDEs
    from ctxopt.baselines.base import Method, Outcome
    from ctxopt.budget import Budget, Ledger
    from ctxopt.compare import compare
    from ctxopt.consolidate import Consolidator
    from ctxopt.context import Demo, Edit, Item, LearnedContext
    from ctxopt.edits import AddDemo, AddItem, DeleteItem, MergeItems, RemoveDemo, RewriteInstruction, UpdateItem
    from ctxopt.errors import CtxoptError
    from ctxopt.evaluator import Evaluator
    from ctxopt.gate import Decision, Gate, PairedScores
    from ctxopt.lm import get_lm
    from ctxopt.matrix import RunResult, StepRecord
    from ctxopt.optimizer import ContinualOptimizer, Event
    from ctxopt.portability import transfer
    from ctxopt.proposer import Observation, Proposal, ProposalContext, Proposer
    from ctxopt.retrieval import RetrievalSelector
    from ctxopt.search import Search, SearchResult
    from ctxopt.selector import ContextSelector, ScopeSelector
    from ctxopt.store import Store
    from ctxopt.streams import load_stream
    from ctxopt.tasks import Task, TaskStream

_SUBMODULES = {
    "lm", "models", "errors", "context", "edits", "store", "tasks", "streams", "benchmarks",
    "metrics", "matrix", "evaluator", "report", "program", "optimizer", "gate", "proposer",
    "search", "budget", "config", "compare", "baselines", "consolidate", "portability", "distill", "cli",
    "selector", "tokens", "store_format", "changelog", "dspy_export", "retrieval", "prompt",
}

__all__ = [
    "AddDemo",
    "AddItem",
    "Budget",
    "Consolidator",
    "ContextSelector",
    "ContinualOptimizer",
    "CtxoptError",
    "Decision",
    "DeleteItem",
    "Demo",
    "Edit",
    "Evaluator",
    "Event",
    "Gate",
    "Item",
    "LearnedContext",
    "Ledger",
    "MergeItems",
    "Method",
    "Observation",
    "Outcome",
    "PairedScores",
    "Proposal",
    "ProposalContext",
    "Proposer",
    "RemoveDemo",
    "RetrievalSelector",
    "RewriteInstruction",
    "RunResult",
    "ScopeSelector",
    "Search",
    "SearchResult",
    "StepRecord",
    "Store",
    "Task",
    "TaskStream",
    "UpdateItem",
    "compare",
    "get_lm",
    "load_stream",
    "transfer",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"ctxopt.{name}")
    raise AttributeError(f"module 'ctxopt' has no attribute {name!r}")
