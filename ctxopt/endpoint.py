"""Calling a model endpoint: which failure is which, retries that change nothing, and a loud stop.

Every LM built by :func:`ctxopt.lm.get_lm` sends its requests through a :class:`RetryPolicy`
(DSPy's own retries are off, so there is one policy, not two stacked). A failed request is
one of three kinds (:func:`classify`):

* **transient** — a timeout, HTTP 429, a 5xx, a dropped, reset or refused connection
  (DSPy's ``is_retryable_lm_error``). It is retried with exponential backoff and full
  jitter, honouring the provider's ``Retry-After``, within :attr:`RetryPolicy.deadline_s`
  seconds, which is half the evaluator's default per-example timeout (120 s), so a retried
  call settles before its example could time out. A retried call that succeeds is cached
  like any other; a failure is never cached and never scored.
* **persistent** — missing or bad credentials, billing, an unknown model; and an endpoint
  that is still failing when a call's 8 attempts or its deadline are spent, or after
  :attr:`RetryPolicy.down_after` consecutive failed attempts of one LM across all threads
  (N = 8: at a 10% fault rate eight failures in a row happen about once in 10⁸ attempts).
  These raise :class:`~ctxopt.errors.EndpointError`: the evaluator, the proposers and the
  baselines let it through, the run stops with one line naming the LM spec, the error
  class and a hint, and its state is saved, so the same command resumes.
* **program** — anything else: an unparseable reply, a prompt longer than the context
  window, an engine bug. Re-raised unchanged; the evaluator scores the example 0 with
  feedback, as a poor context can cause these.

Example:
    >>> from dspy.utils.exceptions import LMAuthError, LMRateLimitError
    >>> classify(LMRateLimitError("slow down")), classify(LMAuthError("bad key")), classify(ValueError("x"))
    ('transient', 'persistent', 'program')
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from dspy.utils.exceptions import (
    LMAuthError,
    LMBillingError,
    LMConfigurationError,
    LMUnsupportedModelError,
    is_retryable_lm_error,
)

from ctxopt.errors import EndpointError

__all__ = ["Health", "RetryPolicy", "classify", "endpoint_error", "fatal_in"]

T = TypeVar("T")
Kind = Literal["transient", "persistent", "program"]

_PERSISTENT = (LMAuthError, LMBillingError, LMConfigurationError, LMUnsupportedModelError)


def classify(exc: BaseException) -> Kind:
    """Which kind of failure ``exc`` is: ``transient``, ``persistent`` or ``program``."""
    if isinstance(exc, (EndpointError, *_PERSISTENT)):
        return "persistent"
    if isinstance(exc, Exception) and is_retryable_lm_error(exc):
        return "transient"
    if isinstance(exc, ConnectionError | TimeoutError):  # raised by a custom HTTP engine
        return "transient"
    return "program"


def fatal_in(exc: BaseException) -> EndpointError | None:
    """The :class:`EndpointError` that ``exc`` is or was raised from (DSPy may wrap it), else None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, EndpointError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _hint(exc: BaseException, spec: str, api_base: str | None) -> str:
    provider = spec.split("/", 1)[0] if "/" in spec else "the provider"
    if isinstance(exc, LMAuthError | LMConfigurationError):
        keys = getattr(exc, "env_keys", None) or [f"{provider.upper()}_API_KEY"]
        return f"set {' or '.join(str(k) for k in keys)} (or fix the key) and rerun the same command to resume"
    if isinstance(exc, LMBillingError):
        return "check the account's quota and billing, then rerun the same command to resume"
    if isinstance(exc, LMUnsupportedModelError):
        return f"check the model name: the endpoint does not serve {spec.split('/', 1)[-1]!r}"
    where = api_base or f"{provider}'s endpoint"
    return f"is {where} up and reachable? Rerun the same command to resume once it is"


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    text = text.split(". ", 1)[0].rstrip(".")  # the first sentence; the hint says what to do
    return text if len(text) <= limit else text[: limit - 1] + "…"


def endpoint_error(exc: BaseException, spec: str, *, api_base: str | None = None, why: str = "") -> EndpointError:
    """The one-line :class:`EndpointError` for a persistent failure of the LM ``spec``."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    prefix = f"LM {spec}: {why}" if why else f"LM {spec}: "
    return EndpointError(f"{prefix}{type(exc).__name__} ({_one_line(message)}); {_hint(exc, spec, api_base)}")


class Health:
    """Consecutive failed attempts of one LM, across threads; reset by any success."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures = 0

    def failed(self) -> int:
        with self._lock:
            self.failures += 1
            return self.failures

    def ok(self) -> None:
        with self._lock:
            self.failures = 0


@dataclass(frozen=True)
class RetryPolicy:
    """How one LM retries transient failures (see the module docstring).

    Attributes:
        attempts: Tries per call, the first included.
        base_s: Backoff of the first retry; doubles each retry up to ``cap_s``, then full jitter.
        cap_s: Longest single wait.
        deadline_s: No retry starts later than this after the call began.
        down_after: Consecutive failed attempts (across calls and threads) that mean the endpoint is down.
    """

    attempts: int = 8
    base_s: float = 0.5
    cap_s: float = 8.0
    deadline_s: float = 60.0
    down_after: int = 8

    def delay(self, attempt: int, exc: BaseException, rng: random.Random) -> float:
        """Seconds to wait before retry ``attempt`` (1-based): the provider's hint, else full jitter."""
        hint = getattr(exc, "retry_after", None)
        if isinstance(hint, int | float) and 0 <= hint < float("inf"):
            return min(float(hint), self.cap_s)
        return rng.uniform(0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))

    def call(
        self,
        fn: Callable[[], T],
        *,
        spec: str,
        health: Health,
        api_base: str | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        rng: random.Random | None = None,
    ) -> T:
        """Run ``fn`` under this policy; raise :class:`EndpointError` for a persistent failure."""
        rng = rng or random.Random()
        start, waited = time.monotonic(), 0.0
        for attempt in range(1, self.attempts + 1):
            try:
                out = fn()
            except Exception as exc:
                kind = classify(exc)
                if kind == "program":
                    health.ok()  # the endpoint answered; the request or the reply was bad
                    raise
                if kind == "persistent":
                    if isinstance(exc, EndpointError):
                        raise
                    raise endpoint_error(exc, spec, api_base=api_base) from exc
                failures = health.failed()
                if failures >= self.down_after:
                    raise endpoint_error(exc, spec, api_base=api_base,
                                         why=f"{failures} failed attempts in a row, the last: ") from exc
                wait = self.delay(attempt, exc, rng)
                elapsed = max(time.monotonic() - start, waited)  # waited: what sleep() was asked for
                if attempt == self.attempts or elapsed + wait > self.deadline_s:
                    raise endpoint_error(exc, spec, api_base=api_base,
                                         why=f"still failing after {attempt} attempts: ") from exc
                if on_retry is not None:
                    on_retry(exc)
                sleep(wait)
                waited += wait
            else:
                health.ok()
                return out
        raise AssertionError("unreachable")  # pragma: no cover
