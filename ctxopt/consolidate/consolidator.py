"""The default consolidation proposer: one strategy per kind, a similarity backend and an LM allowance.

Example:
    >>> from ctxopt.context import LearnedContext, PredictorContext
    >>> from ctxopt.edits import AddItem
    >>> ctx = LearnedContext({"qa": PredictorContext("Answer.")}).apply_edits(
    ...     [AddItem("qa", "Answer with one word."), AddItem("qa", "Answer with one word!")], step=1)
    >>> [c.kind for c in Consolidator(similarity="lexical").propose(ctx)]
    ['dedupe']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctxopt.consolidate.base import KINDS, Consolidation, ReflectionAllowance
from ctxopt.consolidate.compress import Compression
from ctxopt.consolidate.pairwise import Abstractions, Contradictions, Duplicates, ItemPool, PairStrategy, Paraphrases
from ctxopt.context import LearnedContext
from ctxopt.errors import ConfigError
from ctxopt.similarity import Similarity, check_similarity_name, get_similarity

if TYPE_CHECKING:  # pragma: no cover
    from ctxopt.consolidate.rejections import RejectionMemory

__all__ = ["LM_KINDS", "PAIR_STRATEGIES", "Consolidator"]

PAIR_STRATEGIES: tuple[type[PairStrategy], ...] = (Contradictions, Duplicates, Paraphrases, Abstractions)
"""The item-comparing strategies, in the order they run (``compress`` comes after them)."""

LM_KINDS = frozenset({"contradiction", "merge", "abstract", "compress"})
"""The kinds that may call the reflection LM (``dedupe`` never does)."""


@dataclass
class Consolidator:
    """Proposes consolidation candidates for a learned context (the default :class:`ConsolidationProposer`).

    Args:
        reflection_lm: LM (``lm(prompt) -> [text]``) for merging, abstraction,
            contradiction judging and summaries; None uses the lexical/heuristic
            paths only.
        similarity: ``auto``, ``embedding``, ``lexical`` or a :class:`~ctxopt.similarity.Similarity`.
        max_lm_calls: LM calls one pass may make: one :meth:`propose` and the
            :meth:`compress` calls after it, until the next :meth:`propose`.
        max_candidates: candidates of the kinds other than ``compress`` per call.
        charge: called with 1 before each LM call; returns False when the
            budget refuses (the optimizer passes its ledger). A refused call
            makes ``merge`` keep one of the two texts instead.
        kinds: which kinds to propose (all by default).

    Example:
        >>> Consolidator(similarity="lexical").sim.name
        'lexical'
        >>> Consolidator(object(), kinds=("dedupe",)).lm_calls_per_pass, Consolidator(object()).lm_calls_per_pass
        (0, 6)
    """

    reflection_lm: Any = None
    similarity: str | Similarity = "auto"
    max_lm_calls: int = 6
    max_candidates: int = 6
    charge: Callable[[int], bool] = lambda n: True
    kinds: tuple[str, ...] = KINDS

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ConfigError(f"unknown consolidation kind(s) {', '.join(sorted(unknown))}; valid: {', '.join(KINDS)}")
        if isinstance(self.similarity, str):
            check_similarity_name(self.similarity)
        self._sim: Similarity | None = None
        self._strategies = [s() for s in PAIR_STRATEGIES if s.kind in self.kinds]
        self._compression = Compression() if "compress" in self.kinds else None
        self._lm = self._allowance()

    @property
    def sim(self) -> Similarity:
        """The similarity backend, resolved on first use (so building a Consolidator loads no model)."""
        if self._sim is None:
            self._sim = get_similarity(self.similarity)
        return self._sim

    @property
    def lm_calls_per_pass(self) -> int:
        """The most reflection-LM calls one pass makes: ``max_lm_calls``, or 0 without an LM or an LM kind."""
        return self.max_lm_calls if self.reflection_lm is not None and LM_KINDS & set(self.kinds) else 0

    def _allowance(self) -> ReflectionAllowance:
        return ReflectionAllowance(self.reflection_lm, self.charge, self.max_lm_calls)

    def propose(self, context: LearnedContext, *, max_tokens: int | None = None, protect: Iterable[str] = (),
                step: int = 0, memory: RejectionMemory | None = None) -> list[Consolidation]:
        """All candidates for ``context``: contradictions, duplicates, paraphrases, abstractions, then compression.

        Starts a fresh LM allowance of ``max_lm_calls``.

        Args:
            context: the context to consolidate.
            max_tokens: the per-predictor budget; compression is proposed only for predictors over it.
            protect: item/demo ids that must survive (e.g. what the current step just learned).
            step: the stream step, recorded with what ``memory`` learns.
            memory: earlier rejections: a candidate rejected before is left out, and the LM is not asked
                again about items it already said no to.
        """
        self._lm = self._allowance()
        protect = frozenset(protect)
        out: list[Consolidation] = []
        for name, pc in context.predictors.items():
            if len(pc.items) < 2 or not self._strategies:
                continue
            pool = ItemPool(context, name, self.sim, protect, memory, step)
            for strategy in self._strategies:
                strategy.propose(pool, self._lm)
            out += pool.out
        out = out[: self.max_candidates]
        if max_tokens is not None:
            out += self.compress(context, max_tokens, protect=protect, memory=memory)
        return out

    def compress(self, context: LearnedContext, max_tokens: int, *, protect: Iterable[str] = (),
                 memory: RejectionMemory | None = None) -> list[Consolidation]:
        """Alternative ``compress`` candidates that each bring every predictor to ``max_tokens`` or below.

        LM calls come out of the allowance of the last :meth:`propose`.
        See :mod:`ctxopt.consolidate.compress` for the alternatives.
        """
        if self._compression is None:
            return []
        return self._compression.propose(context, max_tokens, lm=self._lm, protect=protect, memory=memory)
