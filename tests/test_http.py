"""HTTP providers, tested for real: the embedded 0.5B behind llama-cpp-python's OpenAI-compatible server.

``ctxopt model-server`` starts in a subprocess on a free loopback port for this module and
stops at its end. ctxopt reaches it through ``get_lm("openai/<model>@http://…/v1")`` (litellm
spec plus ``api_base``), directly and through ``tests/fault_proxy.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from ctxopt.endpoint import RetryPolicy
from ctxopt.errors import EndpointError
from ctxopt.evaluator import Evaluator
from ctxopt.lm import get_lm
from ctxopt.program import program_for
from ctxopt.streams import load_stream
from tests.fault_proxy import FaultProxy

N_PER_TASK = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_server(request):
    """Base URL (``http://127.0.0.1:PORT``) of ``ctxopt model-server`` on the embedded 0.5B."""
    request.getfixturevalue("real_lm")  # skips (or fails under CTXOPT_REQUIRE_REAL_LM=1) without the model
    try:
        import llama_cpp.server.app  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CTXOPT_REQUIRE_REAL_LM") == "1":
            pytest.fail(f"llama-cpp-python's server is not installed: {exc}")
        pytest.skip(f"llama-cpp-python's server is not installed: {exc}")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ctxopt", "model-server", "--port", str(port)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    ready = threading.Event()
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("serving "):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(timeout=300):
        proc.kill()
        pytest.fail(f"model server did not start: {''.join(lines)[-2000:]}")
    assert f"openai/qwen2.5-coder-0.5b@http://127.0.0.1:{port}/v1" in lines[-1]
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    assert proc.wait(timeout=60) == 143, "".join(lines)[-2000:]  # SIGTERM: the CLI's documented status


@pytest.fixture(scope="module")
def stream():
    return load_stream("ii:antonyms,larger_animal", sizes=(2, N_PER_TASK, 2))


@pytest.fixture(scope="module")
def in_process(stream):
    """In-process answers and usage on every val example: the reference the HTTP path must equal."""
    lm = get_lm("local", cache=False)
    ev = Evaluator(lm, num_threads=1)
    results = {t.name: ev.evaluate(program_for(stream), None, t, t.val, scenario=stream.scenario) for t in stream}
    return results, lm.usage.snapshot()


def _answers(results):
    return {name: [(r.example_id, r.prediction, r.score) for r in res.results] for name, res in results.items()}


@pytest.mark.real_lm
def test_http_gives_the_in_process_answers_scores_and_usage_with_concurrent_requests(model_server, stream, in_process):
    reference, local_usage = in_process
    lm = get_lm(f"openai/qwen2.5-coder-0.5b@{model_server}/v1", cache=False)
    ev = Evaluator(lm, num_threads=3)  # three requests in flight; the server queues them
    results = {t.name: ev.evaluate(program_for(stream), None, t, t.val, scenario=stream.scenario) for t in stream}

    assert _answers(results) == _answers(reference)
    assert all(r.failures == 0 for r in results.values())
    used = lm.usage.snapshot()
    n = len(stream) * N_PER_TASK
    assert (used.calls, used.model_calls, used.cache_hits, used.errors, used.retries) == (n, n, 0, 0, 0)
    assert (used.prompt_tokens, used.completion_tokens) == (local_usage.prompt_tokens, local_usage.completion_tokens)
    assert used.prompt_tokens > 0 and used.seconds > 0 and local_usage.seconds > 0


@pytest.mark.real_lm
def test_faults_are_retried_never_scored_and_change_no_answer(model_server, stream, in_process):
    reference, _ = in_process
    script = ["429", "500", "drop", "timeout", "ok", "500", "drop"]
    with FaultProxy(model_server, script=script, rates={"500": 0.1, "drop": 0.1}, seed=1, hang_s=15) as proxy:
        lm = get_lm(f"openai/qwen2.5-coder-0.5b@{proxy.url}/v1", cache=False, timeout=10,
                    retry=RetryPolicy(base_s=0.05, cap_s=0.5))
        ev = Evaluator(lm, num_threads=2)
        results = {t.name: ev.evaluate(program_for(stream), None, t, t.val, scenario=stream.scenario) for t in stream}
    assert _answers(results) == _answers(reference)
    assert all(r.failures == 0 for r in results.values())
    used = lm.usage.snapshot()
    assert proxy.counts["timeout"] >= 1 and proxy.counts["429"] >= 1 and proxy.counts["drop"] >= 2
    assert used.retries >= proxy.injected() >= len(script) - 1
    assert used.calls == len(stream) * N_PER_TASK and used.errors == 0


@pytest.mark.real_lm
def test_a_retried_call_is_cached_as_its_answer(model_server, tmp_path):
    import dspy

    dspy.configure_cache(disk_cache_dir=str(tmp_path / "dspy_cache"))
    with FaultProxy(model_server, script=["500", "drop"]) as proxy:
        lm = get_lm(f"openai/qwen2.5-coder-0.5b@{proxy.url}/v1", retry=RetryPolicy(base_s=0.05, cap_s=0.1))
        prompt = f"Reply with the word blue. ({time.time_ns()})"
        first = lm(prompt)
        again = lm.usage.snapshot()
        second = lm(prompt)
    assert second == first
    assert (again.retries, again.model_calls) == (2, 1)
    assert lm.usage.snapshot().cache_hits == 1 and proxy.counts["forwarded"] == 1


def _toy_task():
    return load_stream("ii:antonyms", sizes=(2, 3, 2))


def test_a_dead_endpoint_stops_the_evaluation_with_one_line_after_eight_failures():
    stream = _toy_task()
    task = stream["antonyms"]
    with FaultProxy("http://127.0.0.1:9", rates={"500": 1.0}) as proxy:
        spec = f"openai/some-model@{proxy.url}/v1"
        lm = get_lm(spec, cache=False, retry=RetryPolicy(base_s=0.001, cap_s=0.002))
        ev = Evaluator(lm, num_threads=1)
        with pytest.raises(EndpointError) as err:
            ev.evaluate(program_for(stream), None, task, task.val, scenario=stream.scenario)
        with pytest.raises(EndpointError):  # the dead endpoint is not asked again
            lm("hello")
    message = str(err.value)
    assert "\n" not in message and spec in message and "LMServerError" in message
    assert "8 failed attempts in a row" in message and f"is {proxy.url}/v1 up" in message
    assert proxy.counts == {"500": 8}


def test_bad_credentials_stop_at_the_first_answer_with_a_hint():
    stream = _toy_task()
    task = stream["antonyms"]
    with FaultProxy("http://127.0.0.1:9", script=["401"]) as proxy:
        lm = get_lm(f"openai/some-model@{proxy.url}/v1", cache=False)
        with pytest.raises(EndpointError) as err:
            Evaluator(lm, num_threads=1).evaluate(program_for(stream), None, task, task.val, scenario=stream.scenario)
    assert "LMAuthError" in str(err.value) and "OPENAI_API_KEY" in str(err.value)
    assert proxy.counts == {"401": 1}


def test_compare_against_an_lm_without_its_key_exits_2_naming_the_lm_and_the_key(monkeypatch, capsys, tmp_path):
    import ctxopt.cli as cli

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    rc = cli.main(["compare", "--stream", "ii:antonyms", "--sizes", "4,3,5", "--methods", "static",
                   "--task-lm", "openai/gpt-4o-mini", "--run-dir", str(tmp_path / "run")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ctxopt: error:")]
    assert rc == 2 and len(err) == 1
    assert "openai/gpt-4o-mini" in err[0] and "OPENAI_API_KEY" in err[0] and "LMNotConfiguredError" in err[0]
