"""The four consolidation kinds that compare items: contradiction, dedupe, merge and abstract.

Each kind is one small strategy with one method,
``propose(pool, lm) -> list[Consolidation]``. They share an :class:`ItemPool`,
one predictor's items with their similarity matrix, and run in the order of
:data:`~ctxopt.consolidate.base.KINDS`: an item takes part in at most one
candidate per round, and a pair found contradictory is never merged.

Which of two items survives is decided by
:func:`~ctxopt.consolidate.evidence.evidence`: net helpful first, then recency.
When the reflection LM is missing or refuses a call (the budget or the
allowance is spent), ``merge`` falls back to keeping one of the two texts;
``abstract`` needs the LM and proposes nothing.

Example:
    >>> from ctxopt.consolidate.base import ReflectionAllowance
    >>> from ctxopt.context import LearnedContext, PredictorContext
    >>> from ctxopt.edits import AddItem
    >>> from ctxopt.similarity import LexicalSimilarity
    >>> ctx = LearnedContext({"qa": PredictorContext("Answer.")}).apply_edits(
    ...     [AddItem("qa", "Answer in lowercase."), AddItem("qa", "Answer in uppercase.")], step=1)
    >>> pool = ItemPool(ctx, "qa", LexicalSimilarity())
    >>> [c.kind for c in Contradictions().propose(pool, ReflectionAllowance())]
    ['contradiction']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

from ctxopt._text import gist, shorten
from ctxopt.consolidate.base import Consolidation, ReflectionAllowance, reply_line
from ctxopt.consolidate.contradiction import lexical_contradiction
from ctxopt.consolidate.evidence import evidence
from ctxopt.context import GLOBAL, Item, LearnedContext
from ctxopt.edits import DeleteItem, MergeItems
from ctxopt.errors import EditError
from ctxopt.similarity import Similarity

if TYPE_CHECKING:  # pragma: no cover
    from ctxopt.consolidate.rejections import RejectionMemory

__all__ = [
    "ABSTRACT_PROMPT",
    "CONTRADICTION_PROMPT",
    "MERGE_PROMPT",
    "Abstractions",
    "Contradictions",
    "Duplicates",
    "ItemPool",
    "PairStrategy",
    "Paraphrases",
    "overlapping",
]

CONTRADICTION_PROMPT = """Two rules were learned for the same language-model prompt.
Rule A (learned at step {sa}): {a}
Rule B (learned at step {sb}): {b}

Do these rules contradict each other, i.e. can a model not follow both at once?
Reply with exactly one word: CONTRADICT or CONSISTENT."""

MERGE_PROMPT = """Two rules were learned for the same language-model prompt.
Rule A: {a}
Rule B: {b}

If they say the same thing in different words, reply with one line
SAME: <one short rule that says everything both say>
Otherwise reply with one word: DIFFERENT"""

ABSTRACT_PROMPT = """These specific rules were learned for a language-model prompt:
{rules}

If one general rule captures everything they have in common and can replace all of them,
reply with one line
GENERAL: <the general rule>
Otherwise reply with one word: NONE"""


def overlapping(a: Item, b: Item) -> bool:
    """True when some prompt shows both items (same scope, or one of them is global)."""
    return a.scope == b.scope or GLOBAL in (a.scope, b.scope)


def _quote(item: Item, width: int = 70) -> str:
    return f"{item.id} {shorten(item.text, width)!r}"


@dataclass
class ItemPool:
    """One predictor's items in one proposal round: similarities, what is claimed, what was judged before.

    Args:
        context: The context the candidates are proposed on.
        predictor: The predictor whose items are pooled.
        similarity: The backend scoring item pairs.
        protect: Item ids that must survive the round.
        memory: Earlier rejections; offered candidates it holds are left out.
        step: The stream step, recorded with LM judgements.
    """

    context: LearnedContext
    predictor: str
    similarity: Similarity
    protect: frozenset[str] = frozenset()
    memory: RejectionMemory | None = None
    step: int = 0
    out: list[Consolidation] = field(default_factory=list)
    used: set[str] = field(default_factory=set)
    contradicting: set[frozenset[str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.items: list[Item] = list(self.context.items(self.predictor))
        self._index = {it.id: k for k, it in enumerate(self.items)}
        self._sim = self.similarity.matrix([gist(it.text) for it in self.items])  # framing aside
        n = len(self.items)
        ranked = sorted(((self._sim[i][j], i, j) for i in range(n) for j in range(i + 1, n)
                         if self.items[i].kind == self.items[j].kind or overlapping(self.items[i], self.items[j])),
                        reverse=True)
        # pairs worth comparing (same kind, or shown together), most similar first
        self.pairs: list[tuple[float, Item, Item]] = [(s, self.items[i], self.items[j]) for s, i, j in ranked]

    def sim(self, a: Item, b: Item) -> float:
        """The similarity of two pooled items."""
        return self._sim[self._index[a.id]][self._index[b.id]]

    def free(self, *items: Item) -> bool:
        """True when none of ``items`` is claimed by a candidate of this round yet."""
        return not any(it.id in self.used for it in items)

    def offer(self, cand: Consolidation) -> bool:
        """Add ``cand`` and claim its items, unless the memory holds it as rejected before."""
        if self.memory is not None and self.memory.rejected(self.context, cand) is not None:
            return False
        self.out.append(cand)
        self.used |= set(cand.item_ids)
        return True

    def judged(self, kind: str, items: Sequence[Item]) -> bool:
        """True when a ``kind`` consolidation of ``items`` got a no before: do not ask the LM again."""
        return self.memory is not None and self.memory.judged(kind, self.predictor, items) is not None

    def judge(self, kind: str, items: Sequence[Item], reason: str) -> None:
        """Remember the LM's no on ``items`` for ``kind`` (when there is a memory)."""
        if self.memory is not None:
            self.memory.judge(kind, self.predictor, items, reason, step=self.step)


