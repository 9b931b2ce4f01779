"""Language models: the embedded local engine, any litellm model, and usage accounting.

:func:`get_lm` is the one door. It accepts:

* ``"local"`` — the default task model, Qwen2.5-Coder-0.5B-Instruct;
* ``"local:qwen2.5-coder-0.5b"`` / ``"local:qwen2.5-coder-1.5b"`` — the second
  is the default reflection model;
* a path to any ``.gguf`` file;
* any litellm model string, e.g. ``"openai/gpt-4o-mini"`` or ``"ollama_chat/qwen2.5"``;
* a litellm model string with its server, ``"MODEL@URL"``: e.g.
  ``"openai/qwen2.5-coder-0.5b@http://127.0.0.1:8080/v1"`` reaches any OpenAI-compatible
  server (``ctxopt model-server``, vLLM, llama.cpp's server, Ollama's ``/v1``). Without
  ``OPENAI_API_KEY`` (or the provider's key) in the environment a placeholder key is sent,
  which such local servers accept;
* ``"py:MODULE:FACTORY"`` — an LM your own code builds: ``MODULE.FACTORY()`` is called
  and must return a :class:`TrackedLM` (a custom engine, a scripted LM in tests). This is
  how a spec names such an LM in another process (a Ray worker, a search worker).

Local models run in-process on llama-cpp-python through :class:`LocalEngine`,
which implements DSPy 3.4's engine interface (``complete(Request) -> Response``).
They go through DSPy's request cache like any other LM, so a rerun makes no new
model calls. Every LM returned by :func:`get_lm` is a :class:`TrackedLM` whose
``usage`` counts calls, cache hits, retries, tokens and seconds, and whose requests go
through :class:`ctxopt.endpoint.RetryPolicy`: transient failures are retried, persistent
ones stop the run with one line (:class:`~ctxopt.errors.EndpointError`).

Example:
    >>> import ctxopt
    >>> lm = ctxopt.lm.get_lm("local")          # doctest: +SKIP
    >>> lm("Say hi")                             # doctest: +SKIP
    ['Hello! How can I assist you today?']
    >>> lm.usage.snapshot().calls                # doctest: +SKIP
    1
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import dspy

from ctxopt.endpoint import Health, RetryPolicy
from ctxopt.errors import ConfigError, EndpointError, LMError, MissingDependencyError
from ctxopt.kv_cache import PROMPT_BLOCK, reuse_whole_blocks_only
from ctxopt.models import MODELS, model_path

__all__ = [
    "ACCEPTED_FORMS",
    "DEFAULT_REFLECTION_LM",
    "DEFAULT_REFLECTION_MODEL",
    "DEFAULT_TASK_LM",
    "DEFAULT_TASK_MODEL",
    "END_OF_ANSWER",
    "LocalEngine",
    "TrackedLM",
    "Usage",
    "UsageSnapshot",
    "available_cores",
    "get_lm",
    "llama_threads",
    "loaded_llama",
    "lm_name",
    "resolve_local",
    "split_api_base",
    "usage_of",
    "with_answer_stop",
]

logger = logging.getLogger(__name__)

DEFAULT_TASK_MODEL = "qwen2.5-coder-0.5b"
DEFAULT_REFLECTION_MODEL = "qwen2.5-coder-1.5b"
DEFAULT_TASK_LM = "local"
DEFAULT_REFLECTION_LM = f"local:{DEFAULT_REFLECTION_MODEL}"

ACCEPTED_FORMS = (
    "'local' (Qwen2.5-Coder-0.5B), "
    + ", ".join(f"'local:{name}'" for name in MODELS)
    + ", a path to a .gguf file, a litellm model string such as 'openai/gpt-4o-mini' (MODEL@URL for a server), "
    "or py:MODULE:FACTORY"
)


# --------------------------------------------------------------------------- usage


@dataclass(frozen=True)
class UsageSnapshot:
    """Counters of one LM at a moment; subtract two snapshots for a delta.

    ``calls`` counts every request the program made, ``cache_hits`` those
    answered from DSPy's cache, ``model_calls`` those that reached the model.
    ``seconds`` is wall time spent inside model calls (cache hits excluded).
    ``retries`` counts transient failures that were retried (a call is counted
    once however many attempts it took).
    """

    calls: int = 0
    cache_hits: int = 0
    model_calls: int = 0
    errors: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def __sub__(self, other: UsageSnapshot) -> UsageSnapshot:
        return UsageSnapshot(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    def __add__(self, other: UsageSnapshot) -> UsageSnapshot:
        return UsageSnapshot(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageSnapshot:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


class Usage:
    """Thread-safe running counters, shared by an LM and all its copies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = UsageSnapshot()
        _ALL_USAGE.add(self)

    def add(self, delta: UsageSnapshot) -> None:
        """Add counters recorded elsewhere (a forked search worker's calls)."""
        with self._lock:
            self._totals = self._totals + delta

    def record(self, *, cache_hit: bool, error: bool, prompt_tokens: int, completion_tokens: int,
               seconds: float) -> None:
        delta = UsageSnapshot(
            calls=1,
            cache_hits=int(cache_hit),
            model_calls=int(not cache_hit),
            errors=int(error),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            seconds=0.0 if cache_hit else seconds,
        )
        with self._lock:
            self._totals = self._totals + delta

    def retried(self, exc: BaseException | None = None) -> None:
        """Count one retried transient failure."""
        with self._lock:
            self._totals = self._totals + UsageSnapshot(retries=1)

    def snapshot(self) -> UsageSnapshot:
        with self._lock:
            return self._totals

    def __deepcopy__(self, memo: dict) -> Usage:
        return self  # counters belong to the LM, not to a copy of a program


