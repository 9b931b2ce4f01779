"""docs/examples/custom_seams.py runs: a custom proposer, gate and selector change what the optimizer does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ctxopt.budget import get_budget
from ctxopt.program import program_for
from ctxopt.store import Store
from tests.toy import reflection_lm, task_lm, toy_stream

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "custom_seams.py"


def test_the_architecture_example_plugs_in_a_proposer_a_gate_and_a_selector(tmp_path):
    spec = importlib.util.spec_from_file_location("custom_seams", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert len(EXAMPLE.read_text().split("\n\nif __name__")[0].splitlines()) <= 40
    stream = toy_stream(names=("suffix", "reverse"))
    opt = example.build(task_lm(), reflection_lm(), budget=get_budget("light", n_trials=4), seed=0, num_threads=2)
    result = opt.fit(program_for(stream), stream, run_dir=tmp_path / "run")
    # The custom proposer was consulted and charged under its name; the custom gate wrote the reasons.
    assert all(s.extra["charged_by_source"].get("reflection:proposer:ShortAnswers") == 1 for s in result.steps)
    assert all(s.extra["reason"].startswith("gain ") for s in result.steps if s.accepted)
    assert [result.R[i][i] for i in range(2)] == [1.0, 1.0]
    log = Store.open(tmp_path / "run" / "store").log()
    assert any("worst replay" in v.message for v in log)


OWN_PROGRAM = EXAMPLE.parent / "own_program.py"


def test_the_readme_example_teaches_a_users_own_program_a_yaml_stream(tmp_path):
    """The README's library example: a plain dspy.Module (forward(question) only) on a task-aware YAML stream."""
    import json
    import re

    from tests.fakes import chat_fields, scripted_lm

    data = OWN_PROGRAM.parent / "qa_stream"
    truth = {json.loads(line)["question"]: json.loads(line)["answer"]
             for f in data.glob("*.jsonl") for line in f.read_text().splitlines()}
    rules = {"sum": "Add the two numbers.", "larger_animal": "Name the larger of the two animals."}

    def answer(system: str, user: str) -> str:  # right only where the task's rule is in the prompt
        question = user.rsplit("[[ ## question ## ]]\n", 1)[-1].split("\n\n")[0].strip()  # the last: not a demo
        task = "sum" if " plus " in question else "larger_animal"
        return chat_fields(answer=truth[question] if rules[task] in system else "I do not know")

    def reflect(system: str, user: str) -> str:
        task = re.search(r'on the task "([^"]+)"', user).group(1)
        return f"ADD: {rules[task]}"

    spec = importlib.util.spec_from_file_location("own_program", OWN_PROGRAM)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(str(tmp_path / "run"), scripted_lm(answer, name="scripted/qa"),
                          scripted_lm(reflect, name="scripted/reflect"))
    assert result.tasks == ["larger_animal", "sum"] and result.r0 == [0.0, 0.0]
    assert [result.R[i][i] for i in range(2)] == [1.0, 1.0]  # it learns each task ...
    assert result.R[1] == [1.0, 1.0] and all(s.accepted for s in result.steps)  # ... and keeps the first
    assert result.steps[0].task_calls > 0
