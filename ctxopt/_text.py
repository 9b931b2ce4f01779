"""Text helpers shared by the modules that print contexts, edits and feedback."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["condition", "gist", "plain_rule", "shorten"]


def shorten(text: Any, width: int = 70) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``width`` characters with an ellipsis.

    Example:
        >>> shorten("a  long\\n text", 8), shorten(None, 5)
        ('a long …', '')
    """
    flat = " ".join(("" if text is None else str(text)).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


_AGENT = r"(?:the\s+)?(?:(?:language\s+|small\s+)?model|assistant|ai|llm|system|agent)|you|we"
_MODAL = r"should|must|needs?\s+to|has\s+to|have\s+to|is\s+to|will"
_NEGATED = re.compile(rf"^(?:{_AGENT})\s+(?:should|must|will|do(?:es)?)\s*(?:not\b|n't\b)\s*", re.IGNORECASE)
_FRAMED = re.compile(rf"^(?:(?:{_AGENT})\s+(?:{_MODAL})\s+|(?:please\s+)?(?:(?:make|be)\s+sure|remember)\s+to\s+"
                     r"|(?:please\s+)?(?:make\s+sure|ensure)\s+(?:that\s+)?you\s+|it\s+is\s+important\s+to\s+"
                     r"|please\s+)", re.IGNORECASE)


_CONDITION = re.compile(r"^((?:when|if|whenever|for)\b[^,;.]{3,200},\s*)(.+)$", re.IGNORECASE | re.DOTALL)


def condition(text: str) -> str | None:
    """The condition a rule opens with ("When X, …", "If X, …", "For X, …"), or None: a rule that says it
    is not for every input.

    Example:
        >>> condition("When the input is a list of numbers, sort them."), condition("Answer in one word.")
        ('When the input is a list of numbers', None)
    """
    m = _CONDITION.match(text.strip())
    return m.group(1).rstrip().rstrip(",").rstrip() if m else None


def plain_rule(text: str) -> str:
    """A rule as a direct instruction, without the agent-as-subject framing a reflector tends to add.

    "The model should always X" costs the prompt four tokens, says no more than "Always X", and hides a
    paraphrase from an embedding comparison (the framing dominates two short rules). Negation is kept,
    and so is a leading condition ("When X, the model should Y" becomes "When X, y"); a rule that is only
    framing is returned as it was.

    Example:
        >>> plain_rule("The model should always translate the input into Spanish.")
        'Always translate the input into Spanish.'
        >>> plain_rule("The model should not repeat the input."), plain_rule("Make sure that you answer in digits.")
        ('Do not repeat the input.', 'Answer in digits.')
        >>> plain_rule("The answer must be one word.")  # the answer is not the agent: kept
        'The answer must be one word.'
        >>> plain_rule("When the input is a single word, the model should produce its first letter.")
        'When the input is a single word, produce its first letter.'
        >>> plain_rule("If the input is a number, the model should not spell it out.")
        'If the input is a number, do not spell it out.'
    """
    stripped = text.strip()
    if (cond := _CONDITION.match(stripped)) and (main := plain_rule(cond.group(2))) != cond.group(2):
        return cond.group(1) + main[0].lower() + main[1:]
    negated = _NEGATED.match(stripped)
    rest = stripped[negated.end():] if negated else stripped[m.end():] if (m := _FRAMED.match(stripped)) else stripped
    if len(rest.split()) < (1 if negated else 2):
        return stripped
    if negated and not re.match(r"(?i)never\b", rest):
        return "Do not " + rest
    return rest[0].upper() + rest[1:]


def gist(text: str) -> str:
    """What a rule asks, for comparing two rules: :func:`plain_rule` without a leading "Always" (negation kept).

    Example:
        >>> gist("The model should always output one word."), gist("Never use digits.")
        ('Output one word.', 'Never use digits.')
    """
    plain = plain_rule(text)
    rest = re.sub(r"(?i)^always\s+", "", plain)
    return rest[0].upper() + rest[1:] if len(rest.split()) >= 2 else plain
