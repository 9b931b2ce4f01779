"""Teacher-bootstrapped demos: parsing, what is kept, what it costs, and a CoT task learned only from them."""

from __future__ import annotations

import re

import pytest

from ctxopt.budget import get_budget
from ctxopt.context import LearnedContext
from ctxopt.edits import AddDemo
from ctxopt.optimizer import ContinualOptimizer
from ctxopt.program import build_program, program_for
from ctxopt.proposer import ProposalContext
from ctxopt.store import Store
from ctxopt.teacher import TeacherDemoProposer, parse_solutions
from tests.fakes import chat_fields, scripted_lm
from tests.toy import toy_stream

WORKED = "Append the letters zz to the word"


def teacher_reply(system: str, user: str) -> str:
    """Solves every example it is asked, except the second, which it gets wrong; reflects nothing useful."""
    if "You are the teacher" not in user:
        return "I am not sure what went wrong."
    words = re.findall(r"EXAMPLE (\d+)\ninput: (\w+)", user)
    blocks = []
    for n, word in words:
        answer = word + ("zz" if n != "2" else "yy")
        blocks.append(f"**EXAMPLE {n}**\n- reasoning: {WORKED}\n{word}.\noutput: \"{answer}\"")
    return "Here are the solutions.\n" + "\n".join(blocks)


def cot_task_answer(system: str, user: str) -> str:
    """A CoT task LM that appends zz only after seeing a worked demo (a reasoning that says how)."""
    word = re.findall(r"\[\[ ## input ## \]\]\n(\w+)", user)[-1]
    worked = f"[[ ## reasoning ## ]]\n{WORKED}" in user
    return chat_fields(reasoning="I copy the word.", output=word + "zz" if worked else word)


def _pc(stream, program, **kw):
    task = stream.tasks[0]
    return ProposalContext(context=LearnedContext.from_program(program), task=task.name, scope=task.name,
                           predictor="predict", inputs=("task", "input"), output="output", observations=(),
                           train=tuple(task.train), seed=1, metric=task.metric, **kw)


def test_replies_are_parsed_per_example_and_field_with_text_over_several_lines():
    text = "intro\n**EXAMPLE 1**\nReasoning: first\nsecond line\n**Output:** 5\n\nEXAMPLE 2:\n- output: `7`"
    assert parse_solutions(text, ("reasoning", "output")) == {1: {"reasoning": "first second line", "output": "5"},
                                                            2: {"output": "7"}}
    assert parse_solutions("no blocks here\noutput: 3", ("output",)) == {}


def test_only_answers_the_metric_passes_become_demos_with_the_teachers_reasoning_and_the_label():
    stream = toy_stream(names=("suffix",))
    prompts = []
    teacher = scripted_lm(teacher_reply)
    proposer = TeacherDemoProposer(lambda p: prompts.append(p) or [teacher(p)[0]])
    program = build_program("cot", stream)
    [proposal] = proposer.propose(_pc(stream, program, intermediate=("reasoning",)))
    demos = [e.demo for e in proposal.edits if isinstance(e, AddDemo)]
    assert len(demos) == 5 and proposal.group == "demos"  # 6 asked, the wrong second answer dropped
    assert all(d.outputs["output"] == d.inputs["input"] + "zz" for d in demos)
    assert all(d.outputs["reasoning"].startswith(WORKED) and d.scope == "suffix" for d in demos)
    # The teacher sees 3 solved train examples and 6 unsolved train inputs, never their labels.
    [prompt] = prompts
    asked = re.findall(r"EXAMPLE \d+\ninput: (\w+)", prompt)
    train = {ex.input for ex in stream.tasks[0].train}
    assert len(asked) == 6 and set(asked) <= train and not any(f"{w}zz" in prompt for w in asked)
    assert len(re.findall(r"input: \w+\noutput: \w+zz", prompt)) == 3


def test_it_costs_nothing_without_intermediate_fields_or_a_reflection_call():
    stream = toy_stream(names=("suffix",))
    calls = []
    proposer = TeacherDemoProposer(lambda p: calls.append(p) or [""])
    assert proposer.propose(_pc(stream, program_for(stream))) == []  # Predict: nothing between input and output
    assert proposer.propose(_pc(stream, build_program("cot", stream), intermediate=("reasoning",),
                                charge=lambda n, kind="reflection": False)) == []
    assert calls == []


@pytest.mark.parametrize("reflection", [3, 0])
def test_a_cot_task_is_learned_from_teacher_demos_that_labels_alone_cannot_give(tmp_path, reflection):
    stream = toy_stream(names=("suffix",))
    opt = ContinualOptimizer(scripted_lm(cot_task_answer), scripted_lm(teacher_reply), seed=0, num_threads=1,
                             budget=get_budget("light", n_trials=8, train_minibatch=6, val_minibatch=5,
                                               reflection_calls_per_task=reflection))
    result = opt.fit(build_program("cot", stream), stream, run_dir=tmp_path / "run")
    demos = Store.open(tmp_path / "run" / "store").current().predictor("predict").demos
    if reflection:
        assert result.steps[0].accepted and result.R[0][0] == 1.0 > result.r0[0]
        assert demos and all(d.outputs["reasoning"].startswith(WORKED) for d in demos)
        assert result.steps[0].reflection_calls == 3  # the teacher's call is one of the step's three
    else:  # labelled demos carry no reasoning, and the task LM never succeeds on its own: nothing to learn
        assert not result.steps[0].accepted and not demos and result.steps[0].reflection_calls == 0
