"""Distillation data: teacher rows with a metric filter, self-consistent synthesized rows, headroom."""

from __future__ import annotations

import itertools
import json
import re

import datasets
import pytest

import ctxopt.distill as distill_module
import ctxopt.streams
from ctxopt.budget import get_budget
from ctxopt.cli import main
from ctxopt.distill import _parse_inputs, distill
from ctxopt.optimizer import ContinualOptimizer
from ctxopt.program import DEFAULT_INSTRUCTION, program_for
from ctxopt.store import Store
from ctxopt.tasks import sealed_test_split
from tests.fakes import chat_fields, scripted_lm
from tests.toy import RULES, _field, reflection_lm, task_answer, task_lm, toy_stream

SMALL = dict(n_trials=4, train_minibatch=6, val_minibatch=5, replay_per_task=3, gate_replay_per_task=5)
ROW_KEYS = {"messages", "task", "origin", "filter", "score", "split", "example_id", "inputs", "output", "source_rev"}


def _last(user: str, name: str) -> str:
    marker = f"[[ ## {name} ## ]]"
    return _field(marker + user.rsplit(marker, 1)[-1], name)


_counter = itertools.count()


def teacher_answer(system: str, user: str) -> str:
    """The toy task LM, except that it gets words starting with a/b wrong and is unsure about 'ambig…'
    and names the task for 'echo9'."""
    word = _last(user, "input")
    if word == "echo9":
        return chat_fields(output=_last(user, "task"))
    if word.startswith("ambig"):
        return chat_fields(output=f"guess{next(_counter)}")
    if word[:1] in "ab":
        return chat_fields(output="wrong")
    return task_answer(system, user)


def student_answer(system: str, user: str) -> str:
    """Without any rule, the student already doubles words on the 'double' task, and echoes otherwise."""
    word, task = _last(user, "input"), _last(user, "task")
    return chat_fields(output=word * 2 if task == "double" else word)


def synth_answer(system: str, user: str) -> str:
    m = re.search(r'new inputs for the task "([^"]+)"', user)
    if not m:
        return ""
    train_word = f"apple{list(RULES).index(m.group(1))}"  # a train input of that task
    return "\n".join(["Here you go:", "INPUT: plum", "2. INPUT: ambig7", f"INPUT: {train_word}",
                      '- **INPUT:** "melon"', "INPUT: plum", "INPUT: echo9"])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    stream = toy_stream()
    run = tmp_path_factory.mktemp("distill") / "run"
    ContinualOptimizer(task_lm(), reflection_lm(), budget=get_budget("light", **SMALL), seed=0, num_threads=2,
                       measure_test=False).fit(program_for(stream), stream, run_dir=run)
    return Store.open(run / "store")


