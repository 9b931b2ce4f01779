"""One real-model evaluation: a task of ii-8 on the embedded 0.5B model.

Skips (with the reason) where llama_cpp or the model packages are missing,
unless CTXOPT_REQUIRE_REAL_LM=1 (see tests/conftest.py).
"""

from __future__ import annotations

import pytest

pytest.importorskip("ctxopt.lm", reason="ctxopt.lm (the LM layer) is not available")

from ctxopt.evaluator import Evaluator  # noqa: E402
from ctxopt.program import program_for  # noqa: E402
from ctxopt.streams import load_stream  # noqa: E402
from ctxopt.tasks import example_id, sealed_test_split  # noqa: E402

N_TEST = 6


@pytest.mark.real_lm
def test_static_program_on_one_ii8_task(real_lm, tmp_path):
    stream = load_stream("ii-8", sizes=(2, 2, N_TEST))
    task = stream["first_word_letter"]
    evaluator = Evaluator(real_lm, num_threads=2, cache_dir=tmp_path, timeout_s=300)
    before = real_lm.usage.snapshot()

    res = evaluator.evaluate_test(program_for(stream), None, task, scenario=stream.scenario)

    assert [r.example_id for r in res.results] == [example_id(e) for e in sealed_test_split(task)]
    assert res.failures == 0, [r.error for r in res.results if r.error]
    for r in res.results:
        assert isinstance(r.prediction.get("output"), str) and r.feedback
        assert r.trace and r.trace[0]["predictor"] == "predict"
        assert r.trace[0]["inputs"]["task"] == "first_word_letter"
    examples = {example_id(e): e for e in sealed_test_split(task)}
    for r in res.results:  # each score is the task metric applied to the real prediction
        assert r.score == task.metric(examples[r.example_id], r.prediction).score
    # The static 0.5B model gets about half of these right; zero means the prompt or parsing broke.
    assert res.mean > 0.0, [(r.prediction, r.feedback) for r in res.results]
    used = real_lm.usage.snapshot() - before
    assert used.calls >= N_TEST  # answered by the model or by DSPy's request cache

    again = evaluator.evaluate_test(program_for(stream), None, task, scenario=stream.scenario)
    assert again.cache_hits == N_TEST and again.scores == res.scores
    assert (real_lm.usage.snapshot() - before).calls == used.calls  # no new LM calls