_ALL_USAGE: weakref.WeakSet[Usage] = weakref.WeakSet()


def usage_marks() -> dict[int, UsageSnapshot]:
    """Every live LM's counters, by object id: a forked process has the same ids as its parent."""
    return {id(u): u.snapshot() for u in list(_ALL_USAGE)}


def absorb_usage(deltas: dict[int, dict[str, Any]]) -> None:
    """Add counter deltas that a forked child measured (:func:`usage_marks` there) to the same LMs here."""
    live = {id(u): u for u in list(_ALL_USAGE)}
    for key, delta in deltas.items():
        if key in live:
            live[key].add(UsageSnapshot.from_dict(delta))


class TrackedLM(dspy.LM):
    """A ``dspy.LM`` that counts its own usage in ``self.usage`` and retries under ``self.retry``.

    A call is a cache hit when DSPy answered it without usage (DSPy strips
    usage from cached responses). Copies made by ``lm.copy()`` and deep copies
    of programs share the same counters. DSPy's own retries are off
    (``num_retries=0``); ``retry`` (:class:`~ctxopt.endpoint.RetryPolicy`) decides.
    Once a call raised :class:`~ctxopt.errors.EndpointError`, every later call raises
    it again without a request (a dead endpoint is not asked again; DSPy's optimizers,
    which score a failed call 0, cannot keep going on it). Build a new LM to retry.
    """

    def __init__(self, model: str, *, spec: str | None = None, retry: RetryPolicy | None = None, **kwargs: Any) -> None:
        kwargs["num_retries"] = 0
        super().__init__(model, **kwargs)
        self.spec = spec or model
        self.retry = retry or RetryPolicy()
        self.usage = Usage()
        self._health = Health()
        self._down: EndpointError | None = None
        self._local = threading.local()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._down is not None:
            raise EndpointError(str(self._down))
        self._local.entry = None
        start = time.perf_counter()
        error = False
        try:
            return self.retry.call(lambda: super(TrackedLM, self).__call__(*args, **kwargs), spec=self.spec,
                                   health=self._health, api_base=self.kwargs.get("api_base"),
                                   on_retry=self.usage.retried)
        except EndpointError as exc:
            error, self._down = True, exc
            raise
        except Exception:
            error = True
            raise
        finally:
            entry = getattr(self._local, "entry", None)
            usage = (entry or {}).get("usage") or {}
            self.usage.record(
                cache_hit=entry is not None and not usage,
                error=error,
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                seconds=time.perf_counter() - start,
            )

    def update_history(self, entry: dict) -> None:
        self._local.entry = entry
        super().update_history(entry)

    def __deepcopy__(self, memo: dict) -> TrackedLM:
        return self  # an LM is a shared resource (a loaded model, a connection)

    def dump_state(self) -> dict[str, Any]:
        state = super().dump_state()
        state["spec"] = self.spec
        return state


