"""Text helpers shared by the modules that print contexts, edits and feedback."""

from __future__ import annotations

from typing import Any

__all__ = ["shorten"]


def shorten(text: Any, width: int = 70) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``width`` characters with an ellipsis.

    Example:
        >>> shorten("a  long\\n text", 8), shorten(None, 5)
        ('a long …', '')
    """
    flat = " ".join(("" if text is None else str(text)).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
