"""Evaluator: results with feedback and traces, the cache, and failures as zero scores."""

from __future__ import annotations

import re
import threading
import time

import dspy
import pytest
from dspy.lm15 import Message, Response, TextPart, Usage

from ctxopt.errors import ConfigError
from ctxopt.evaluator import EvalResult, Evaluator, lm_id
from ctxopt.metrics import get_metric
from ctxopt.program import TaskProgram
from ctxopt.tasks import Task, example_id, make_example, sealed_test_split

ANTONYMS = {"hot": "cold", "big": "small", "up": "down", "fast": "slow", "early": "late", "open": "closed"}


class ScriptedEngine:
    """A tiny DSPy engine: answers by the ``input`` field; special inputs misbehave.

    ``BOOM`` raises (an LM error), ``GARBAGE`` replies with no output field (a
    parse failure), ``SLOW`` sleeps past any short timeout.
    """

    def __init__(self, answers: dict[str, str], slow_s: float = 3.0) -> None:
        self.answers = answers
        self.slow_s = slow_s
        self.calls = 0
        self.lock = threading.Lock()

    def complete(self, request):
        with self.lock:
            self.calls += 1
        text = request.messages[-1].text or ""
        m = re.search(r"\[\[ ## input ## \]\]\n(.*?)(\n|$)", text)
        value = m.group(1).strip() if m else ""
        if value == "BOOM":
            raise ConnectionError("the LM server is down")
        if value == "SLOW":
            time.sleep(self.slow_s)
        if value == "GARBAGE":
            out = "I think the answer is obvious."
        else:
            out = f"[[ ## output ## ]]\n{self.answers.get(value, 'no idea')}\n\n[[ ## completed ## ]]"
        return Response(
            id=None, model="scripted", message=Message.assistant([TextPart(out)]), finish_reason="stop",
            usage=Usage(input_tokens=10, output_tokens=3, total_tokens=13),
        )

    def close(self):
        pass


def scripted_lm(answers=ANTONYMS, **kwargs):
    engine = ScriptedEngine(answers, **kwargs)
    lm = dspy.LM("scripted/antonyms", engine=engine, cache=False, temperature=0.0, max_tokens=64)
    return lm, engine


class FakeContext:
    """The two members of LearnedContext the evaluator uses."""

    def __init__(self, instruction: str) -> None:
        self.instruction = instruction
        self.hash = "ctx-" + instruction
        self.applied: list[str | None] = []

    def apply_to(self, program, task=None):
        self.applied.append(task)
        for _, pred in program.named_predictors():
            pred.signature = pred.signature.with_instructions(self.instruction)
        return program


def make_task(inputs: list[str], *, aware: bool = True, test: list[str] | None = None, metric="exact_match") -> Task:
    def ex(word: str):
        return make_example({"input": word, "output": ANTONYMS.get(word, "?")}, ["input"], task="antonyms" if aware else None)

    examples = [ex(w) for w in inputs]
    tests = [ex(w) for w in (test or ["open"])]
    return Task.from_splits("antonyms", ("input",), "output", get_metric(metric, "output"), examples, examples, tests)


def program(aware: bool = True) -> TaskProgram:
    return TaskProgram(["task", "input"] if aware else ["input"], "output")


def test_results_carry_score_feedback_prediction_and_trace():
    lm, _ = scripted_lm({**ANTONYMS, "big": "Small."})
    task = make_task(["hot", "big", "up"], test=["early"])
    task = Task.from_splits(
        task.name, task.inputs, task.output, task.metric,
        task.train + (make_example({"input": "fast", "output": "quick"}, ["input"], task="antonyms"),),
        task.val, sealed_test_split(task),
    )
    res = Evaluator(lm, num_threads=2).evaluate(program(), FakeContext("Write the antonym."), task, task.train)
    assert [r.example_id for r in res.results] == [example_id(e) for e in task.train]  # order kept
    assert res.scores == [1.0, 1.0, 1.0, 0.0] and res.mean == 0.75 and res.failures == 0
    last = res.results[-1]
    assert last.prediction == {"output": "slow"}
    assert "expected 'quick', got 'slow'" in last.feedback
    (call,) = last.trace
    assert call["predictor"] == "predict"
    assert call["inputs"] == {"task": "antonyms", "input": "fast"} and call["outputs"] == {"output": "slow"}
    assert res.task == "antonyms" and res.context_hash == "ctx-Write the antonym."
    assert EvalResult.from_dict(res.to_dict()) == res