# --------------------------------------------------------------------------- local engine


class _LoadedModel:
    """One llama.cpp model in memory, shared by every engine on the same file.

    ``lock`` is held for the whole of each native call; ``closed`` is set, under the
    lock, when the process frees the model, after which no call may start.
    """

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.lock = threading.Lock()
        self.closed = False


_loaded: dict[tuple[str, int, int], _LoadedModel] = {}
_loaded_lock = threading.Lock()

EXIT_WAIT_S = 300.0
"""How long exit waits for a native call in flight to finish before freeing its model anyway."""


@atexit.register
def _close_models() -> None:
    """Free llama.cpp models at exit, never under a native call in flight.

    On SIGTERM or Ctrl-C the main thread unwinds (state is saved by then) while an
    evaluator's daemon thread may still be inside llama.cpp. Freeing the model under it
    crashed the process (exit 139 instead of 143). Each model's lock is taken first, so
    the call in flight finishes; then the model is marked closed and freed, and a daemon
    thread that gets the lock afterwards raises instead of calling into freed memory.
    """
    with _loaded_lock:
        for loaded in _loaded.values():
            got = loaded.lock.acquire(timeout=EXIT_WAIT_S)
            loaded.closed = True
            try:
                loaded.llama.close()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
            finally:
                if got:
                    loaded.lock.release()
        _loaded.clear()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def llama_threads() -> int:
    """Threads of each in-process llama.cpp model: ``$CTXOPT_LLAMA_THREADS``, else every available core.

    llama.cpp's threads spin at barriers, so two processes that each take every core slow
    each other down many times over; give concurrent processes one share each.
    """
    value = os.environ.get("CTXOPT_LLAMA_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"CTXOPT_LLAMA_THREADS must be a positive integer, got {value!r}")
        return int(value)
    return available_cores()


def _warn_if_amx() -> None:
    """Say so when llama.cpp was built with its AMX matmul, which segfaults on some machines."""
    import llama_cpp

    if "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode(errors="replace"):
        logger.warning("llama-cpp-python was built with AMX, whose matmul segfaults on some machines "
                       "(llama.cpp#20824); if the process dies with a segmentation fault, rebuild it with "
                       "`make clean-venv` then `make test` (the Makefile builds it without AMX)")


def _load_llama(path: str, n_ctx: int, seed: int) -> _LoadedModel:
    key = (path, n_ctx, seed)
    with _loaded_lock:
        if key not in _loaded:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise MissingDependencyError(
                    "llama_cpp is not installed; run: pip install 'ctxopt[local]'"
                ) from exc
            _warn_if_amx()
            llama = Llama(model_path=path, n_ctx=n_ctx, n_threads=llama_threads(), seed=seed, verbose=False,
                          n_batch=PROMPT_BLOCK)
            reuse_whole_blocks_only(llama)
            _loaded[key] = _LoadedModel(llama)
        return _loaded[key]


END_OF_ANSWER = "[[ ## completed ## ]]"
"""The marker DSPy's ChatAdapter asks a model to write after its last output field.

Local decoding stops there (:func:`with_answer_stop`). The adapter reads each output
field from its first section, so what a model writes after the marker never reaches
an answer; a small model often goes on with a made-up next input until ``max_tokens``
(on bAbI, 43% of the 0.5B's output characters came after it, 46 of 2,804 calls ran to
the limit). Other adapters never write it, and for them nothing changes.
"""


def with_answer_stop(stop: Any) -> list[str]:
    """The stop sequences of a request, plus :data:`END_OF_ANSWER`.

    Example:
        >>> with_answer_stop(None), with_answer_stop(["Observation:"])
        (['[[ ## completed ## ]]'], ['Observation:', '[[ ## completed ## ]]'])
    """
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    return stops if END_OF_ANSWER in stops else [*stops, END_OF_ANSWER]


class LocalEngine:
    """DSPy engine that runs a GGUF model in-process with llama-cpp-python.

    The model is loaded on the first request and shared between engines on
    the same file; one lock serializes access to it, so the engine is
    thread-safe. At temperature 0 decoding is greedy and deterministic.
    Decoding stops at :data:`END_OF_ANSWER`, which the engine adds to the request's stop
    sequences: not to the request itself, so DSPy's cache keys are those of any other engine.

    Example:
        >>> engine = LocalEngine("/models/qwen.gguf")              # doctest: +SKIP
        >>> lm = dspy.LM("local/qwen", engine=engine, temperature=0.0)  # doctest: +SKIP
    """

    def __init__(self, model_path: str | Path, *, n_ctx: int = 4096, seed: int = 0) -> None:
        self.model_path = str(model_path)
        self.n_ctx = n_ctx
        self.seed = seed

    def _model(self) -> _LoadedModel:
        return _load_llama(self.model_path, self.n_ctx, self.seed)

    def complete(self, request: Any) -> Any:
        from dspy.clients.engines.base import validate_request
        from dspy.lm15 import Message, Response, TextPart
        from dspy.lm15 import Usage as LMUsage

        validate_request(request)
        messages = []
        if request.system is not None:
            system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
            messages.append({"role": "system", "content": system})
        messages.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
        config = request.config
        loaded = self._model()
        with loaded.lock:
            if loaded.closed:
                raise LMError(f"local model {Path(self.model_path).name} is closed: the process is exiting")
            logger.debug("local model call started: %s", Path(self.model_path).name)
            try:
                out = loaded.llama.create_chat_completion(
                    messages=messages,
                    temperature=config.temperature if config.temperature is not None else 0.0,
                    top_p=config.top_p if config.top_p is not None else 1.0,
                    max_tokens=config.max_tokens,
                    stop=with_answer_stop(config.stop),
                    seed=config.seed if config.seed is not None else self.seed,
                )
            except ValueError as exc:  # e.g. prompt longer than the context window
                raise LMError(f"local model {Path(self.model_path).name}: {exc}") from exc
            logger.debug("local model call finished: %s", Path(self.model_path).name)
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Response(
            id=out.get("id"),
            model=request.model or Path(self.model_path).stem,
            message=Message.assistant([TextPart(choice["message"].get("content") or "")]),
            finish_reason=finish,
            usage=LMUsage(
                input_tokens=int(usage.get("prompt_tokens", 0)),
                output_tokens=int(usage.get("completion_tokens", 0)),
                total_tokens=int(usage.get("total_tokens", 0)),
            ),
        )

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        """Models stay loaded for the process; nothing to release per engine."""

    def dump_state(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "n_ctx": self.n_ctx, "seed": self.seed}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> LocalEngine:
        return cls(state["model_path"], n_ctx=state.get("n_ctx", 4096), seed=state.get("seed", 0))


# --------------------------------------------------------------------------- get_lm


def resolve_local(spec: str) -> tuple[str, Path]:
    """Map a local spec to (model name, verified .gguf path); ConfigError if unknown."""
    if spec == "local":
        name = DEFAULT_TASK_MODEL
    elif spec.startswith("local:"):
        name = spec.split(":", 1)[1]
        if name not in MODELS:
            raise ConfigError(f"unknown local model {name!r}; accepted LM specs: {ACCEPTED_FORMS}")
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(f"model file {path} does not exist")
        return path.stem, path
    return name, model_path(name)


def loaded_llama(spec: str = "local") -> Any:
    """The in-process ``llama_cpp.Llama`` of a local spec, once a call has loaded it (benchmarks, tests).

    Its ``ctxopt_prefix_cache`` is the :class:`~ctxopt.kv_cache.PrefixCache` of its KV states.
    Raises LookupError if no call has loaded that model in this process yet.
    """
    path = str(resolve_local(spec)[1])
    with _loaded_lock:
        for (loaded_path, _, _), loaded in _loaded.items():
            if loaded_path == path:
                return loaded.llama
    raise LookupError(f"local model {spec!r} is not loaded in this process; make a call with it first")


def get_lm(
    spec: str,
    *,
    temperature: float = 0.0,
    max_tokens: int = 512,
    cache: bool = True,
    n_ctx: int = 4096,
    seed: int = 0,
    **kwargs: Any,
) -> TrackedLM:
    """Build a usage-tracked ``dspy.LM`` from a spec (see the module docstring).

    Args:
        spec: ``"local"``, ``"local:<name>"``, a ``.gguf`` path, or a litellm model string.
        temperature: sampling temperature; 0 is greedy and deterministic.
        max_tokens: completion limit per call.
        cache: use DSPy's request cache (memory and disk).
        n_ctx: context window of a local model.
        seed: sampling seed of a local model.
        **kwargs: passed to ``dspy.LM`` for litellm models (``api_base``, …).

    Raises:
        ConfigError: the spec has none of the accepted forms.
        MissingDependencyError: llama_cpp or a model package is not installed.
        ModelIntegrityError: an assembled model file has the wrong sha256.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"empty LM spec; accepted LM specs: {ACCEPTED_FORMS}")
    spec = spec.strip()
    if spec.startswith("py:"):
        return _from_factory(spec)
    if spec == "local" or spec.startswith("local:") or spec.endswith(".gguf"):
        name, path = resolve_local(spec)
        engine = LocalEngine(path, n_ctx=n_ctx, seed=seed)
        return TrackedLM(f"local/{name}", spec=spec, engine=engine, temperature=temperature,
                         max_tokens=max_tokens, cache=cache)
    model, api_base = split_api_base(spec)
    if "/" not in model or model.startswith("/") or model.endswith("/"):
        raise ConfigError(f"unknown LM spec {spec!r}; accepted LM specs: {ACCEPTED_FORMS}")
    if api_base:
        kwargs.setdefault("api_base", api_base)
        key = f"{model.split('/', 1)[0].upper()}_API_KEY"
        if not os.environ.get(key):
            kwargs.setdefault("api_key", "no-key")  # local OpenAI-compatible servers accept any key
    kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
    return TrackedLM(model, spec=spec, temperature=temperature, max_tokens=max_tokens, cache=cache, **kwargs)


def _from_factory(spec: str) -> TrackedLM:
    import importlib

    parts = spec.split(":")
    if len(parts) != 3 or not all(parts[1:]):
        raise ConfigError(f"LM spec {spec!r}: write py:MODULE:FACTORY, e.g. py:mypkg.lms:make_lm")
    try:
        factory = getattr(importlib.import_module(parts[1]), parts[2])
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"LM spec {spec!r}: {type(exc).__name__}: {exc}") from None
    lm = factory()
    if not isinstance(lm, TrackedLM):
        raise ConfigError(f"LM spec {spec!r}: {parts[2]}() returned {type(lm).__name__}, not a TrackedLM")
    return lm


HTTP_TIMEOUT_S = 60.0
"""Seconds an HTTP request may take before it counts as a (transient, retried) timeout."""


def split_api_base(spec: str) -> tuple[str, str | None]:
    """Split ``"MODEL@http(s)://…"`` into the model and its server URL (``None`` when there is no URL).

    Example:
        >>> split_api_base("openai/qwen@http://127.0.0.1:8080/v1")
        ('openai/qwen', 'http://127.0.0.1:8080/v1')
        >>> split_api_base("vertex_ai/claude-3-sonnet@20240229")
        ('vertex_ai/claude-3-sonnet@20240229', None)
    """
    for scheme in ("@http://", "@https://"):
        model, sep, rest = spec.rpartition(scheme)
        if sep and model:
            return model, scheme[1:] + rest
    return spec, None


def lm_name(lm: Any) -> str:
    """How runs and commits name an LM: its ctxopt spec, else its model string, else its class.

    Example:
        >>> from dspy.utils.dummies import DummyLM
        >>> lm_name(DummyLM([]))
        'dummy'
    """
    return str(getattr(lm, "spec", None) or getattr(lm, "model", None) or type(lm).__name__)


def usage_of(lm: Any) -> UsageSnapshot:
    """Usage counters of any LM; an LM not built by :func:`get_lm` reports zeros."""
    usage = getattr(lm, "usage", None)
    return usage.snapshot() if isinstance(usage, Usage) else UsageSnapshot()
