"""The cheap contradiction check: the same statement twice, one negated or with an opposite word.

It needs no model and errs toward silence: two texts must share most of
their content words before a negation or an opposite pair counts. The
reflection LM judges the similar pairs this check lets through
(:class:`ctxopt.consolidate.pairwise.Contradictions`).

Example:
    >>> lexical_contradiction("Always explain the answer.", "Never explain the answer.")
    "opposite words 'always' / 'never'"
"""

from __future__ import annotations

from ctxopt.similarity import words

__all__ = ["NEGATIONS", "OPPOSITES", "lexical_contradiction"]

NEGATIONS = frozenset({"not", "no", "never", "don't", "dont", "doesn't", "without", "avoid", "omit", "none", "nor",
                       "cannot", "can't", "neither"})
"""Words that negate a statement."""

OPPOSITES = (
    ("always", "never"), ("lowercase", "uppercase"), ("lower", "upper"), ("include", "omit"),
    ("include", "exclude"), ("with", "without"), ("yes", "no"), ("digits", "words"), ("first", "last"),
    ("before", "after"), ("more", "fewer"), ("more", "less"), ("singular", "plural"), ("short", "long"),
    ("shorter", "longer"), ("true", "false"), ("add", "remove"), ("start", "end"), ("left", "right"),
    ("increase", "decrease"), ("ascending", "descending"), ("capitalize", "lowercase"), ("one", "multiple"),
)
"""Pairs of words that say opposite things in an instruction."""

_OPPOSITE_OF: dict[str, set[str]] = {}
for _a, _b in OPPOSITES:
    _OPPOSITE_OF.setdefault(_a, set()).add(_b)
    _OPPOSITE_OF.setdefault(_b, set()).add(_a)
_FILLER = {"do", "does", "the", "a", "an", "to", "please", "you", "your", "should", "must", "and", "it"}
_MIN_OVERLAP = 0.6  # share of content words both texts must have in common


def lexical_contradiction(a: str, b: str) -> str | None:
    """Why ``a`` and ``b`` look contradictory (same statement, one negated or with an opposite word), or None.

    Example:
        >>> lexical_contradiction("Write the answer in lowercase.", "Write the answer in uppercase.")
        "opposite words 'lowercase' / 'uppercase'"
        >>> lexical_contradiction("Explain your answer.", "Do not explain your answer.")
        "one says 'not', the other does not"
        >>> lexical_contradiction("Answer in lowercase.", "Reverse the word.") is None
        True
    """
    ta, tb = set(words(a)), set(words(b))
    neg_a, neg_b = ta & NEGATIONS, tb & NEGATIONS
    opposite = next(((x, y) for x in sorted(ta - tb) for y in sorted(_OPPOSITE_OF.get(x, ())) if y in tb - ta), None)
    core_a = ta - NEGATIONS - _FILLER - set(_OPPOSITE_OF)
    core_b = tb - NEGATIONS - _FILLER - set(_OPPOSITE_OF)
    union = core_a | core_b
    overlap = len(core_a & core_b) / len(union) if union else 1.0
    if overlap < _MIN_OVERLAP:
        return None
    if opposite:
        return f"opposite words {opposite[0]!r} / {opposite[1]!r}"
    if bool(neg_a) != bool(neg_b):
        return f"one says {min(neg_a or neg_b)!r}, the other does not"
    return None
