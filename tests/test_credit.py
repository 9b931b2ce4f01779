"""Credit to stages: blame, the order reflection calls are dealt in, and multi-stage learning end to end."""

from __future__ import annotations

import json
import re

import dspy
import pytest

from ctxopt.budget import get_budget
from ctxopt.credit import blamed_stage, choose_stages
from ctxopt.errors import ConfigError
from ctxopt.metrics import get_metric
from ctxopt.optimizer import ContinualOptimizer
from ctxopt.program import SelectThenAnswer, build_program
from ctxopt.proposer import Observation
from ctxopt.store import Store
from ctxopt.tasks import Task, TaskStream, make_example
from ctxopt.tools import calculator, tools_stream
from tests.fakes import chat_fields, scripted_lm

STAGES, OUT = ("select", "answer"), {"select": ("facts",), "answer": ("output",)}


def _obs(feedback="expected 'kitchen'", given="", score=0.0):
    ex = dspy.Example(input="story", output="kitchen").with_inputs("input")
    trace = [{"predictor": "select", "inputs": {"input": "story"}, "outputs": {"facts": given}},
             {"predictor": "answer", "inputs": {"facts": given, "question": "q"}, "outputs": {"output": "x"}}]
    return Observation(ex, score, feedback, {"output": "x"}, trace)


def test_blame_goes_to_the_stage_the_feedback_names_else_to_where_the_evidence_stopped():
    # The answer stage was given the answer and still missed it: its fault.
    assert blamed_stage(_obs(given="Mary went to the kitchen."), STAGES, "answer", OUT) == "answer"
    # The answer never reached the answer stage: the selector's fault.
    assert blamed_stage(_obs(given="John went to the garden."), STAGES, "answer", OUT) == "select"
    # A metric that names a stage's output field wins over the evidence test.
    assert blamed_stage(_obs("the facts missed Mary's line", given="kitchen"), STAGES, "answer", OUT) == "select"
    # A one-stage trace, or no trace: the output stage.
    lone = Observation(_obs().example, 0.0, "expected 'kitchen'", {}, [])
    assert blamed_stage(lone, STAGES, "answer", OUT) == "answer"


def test_reflection_calls_are_dealt_by_blame_and_ties_go_round_the_stages():
    upstream = [_obs(given="nothing")] * 3 + [_obs(given="kitchen")]
    c = choose_stages(upstream, STAGES, "answer", OUT, step=2)
    assert c.order == ("select", "answer") and c.blame == {"select": 3, "answer": 1}
    assert c.samples(3) == {"select": 2, "answer": 1} and c.samples(1) == {"select": 1}
    assert c.demos == ("select", "answer")
    tie = [_obs(given="nothing"), _obs(given="kitchen")]
    assert choose_stages(tie, STAGES, "answer", OUT, step=1).order == ("select", "answer")
    assert choose_stages(tie, STAGES, "answer", OUT, step=2).order == ("answer", "select")
    assert choose_stages(upstream, STAGES, "answer", OUT, step=2, policy="rotate").order == ("answer", "select")
    only = choose_stages(upstream, STAGES, "answer", OUT, step=2, policy="output")
    assert only.order == ("answer",) and only.samples(3) == {"answer": 3} and only.demos == ("answer",)
    with pytest.raises(ConfigError, match="unknown stage policy 'best'; use one of credit, rotate, output"):
        choose_stages(upstream, STAGES, "answer", OUT, step=1, policy="best")


# --------------------------------------------------------------------------- two stages, scripted

SELECT_RULE = "Copy every line that mentions the person asked about."
ANSWER_RULE = "Answer with the place only."
PEOPLE, PLACES = ("Mary", "John", "Sandra", "Daniel"), ("kitchen", "garden", "office", "hallway", "bedroom")


