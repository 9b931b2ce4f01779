"""The seam of consolidation: the candidate record, the proposer protocol and the reflection LM's allowance.

A consolidation proposer reads a learned context and returns
:class:`Consolidation` candidates (typed edits with a kind and a rationale);
:func:`ctxopt.consolidate.run_pass` decides which of them land. Any object with
:meth:`ConsolidationProposer.propose`, :meth:`ConsolidationProposer.compress`
and ``lm_calls_per_pass`` can stand in for the default
:class:`ctxopt.consolidate.Consolidator`.

Example:
    >>> from ctxopt.edits import DeleteItem
    >>> c = Consolidation("dedupe", "qa", (DeleteItem("qa", "r-1"),), "same rule twice", ("r-1", "r-2"))
    >>> Consolidation.from_dict(c.to_dict()) == c
    True
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ctxopt.context import LearnedContext
from ctxopt.edits import Edit, edit_from_dict
from ctxopt.errors import EndpointError

if TYPE_CHECKING:  # pragma: no cover
    from ctxopt.consolidate.rejections import RejectionMemory

log = logging.getLogger(__name__)

__all__ = ["KINDS", "Consolidation", "ConsolidationProposer", "ReflectionAllowance", "reply_line"]

KINDS = ("contradiction", "dedupe", "merge", "abstract", "compress")
"""The consolidation kinds, in the order they are proposed."""


@dataclass(frozen=True)
class Consolidation:
    """One candidate consolidation: typed edits, what they consolidate and why.

    Attributes:
        kind: One of :data:`KINDS`.
        predictor: The predictor whose context the edits change.
        edits: The edits, applied together.
        rationale: Why, in words (kept in the store's history).
        item_ids: The items (or, for ``compress``, items and demos) the candidate consolidates.
    """

    kind: str
    predictor: str
    edits: tuple[Edit, ...]
    rationale: str
    item_ids: tuple[str, ...] = ()

    def apply(self, context: LearnedContext, *, step: int = 0, task: str | None = None) -> LearnedContext:
        """The context with this consolidation's edits applied (EditError if they no longer apply)."""
        return context.apply_edits(self.edits, step=step, task=task)

    def describe(self) -> str:
        """``kind: rationale``."""
        return f"{self.kind}: {self.rationale}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict; :meth:`from_dict` inverts it."""
        return {"kind": self.kind, "predictor": self.predictor, "rationale": self.rationale,
                "item_ids": list(self.item_ids), "edits": [e.to_dict() for e in self.edits]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Consolidation:
        """Rebuild a consolidation from :meth:`to_dict` output (EditError if an edit is malformed)."""
        return cls(d["kind"], d["predictor"], tuple(edit_from_dict(e) for e in d["edits"]), d.get("rationale", ""),
                   tuple(d.get("item_ids") or ()))


class ConsolidationProposer(Protocol):
    """Proposes consolidation candidates for a learned context.

    ``lm_calls_per_pass`` is the most reflection-LM calls one
    :func:`~ctxopt.consolidate.run_pass` makes with this proposer (one
    :meth:`propose` and the :meth:`compress` after it): what a caller reserves
    in its budget before other proposers spend it.
    """

    @property
    def lm_calls_per_pass(self) -> int:
        """The most reflection-LM calls one pass makes (0 when it uses no LM)."""
        ...

    def propose(self, context: LearnedContext, *, max_tokens: int | None = None, protect: Iterable[str] = (),
                step: int = 0, memory: RejectionMemory | None = None) -> list[Consolidation]:
        """Candidates for ``context``, compression included when ``max_tokens`` is given and exceeded.

        Args:
            context: The context to consolidate.
            max_tokens: The per-predictor budget; compression is proposed only for predictors over it.
            protect: Item/demo ids that must survive (e.g. what the current step just learned).
            step: The stream step, for rationales.
            memory: Earlier rejections; a candidate it already holds is left out.
        """
        ...

    def compress(self, context: LearnedContext, max_tokens: int, *, protect: Iterable[str] = (),
                 memory: RejectionMemory | None = None) -> list[Consolidation]:
        """Alternative candidates, each bringing every predictor of ``context`` to ``max_tokens`` or below."""
        ...


@dataclass
class ReflectionAllowance:
    """The reflection LM as consolidation uses it: at most ``limit`` calls, each charged first.

    Args:
        lm: ``lm(prompt) -> [text]``, or None for no LM.
        charge: Called with 1 before each call; False means the budget refuses it.
        limit: Calls allowed in all.

    Example:
        >>> lm = ReflectionAllowance(lambda prompt: ["yes"], charge=lambda n: False, limit=3)
        >>> lm.available, lm.ask("Same?"), lm.calls
        (True, None, 0)
    """

    lm: Any = None
    charge: Callable[[int], bool] = lambda n: True
    limit: int = 6
    calls: int = 0

    @property
    def available(self) -> bool:
        """True when there is an LM at all (whether or not calls are left)."""
        return self.lm is not None

    def ask(self, prompt: str) -> str | None:
        """The LM's reply, or None without an LM, with the allowance spent, when refused or when the call fails."""
        if self.lm is None or self.calls >= self.limit or not self.charge(1):
            return None
        self.calls += 1
        try:
            out = self.lm(prompt)[0]
        except EndpointError:
            raise  # a dead endpoint stops the run (ctxopt.endpoint)
        except Exception as exc:  # noqa: BLE001 - one failed LM call is one lost candidate, never a crash
            log.warning("consolidation LM call failed: %s", exc)
            return None
        return out if isinstance(out, str) else str(out)


def reply_line(text: str, key: str) -> str | None:
    """The body of the first ``KEY: body`` line of an LM reply (list markers and bold allowed), or None.

    A body must have at least two words and at most 400 characters.

    Example:
        >>> reply_line("Sure.\\n**SAME:** Answer in one word.", "SAME")
        'Answer in one word.'
        >>> reply_line("DIFFERENT", "SAME") is None
        True
    """
    for raw in text.splitlines():
        m = re.match(rf"^\s*(?:[-*•]|\d+[.)])?\s*\**\s*{key}\s*\**\s*:\s*\**\s*(.+?)\s*$", raw, re.IGNORECASE)
        if m:
            body = m.group(1).strip().strip("*").strip().strip("\"'`").strip()
            if len(body.split()) >= 2 and len(body) <= 400:
                return body
    return None
