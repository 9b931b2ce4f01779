"""Export a learned context as DSPy's own JSON program state, loadable without ctxopt.

:func:`export_program` applies the context to a program and saves it with
``program.save``; :func:`export_state` writes the same state JSON from the
context alone, when the program's code is not at hand. Either file loads with
plain ``program.load(path)``. :meth:`Store.export_dspy <ctxopt.store.Store.export_dspy>`
and :meth:`Store.export_dspy_state <ctxopt.store.Store.export_dspy_state>` call these
for a stored version.

Example:
    >>> from ctxopt.context import LearnedContext, PredictorContext
    >>> state = dspy_state(LearnedContext({"qa": PredictorContext("Answer.")}))
    >>> state["qa"]["signature"]["instructions"], state["qa"]["demos"]
    ('Answer.', [])
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctxopt._atomic import write_text
from ctxopt.context import LearnedContext
from ctxopt.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import dspy


def retrieval_note(context: LearnedContext) -> str | None:
    """What an export loses when ``context`` is per-input memory (None when it loses nothing).

    DSPy's state has one instruction and one demo list per predictor: it cannot
    choose per input. A context with keyed (archival) items is exported with its
    core memory and *all* archival items and demos rendered for every input,
    which is what this note says.

    Example:
        >>> from ctxopt.context import Item, PredictorContext
        >>> ctx = LearnedContext({"qa": PredictorContext("Answer.", items=(Item("r-1", "Be brief.", keys=("hi",)),))})
        >>> retrieval_note(ctx).split(":")[0]
        'DSPy state cannot express per-input retrieval'
    """
    keyed = sum(1 for pc in context.predictors.values() for it in pc.items if it.keys and not it.pinned)
    if not keyed:
        return None
    demos = sum(len(pc.demos) for pc in context.predictors.values())
    return (f"DSPy state cannot express per-input retrieval: the export shows the core memory and all {keyed} "
            f"archival item(s) and {demos} demo(s) to every input (ctxopt retrieves a few per input)")


def _json_path(path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    if out.suffix != ".json":
        raise ConfigError(f"DSPy state must be saved to a .json file, got {out}")
    return out


def export_program(context: LearnedContext, program: dspy.Module, path: str | os.PathLike[str], task: str | None = None) -> Path:
    """Apply ``context`` to ``program`` and save the program in DSPy's JSON format.

    Args:
        context: The learned context to apply.
        program: The DSPy program; it is changed in place.
        path: Where to write; must end in ``.json``. Written to a temp name and renamed.
        task: Task whose scoped items and demos are included (None: global ones only).

    Returns:
        The path written.

    Raises:
        ConfigError: if ``path`` does not end in ``.json`` or predictor names differ.
    """
    out = _json_path(path)
    context.apply_to(program, task=task)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}.json")
    try:
        program.save(str(tmp))
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return out


def dspy_state(context: LearnedContext, task: str | None = None) -> dict[str, Any]:
    """DSPy's program state for ``context``, built without the program's code.

    Each predictor gets its rendered instructions and in-scope demos; field
    prefixes and descriptions are left out, so a loading program keeps its own.

    Args:
        context: The learned context.
        task: Task whose scoped items and demos are included (None: global ones only).

    Returns:
        A JSON-compatible dict in the shape ``program.save`` writes.
    """
    state: dict[str, Any] = {}
    for name, pc in context.predictors.items():
        state[name] = {
            "traces": [],
            "train": [],
            "demos": [{**d.inputs, **d.outputs} for d in pc.scoped_demos(task)],
            "signature": {"instructions": context.render(name, task), "fields": []},
            "lm": None,
        }
    return state


def export_state(context: LearnedContext, path: str | os.PathLike[str], task: str | None = None) -> Path:
    """Write :func:`dspy_state` of ``context``, with DSPy's dependency versions, as a JSON file.

    Args:
        context: The learned context.
        path: Where to write; must end in ``.json``. Written atomically.
        task: Task whose scoped items and demos are included (None: global ones only).

    Returns:
        The path written; ``program.load(path)`` reads it.

    Raises:
        ConfigError: if ``path`` does not end in ``.json``.
    """
    from dspy.utils.saving import get_dependency_versions

    out = _json_path(path)
    state = dspy_state(context, task)
    state["metadata"] = {"dependency_versions": get_dependency_versions()}
    write_text(out, json.dumps(state, indent=2, ensure_ascii=False) + "\n")
    return out


__all__ = ["dspy_state", "export_program", "export_state", "retrieval_note"]
