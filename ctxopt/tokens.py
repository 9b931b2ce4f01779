"""The one token measure of ctxopt: how long a text and a learned context are.

Every token count ctxopt reports or enforces (``max_context_tokens``, the sizes
``ctxopt show`` prints, the append baseline's budget) comes from
:func:`count_tokens`. It is OpenAI's ``cl100k_base`` byte-pair encoding, run by
``tiktoken`` (a dependency of litellm, so always installed with DSPy) from the
rank file shipped inside this package (``ctxopt/data/tokenizer/``, MIT, see the
README there). Nothing else is consulted: not the network, not tiktoken's cache
(``TIKTOKEN_CACHE_DIR``, ``DATA_GYM_CACHE_DIR``), not litellm's copy. So a
count is the same on every install, and :data:`TOKENIZER` names the measure
for a run's records.

Why ``cl100k_base`` and not the task model's own tokenizer: the budget is a
property of the stored context, which moves between task LMs (``ctxopt
transfer``); the GGUF tokenizers need the optional llama-cpp extra; and
``cl100k_base`` is the measure earlier runs already used wherever litellm
shipped its file, so their recorded counts stay valid.

A missing ``tiktoken`` or a damaged rank file raises a one-line
:class:`~ctxopt.errors.ConfigError`; there is no silent fallback.

Example:
    >>> count_tokens("hello world")
    2
    >>> TOKENIZER
    'cl100k_base@ctxopt-data'
"""

from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctxopt.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ctxopt.context import LearnedContext

__all__ = ["BPE_FILE", "TOKENIZER", "count_tokens", "encoding", "over_budget", "rendered_tokens"]

TOKENIZER = "cl100k_base@ctxopt-data"
"""Name of the token measure; record it with every run's token counts."""

BPE_FILE = Path(__file__).resolve().parent / "data" / "tokenizer" / "cl100k_base.tiktoken"
"""The packaged ``cl100k_base`` rank file: one ``base64(token) rank`` per line."""

_BPE_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# The pre-tokenization regex and special tokens of cl100k_base, as tiktoken defines them
# (tiktoken_ext/openai_public.py, MIT). Kept here so the measure does not depend on tiktoken's version.
_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


def _ranks(data: bytes) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.lru_cache(maxsize=1)
def encoding() -> Any:
    """The ``tiktoken.Encoding`` of :data:`TOKENIZER`, built once from :data:`BPE_FILE`.

    Raises:
        ConfigError: if tiktoken is not installed or the packaged rank file is missing or damaged.
    """
    try:
        import tiktoken
    except ImportError:
        raise ConfigError("counting tokens needs the tiktoken package (pip install tiktoken); ctxopt has no fallback") from None
    try:
        data = BPE_FILE.read_bytes()
    except OSError as exc:
        raise ConfigError(f"the packaged tokenizer {BPE_FILE} cannot be read ({exc.strerror}); reinstall ctxopt") from None
    if hashlib.sha256(data).hexdigest() != _BPE_SHA256:
        raise ConfigError(f"the packaged tokenizer {BPE_FILE} does not have the expected sha256; reinstall ctxopt")
    return tiktoken.Encoding(name="cl100k_base", pat_str=_PATTERN, mergeable_ranks=_ranks(data), special_tokens=_SPECIAL_TOKENS)


def count_tokens(text: str) -> int:
    """Number of :data:`TOKENIZER` tokens of ``text``; special-token strings count as plain text.

    Raises:
        ConfigError: if the tokenizer cannot be loaded (see :func:`encoding`).
    """
    return len(encoding().encode_ordinary(text))


def rendered_tokens(context: LearnedContext, predictor: str) -> int:
    """Tokens of ``predictor``'s rendered context: the max over every task scope and ``task=None``.

    Example:
        >>> from ctxopt.context import LearnedContext, PredictorContext
        >>> rendered_tokens(LearnedContext({"qa": PredictorContext("Answer.")}), "qa") >= 1
        True
    """
    scopes = context.predictor(predictor).task_scopes()
    return max([context.token_count(predictor)] + [context.token_count(predictor, s) for s in scopes])


def over_budget(context: LearnedContext, max_tokens: int | None) -> dict[str, int]:
    """``{predictor: tokens}`` of every predictor whose rendered context exceeds ``max_tokens``."""
    if max_tokens is None:
        return {}
    sizes = {name: rendered_tokens(context, name) for name in context.predictors}
    return {name: n for name, n in sizes.items() if n > max_tokens}
