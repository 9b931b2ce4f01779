"""`ctxopt demo`: the task-agnostic demo runs end to end, and each request retrieves its own task's memory."""

from __future__ import annotations

import re

import pytest

from ctxopt.cli import main
from ctxopt.cli.demo import DEMO_SIZES, DEMO_STREAM
from ctxopt.streams import load_stream
from ctxopt.tasks import sealed_test_split
from tests.fakes import chat_fields, scripted_lm

pytest.importorskip("reasoning_gym")
QUESTION = re.compile(r"\[\[ ## question ## \]\]\n(.*?)(?=\n+(?:\[\[ ## |Respond with)|\Z)", re.S)


def demo_task_lm(**kw):
    """Answers a request right only when the prompt shows a demo of the same task (no label says which it is)."""
    family, answer = {}, {}
    for task in load_stream(DEMO_STREAM, sizes=DEMO_SIZES):
        for e in (*task.train, *task.val, *sealed_test_split(task)):
            family[e.question.strip()], answer[e.question.strip()] = task.name, e.answer

    def respond(system: str, user: str) -> str:
        *shown, asked = [q.strip() for q in QUESTION.findall(user)]
        right = any(family.get(q) == family.get(asked) for q in shown)
        return chat_fields(answer=answer.get(asked, "?") if right else "I do not know")

    return scripted_lm(respond, name="scripted/demo", **kw)


def test_the_demo_learns_without_labels_and_shows_what_each_request_retrieves(tmp_path, capsys):
    run = tmp_path / "demo"
    rc = main(["demo", "--run-dir", str(run), "--task-lm", "py:tests.test_demo:demo_task_lm",
               "--reflection-lm", "py:tests.toy:reflection_lm"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "task-agnostic" in out
    for name in ("letter_counting", "number_format", "number_sorting"):
        section = out.split(f"{name}: what one of its requests retrieves")[1].split("\n", 1)[1].split("─" * 10)[0]
        demos = re.findall(r"demo \d\.\d{3} d-\w+", section)
        assert demos, section  # the task learned demos, and its request retrieves some
    assert f"ctxopt show --store {run}/store --for-input" in out
