"""Prompt-prefix reuse for in-process llama.cpp: whole blocks only, from the few most recent prompts.

A prompt's cost is the tokens llama.cpp must evaluate. Two rules decide which
cached tokens may be skipped:

* **Whole blocks, so answers never depend on the request before.** llama.cpp
  evaluates a prompt in batches, and a token's arithmetic depends on where its
  batch started. Every prompt is evaluated in blocks of :data:`PROMPT_BLOCK`
  tokens aligned at position 0, and only whole blocks of an earlier *prompt* are
  reused (never a partial block, never generated tokens). Each reused token then
  holds exactly the values a cold evaluation of the same prompt computes.
* **Several prefixes, so alternating contexts stay cheap.** llama-cpp-python keeps
  one KV state: the previous call's. Replay and search alternate between tasks'
  contexts, and per-input retrieval changes the demos, so the previous call
  rarely shares much. :class:`PrefixCache` keeps, besides the live state, the KV
  states of the ``keep`` most recently used other prompts (``$CTXOPT_KV_PREFIXES``,
  default :data:`DEFAULT_PREFIXES`; 0 keeps only the live one). Before a call it restores
  the one that shares the most whole blocks with the new prompt, if that beats
  what is loaded.

A state is the context's KV data (``llama_state_get_data``) and its token ids,
saved when the engine switches away from it; logits are not kept, because at
least the last prompt token is always evaluated again. Memory: about
``2 × layers × kv_dim × 2 bytes`` per token (24.6 MB at 2,000 tokens for the
0.5B model, 57 MB for the 1.5B), times ``keep``.

Example:
    >>> aligned_reuse(shared=130, prompt_tokens=200, cached_prompt=150)
    128
    >>> aligned_reuse(shared=200, prompt_tokens=200, cached_prompt=300)  # the last token is always evaluated
    192
"""

from __future__ import annotations

import ctypes
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ctxopt.errors import ConfigError

__all__ = ["DEFAULT_PREFIXES", "PROMPT_BLOCK", "PrefixCache", "aligned_reuse", "kv_prefixes",
           "reuse_whole_blocks_only"]

PROMPT_BLOCK = 64
"""Prompt tokens llama.cpp evaluates per batch; the KV cache is reused only in whole blocks from position 0."""

DEFAULT_PREFIXES = 4
"""KV states kept besides the live one (``$CTXOPT_KV_PREFIXES``)."""


def kv_prefixes() -> int:
    """``$CTXOPT_KV_PREFIXES``, else :data:`DEFAULT_PREFIXES`; raises ConfigError if not a count."""
    value = os.environ.get("CTXOPT_KV_PREFIXES", "").strip()
    if not value:
        return DEFAULT_PREFIXES
    if not value.isdigit():
        raise ConfigError(f"CTXOPT_KV_PREFIXES must be a non-negative integer, got {value!r}")
    return int(value)


def aligned_reuse(*, shared: int, prompt_tokens: int, cached_prompt: int) -> int:
    """Tokens that may be skipped: the whole blocks of ``shared`` within the cached prompt, last token excluded."""
    return min(shared, prompt_tokens - 1, cached_prompt) // PROMPT_BLOCK * PROMPT_BLOCK


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class _Saved:
    ids: tuple[int, ...]  # the prompt's whole blocks: what a later prompt may reuse
    n_tokens: int  # tokens in the KV data (prompt and generated)
    input_ids: Any
    data: Any  # a ctypes byte array, passed back to llama.cpp as it is
    size: int


@dataclass
class PrefixCache:
    """Block-aligned prefix reuse over the live KV state and ``keep`` saved ones (LRU)."""

    llama: Any
    keep: int = DEFAULT_PREFIXES
    prompt: int = 0  # prompt tokens of the live state
    saved: OrderedDict[tuple[int, ...], _Saved] = field(default_factory=OrderedDict)
    stats: dict[str, int] = field(default_factory=lambda: {"calls": 0, "prompt_tokens": 0, "reused_tokens": 0,
                                                           "restores": 0, "saves": 0})

    def prepare(self, tokens: list[int]) -> None:
        """Before ``tokens`` are generated from: load the best state and truncate it to its reusable blocks."""
        llama = self.llama
        live = aligned_reuse(shared=_common(llama._input_ids, tokens), prompt_tokens=len(tokens),
                             cached_prompt=self.prompt)
        best, best_reuse = None, live
        for key, entry in self.saved.items():
            reuse = aligned_reuse(shared=_common(key, tokens), prompt_tokens=len(tokens), cached_prompt=len(key))
            if reuse > best_reuse:
                best, best_reuse = entry, reuse
        if best is not None:
            del self.saved[best.ids]  # it becomes the live state; saving the one it replaces must not evict it
        if live < min(self.prompt, llama.n_tokens) // PROMPT_BLOCK * PROMPT_BLOCK:
            self._save_live()  # blocks of the live prompt are about to be dropped or replaced
        if best is not None:
            self._restore(best)
            live = best_reuse
        llama.n_tokens = min(llama.n_tokens, live)
        self.prompt = len(tokens)
        self.stats["calls"] += 1
        self.stats["prompt_tokens"] += len(tokens)
        self.stats["reused_tokens"] += live

    def _save_live(self) -> None:
        if self.keep <= 0:
            return
        llama = self.llama
        blocks = min(self.prompt, llama.n_tokens) // PROMPT_BLOCK * PROMPT_BLOCK
        if blocks == 0:
            return
        key = tuple(int(t) for t in llama._input_ids[:blocks])
        if key in self.saved:
            self.saved.move_to_end(key)
            return
        import llama_cpp

        ctx = llama._ctx.ctx
        size = llama_cpp.llama_state_get_size(ctx)
        buf = (ctypes.c_uint8 * int(size))()
        written = int(llama_cpp.llama_state_get_data(ctx, buf, size))
        self.saved[key] = _Saved(ids=key, n_tokens=llama.n_tokens, input_ids=llama.input_ids[:llama.n_tokens].copy(),
                                 data=buf, size=written)
        self.stats["saves"] += 1
        while len(self.saved) > self.keep:
            self.saved.popitem(last=False)

    def _restore(self, entry: _Saved) -> None:
        import llama_cpp

        llama = self.llama
        if int(llama_cpp.llama_state_set_data(llama._ctx.ctx, entry.data, entry.size)) != entry.size:
            raise RuntimeError("llama.cpp refused a saved KV state")
        llama.input_ids[:entry.n_tokens] = entry.input_ids
        llama.n_tokens = entry.n_tokens
        if hasattr(llama, "_requires_eval"):
            llama._requires_eval = True  # the logits are not those of this state
        self.stats["restores"] += 1


def reuse_whole_blocks_only(llama: Any, keep: int | None = None) -> PrefixCache:
    """Wrap ``llama.generate`` so that prompts reuse whole blocks of the ``keep`` most recent prompts.

    Returns the :class:`PrefixCache` (also ``llama.ctxopt_prefix_cache``), whose ``stats`` count
    prompt tokens, reused tokens, restores and saves.
    """
    cache = PrefixCache(llama, keep=kv_prefixes() if keep is None else keep)
    generate = llama.generate

    def aligned_generate(tokens: Sequence[int], *args: Any, **kwargs: Any) -> Any:
        tokens = list(tokens)
        cache.prepare(tokens)
        return generate(tokens, *args, **kwargs)

    llama.generate = aligned_generate
    llama.ctxopt_prefix_cache = cache
    return cache
