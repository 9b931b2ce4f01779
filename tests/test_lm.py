"""The LM layer: spec parsing, usage accounting, model integrity, and the real model."""

from __future__ import annotations

import hashlib
import uuid

import dspy
import pytest

from ctxopt import lm as lm_module
from ctxopt import models
from ctxopt.errors import ConfigError, MissingDependencyError, ModelIntegrityError
from ctxopt.lm import ACCEPTED_FORMS, END_OF_ANSWER, LocalEngine, TrackedLM, get_lm, usage_of
from tests.fakes import chat_fields, scripted_lm


def test_unknown_spec_lists_accepted_forms():
    with pytest.raises(ConfigError) as err:
        get_lm("gpt4")
    assert ACCEPTED_FORMS in str(err.value)
    with pytest.raises(ConfigError, match="unknown local model 'nope'"):
        get_lm("local:nope")


def test_missing_gguf_path_is_named(tmp_path):
    with pytest.raises(ConfigError, match="missing.gguf does not exist"):
        get_lm(str(tmp_path / "missing.gguf"))


def test_litellm_string_builds_tracked_lm_without_calling():
    lm = get_lm("openai/gpt-4o-mini", api_key="sk-not-used")
    assert isinstance(lm, TrackedLM) and lm.model == "openai/gpt-4o-mini"
    assert lm.kwargs["temperature"] == 0.0
    assert "api_key" not in lm.dump_state()


def test_usage_counts_calls_tokens_and_cache_hits():
    lm = scripted_lm(lambda system, user: chat_fields(answer="hi"), cache=True)
    predict = dspy.Predict("question -> answer")
    predict.set_lm(lm)
    question = f"unique-{uuid.uuid4()}"
    assert predict(question=question).answer == "hi"
    assert predict(question=question).answer == "hi"
    snap = usage_of(lm)
    assert (snap.calls, snap.model_calls, snap.cache_hits) == (2, 1, 1)
    assert snap.prompt_tokens > 0 and snap.completion_tokens == len(chat_fields(answer="hi").split())
    assert len(lm.engine.requests) == 1  # the rerun never reached the engine


def test_program_copies_share_the_lm_and_its_counters():
    lm = scripted_lm(lambda s, u: chat_fields(answer="x"))
    predict = dspy.Predict("question -> answer")
    predict.set_lm(lm)
    copy = predict.deepcopy()
    copy(question="a")
    assert copy.lm is lm and usage_of(lm).calls == 1


def test_usage_snapshots_subtract():
    lm = scripted_lm(lambda s, u: chat_fields(answer="x"))
    before = usage_of(lm)
    lm("one")
    lm("two")
    delta = usage_of(lm) - before
    assert delta.calls == 2 and delta.model_calls == 2


def _fake_spec(tmp_path, payload: bytes, sha: str | None = None) -> models.ModelSpec:
    return models.ModelSpec(name="fake", package_prefix="ctxopt-fake-model-part", parts=1, version="0",
                            sha256=sha or hashlib.sha256(payload).hexdigest(), size=len(payload),
                            filename="fake.gguf")


def test_corrupted_model_file_is_refused(tmp_path):
    good = b"GGUF" + b"\x00" * 64
    path = tmp_path / "model.gguf"
    path.write_bytes(good)
    expected = hashlib.sha256(good).hexdigest()
    models.verify(path, expected)  # passes and writes the sidecar
    path.write_bytes(b"GGUF" + b"\x01" * 64)  # corrupt in place
    with pytest.raises(ModelIntegrityError) as err:
        models.verify(path, expected)
    message = str(err.value)
    assert str(path) in message and expected in message
    assert hashlib.sha256(path.read_bytes()).hexdigest() in message


def test_corrupted_cached_model_is_never_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXOPT_HOME", str(tmp_path))
    target = tmp_path / "models" / models.MODELS["qwen2.5-coder-0.5b"].filename
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the model")
    with pytest.raises(ModelIntegrityError, match="corrupt"):
        get_lm("local")


def test_missing_model_package_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXOPT_HOME", str(tmp_path))
    spec = _fake_spec(tmp_path, b"x")
    monkeypatch.setitem(models.MODELS, "fake", spec)
    with pytest.raises(MissingDependencyError, match="ctxopt-fake-model-part1==0 is not installed"):
        models.model_path("fake")


