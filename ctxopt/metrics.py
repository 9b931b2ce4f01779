"""Per-example metrics: a score in [0, 1] plus feedback a reflector can act on.

A :data:`Metric` is any callable ``metric(example, prediction) -> Score``. It
reads the task's output field from the prediction (a ``dspy.Prediction`` or any
mapping) and compares it with the example's gold answer. When an example
carries the non-input field ``_answers`` (a tuple of acceptable answers, e.g.
all valid translations of a word), the best score over those answers counts;
otherwise the gold answer is ``example[output_field]``.

Built-in metrics (resolved by :func:`get_metric`):

===============  ==============================================================
name             score
===============  ==============================================================
``exact_match``  1 if the normalized prediction equals a normalized gold answer
``contains``     1 if a normalized gold answer occurs in the normalized
                 prediction as whole words
``f1``           token-level F1 (SQuAD style) against the best gold answer
``set_equal``    1 if the prediction and a gold answer hold the same set of
                 items; items are comma-separated, and a gold answer without
                 commas is read as a set of words
===============  ==============================================================

Normalization (:func:`normalize`): lower case; strip surrounding whitespace and
punctuation; drop the articles "a", "an" and "the"; collapse inner whitespace.
Inner punctuation is kept, so ``"ninety-four"`` survives. Articles stay when
dropping them would change a spelled-out letter sequence (``"p l a c e"``) or
leave nothing (the answer ``"a"`` of first_word_letter).

A user metric is named ``"package.module:function"``; the function is called as
``function(example, prediction)`` and may return a :class:`Score`, a number or
bool, a ``(score, feedback)`` pair, or an object with ``score`` and
``feedback`` attributes (such as a ``dspy.Prediction``).

Example:
    >>> import dspy
    >>> metric = get_metric("exact_match", "output")
    >>> gold = dspy.Example(input="fortunate", output="unfortunate").with_inputs("input")
    >>> metric(gold, {"output": "Unfortunate."}).score
    1.0
    >>> metric(gold, {"output": "not fortunate"}).feedback
    "expected 'unfortunate', got 'not fortunate'; the answer must be one word"
"""

from __future__ import annotations

import importlib
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ctxopt._text import shorten
from ctxopt.errors import ConfigError

__all__ = [
    "Score",
    "Metric",
    "BUILTIN_METRICS",
    "get_metric",
    "normalize",
    "gold_answers",
    "field_value",
    "exact_match",
    "contains",
    "token_f1",
    "set_equal",
]

ANSWERS_FIELD = "_answers"

_PUNCT = string.punctuation + "“”‘’«»¿¡…–—"
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Score:
    """One example's score in [0, 1] and natural-language feedback on it.

    Example:
        >>> Score(1.0, "correct").to_dict()
        {'score': 1.0, 'feedback': 'correct'}
    """

    score: float
    feedback: str

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "feedback": self.feedback}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Score:
        return cls(float(data["score"]), str(data["feedback"]))


Metric = Callable[[Any, Any], Score]
"""``metric(example, prediction) -> Score``; prediction is a Prediction or mapping."""


# --------------------------------------------------------------------------- text


def normalize(text: Any) -> str:
    """Normalize an answer for comparison.

    Lower-cases, strips surrounding whitespace and punctuation, removes the
    articles a/an/the (unless the text is a sequence of single letters or only
    an article), and collapses whitespace.

    Example:
        >>> normalize("  The Cat sat.  ")
        'cat sat'
    """
    s = "" if text is None else str(text)
    s = _WS.sub(" ", s.lower().strip().strip(_PUNCT).strip())
    if any(len(w) > 1 for w in _WORD.findall(s)):  # not a spelled-out letter sequence like "p l a c e"
        without = _WS.sub(" ", _ARTICLES.sub(" ", s)).strip()
        if without:  # an answer that is only an article keeps it
            s = without
    return s.strip(_PUNCT).strip()


def _tokens(text: Any) -> list[str]:
    """Word tokens of a normalized answer (punctuation splits words)."""
    return _WORD.findall(normalize(text))


def _alnum(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum())



def gold_answers(example: Any, output_field: str) -> list[str]:
    """All acceptable answers of an example: ``_answers`` if present, else the output field."""
    answers = field_value(example, ANSWERS_FIELD)
    if answers:
        if isinstance(answers, str):
            return [answers]
        return [str(a) for a in answers]
    value = field_value(example, output_field)
    return [] if value is None else [str(value)]


