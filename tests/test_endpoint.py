"""RetryPolicy and classify (ctxopt.endpoint) with scripted failures: no network, no model."""

from __future__ import annotations

import random

import pytest
from dspy.utils.exceptions import (
    LMAuthError,
    LMNotConfiguredError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
    LMUnsupportedModelError,
)

from ctxopt.endpoint import Health, RetryPolicy, classify, fatal_in
from ctxopt.errors import EndpointError


def _script(*outcomes):
    """A callable that raises or returns each outcome in turn, and records how often it ran."""
    calls = []

    def fn():
        calls.append(1)
        out = outcomes[len(calls) - 1]
        if isinstance(out, BaseException):
            raise out
        return out

    return fn, calls


@pytest.mark.parametrize("exc, kind", [
    (LMRateLimitError("429"), "transient"), (LMServerError("500"), "transient"),
    (LMTimeoutError("slow"), "transient"), (LMTransportError("reset"), "transient"),
    (ConnectionResetError("reset"), "transient"),
    (LMAuthError("bad key"), "persistent"), (LMNotConfiguredError("no key"), "persistent"),
    (LMUnsupportedModelError("no such model"), "persistent"),
    (ValueError("unparseable"), "program"),
])
def test_classify(exc, kind):
    assert classify(exc) == kind


def test_transient_failures_are_retried_with_jittered_backoff_then_succeed():
    slept = []
    fn, calls = _script(LMServerError("500"), LMTransportError("reset"), "answer")
    health, retried = Health(), []
    out = RetryPolicy(base_s=1.0, cap_s=8.0).call(fn, spec="openai/m", health=health, on_retry=retried.append,
                                                   sleep=slept.append, rng=random.Random(0))
    assert out == "answer" and len(calls) == 3 and len(retried) == 2
    assert 0 <= slept[0] <= 1.0 and 0 <= slept[1] <= 2.0  # full jitter under 1 s, then 2 s
    assert health.failures == 0  # a success resets the run of failures


def test_the_providers_retry_after_is_honoured_up_to_the_cap():
    slept = []
    exc = LMRateLimitError("429")
    exc.retry_after = 30.0
    fn, _ = _script(exc, "ok")
    RetryPolicy(cap_s=4.0).call(fn, spec="openai/m", health=Health(), sleep=slept.append)
    assert slept == [4.0]


def test_program_errors_pass_through_unchanged_and_are_not_retried():
    err = ValueError("cannot parse")
    fn, calls = _script(err)
    with pytest.raises(ValueError) as caught:
        RetryPolicy().call(fn, spec="openai/m", health=Health(), sleep=lambda s: None)
    assert caught.value is err and len(calls) == 1


def test_persistent_errors_stop_at_once_with_one_line_naming_the_lm_and_the_key():
    fn, calls = _script(LMNotConfiguredError("no API key found for provider 'openai'. Set OPENAI_API_KEY. More."))
    with pytest.raises(EndpointError) as caught:
        RetryPolicy().call(fn, spec="openai/gpt-4o-mini", health=Health(), sleep=lambda s: None)
    text = str(caught.value)
    assert len(calls) == 1 and "\n" not in text
    assert text.startswith("LM openai/gpt-4o-mini: LMNotConfiguredError (no API key found for provider 'openai')")
    assert "set OPENAI_API_KEY" in text
    assert fatal_in(RuntimeError("wrapped")) is None
    try:
        raise RuntimeError("wrapper") from caught.value
    except RuntimeError as wrapped:
        assert fatal_in(wrapped) is caught.value


def test_a_call_gives_up_after_its_attempts_or_its_deadline():
    fn, calls = _script(*[LMServerError("500")] * 10)
    with pytest.raises(EndpointError, match="8 failed attempts in a row"):
        RetryPolicy().call(fn, spec="openai/m", health=Health(), sleep=lambda s: None)
    assert len(calls) == 8
    errors = [LMServerError("500") for _ in range(4)]
    for e in errors:
        e.retry_after = 20.0  # each wait is 20 s: a third attempt would start after the 30 s deadline
    fn, calls = _script(*errors)
    with pytest.raises(EndpointError, match="still failing after 2 attempts"):
        RetryPolicy(deadline_s=30.0, cap_s=20.0).call(fn, spec="openai/m", health=Health(), sleep=lambda s: None)
    assert len(calls) == 2


def test_failures_in_a_row_across_calls_mean_the_endpoint_is_down():
    health = Health()
    policy = RetryPolicy(attempts=3, down_after=5)
    fn, _ = _script(LMServerError("1"), LMServerError("2"), "ok")
    assert policy.call(fn, spec="openai/m", health=health, sleep=lambda s: None) == "ok"
    fn, _ = _script(LMServerError("1"), LMServerError("2"), LMServerError("3"))
    with pytest.raises(EndpointError, match="still failing after 3 attempts"):
        policy.call(fn, spec="openai/m", health=health, sleep=lambda s: None)
    fn, calls = _script(LMServerError("4"), LMServerError("5"), "never")
    with pytest.raises(EndpointError, match="5 failed attempts in a row"):
        policy.call(fn, spec="openai/m", health=health, sleep=lambda s: None)
    assert len(calls) == 2
