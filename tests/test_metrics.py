"""Per-example metrics: normalization, the four built-ins, feedback, user metrics."""

from __future__ import annotations

import dspy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctxopt.errors import ConfigError
from ctxopt.metrics import Score, get_metric, normalize


def gold(output, answers=None, **extra):
    data = {"input": "x", "output": output, **extra}
    if answers:
        data["_answers"] = tuple(answers)
    return dspy.Example(**data).with_inputs("input")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Unfortunate. ", "unfortunate"),
        ("The cat", "cat"),
        ("an apple a day", "apple day"),
        ("'p l a c e'", "p l a c e"),
        ("ninety-four!", "ninety-four"),
        ("A", "a"),
        ("the end", "end"),
        (None, ""),
    ],
)
def test_normalize(raw, expected):
    assert normalize(raw) == expected


@given(st.text())
def test_normalize_is_idempotent(text):
    assert normalize(normalize(text)) == normalize(text)


def test_exact_match_scores_and_feedback():
    m = get_metric("exact_match", "output")
    assert m(gold("unfortunate"), {"output": " Unfortunate."}) == Score(1.0, "correct: 'Unfortunate.'")
    s = m(gold("unfortunate"), {"output": "Unfortunate word"})
    assert s.score == 0.0
    assert "expected 'unfortunate', got 'Unfortunate word'" in s.feedback
    assert "single word only" in s.feedback
    assert "one word" in m(gold("cold"), {"output": "very warm"}).feedback
    assert "format" in m(gold("p l a c e"), {"output": "p, l, a, c, e"}).feedback
    assert "empty" in m(gold("cold"), {"output": ""}).feedback
    assert m(gold("a"), {"output": ""}).score == 0.0  # first_word_letter: "a" is an answer
    assert m(gold("p l a c e"), {"output": "p l c e"}).score == 0.0


def test_exact_match_any_acceptable_answer_and_prediction_objects():
    m = get_metric("exact_match", "output")
    ex = gold("lugar", answers=["lugar", "sitio", "plaza"])
    assert m(ex, dspy.Prediction(output="Sitio")).score == 1.0
    s = m(ex, dspy.Prediction(output="casa"))
    assert s.score == 0.0 and "also accepted: 'sitio', 'plaza'" in s.feedback
    missing = m(ex, dspy.Prediction(answer="lugar"))
    assert missing.score == 0.0 and "no field 'output'" in missing.feedback


def test_contains_whole_words():
    m = get_metric("contains", "output")
    assert m(gold("dog"), {"output": "It is a dog."}).score == 1.0
    assert m(gold("dog"), {"output": "hotdogs"}).score == 0.0
    assert "contain 'dog'" in m(gold("dog"), {"output": "cat"}).feedback


def test_token_f1_hand_computed():
    m = get_metric("f1", "output")
    # pred tokens: big red dog (3); gold: red dog (2); overlap 2 -> P=2/3, R=1 -> F1=0.8
    s = m(gold("the red dog"), {"output": "big red dog"})
    assert s.score == pytest.approx(0.8)
    assert "extra words: big" in s.feedback
    s = m(gold("involve going up", answers=["involve vertical movement", "involve going up"]), {"output": "going up"})
    assert s.score == pytest.approx(2 * (1.0 * 2 / 3) / (1 + 2 / 3))  # best over answers
    assert m(gold("x"), {"output": "y"}).score == 0.0


def test_set_equal_comma_lists_and_word_sets():
    m = get_metric("set_equal", "output")
    assert m(gold("beetle, bear, kangaroo"), {"output": "Kangaroo, beetle, bear."}).score == 1.0
    s = m(gold("beetle, bear, kangaroo"), {"output": "beetle, bike"})
    assert s.score == 0.0 and "missing: bear, kangaroo" in s.feedback and "should not include: bike" in s.feedback
    assert m(gold("thinks that"), {"output": "that, thinks"}).score == 1.0  # gold without commas: word set
    assert m(gold("apple,milk"), {"output": "milk and apple"}).score == 1.0


def test_get_metric_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        get_metric("bleu", "output")
    msg = str(e.value)
    assert "unknown metric 'bleu'" in msg
    for name in ("exact_match", "contains", "f1", "set_equal", "package.module:function"):
        assert name in msg
    with pytest.raises(ConfigError, match="cannot import module"):
        get_metric("no_such_module_xyz:f", "output")
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        get_metric("json:nope", "output")


def test_user_metric_results_are_coerced(tmp_path, monkeypatch):
    (tmp_path / "umetrics.py").write_text(
        "from ctxopt.metrics import Score\n"
        "def as_bool(e, p): return p['output'] == e.output\n"
        "def as_pair(e, p): return (2.0, 'too generous')\n"
        "def as_score(e, p): return Score(0.25, 'partial')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ex = gold("a")
    assert get_metric("umetrics:as_bool", "output")(ex, {"output": "a"}) == Score(1.0, "correct")
    assert get_metric("umetrics:as_pair", "output")(ex, {"output": "a"}) == Score(1.0, "too generous")  # clipped
    assert get_metric("umetrics:as_score", "output")(ex, {"output": "a"}) == Score(0.25, "partial")


@given(st.floats(0, 1), st.text(max_size=20))
def test_score_round_trip(score, feedback):
    s = Score(score, feedback)
    assert Score.from_dict(s.to_dict()) == s