def field_value(obj: Any, key: str) -> Any:
    """A field of an example or prediction (mapping, ``.get`` or attribute); None when absent.

    Example:
        >>> field_value({"output": "x"}, "output"), field_value(object(), "output")
        ('x', None)
    """
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    getter = getattr(obj, "get", None)
    if callable(getter):
        try:
            return getter(key)
        except Exception:  # noqa: BLE001 - a Prediction-like object may raise on a missing key
            return None
    return getattr(obj, key, None)


# ------------------------------------------------------------------- comparisons


def _em_score(pred: str, gold: str) -> float:
    return 1.0 if normalize(pred) == normalize(gold) else 0.0


def _contains_score(pred: str, gold: str) -> float:
    g = normalize(gold)
    if not g:
        return 0.0
    return 1.0 if re.search(r"(?<!\w)" + re.escape(g) + r"(?!\w)", normalize(pred)) else 0.0


def _f1_score(pred: str, gold: str) -> float:
    p, g = _tokens(pred), _tokens(gold)
    if not p and not g:
        return 1.0
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _items(text: str, *, as_words: bool) -> set[str]:
    if as_words:
        return set(_tokens(text.replace(",", " ")))
    parts = re.split(r"[,;\n]|\band\b", text)
    return {n for n in (normalize(p) for p in parts) if n}


def _set_score(pred: str, gold: str) -> float:
    as_words = "," not in gold
    return 1.0 if _items(pred, as_words=as_words) == _items(gold, as_words=as_words) else 0.0


# ------------------------------------------------------------------- feedback


def _expected(golds: Sequence[str]) -> str:
    first = f"'{shorten(golds[0], 80)}'"
    if len(golds) == 1:
        return first
    others = ", ".join(f"'{shorten(g, 30)}'" for g in golds[1:6])
    more = ", …" if len(golds) > 6 else ""
    return f"{first} (also accepted: {others}{more})"


def _miss_hint(pred: str, golds: Sequence[str]) -> str:
    """One concrete hint on why an answer failed exact comparison."""
    np_, ng = normalize(pred), normalize(golds[0])
    if not np_:
        return "the answer was empty"
    if any(_contains_score(pred, g) for g in golds):
        n = len(ng.split())
        return "answer with " + ("the single word" if n == 1 else "that text") + " only, no extra words"
    if _alnum(np_) == _alnum(ng):
        return "right content but wrong format (spacing or punctuation); match the expected format exactly"
    if len(ng.split()) == 1 and len(np_.split()) > 1:
        return "the answer must be one word"
    return ""


def exact_match(pred: str, golds: Sequence[str]) -> Score:
    """Normalized exact match against any gold answer.

    Example:
        >>> exact_match("The cat.", ["cat"]).score
        1.0
    """
    if not golds:
        return Score(0.0, "the example has no gold answer")
    if any(_em_score(pred, g) for g in golds):
        return Score(1.0, f"correct: '{shorten(pred, 80)}'")
    fb = f"expected {_expected(golds)}, got '{shorten(pred, 80)}'"
    hint = _miss_hint(pred, golds)
    return Score(0.0, f"{fb}; {hint}" if hint else fb)


def contains(pred: str, golds: Sequence[str]) -> Score:
    """1 if a normalized gold answer occurs in the normalized prediction as whole words.

    Example:
        >>> contains("It is a dog", ["dog"]).score
        1.0
    """
    if not golds:
        return Score(0.0, "the example has no gold answer")
    if any(_contains_score(pred, g) for g in golds):
        return Score(1.0, f"correct: the answer contains '{shorten(golds[0], 80)}'")
    if not normalize(pred):
        return Score(0.0, f"the answer was empty; expected it to contain {_expected(golds)}")
    return Score(0.0, f"expected the answer to contain {_expected(golds)}, got '{shorten(pred, 80)}'")


def token_f1(pred: str, golds: Sequence[str]) -> Score:
    """Token-level F1 (bag of words after normalization), best over gold answers.

    Example:
        >>> round(token_f1("big red dog", ["red dog"]).score, 2)
        0.8
    """
    if not golds:
        return Score(0.0, "the example has no gold answer")
    best, gold = max(((_f1_score(pred, g), g) for g in golds), key=lambda t: t[0])
    if best >= 1.0:
        return Score(1.0, f"correct: '{shorten(pred, 80)}'")
    p, g = Counter(_tokens(pred)), Counter(_tokens(gold))
    missing = sorted((g - p).keys())[:8]
    extra = sorted((p - g).keys())[:8]
    parts = [f"token F1 {best:.2f} against '{shorten(gold, 80)}'"]
    if missing:
        parts.append("missing words: " + ", ".join(missing))
    if extra:
        parts.append("extra words: " + ", ".join(extra))
    return Score(best, "; ".join(parts))


