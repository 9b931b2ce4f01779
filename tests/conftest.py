"""Shared fixtures: scripted fake LMs and the real embedded model.

Tests marked ``real_lm`` load an embedded GGUF model. Where llama_cpp or the
model packages are missing they skip with the reason printed, unless
``CTXOPT_REQUIRE_REAL_LM=1`` (set by ``make test`` and so by CI), in which
case they fail: CI must never pass with the real-model tests skipped.
"""

from __future__ import annotations

import os

import pytest


def _real_lm_or_skip(spec: str):
    from ctxopt.errors import MissingDependencyError
    from ctxopt.lm import get_lm

    try:
        return get_lm(spec)
    except MissingDependencyError as exc:
        if os.environ.get("CTXOPT_REQUIRE_REAL_LM") == "1":
            pytest.fail(f"real-model test cannot run: {exc}")
        pytest.skip(f"real-model test skipped: {exc}")


@pytest.fixture(scope="session")
def real_lm():
    """The embedded 0.5B task model (Qwen2.5-Coder-0.5B-Instruct)."""
    return _real_lm_or_skip("local")
