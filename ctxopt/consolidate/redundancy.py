"""How redundant a learned context is: the figure every run reports.

:func:`redundancy` looks at every pair of items of one predictor whose scopes
overlap (both global, or one global, or the same task): a pair is a
*near-duplicate* when its similarity reaches the backend's ``dedupe``
threshold, a *paraphrase* when it reaches the lower ``merge`` threshold (the
same thing in other words; near-duplicates count here too), and a
*contradiction* when :func:`lexical_contradiction` finds the two disagree
(such a pair counts as a contradiction only, however alike its words).
Clean memory has none; the gate lets redundant bundles through as long as
val does not drop, so this figure is how a run shows it stayed
refined rather than piled up.

Example:
    >>> from ctxopt.context import LearnedContext, PredictorContext
    >>> from ctxopt.edits import AddItem
    >>> from ctxopt.similarity import get_similarity
    >>> ctx = LearnedContext({"qa": PredictorContext("Answer.")}).apply_edits(
    ...     [AddItem("qa", "Answer with one word."), AddItem("qa", "Answer with one word!"),
    ...      AddItem("qa", "Always use digits."), AddItem("qa", "Never use digits.")])
    >>> r = redundancy(ctx, get_similarity("lexical"))
    >>> r["pairs"], r["near_duplicates"], r["paraphrases"], r["contradictions"]
    (6, 1, 1, 1)
"""

from __future__ import annotations

from typing import Any

from ctxopt._text import gist
from ctxopt.consolidate.contradiction import lexical_contradiction
from ctxopt.consolidate.pairwise import overlapping
from ctxopt.context import LearnedContext
from ctxopt.similarity import Similarity

__all__ = ["redundancy"]


def redundancy(context: LearnedContext, similarity: Similarity) -> dict[str, Any]:
    """Pairs of items in overlapping scopes, how many are near-duplicates or contradict, and the share.

    Returns:
        ``{"items", "pairs", "near_duplicates", "paraphrases", "contradictions", "share", "similarity",
        "threshold", "merge_threshold"}``; ``share`` is near-duplicate pairs over all pairs (0.0 without pairs).
    """
    items = pairs = dups = para = contra = 0
    for pc in context.predictors.values():
        its = list(pc.items)
        items += len(its)
        if len(its) < 2:
            continue
        sims = similarity.matrix([gist(it.text) for it in its])  # what each asks, framing aside
        for i in range(len(its)):
            for j in range(i + 1, len(its)):
                if not overlapping(its[i], its[j]):
                    continue
                pairs += 1
                if lexical_contradiction(its[i].text, its[j].text) is not None:  # alike in words, opposite in sense
                    contra += 1
                    continue
                dups += sims[i][j] >= similarity.dedupe
                para += sims[i][j] >= similarity.merge
    return {"items": items, "pairs": pairs, "near_duplicates": dups, "paraphrases": para, "contradictions": contra,
            "share": round(dups / pairs, 4) if pairs else 0.0, "similarity": similarity.name,
            "threshold": similarity.dedupe, "merge_threshold": similarity.merge}