def set_equal(pred: str, golds: Sequence[str]) -> Score:
    """1 if the prediction lists the same set of items as a gold answer (order-free).

    Items are comma-separated; a gold answer without commas is compared as a
    set of words.

    Example:
        >>> set_equal("bear, cat", ["cat, bear"]).score
        1.0
    """
    if not golds:
        return Score(0.0, "the example has no gold answer")
    if any(_set_score(pred, g) for g in golds):
        return Score(1.0, f"correct: '{shorten(pred, 80)}'")
    gold = golds[0]
    as_words = "," not in gold
    p, g = _items(pred, as_words=as_words), _items(gold, as_words=as_words)
    parts = [f"expected the items {_expected(golds)}, got '{shorten(pred, 80)}'"]
    if g - p:
        parts.append("missing: " + ", ".join(sorted(g - p)[:8]))
    if p - g:
        parts.append("should not include: " + ", ".join(sorted(p - g)[:8]))
    if not as_words:
        parts.append("list the items separated by commas, in any order")
    return Score(0.0, "; ".join(parts))


_COMPARATORS: dict[str, Callable[[str, Sequence[str]], Score]] = {
    "exact_match": exact_match,
    "contains": contains,
    "f1": token_f1,
    "set_equal": set_equal,
}

BUILTIN_METRICS: dict[str, str] = {
    "exact_match": "normalized exact match against any gold answer",
    "contains": "a gold answer occurs in the prediction as whole words",
    "f1": "token-level F1, best over gold answers",
    "set_equal": "same set of comma-separated items (order-free)",
}


# ------------------------------------------------------------------- metric objects


@dataclass(frozen=True)
class FieldMetric:
    """A built-in metric bound to an output field; callable as ``metric(example, prediction)``.

    Example:
        >>> m = FieldMetric("contains", "answer")
        >>> m({"answer": "dog"}, {"answer": "a big dog"}).score
        1.0
    """

    name: str
    output_field: str

    def __post_init__(self) -> None:
        if self.name not in _COMPARATORS:
            raise ConfigError(_unknown(self.name))

    @property
    def __name__(self) -> str:  # so code that names metrics by __name__ works
        return self.name

    def __call__(self, example: Any, prediction: Any) -> Score:
        value = field_value(prediction, self.output_field)
        if value is None:
            return Score(0.0, f"the prediction has no field '{self.output_field}'; it must produce one")
        return _COMPARATORS[self.name](str(value), gold_answers(example, self.output_field))


@dataclass(frozen=True)
class UserMetric:
    """A user function ``package.module:function`` whose result is coerced to :class:`Score`."""

    path: str
    function: Callable[..., Any]

    @property
    def __name__(self) -> str:
        return self.path

    def __call__(self, example: Any, prediction: Any) -> Score:
        return _coerce(self.function(example, prediction), self.path)


def _coerce(result: Any, where: str) -> Score:
    if isinstance(result, Score):
        score, feedback = result.score, result.feedback
    elif isinstance(result, bool | int | float):
        score, feedback = float(result), ""
    elif isinstance(result, tuple) and len(result) == 2:
        score, feedback = float(result[0]), str(result[1])
    elif hasattr(result, "score"):
        score, feedback = float(result.score), str(getattr(result, "feedback", "") or "")
    else:
        raise TypeError(f"metric {where} returned {type(result).__name__}; expected a Score, number or (score, feedback)")
    if math.isnan(score):
        score = 0.0
    score = min(1.0, max(0.0, float(score)))
    if not feedback:
        feedback = "correct" if score >= 1.0 else f"score {score:.2f}"
    return Score(score, feedback)


def _unknown(name: str) -> str:
    return (
        f"unknown metric '{name}'; use one of {', '.join(sorted(_COMPARATORS))} "
        "or 'package.module:function'"
    )


def get_metric(name_or_path: str, output_field: str) -> Metric:
    """Resolve a metric name or ``"package.module:function"`` path.

    Args:
        name_or_path: A built-in name (``exact_match``, ``contains``, ``f1``,
            ``set_equal``) or an importable ``"package.module:function"``.
        output_field: The prediction/example field the metric compares.

    Returns:
        A callable ``metric(example, prediction) -> Score``.

    Raises:
        ConfigError: The name is unknown or the function cannot be imported.

    Example:
        >>> get_metric("f1", "output").name
        'f1'
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ConfigError(_unknown(str(name_or_path)))
    name = name_or_path.strip()
    if name in _COMPARATORS:
        return FieldMetric(name, output_field)
    if ":" not in name:
        raise ConfigError(_unknown(name))
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"metric '{name}': cannot import module '{module_name}' ({exc})") from exc
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(f"metric '{name}': module '{module_name}' has no function '{attr}'")
    return UserMetric(name, function)
