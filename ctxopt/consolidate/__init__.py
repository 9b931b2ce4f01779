"""Sleep-time consolidation: refine the learned context instead of letting it grow.

A consolidation proposer (:class:`ConsolidationProposer`; the default is
:class:`Consolidator`) reads a :class:`~ctxopt.context.LearnedContext` and
proposes :class:`Consolidation` s, each a small list of typed edits with a
rationale, of five kinds, in this order, one strategy each:

* ``contradiction`` (:class:`~ctxopt.consolidate.pairwise.Contradictions`) —
  two items in overlapping scopes that disagree (:func:`lexical_contradiction`,
  plus the reflection LM judging similar pairs). The one with more evidence is
  kept (:func:`~ctxopt.consolidate.evidence.evidence`: net helpful, then recency).
* ``dedupe`` (:class:`~ctxopt.consolidate.pairwise.Duplicates`) —
  near-duplicates (similarity ≥ the backend's ``dedupe`` threshold) in one
  scope become one item (:class:`~ctxopt.edits.MergeItems`, counters summed)
  with the text of the best-supported item.
* ``merge`` (:class:`~ctxopt.consolidate.pairwise.Paraphrases`) — paraphrases
  (similarity ≥ ``merge``): the reflection LM writes one item that says it;
  without an LM answer (none, or the call refused) one of the texts is kept.
* ``abstract`` (:class:`~ctxopt.consolidate.pairwise.Abstractions`) — three or
  more related specific items become one general rule, where the LM can write one.
* ``compress`` (:class:`~ctxopt.consolidate.compress.Compression`) — only when a
  predictor's rendered context is over ``max_tokens``: alternatives that each
  reach the target. Items and demos in ``protect`` are never dropped.

Similarity comes from :mod:`ctxopt.similarity`; the token measure from
:mod:`ctxopt.tokens`.

Every consolidation is a candidate, never a fact: :func:`run_pass`
(:mod:`ctxopt.consolidate.gated`) applies them one at a time and keeps one only
if a ``check(before, after)`` callback accepts it; the optimizer's check is
the run's gate as a tolerance (:func:`~ctxopt.gate.tolerance_gate`). A
:class:`RejectionMemory` remembers rejected candidates across passes and
processes, so none is evaluated twice. :func:`credit` turns the gate's paired
outcomes into the items' helpful/harmful counters, the evidence above.

**Budget.** ``max_context_tokens`` applies per predictor to its rendered
context, measured by :func:`~ctxopt.tokens.rendered_tokens`: the largest of
the rendering for every task scope and the all-scopes rendering
(``task=None``), demos included.

**LM calls.** One pass makes at most ``lm_calls_per_pass`` reflection calls
(:attr:`Consolidator.lm_calls_per_pass`, ``max_lm_calls`` when there is an LM):
the share a caller reserves for consolidation before other proposers run.

Example:
    >>> from ctxopt.context import LearnedContext, PredictorContext
    >>> from ctxopt.edits import AddItem
    >>> ctx = LearnedContext({"qa": PredictorContext("Answer.")}).apply_edits(
    ...     [AddItem("qa", "Answer with one word."), AddItem("qa", "Answer with one word!")], step=1)
    >>> cons = Consolidator(similarity="lexical").propose(ctx)
    >>> [c.kind for c in cons], len(cons[0].apply(ctx).items("qa"))
    (['dedupe'], 1)
"""

from __future__ import annotations

from ctxopt.consolidate.base import KINDS, Consolidation, ConsolidationProposer, ReflectionAllowance, reply_line
from ctxopt.consolidate.compress import Compression
from ctxopt.consolidate.consolidator import Consolidator
from ctxopt.consolidate.contradiction import lexical_contradiction
from ctxopt.consolidate.evidence import changed_item_ids, count_changes, credit, evidence
from ctxopt.consolidate.gated import Check, PassResult, Tried, run_pass
from ctxopt.consolidate.pairwise import Abstractions, Contradictions, Duplicates, ItemPool, Paraphrases
from ctxopt.consolidate.redundancy import redundancy
from ctxopt.consolidate.rejections import Rejection, RejectionMemory
from ctxopt.gate import ToleranceGate, tolerance_gate
from ctxopt.similarity import EmbeddingSimilarity, LexicalSimilarity, Similarity, embedding_model_path, get_similarity
from ctxopt.tokens import over_budget, rendered_tokens

__all__ = [
    # the seam and the default
    "KINDS",
    "Consolidation",
    "ConsolidationProposer",
    "Consolidator",
    "ReflectionAllowance",
    "reply_line",
    # one strategy per kind
    "Abstractions",
    "Compression",
    "Contradictions",
    "Duplicates",
    "ItemPool",
    "Paraphrases",
    "lexical_contradiction",
    # the gated pass and its memory
    "Check",
    "PassResult",
    "Rejection",
    "RejectionMemory",
    "Tried",
    "run_pass",
    # how clean a context is
    "redundancy",
    # evidence on items
    "changed_item_ids",
    "count_changes",
    "credit",
    "evidence",
    # re-exported from their own modules, for existing imports
    "EmbeddingSimilarity",
    "LexicalSimilarity",
    "Similarity",
    "ToleranceGate",
    "embedding_model_path",
    "get_similarity",
    "over_budget",
    "rendered_tokens",
    "tolerance_gate",
]
