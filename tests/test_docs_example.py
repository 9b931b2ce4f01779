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