class PairStrategy(Protocol):
    """One kind of consolidation over an :class:`ItemPool`."""

    kind: ClassVar[str]

    def propose(self, pool: ItemPool, lm: ReflectionAllowance) -> list[Consolidation]:
        """The candidates of this kind it could add to ``pool`` (each already offered to it)."""
        ...


def _offered(pool: ItemPool, cands: Iterable[Consolidation]) -> list[Consolidation]:
    return [c for c in cands if pool.offer(c)]


@dataclass(frozen=True)
class Contradictions:
    """Two items in overlapping scopes that disagree: delete the one with less evidence.

    Disagreement is the lexical check (:func:`lexical_contradiction`) or, for
    pairs at least ``related`` but below ``dedupe`` similarity, the reflection
    LM's judgement. Runs first: embeddings put "lowercase" and "uppercase" close together.
    """

    kind: ClassVar[str] = "contradiction"

    def propose(self, pool: ItemPool, lm: ReflectionAllowance) -> list[Consolidation]:
        out = []
        for s, a, b in pool.pairs:
            if not overlapping(a, b) or s < pool.similarity.related or not pool.free(a, b):
                continue
            why = lexical_contradiction(a.text, b.text)
            if why is None and s < pool.similarity.dedupe and lm.available and not pool.judged(self.kind, (a, b)):
                first, second = sorted((a, b), key=lambda it: it.created_step)
                reply = lm.ask(CONTRADICTION_PROMPT.format(a=first.text, b=second.text, sa=first.created_step,
                                                           sb=second.created_step))
                if reply and "CONTRADICT" in reply.upper() and "CONSISTENT" not in reply.upper():
                    why = "the reflection LM judged them contradictory"
                elif reply is not None:
                    pool.judge(self.kind, (a, b), "the reflection LM judged them consistent")
            if why is None:
                continue
            pool.contradicting.add(frozenset((a.id, b.id)))
            keep, drop = sorted((a, b), key=evidence, reverse=True)
            if drop.id in pool.protect:
                keep, drop = drop, keep
                if drop.id in pool.protect:
                    continue
            out += _offered(pool, [self._candidate(pool.predictor, keep, drop, why)])
        return out

    def _candidate(self, predictor: str, keep: Item, drop: Item, why: str) -> Consolidation:
        net_keep, net_drop = keep.helpful - keep.harmful, drop.helpful - drop.harmful
        support = ("the one with more net helpful evidence" if net_keep != net_drop
                   else "the one supported by more recent evidence")
        rationale = (f"{_quote(drop)} (step {drop.updated_step}, net helpful {net_drop}) contradicts {_quote(keep)} "
                     f"(step {keep.updated_step}, net helpful {net_keep}): {why}; keep {keep.id}, {support}")
        edit = DeleteItem(predictor, drop.id, rationale=rationale)
        return Consolidation(self.kind, predictor, (edit,), rationale, (keep.id, drop.id))


@dataclass(frozen=True)
class Duplicates:
    """Near-duplicates (similarity ≥ ``dedupe``) of one scope and kind become one item with the best-supported text."""

    kind: ClassVar[str] = "dedupe"

    def propose(self, pool: ItemPool, lm: ReflectionAllowance) -> list[Consolidation]:
        out = []
        threshold = pool.similarity.dedupe
        for s, a, b in pool.pairs:
            if s < threshold or a.scope != b.scope or a.kind != b.kind or not pool.free(a, b) \
                    or frozenset((a.id, b.id)) in pool.contradicting:
                continue
            group = [a, b] + [c for c in pool.items if c.id not in {a.id, b.id} and pool.free(c) and c.scope == a.scope
                              and c.kind == a.kind and pool.sim(a, c) >= threshold and pool.sim(b, c) >= threshold]
            best = max(group, key=lambda it: (evidence(it), len(it.text)))
            ids = tuple(it.id for it in group)
            rationale = (f"near-duplicates ({pool.similarity.name} similarity {s:.2f}): "
                         + "; ".join(_quote(it, 40) for it in group) + f"; keep the text of {best.id}")
            edit = MergeItems(pool.predictor, ids, best.text, rationale=rationale)
            out += _offered(pool, [Consolidation(self.kind, pool.predictor, (edit,), rationale, ids)])
        return out


