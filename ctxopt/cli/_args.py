"""Argument types shared by several subcommands."""

from __future__ import annotations

import argparse


def sizes(text: str) -> tuple[int, int, int]:
    """``--sizes 40,30,50``: train, val and test examples per task (positive integers)."""
    try:
        parts = tuple(int(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive integers train,val,test like 40,30,50, got {text!r}")
    return parts  # type: ignore[return-value]