@pytest.fixture(scope="module")
def made(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "sft"
    res = distill(store, out, stream=toy_stream(), teacher_lm=scripted_lm(teacher_answer, name="scripted/teacher"),
                  student_lm=scripted_lm(student_answer, name="scripted/student"),
                  reflection_lm=scripted_lm(synth_answer, name="scripted/synth"), synthesize=4, samples=3,
                  holdout=0.25)
    return res, out


def _rows(out):
    return [json.loads(line) for line in (out / "distill.jsonl").read_text().splitlines()]


def test_rows_follow_the_chat_schema_without_c(made, store):
    res, out = made
    rows = _rows(out)
    assert len(rows) == res.rows > 0
    for row in rows:
        assert set(row) == ROW_KEYS
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        system, user, assistant = (m["content"] for m in row["messages"])
        assert DEFAULT_INSTRUCTION in system
        assert not any(rule in system or rule in user for rule, _ in RULES.values())  # no C in the prompt
        assert json.loads(row["inputs"])["input"] in user and f"[[ ## task ## ]]\n{row['task']}" in user
        assert assistant.startswith(f"[[ ## output ## ]]\n{row['output']}\n") and "[[ ## completed ## ]]" in assistant
        assert row["source_rev"] == store.resolve("HEAD")
    train_rows = [r for r in rows if r["origin"] == "train"]
    suffix = next(r for r in train_rows if r["task"] == "suffix")
    assert suffix["output"] == json.loads(suffix["inputs"])["input"] + "zz"  # the teacher used C


def test_the_metric_filter_drops_wrong_teacher_answers(made):
    res, out = made
    train_rows = [r for r in _rows(out) if r["origin"] == "train"]
    assert train_rows and all(r["filter"] == "metric" and r["score"] == 1.0 for r in train_rows)
    assert not any(json.loads(r["inputs"])["input"][:1] in "ab" for r in train_rows)
    for s in res.tasks:  # 12 train words, two start with a or b
        assert (s.train_total, s.train_kept, s.train_pass_rate) == (12, 10, pytest.approx(10 / 12, abs=1e-5))


def test_synthesized_rows_need_agreeing_samples(made):
    res, out = made
    synth = [r for r in _rows(out) if r["origin"] == "synthetic"]
    by_task = {}
    for r in synth:
        by_task.setdefault(r["task"], set()).add(json.loads(r["inputs"])["input"])
    # 'appleK' duplicates a train input, the second 'plum' a synthesized one; 'ambig7' never agrees;
    # 'echo9' always gets the task name back (agreeing, but an echo).
    assert by_task == {name: {"plum", "melon"} for name in RULES}
    assert all(r["filter"] == "self-consistency" and r["score"] == 1.0 for r in synth)
    for s in res.tasks:
        assert (s.synth_requested, s.synth_total, s.synth_kept) == (4, 4, 2)
    assert next(r for r in synth if r["task"] == "reverse" and "plum" in r["inputs"])["output"] == "mulp"


def test_dataset_loads_and_matches_the_jsonl(made):
    res, out = made
    ds = datasets.load_from_disk(str(out / "dataset"))
    assert len(ds) == res.rows and set(ds.column_names) == ROW_KEYS
    assert ds.to_list() == _rows(out)


def test_card_names_the_version_task_mix_and_filters(made, store):
    res, out = made
    card = (out / "README.md").read_text()
    assert store.resolve("HEAD") in card and res.context_hash in card
    for name in RULES:
        assert f"| {name} | 10 / 12 |" in card
    assert "metric scores ≥ 1.0" in card and "3 times at temperature 0.7" in card and "0.667" in card
    assert json.loads((out / "summary.json").read_text())["rows"] == res.rows


def test_headroom_is_the_students_agreement_on_held_out_rows(made):
    res, out = made
    rows = _rows(out)
    held = [r for r in rows if r["split"] == "heldout"]
    assert len(held) == res.heldout == sum(s.heldout for s in res.tasks) and all(s.heldout == 3 for s in res.tasks)
    agreement = {s.task: s.student_agreement for s in res.tasks}
    assert agreement == {"suffix": 0.0, "reverse": 0.0, "double": 1.0}  # the student only knows 'double'
    assert res.student_agreement == pytest.approx(1 / 3, abs=1e-5) and res.headroom == pytest.approx(2 / 3, abs=1e-5)


def test_no_test_example_reaches_the_set(made):
    _, out = made
    test_words = {e.input for t in toy_stream().tasks for e in sealed_test_split(t)}
    assert not any(json.loads(r["inputs"])["input"] in test_words for r in _rows(out))


def test_input_parsing_is_tolerant():
    text = "1. INPUT: one\n**INPUT**: two\nnoise\n{\"input\": \"three\"}\n{bad json}"
    assert _parse_inputs(text, ["input"], True) == [{"input": "one"}, {"input": "two"}, {"input": "three"}]
    assert _parse_inputs('{"a": "x", "b": "y"}\n{"a": "x"}', ["a", "b"], False) == [{"a": "x", "b": "y"}]


def test_cli_distill_writes_the_set(store, tmp_path, monkeypatch, capsys):
    fakes = {"scripted/task": scripted_lm(teacher_answer, name="scripted/teacher")}
    monkeypatch.setattr(distill_module, "get_lm", lambda spec, **kw: fakes[spec])
    monkeypatch.setattr(ctxopt.streams, "load_stream", lambda name, **kw: toy_stream())
    rc = main(["distill", "--store", str(store.path), "--out", str(tmp_path / "o"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["rows"] == 30 and out["teacher_lm"] == "scripted/teacher"
    assert len(datasets.load_from_disk(str(tmp_path / "o" / "dataset"))) == 30
    rc = main(["distill", "--store", str(store.path), "--out", str(store.path / "x")])
    assert rc == 2 and "inside the store" in capsys.readouterr().err