def _field(text: str, name: str) -> str:
    m = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?=\n\n\[\[ ## |\Z)", text, re.S)
    return m.group(1).strip() if m else ""


def _stage_lm():
    """select copies the asked person's lines only once its rule is in its prompt; answer reads the facts."""

    def respond(system: str, user: str) -> str:
        if "`facts`" in system.split("Your output fields are", 1)[-1].split("All interactions", 1)[0]:
            story = _field(user, "input")
            lines, question = story.splitlines()[:-1], story.splitlines()[-1]
            who = next((p for p in PEOPLE if p in question), "")
            keep = [ln for ln in lines if who in ln] if SELECT_RULE in system else lines[:1]
            return chat_fields(facts="\n".join(keep) or "none")
        facts, question = _field(user, "facts"), _field(user, "question")
        who = next((p for p in PEOPLE if p in question), "")
        places = [pl for ln in facts.splitlines() if who in ln for pl in PLACES if pl in ln]
        return chat_fields(output=places[-1] if places else "unknown")

    return scripted_lm(respond, name="scripted/stages")


def _reflector():
    def respond(system: str, user: str) -> str:
        return f"ADD: {SELECT_RULE}" if "stage, `select`" in user else f"ADD: {ANSWER_RULE}"

    return scripted_lm(respond, name="scripted/reflect-stages")


def _story_stream() -> TaskStream:
    rows = []
    for i in range(30):
        who, other = PEOPLE[i % 4], PEOPLE[(i + 1) % 4]
        place, decoy = PLACES[i % 5], PLACES[(i + 2) % 5]
        story = f"{other} went to the {decoy}.\n{who} went to the {place}.\nQuestion: Where is {who}?"
        rows.append(make_example({"input": story, "output": place}, ["input"]))
    task = Task.from_splits("where", ("input",), "output", get_metric("exact_match", "output"),
                            rows[:12], rows[12:22], rows[22:30])
    return TaskStream("stories", "task-agnostic", (task,))


@pytest.mark.parametrize("policy", ["credit", "output"])
def test_credit_teaches_the_selector_what_output_only_learning_cannot(tmp_path, policy):
    stream = _story_stream()
    events = []
    opt = ContinualOptimizer(_stage_lm(), _reflector(), seed=0, num_threads=1, stages=policy,
                             budget=get_budget("light", n_trials=6, train_minibatch=8, val_minibatch=8),
                             callbacks=[events.append])
    result = opt.fit(SelectThenAnswer(("input",), "output"), stream, run_dir=tmp_path / policy)
    ctx = Store.open(tmp_path / policy / "store").current()
    select_rules = [it.text for it in ctx.items("select")]
    chosen = next(e.data for e in events if e.kind == "stages")
    if policy == "credit":
        assert result.steps[0].accepted and result.R[0][0] == 1.0 > result.r0[0]
        assert select_rules == [SELECT_RULE]
        assert chosen["order"][0] == "select" and chosen["blame"]["select"] > 0
        assert result.steps[0].extra["stage_order"] == chosen["order"]  # the step record keeps the blame
        assert result.steps[0].extra["stage_blame"] == chosen["blame"]
        # 3 reflection calls, 1 kept for consolidation: the other 2 go one to each stage, not both to select
        proposed = str(next(e.data for e in events if e.kind == "propose"))
        assert SELECT_RULE in proposed and ANSWER_RULE in proposed
    else:  # only the answer stage is edited, and nothing it is told can bring back a line it never sees
        assert select_rules == [] and chosen["order"] == ["answer"]
        assert result.R[0][0] == result.r0[0] < 1.0


def test_two_stage_program_is_built_by_name_and_rejects_bad_fields():
    from ctxopt.streams import load_stream

    p = build_program("two-stage", load_stream("babi:1", sizes=(1, 1, 1), scenario="task-agnostic"))
    assert [n for n, _ in p.named_predictors()] == ["select", "answer"]
    assert list(p.answer.signature.input_fields) == ["facts", "question"]
    with pytest.raises(ConfigError, match="needs one data input field"):
        SelectThenAnswer(("a", "b"), "output")
    with pytest.raises(ConfigError, match="use builtin, predict, cot, two-stage, react"):
        build_program("nonsense", load_stream("babi:1", sizes=(1, 1, 1)))


# --------------------------------------------------------------------------- ReAct with tools, scripted

TOOL_RULE = "Call the calculator tool with the arithmetic of the question before you finish."


def _react_lm():
    """react calls the calculator only once taught to; extract answers with the last observation."""

    def respond(system: str, user: str) -> str:
        if "next_tool_name" in system:
            if TOOL_RULE in system and "observation_0" not in user:
                nums = re.findall(r"\d+", _field(user, "question"))
                return chat_fields(next_thought="compute", next_tool_name="calculator",
                                   next_tool_args=json.dumps({"expression": f"{nums[0]} / {nums[-1]}"}))
            return chat_fields(next_thought="done", next_tool_name="finish", next_tool_args="{}")
        obs = [o for o in re.findall(r"\[\[ ## observation_\d+ ## \]\]\n(.*?)(?=\n\n|\Z)", user, re.S)
               if o.strip() != "Completed."]
        return chat_fields(reasoning="from the tool", answer=obs[-1].strip() if obs else "0")

    return scripted_lm(respond, name="scripted/react")


def _tool_reflector():
    def respond(system: str, user: str) -> str:
        return f"ADD: {TOOL_RULE}" if "stage, `react`" in user else "ADD: Answer with the number only."

    return scripted_lm(respond, name="scripted/reflect-react")


def test_react_agent_learns_to_call_its_tool_from_the_metrics_tool_feedback(tmp_path):
    stream = tools_stream("tools-1", ("split_bill",), seed=0, sizes=(10, 8, 8), scenario="task-agnostic")
    program = build_program("builtin", stream)
    assert [n for n, _ in program.named_predictors()] == ["react", "extract.predict"]
    events = []
    opt = ContinualOptimizer(_react_lm(), _tool_reflector(), seed=0, num_threads=1, callbacks=[events.append],
                             budget=get_budget("light", n_trials=6, train_minibatch=6, val_minibatch=6))
    result = opt.fit(program, stream, run_dir=tmp_path / "run")
    assert result.r0[0] == 0.0 and result.R[0][0] == 1.0
    chosen = next(e.data for e in events if e.kind == "stages")
    assert chosen["order"][0] == "react"  # the feedback named next_tool_name
    ctx = Store.open(tmp_path / "run" / "store").current()
    assert TOOL_RULE in [it.text for it in ctx.items("react")]
    # ReAct's long instruction (its tool list) is never rewritten; rules go around it.
    assert "calculator" in ctx.predictor("react").instruction and calculator("8652 / 28") == "309"


def test_a_multi_stage_store_shows_and_exports_every_predictor(tmp_path, capsys):
    from ctxopt.cli import main

    opt = ContinualOptimizer(_stage_lm(), _reflector(), seed=0, num_threads=1,
                             budget=get_budget("light", n_trials=6, train_minibatch=8, val_minibatch=8))
    opt.fit(SelectThenAnswer(("input",), "output"), _story_stream(), run_dir=tmp_path / "run")
    store = str(tmp_path / "run" / "store")
    assert main(["show", "--store", store]) == 0
    shown = capsys.readouterr().out
    assert "== select  (1 items" in shown and "== answer  (1 items" in shown
    assert SELECT_RULE in shown and ANSWER_RULE in shown
    assert shown.index("== select") < shown.index("== answer")  # program order, not by name
    assert main(["export", "--store", store, "--dspy", str(tmp_path / "state.json")]) == 0
    fresh = SelectThenAnswer(("input",), "output")
    fresh.load(str(tmp_path / "state.json"))
    assert SELECT_RULE in fresh.select.signature.instructions and ANSWER_RULE in fresh.answer.signature.instructions
    assert SELECT_RULE not in fresh.answer.signature.instructions


def test_stage_reflection_drops_rules_about_one_examples_names():
    from ctxopt.context import LearnedContext
    from ctxopt.proposer import ProposalContext, ReflectionProposer

    lm = scripted_lm(lambda system, user: "ADD: When asked where Mary is, copy the lines about Mary.\n"
                                          f"ADD: {SELECT_RULE}")
    stream = _story_stream()
    program = SelectThenAnswer(("input",), "output")
    ex = stream.tasks[0].train[0]
    fail = Observation(ex, 0.0, "expected 'x'", {"output": ""}, [])
    pc = ProposalContext(LearnedContext.from_program(program), "where", "global", "select", ("input",), "output",
                         (fail,), tuple(stream.tasks[0].train), output_stage=False)
    texts = [p.edits[0].text for p in ReflectionProposer(lm, samples=1).propose(pc)]
    assert texts == [SELECT_RULE]  # the story names Mary: that rule is about one case; the general rule stays