@dataclass(frozen=True)
class Paraphrases:
    """Paraphrases (similarity ≥ ``merge``) in one scope become one item.

    The reflection LM writes the merged text. Without an answer from it (no
    LM, or a call refused by the budget or the allowance) the pair is still
    merged, keeping the text with more net helpful evidence, else the longer
    one. When the LM answers that the two differ, nothing is proposed and the
    pair is not asked about again.

    With the LM available, pairs that are only ``related`` are asked about too
    (most similar first), and merged only on its SAME: sentence embeddings
    score short rules that say one thing in other words well below ``merge``
    ("Translate the input text into Spanish." and "Translate the given text
    from English to Spanish.": 0.77 with all-MiniLM-L6-v2, ii-8 stop 35).
    """

    kind: ClassVar[str] = "merge"

    def propose(self, pool: ItemPool, lm: ReflectionAllowance) -> list[Consolidation]:
        out = []
        for s, a, b in pool.pairs:
            close = s >= pool.similarity.merge  # merged even when the LM cannot be asked
            if not (close or lm.available and s >= pool.similarity.related) or a.scope != b.scope \
                    or not pool.free(a, b) or frozenset((a.id, b.id)) in pool.contradicting or {a.id, b.id} & pool.protect:
                continue
            if lm.available and pool.judged(self.kind, (a, b)):
                continue
            reply = lm.ask(MERGE_PROMPT.format(a=a.text, b=b.text))
            if reply is None and not close:
                continue
            if reply is not None:
                text, how = reply_line(reply, "SAME"), "merged by the reflection LM"
                if text is None:
                    pool.judge(self.kind, (a, b), "the reflection LM judged them different")
                    continue
            else:
                keep = max((a, b), key=lambda it: (it.helpful - it.harmful, len(it.text), evidence(it)))
                text = keep.text
                how = (f"keep the text of {keep.id}, which has more net helpful evidence"
                       if a.helpful - a.harmful != b.helpful - b.harmful else f"keep the longer text of {keep.id}")
                if lm.available:
                    how += " (no reflection LM call left)"
            rationale = (f"paraphrases ({pool.similarity.name} similarity {s:.2f}): {_quote(a, 40)} and "
                         f"{_quote(b, 40)}; {how}")
            try:
                edit = MergeItems(pool.predictor, (a.id, b.id), text, rationale=rationale)
            except EditError:
                continue
            out += _offered(pool, [Consolidation(self.kind, pool.predictor, (edit,), rationale, (a.id, b.id))])
        return out


@dataclass(frozen=True)
class Abstractions:
    """Three or more related (≥ ``related``) unclaimed items of one kind become one general rule the LM writes."""

    kind: ClassVar[str] = "abstract"
    min_group: int = 3

    def propose(self, pool: ItemPool, lm: ReflectionAllowance) -> list[Consolidation]:
        out: list[Consolidation] = []
        if not lm.available:
            return out
        for seed in pool.items:
            if not pool.free(seed):
                continue
            group = [c for c in pool.items if pool.free(c) and c.kind == seed.kind
                     and (c is seed or pool.sim(seed, c) >= pool.similarity.related)]
            if len(group) < self.min_group or any(c.id in pool.protect for c in group) or pool.judged(self.kind, group):
                continue
            reply = lm.ask(ABSTRACT_PROMPT.format(rules="\n".join(f"- {c.text}" for c in group)))
            if reply is None:
                continue
            text = reply_line(reply, "GENERAL")
            if text is None:
                pool.judge(self.kind, group, "the reflection LM found no general rule")
                continue
            ids = tuple(c.id for c in group)
            scopes = {c.scope for c in group}
            rationale = (f"abstraction of {len(group)} related items ({', '.join(ids)}) "
                         f"into one general rule by the reflection LM")
            try:
                edit = MergeItems(pool.predictor, ids, text, rationale=rationale,
                                  scope=scopes.pop() if len(scopes) == 1 else GLOBAL)
            except EditError:
                continue
            out += _offered(pool, [Consolidation(self.kind, pool.predictor, (edit,), rationale, ids)])
        return out
