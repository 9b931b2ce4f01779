"""The tool-use stream: its packaged data, tools, metric feedback and stream loading."""

from __future__ import annotations

import dspy
import pytest

from ctxopt.errors import ConfigError
from ctxopt.program import program_for
from ctxopt.streams import load_stream
from ctxopt.tools import TOOL_TASKS, ToolMetric, agent_tools, calculator, data_dir, generate, lookup, tool_calls, towns


def test_packaged_data_is_what_the_generator_writes(tmp_path):
    generate(tmp_path)
    packaged = sorted(p.name for p in data_dir().iterdir() if p.name != "LICENSE")
    assert packaged == sorted(p.name for p in tmp_path.iterdir())
    for name in packaged:
        assert (data_dir() / name).read_text() == (tmp_path / name).read_text(), name
    assert (data_dir() / "LICENSE").read_text().startswith("MIT License")


def test_splits_of_a_task_share_no_question():
    from ctxopt.tools import _rows

    for task in TOOL_TASKS:
        parts = [{r["question"] for r in _rows(task, s)} for s in ("train", "val", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]), task


def test_calculator_evaluates_arithmetic_and_explains_what_it_cannot():
    assert calculator("37 * 48 + 125") == "1901"
    assert calculator("8,652 / 28") == "309"
    assert calculator("35% * 4700") == "1645"
    assert calculator("7 / 4") == "1.75"
    assert calculator("1 / 0") == "error: division by zero"
    assert calculator("__import__('os')").startswith("error: cannot evaluate")
    assert calculator("2 ** 100").startswith("error")


def test_lookup_reads_the_fact_table_case_blind_and_names_valid_attributes():
    town, facts = next(iter(towns().items()))
    assert lookup(town.upper(), "Population") == str(facts["population"])
    assert lookup(town, "mayor") == facts["mayor"]
    assert "use one of population, founded, mayor, region" in lookup(town, "size")
    assert lookup("Atlantis", "mayor").startswith("error: no town named 'Atlantis'")


def test_agent_tools_answer_a_bad_call_with_one_short_line_not_a_traceback():
    calc, look = agent_tools()
    assert (calc.name, look.name) == ("calculator", "lookup") and calc(expression="6 * 7") == "42"
    schema_copied = calc(expression={"type": "string"})  # what the 0.5B writes into next_tool_args
    missing = look(town="Atlantis")
    for error in (schema_copied, missing):
        assert error.startswith("error: ") and "\n" not in error and "Traceback" not in error
    assert schema_copied.endswith("arguments are expression") and missing.endswith("arguments are town, attribute")


def _pred(answer, *calls):
    traj = {}
    for i, (name, args, obs) in enumerate([*calls, ("finish", {}, "Completed.")]):
        traj.update({f"thought_{i}": "t", f"tool_name_{i}": name, f"tool_args_{i}": args, f"observation_{i}": obs})
    return dspy.Prediction(answer=answer, trajectory=traj)


def test_metric_checks_the_answer_and_names_tool_misuse():
    metric = ToolMetric()
    ex = dspy.Example(question="How many more people live in A than in B?", answer="16739",
                      _tools=["lookup", "calculator"]).with_inputs("question")
    assert metric(ex, _pred("16,739 people", ("lookup", {}, "1"))).score == 1.0
    none = metric(ex, _pred("12"))
    assert none.score == 0.0 and "no tool was called (next_tool_name was 'finish' at once)" in none.feedback
    assert "lookup and calculator" in none.feedback
    bad = metric(ex, _pred("12", ("calculator", {"expression": "a-b"}, calculator("a-b"))))
    assert "the lookup tool was never called" in bad.feedback and "bad next_tool_args for calculator" in bad.feedback
    unused = metric(ex, _pred("0", ("lookup", {}, "9"), ("calculator", {"expression": "x"}, "16739")))
    assert "a tool returned the right value, but the final answer did not use it" in unused.feedback
    assert tool_calls(_pred("0", ("lookup", {"town": "A"}, "9"))) == [("lookup", {"town": "A"}, "9")]
    name = dspy.Example(question="Which town was founded earlier, A or B?", answer="Selwick",
                        _tools=["lookup"]).with_inputs("question")
    assert metric(name, _pred("Selwick.")).score == 1.0
    assert metric(name, _pred("Selwick or Brunby, it is hard to tell which one was earlier")).score == 0.0


def test_tools_stream_loads_task_agnostic_with_a_react_program_and_revisits_draw_fresh_examples():
    stream = load_stream("tools-8", sizes=(5, 4, 6))
    assert stream.scenario == "task-agnostic" and stream.names == tuple(TOOL_TASKS)
    assert [len(t.train) for t in stream] == [5] * 8 and stream.tasks[0].test_size == 6
    assert type(program_for(stream)).__name__ == "ReAct"
    twice = load_stream("tools:town_mayor,town_mayor", sizes=(5, 4, 6))
    assert twice.names == ("town_mayor", "town_mayor@2")
    assert not {e.question for e in twice[0].train} & {e.question for e in twice[1].train}
    with pytest.raises(ConfigError, match="unknown tools task 'bogus'"):
        load_stream("tools:bogus")
