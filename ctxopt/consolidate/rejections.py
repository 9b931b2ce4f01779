"""What consolidation has already tried and lost: a persistent memory of rejected candidates.

Without it every pass proposes, and the gate re-evaluates, the same rejected
candidates after every task. :class:`RejectionMemory` remembers two things by
content hash, in a JSON file the caller names (e.g.
``RUN_DIR/consolidation_rejections.json``), so the memory outlives the
process and the optimizer instance:

* **candidates** the gate rejected, keyed by their effect: the predictor,
  the items involved as they were before (id, text, scope, kind) and the
  edits (without rationales). The same edits on the same items are not
  evaluated again, whatever kind proposes them (a ``merge`` that keeps the
  text a rejected ``dedupe`` kept is the same candidate); if an item's text
  changes, or evidence makes a strategy keep another text, it is a new one.
* **judged inputs**: a kind and a set of items about which the reflection LM
  already answered no (two rules that do not contradict, do not say the same
  thing, have no general rule), or whose candidate of that kind was rejected.
  Strategies skip such inputs before spending an LM call on them.

Every change is written at once with :func:`ctxopt._atomic.write_json`.

Example:
    >>> from ctxopt.consolidate.base import Consolidation
    >>> from ctxopt.context import LearnedContext, PredictorContext
    >>> from ctxopt.edits import AddItem, DeleteItem
    >>> ctx = LearnedContext({"qa": PredictorContext("Answer.")}).apply_edits([AddItem("qa", "Be brief.")])
    >>> rid = ctx.items("qa")[0].id
    >>> cand = Consolidation("compress", "qa", (DeleteItem("qa", rid),), "too long", (rid,))
    >>> memory = RejectionMemory()
    >>> memory.reject(ctx, cand, "t1 drops", step=2)
    >>> memory.rejected(ctx, cand).reason
    't1 drops'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ctxopt._atomic import write_json
from ctxopt.consolidate.base import Consolidation
from ctxopt.context import Item, LearnedContext, canonical_json
from ctxopt.errors import DataError

__all__ = ["FORMAT", "Rejection", "RejectionMemory"]

FORMAT = 1
"""Version of the memory file's layout."""


@dataclass(frozen=True)
class Rejection:
    """One remembered rejection: what it was about and why it lost."""

    kind: str
    predictor: str
    item_ids: tuple[str, ...]
    reason: str
    step: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rejection:
        """Rebuild a rejection from :func:`dataclasses.asdict` output."""
        return cls(d["kind"], d["predictor"], tuple(d["item_ids"]), d["reason"], int(d.get("step", 0)))


def _digest(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()[:20]


def _content(context: LearnedContext, predictor: str, ids: Iterable[str]) -> list[dict[str, Any]]:
    """The identity of the items and demos ``ids`` of ``predictor`` as they are in ``context`` (counters left out)."""
    pc = context.predictors.get(predictor)
    items = {it.id: it for it in pc.items} if pc else {}
    demos = {d.id: d for d in pc.demos} if pc else {}
    out = []
    for i in sorted(set(ids)):
        if i in items:
            it = items[i]
            out.append({"id": i, "text": it.text, "scope": it.scope, "kind": it.kind})
        else:
            out.append({"id": i, "demo": i in demos})  # a demo's id is a hash of its content
    return out


def _inputs_key(kind: str, predictor: str, items: Iterable[Item]) -> str:
    content = sorted(({"id": it.id, "text": it.text, "scope": it.scope, "kind": it.kind} for it in items),
                     key=lambda d: d["id"])
    return _digest({"kind": kind, "predictor": predictor, "inputs": content})


class RejectionMemory:
    """Rejected consolidation candidates and LM-judged inputs, by content hash; persistent when ``path`` is given.

    Args:
        path: The JSON file to read (if it exists) and to rewrite on every change; None keeps the memory in RAM.

    Raises:
        DataError: ``path`` exists but is not a rejection memory.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._candidates: dict[str, Rejection] = {}
        self._inputs: dict[str, Rejection] = {}
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
            self._candidates = {k: Rejection.from_dict(v) for k, v in data["candidates"].items()}
            self._inputs = {k: Rejection.from_dict(v) for k, v in data["inputs"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{path}: not a consolidation rejection memory ({exc})") from None

    def _save(self) -> None:
        if self.path is not None:
            write_json(self.path, {"format": FORMAT,
                                   "candidates": {k: asdict(v) for k, v in self._candidates.items()},
                                   "inputs": {k: asdict(v) for k, v in self._inputs.items()}})

    def __len__(self) -> int:
        return len(self._candidates)

    @staticmethod
    def key(context: LearnedContext, cand: Consolidation) -> str:
        """The effect hash of ``cand`` on ``context``: predictor, involved items as they are, edits sans rationale."""
        edits = [{k: v for k, v in e.to_dict().items() if k != "rationale"} for e in cand.edits]
        return _digest({"predictor": cand.predictor, "edits": edits,
                        "involved": _content(context, cand.predictor, cand.item_ids)})

    def rejected(self, context: LearnedContext, cand: Consolidation) -> Rejection | None:
        """The earlier rejection of this very candidate on these very items, or None."""
        return self._candidates.get(self.key(context, cand))

    def reject(self, context: LearnedContext, cand: Consolidation, reason: str, *, step: int = 0) -> None:
        """Remember that the gate rejected ``cand`` on ``context`` (and mark its inputs as judged for its kind)."""
        record = Rejection(cand.kind, cand.predictor, tuple(cand.item_ids), reason, step)
        self._candidates[self.key(context, cand)] = record
        pc = context.predictors.get(cand.predictor)
        involved = [it for it in pc.items if it.id in set(cand.item_ids)] if pc else []
        if involved:
            self._inputs[_inputs_key(cand.kind, cand.predictor, involved)] = record
        self._save()

    def judged(self, kind: str, predictor: str, items: Iterable[Item]) -> Rejection | None:
        """The earlier no for a ``kind`` consolidation of exactly ``items`` (by content), or None."""
        return self._inputs.get(_inputs_key(kind, predictor, items))

    def judge(self, kind: str, predictor: str, items: Iterable[Item], reason: str, *, step: int = 0) -> None:
        """Remember that ``items`` got a no for a ``kind`` consolidation (e.g. the LM judged them different)."""
        items = list(items)
        self._inputs[_inputs_key(kind, predictor, items)] = Rejection(kind, predictor, tuple(it.id for it in items),
                                                                      reason, step)
        self._save()