def test_assembly_concatenates_parts_in_order_and_verifies(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXOPT_HOME", str(tmp_path / "home"))
    parts = [b"AAA", b"BBB", b"CC"]
    paths = []
    for i, data in enumerate(parts, 1):
        p = tmp_path / f"part{i:02d}.bin"
        p.write_bytes(data)
        paths.append(p)
    payload = b"".join(parts)
    spec = models.ModelSpec(name="fake3", package_prefix="x-part", parts=3, version="0",
                            sha256=hashlib.sha256(payload).hexdigest(), size=len(payload), filename="f3.gguf")
    monkeypatch.setitem(models.MODELS, "fake3", spec)
    monkeypatch.setattr(models, "part_files", lambda s: paths)
    out = models.model_path("fake3")
    assert out.read_bytes() == payload
    # a wrong expected hash refuses and leaves no file behind
    bad = models.ModelSpec(**{**spec.__dict__, "name": "bad", "sha256": "0" * 64, "filename": "bad.gguf"})
    monkeypatch.setitem(models.MODELS, "bad", bad)
    with pytest.raises(ModelIntegrityError):
        models.model_path("bad")
    assert not (tmp_path / "home" / "models" / "bad.gguf").exists()
    assert not list((tmp_path / "home" / "models").glob(".*part"))


class _RecordingLlama:
    """Stands in for llama_cpp.Llama: records each request and answers one field, cut where a stop would cut it."""

    def __init__(self):
        self.requests = []

    def create_chat_completion(self, **kwargs):
        self.requests.append(kwargs)
        return {"choices": [{"message": {"content": "[[ ## answer ## ]]\nParis\n\n"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}}


def test_local_engine_stops_at_the_end_of_answer_marker_and_keeps_the_requests_own_stops(monkeypatch):
    llama = _RecordingLlama()
    monkeypatch.setattr(lm_module, "_load_llama", lambda *a: lm_module._LoadedModel(llama))
    lm = TrackedLM(f"local/stop-test-{uuid.uuid4()}", engine=LocalEngine("none.gguf"), temperature=0.0,
                   max_tokens=16, cache=False)
    predict = dspy.Predict("question -> answer")
    predict.set_lm(lm)
    assert predict(question="Capital of France?").answer == "Paris"
    lm("hi", stop=["Observation:"])
    assert [r["stop"] for r in llama.requests] == [[END_OF_ANSWER], ["Observation:", END_OF_ANSWER]]


@pytest.mark.real_lm
def test_real_model_writes_nothing_after_its_last_output_field(real_lm):
    """The 0.5B goes on after the marker with a made-up next input; local decoding now stops there."""
    uncached = real_lm.copy(cache=False)
    predict = dspy.Predict("input -> output")
    predict.set_lm(uncached)
    story = "Mary moved to the bathroom.\nJohn went to the hallway.\nWhere is Mary?"
    pred = predict(input=story)
    assert pred.output.strip()
    raw = uncached.history[-1]["outputs"][0]
    assert "[[ ## input ## ]]" not in raw and raw.count("[[ ## output ## ]]") == 1
    assert uncached.history[-1]["usage"]["completion_tokens"] < 64


@pytest.mark.real_lm
def test_real_model_answers_through_dspy_predict(real_lm):
    predict = dspy.Predict("question -> answer")
    predict.set_lm(real_lm)
    before = usage_of(real_lm)
    pred = predict(question="What is the capital of France? Answer with one word.")
    assert "paris" in pred.answer.lower()
    used = usage_of(real_lm) - before
    assert used.calls == 1
    # The same call again is a DSPy cache hit: no new model call.
    again = predict(question="What is the capital of France? Answer with one word.")
    assert again.answer == pred.answer
    assert (usage_of(real_lm) - before).model_calls == used.model_calls


@pytest.mark.real_lm
def test_real_model_reaches_the_engine_and_reports_tokens(real_lm):
    uncached = real_lm.copy(cache=False)
    before = usage_of(uncached)
    out = uncached("Reply with exactly the word: hello")
    assert "hello" in out[0].lower()
    used = usage_of(uncached) - before
    assert used.model_calls == 1 and used.prompt_tokens > 5 and used.completion_tokens >= 1



@pytest.mark.real_lm
def test_real_model_answers_do_not_depend_on_the_request_before(real_lm):
    """A warm or resumed run must decide like a cold one: no answer may depend on which prompt came before."""
    uncached = real_lm.copy(cache=False, max_tokens=48)
    system = "Your input fields are:\n1. `input` (str)\nYour output fields are:\n1. `output` (str)\n" * 3
    words = ["table", "apple", "river", "stone", "queen", "piano", "tiger", "ocean", "house", "grape"]

    def ask(word: str) -> str:
        return uncached(messages=[{"role": "system", "content": system}, {
            "role": "user", "content": f"Give the antonym or a synonym of the word, then explain in 30 words: {word}"}])[0]

    in_a_row = [ask(w) for w in words]  # each right after a prompt sharing its long prefix
    alone = []
    for w in words:  # each right after a prompt sharing nothing but the chat template
        uncached("Count to three.")
        alone.append(ask(w))
    assert in_a_row == alone


@pytest.mark.real_lm
@pytest.mark.parametrize("contexts,keep", [(2, 4), (3, 2)])  # (3, 2): saving a state evicts another
def test_real_model_alternating_contexts_reuse_their_own_prefixes_and_answer_as_cold(real_lm, contexts, keep):
    """Contexts taking turns restore saved KV blocks where they are kept, and every answer equals a cold one's."""
    from ctxopt.lm import loaded_llama

    uncached = real_lm.copy(cache=False, max_tokens=8)
    uncached("Say hi.")  # loads the model
    llama = loaded_llama("local")
    cache = llama.ctxopt_prefix_cache
    systems = [f"You are assistant {tag}. Answer with one word.\n" +
               "\n".join(f"- Rule {tag}{i}: if the input names item {i}, answer with its colour." for i in range(30))
               for tag in "ABC"[:contexts]]
    turns_n = 3 * contexts

    def ask(i: int) -> str:
        return uncached(messages=[{"role": "system", "content": systems[i % contexts]},
                                  {"role": "user", "content": f"What colour is item {i}?"}])[0]

    old_keep, cache.keep = cache.keep, keep
    try:
        cache.saved.clear()
        before = dict(cache.stats)
        turns = [ask(i) for i in range(turns_n)]
        restores = cache.stats["restores"] - before["restores"]
        reused = cache.stats["reused_tokens"] - before["reused_tokens"]
        cold = []
        for i in range(turns_n):
            llama.reset()
            cache.saved.clear()
            cold.append(ask(i))
    finally:
        cache.keep = old_keep
    assert turns == cold
    later = turns_n - contexts
    assert restores >= later  # every turn after each context's first found its context saved
    assert reused >= later * 256  # each of those skipped most of its ~400-token system prompt
