"""reasoning-gym streams: rg:NAMES and assistant-8, seeded and offline, scored by each dataset's own checker."""

from __future__ import annotations

import socket
import sys
from importlib import metadata

import pytest

from ctxopt.errors import ConfigError
from ctxopt.program import program_for
from ctxopt.rg import ASSISTANT8, RG_PIN, RgMetric
from ctxopt.streams import builtin_streams, load_stream
from ctxopt.tasks import example_id, sealed_test_split

SMALL = (5, 4, 6)


def questions(examples) -> set[str]:
    return {e.question for e in examples}


def test_rg_stream_builds_offline_and_deterministically_by_seed(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("reasoning-gym tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    s = load_stream("rg:letter_counting,spell_backward", sizes=SMALL, seed=3)
    assert s.names == ("letter_counting", "spell_backward") and s.scenario == "task-aware"
    assert s.program_inputs == ("task", "question") and s.output == "answer"
    assert s.meta["source"] == "reasoning-gym" and s.meta["seed"] == 3 and s.meta["version"] == RG_PIN
    for t in s:
        assert (len(t.train), len(t.val), t.test_size) == SMALL
        test = questions(sealed_test_split(t))
        assert not (questions(t.train) | questions(t.val)) & test and not questions(t.train) & questions(t.val)
        assert all(e.task == t.name and e.answer for e in t.train)
    again, other = (load_stream("rg:letter_counting,spell_backward", sizes=SMALL, seed=k) for k in (3, 4))
    for name in s.names:
        assert [example_id(e) for e in again[name].train] == [example_id(e) for e in s[name].train]
        assert questions(other[name].train) != questions(s[name].train)  # the run's seed draws train/val
        assert questions(sealed_test_split(other[name])) == questions(sealed_test_split(s[name]))  # test is fixed


def test_the_metric_is_the_datasets_checker_with_feedback():
    s = load_stream("rg:spell_backward,word_sorting", sizes=SMALL)
    t = s["spell_backward"]
    ex = t.train[0]
    assert isinstance(t.metric, RgMetric) and t.metric_name == "score_answer"
    right = t.metric(ex, {"answer": f"  {ex.answer}\n"})
    assert right.score == 1.0 and right.feedback.startswith("correct")
    wrong = t.metric(ex, {"answer": "zzzzzz"})
    assert wrong.score == 0.0 and f"expected '{ex.answer}'" in wrong.feedback
    assert t.metric(ex, {}).score == 0.0
    w = s["word_sorting"].train[0]
    words = w.answer.split(", ")
    swapped = ", ".join([words[1], words[0], *words[2:]])
    partial = s["word_sorting"].metric(w, {"answer": swapped})  # the checker gives partial credit
    assert 0.0 < partial.score < 1.0 and partial.feedback.startswith(f"partial credit {partial.score:.2f}")
    assert "expected" in partial.feedback


def test_a_checker_that_raises_scores_zero_instead_of_breaking_the_run(monkeypatch):
    t = load_stream("rg:spell_backward", sizes=SMALL)["spell_backward"]

    def broken(self, answer, entry):
        raise ValueError("cannot parse")

    monkeypatch.setattr("reasoning_gym.algorithmic.spell_backward.SpellBackwardDataset.score_answer", broken)
    s = t.metric(t.train[0], {"answer": "???"})
    assert s.score == 0.0 and "could not read '???' (ValueError)" in s.feedback and t.train[0].answer in s.feedback


def test_assistant_8_is_task_agnostic_and_records_its_configuration():
    assert "assistant-8" in builtin_streams()
    s = load_stream("assistant-8", sizes=SMALL)
    assert s.names == tuple(ASSISTANT8) and len(s) == 8
    assert s.scenario == "task-agnostic" and s.program_inputs == ("question",)
    assert program_for(s).inputs == ("question",)
    assert all("task" not in e for t in s for e in t.train)
    assert s.meta["configs"] == ASSISTANT8 and s.meta["version"] == metadata.version("reasoning-gym") == RG_PIN
    for t in s:  # every request says what it wants: a short question with a short answer
        assert all(len(e.answer) < 80 for e in t.train)
    assert load_stream("assistant-8", sizes=SMALL, scenario="task-aware").program_inputs == ("task", "question")


def test_assistant_subset_is_assistant_8s_tasks_in_the_order_given():
    s = load_stream("assistant:number_format,letter_counting", sizes=SMALL)
    whole = load_stream("assistant-8", sizes=SMALL)
    assert s.names == ("number_format", "letter_counting") and s.scenario == "task-agnostic"
    for name in s.names:  # the same configurations and splits as in assistant-8
        assert questions(sealed_test_split(s[name])) == questions(sealed_test_split(whole[name]))
        assert questions(s[name].train) == questions(whole[name].train)
    with pytest.raises(ConfigError, match="unknown assistant task 'sudoku'; valid tasks: chain_sum"):
        load_stream("assistant:sudoku", sizes=SMALL)


def test_an_rg_revisit_gets_fresh_questions():
    s = load_stream("rg:letter_counting,chain_sum,letter_counting", sizes=SMALL)
    assert s.names == ("letter_counting", "chain_sum", "letter_counting@2")
    first, again = s["letter_counting"], s["letter_counting@2"]
    seen = questions(first.train) | questions(first.val) | questions(sealed_test_split(first))
    assert not seen & (questions(again.train) | questions(again.val) | questions(sealed_test_split(again)))
    assert {e.task for e in again.train} == {"letter_counting"}  # labelled with the family
    assert load_stream("assistant-8x2", sizes=SMALL).names[8:] == tuple(f"{n}@2" for n in ASSISTANT8)


def test_missing_package_and_unknown_dataset_are_one_line_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match="unknown reasoning-gym dataset 'leter_counting'; did you mean letter_counting"):
        load_stream("rg:leter_counting", sizes=SMALL)
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # import reasoning_gym now raises ImportError
    with pytest.raises(ConfigError) as e:
        load_stream("assistant-8", sizes=SMALL)
    assert str(e.value) == "the rg: source and assistant-8 need reasoning-gym: pip install 'ctxopt[rg]'"