def test_cache_hits_skip_the_lm_and_persist_on_disk(tmp_path):
    lm, engine = scripted_lm()
    task = make_task(["hot", "big", "up", "fast"])
    ctx = FakeContext("v1")
    ev = Evaluator(lm, num_threads=2, cache_dir=tmp_path)
    first = ev.evaluate(program(), ctx, task, task.val)
    assert engine.calls == 4 and first.cache_hits == 0

    again = ev.evaluate(program(), ctx, task, task.val)
    assert engine.calls == 4 and again.cache_hits == 4 and again.scores == first.scores

    ev.evaluate(program(), FakeContext("v2"), task, task.val[:2])  # a new version: evaluated
    assert engine.calls == 6
    ev.evaluate(program(), None, task, task.val[:1])  # no context is its own key
    assert engine.calls == 7

    fresh = Evaluator(lm, cache_dir=tmp_path)  # a new process would see the same file
    assert fresh.evaluate(program(), ctx, task, task.val).cache_hits == 4 and engine.calls == 7
    assert (tmp_path / "evals.sqlite").is_file()

    other_lm, other_engine = scripted_lm()
    other_lm.kwargs["temperature"] = 0.7  # a different LM id: no stale hits
    assert lm_id(other_lm) != lm_id(lm)
    Evaluator(other_lm, cache_dir=tmp_path).evaluate(program(), ctx, task, task.val[:1])
    assert other_engine.calls == 1


def test_program_change_is_not_a_cache_hit():
    lm, engine = scripted_lm()
    task = make_task(["hot"])
    ev = Evaluator(lm)
    ev.evaluate(program(), None, task, task.val)
    ev.evaluate(TaskProgram(["task", "input"], "output", "Another instruction."), None, task, task.val)
    assert engine.calls == 2


def test_failures_become_zero_scores_and_are_counted():
    lm, engine = scripted_lm(slow_s=2.0)
    task = make_task(["hot", "BOOM", "GARBAGE", "SLOW", "up"])
    ev = Evaluator(lm, num_threads=3, timeout_s=0.4)
    t0 = time.monotonic()
    res = ev.evaluate(program(), None, task, task.val)
    assert time.monotonic() - t0 < 1.8  # the slow call was abandoned, not awaited
    by_input = dict(zip(["hot", "BOOM", "GARBAGE", "SLOW", "up"], res.results, strict=True))
    assert res.failures == 3 and res.scores == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert "the LM server is down" in by_input["BOOM"].error and "failed before it could be scored" in by_input["BOOM"].feedback
    assert "could not be parsed" in by_input["GARBAGE"].feedback and by_input["GARBAGE"].error
    assert by_input["SLOW"].error.startswith("TimeoutError") and "timed out" in by_input["SLOW"].feedback
    assert by_input["hot"].error is None

    calls = engine.calls
    retry = ev.evaluate(program(), None, task, task.val)  # failures are not cached: retried
    assert retry.cache_hits == 2 and engine.calls > calls


def test_metric_errors_become_zero_scores(tmp_path, monkeypatch):
    (tmp_path / "badmetric.py").write_text("def m(e, p):\n    raise ValueError('metric bug')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    lm, _ = scripted_lm()
    task = make_task(["hot"], metric="badmetric:m")
    res = Evaluator(lm).evaluate(program(), None, task, task.val)
    assert res.failures == 1 and res.results[0].score == 0.0
    assert "metric failed" in res.results[0].feedback and res.results[0].prediction == {"output": "cold"}


def test_task_agnostic_hides_the_task_name():
    lm, _ = scripted_lm()
    task = make_task(["hot", "big"], aware=True)  # examples carry `task`; the scenario removes it
    ctx = FakeContext("v")
    res = Evaluator(lm).evaluate(program(aware=False), ctx, task, task.val, scenario="task-agnostic")
    assert res.mean == 1.0 and ctx.applied == [None]
    assert res.results[0].trace[0]["inputs"] == {"input": "hot"}
    aware_ctx = FakeContext("v")
    Evaluator(lm).evaluate(program(), aware_ctx, make_task(["up"], aware=False), make_task(["up"], aware=False).val)
    assert aware_ctx.applied == ["antonyms"]  # task-aware adds the task name when missing


def test_unknown_scenario_is_a_config_error():
    lm, engine = scripted_lm()
    task = make_task(["hot"])
    with pytest.raises(ConfigError, match="unknown scenario 'aware'"):
        Evaluator(lm).evaluate(program(), None, task, task.val, scenario="aware")
    assert engine.calls == 0


def test_evaluate_test_is_the_door_to_the_sealed_split():
    lm, _ = scripted_lm()
    task = make_task(["hot"], test=["early", "open", "fast"])
    res = Evaluator(lm).evaluate_test(program(), None, task)
    assert [r.example_id for r in res.results] == [example_id(e) for e in sealed_test_split(task)]
    assert res.mean == 1.0


def test_many_examples_on_threads_keep_order_and_leave_the_program_untouched():
    words = list(ANTONYMS) * 3
    answers = {w: ANTONYMS[w] for w in ANTONYMS}
    lm, engine = scripted_lm(answers)
    task = make_task(words)
    prog = program()
    before = prog.predict.signature.instructions
    res = Evaluator(lm, num_threads=4).evaluate(prog, FakeContext("changed"), task, task.val)
    assert len(res.results) == len(words) and res.mean == 1.0
    assert prog.predict.signature.instructions == before and prog.predict.lm is None
    assert engine.calls <= len(words)


def test_real_learned_context_applies():
    context = pytest.importorskip("ctxopt.context")
    lm, _ = scripted_lm()
    task = make_task(["hot", "big"])
    ctx = context.LearnedContext.from_program(program())
    res = Evaluator(lm).evaluate(program(), ctx, task, task.val)
    assert res.mean == 1.0 and res.context_hash == ctx.hash
