"""Data-grounded instruction proposals: parsing, prompt contents, where they land, and learning from them."""

from __future__ import annotations

import re

import pytest

from ctxopt.baselines import get_method
from ctxopt.budget import get_budget
from ctxopt.context import GLOBAL, LearnedContext
from ctxopt.edits import AddItem, RewriteInstruction
from ctxopt.grounding import TIPS, GroundedInstructionProposer, parse_grounded, template_instruction
from ctxopt.optimizer import ContinualOptimizer
from ctxopt.program import program_for
from ctxopt.proposer import ProposalContext
from ctxopt.store import Store
from tests.fakes import scripted_lm
from tests.toy import RULES, task_lm, toy_stream

SUFFIX_RULE = RULES["suffix"][0]


def _grounded_reply(system: str, user: str) -> str:
    """Reads the examples in a grounded prompt; answers reflection on failures with nothing useful."""
    if "SUMMARY:" not in user:
        return "I am not sure what went wrong."
    if re.search(r"output: \w+zz\b", user):
        return ("**SUMMARY:** each output is the input word with zz appended\n"
                f"INSTRUCTION 1: {SUFFIX_RULE}\n"
                "- INSTRUCTION 2 (describe): The input is a word; write it again.\n"
                f"INSTRUCTION 3: {SUFFIX_RULE}\n"  # a repeat is one proposal
                "INSTRUCTION 4: ok")  # too short to be an instruction
    return "SUMMARY: words\nINSTRUCTION 1: Write the input word as it is."


def _pc(stream, scope, **kw):
    program = program_for(stream)
    task = stream.tasks[0]
    return ProposalContext(context=LearnedContext.from_program(program), task=task.name, scope=scope,
                           predictor="predict", inputs=("input",), output="output", observations=(),
                           train=tuple(task.train), seed=3, **kw)


def test_replies_are_parsed_tolerantly():
    summary, instructions = parse_grounded(_grounded_reply("", "SUMMARY: output: applezz"))
    assert summary == "each output is the input word with zz appended"
    assert instructions == [SUFFIX_RULE, "The input is a word; write it again."]
    assert parse_grounded("nothing here") == ("", [])


def test_the_prompt_shows_the_signature_train_labels_and_one_form_per_tip():
    stream = toy_stream()
    prompt = GroundedInstructionProposer(lm=None).prompt(_pc(stream, "suffix"))
    assert "The step reads: input" in prompt and "The step writes: output" in prompt
    shown = re.findall(r"input: (\w+)\noutput: (\w+)", prompt)
    assert len(shown) == 8 and all(out == word + "zz" for word, out in shown)
    train_inputs = {ex.input for ex in stream.tasks[0].train}
    assert {word for word, _ in shown} <= train_inputs  # train only: no val or test example is shown
    assert all(TIPS[t] in prompt for t in TIPS) and f"INSTRUCTION {len(TIPS)}:" in prompt


@pytest.mark.parametrize("scope", ["suffix", GLOBAL])
def test_instructions_are_alternatives_that_land_as_the_scope_allows(scope):
    stream = toy_stream("task-aware" if scope != GLOBAL else "task-agnostic")
    lm = scripted_lm(_grounded_reply)
    proposals = GroundedInstructionProposer(lambda prompt: [lm(prompt)[0]]).propose(_pc(stream, scope))
    assert [p.name for p in proposals] == ["grounded0", "grounded1"]
    assert {p.group for p in proposals} == {"instruction:predict"}  # the search picks at most one
    edit = proposals[0].edits[0]
    if scope == GLOBAL:  # one memory: a rewrite (the optimizer turns it into a keyed strategy item)
        assert isinstance(edit, RewriteInstruction) and edit.text == SUFFIX_RULE
    else:  # task-aware: the task's own strategy, never the shared instruction
        assert isinstance(edit, AddItem) and (edit.kind, edit.scope, edit.text) == ("strategy", "suffix", SUFFIX_RULE)
    assert "zz appended" in proposals[0].rationale


def test_with_reflection_turned_off_it_still_proposes_from_the_labels_alone():
    calls = []
    proposer = GroundedInstructionProposer(lambda prompt: calls.append(prompt) or [""], charge=lambda n: False)
    stream = toy_stream()
    proposals = proposer.propose(_pc(stream, "suffix"))
    assert calls == [] and len(proposals) == 1
    assert proposals[0].edits[0].text == template_instruction(_pc(stream, "suffix"))
    want = "Read `input` and give the `output` as a single word, with no explanation."
    assert template_instruction(_pc(stream, "suffix")) == want
    assert proposer.propose(_pc(stream, "suffix", output_stage=False)) == []  # an earlier stage has no labels


@pytest.mark.parametrize("grounded", [True, False])
def test_a_task_is_learned_from_a_grounded_instruction_that_reflection_never_wrote(tmp_path, grounded):
    stream = toy_stream(names=("suffix",))
    opt = ContinualOptimizer(task_lm(), scripted_lm(_grounded_reply), seed=0, num_threads=1, grounded=grounded,
                             budget=get_budget("light", n_trials=8, train_minibatch=6, val_minibatch=5))
    result = opt.fit(program_for(stream), stream, run_dir=tmp_path / "run")
    strategies = [it.text for it in Store.open(tmp_path / "run" / "store").current().items("predict")]
    if grounded:
        assert result.steps[0].accepted and result.R[0][0] == 1.0 > result.r0[0]
        assert strategies == [SUFFIX_RULE]
        assert result.steps[0].reflection_calls == 3  # the grounded call is one of the step's three
    else:
        assert not result.steps[0].accepted and strategies == []


def test_the_compare_method_is_named_for_its_options():
    assert get_method("ctxopt-grounded").grounded and get_method("ctxopt-grounded").name == "ctxopt-grounded"
    m = get_method("ctxopt-output-grounded")
    assert (m.name, m.stages, m.grounded) == ("ctxopt-output-grounded", "output", True)
    assert not get_method("ctxopt").grounded
