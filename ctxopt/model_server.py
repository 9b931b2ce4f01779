"""Serve an embedded model over HTTP: llama-cpp-python's OpenAI-compatible server, decoding like in-process.

``ctxopt model-server --model local --port 8080`` starts llama-cpp-python's server
(``llama_cpp.server``, FastAPI + uvicorn) on one GGUF model, then reach it from any
process with the LM spec ``openai/<name>@http://127.0.0.1:8080/v1``
(:func:`ctxopt.lm.get_lm`).

Three settings make its answers the same as the in-process :class:`~ctxopt.lm.LocalEngine`
on the same prompts, so scores do not depend on the transport:

* **prefix reuse** — the KV cache is reused only in whole aligned blocks of the previous
  prompt, or of a few recent ones (:func:`ctxopt.kv_cache.reuse_whole_blocks_only`, ``n_batch`` = 64), so no answer
  depends on the request before it. A stock llama.cpp server reuses any shared prefix and
  may change a greedy answer when requests interleave;
* **no repeat penalty** — the stock server's request default is ``repeat_penalty=1.1``,
  which an OpenAI client cannot override; ``create_chat_completion`` in-process uses 1.0.
  Here every request is decoded with 1.0;
* **the same stop** — decoding stops at DSPy's end-of-answer marker
  (:data:`ctxopt.lm.END_OF_ANSWER`), as in-process.

The server handles one request at a time (llama-cpp-python holds a lock around the
model); concurrent clients queue.
"""

from __future__ import annotations

import functools
import logging
import socket
from pathlib import Path
from typing import Any

from ctxopt.errors import ConfigError, MissingDependencyError
from ctxopt.kv_cache import PROMPT_BLOCK, reuse_whole_blocks_only
from ctxopt.lm import llama_threads, resolve_local, with_answer_stop

__all__ = ["build_app", "serve"]

logger = logging.getLogger(__name__)


def _server_modules() -> tuple[Any, Any]:
    try:
        from llama_cpp.server import app as server_app
        from llama_cpp.server import settings as server_settings
    except ImportError as exc:
        raise MissingDependencyError(
            "llama-cpp-python's server is not installed; run: pip install 'ctxopt[local]'") from exc
    return server_app, server_settings


def _decode_like_in_process(llama: Any) -> None:
    create = llama.create_chat_completion

    @functools.wraps(create)
    def create_chat_completion(*args: Any, **kwargs: Any) -> Any:
        kwargs["repeat_penalty"] = 1.0
        kwargs["stop"] = with_answer_stop(kwargs.get("stop"))
        return create(*args, **kwargs)

    llama.create_chat_completion = create_chat_completion
    reuse_whole_blocks_only(llama)


def build_app(model: str = "local", *, n_ctx: int = 4096, seed: int = 0, n_threads: int | None = None,
              host: str = "127.0.0.1", port: int = 8080) -> tuple[Any, str]:
    """The FastAPI app serving ``model`` (a local spec or a ``.gguf`` path), and the model name clients send.

    Raises:
        ConfigError: unknown model spec.
        MissingDependencyError: llama-cpp-python or its server extra is not installed.
    """
    name, path = resolve_local(model)
    server_app, server_settings = _server_modules()
    model_settings = server_settings.ModelSettings(
        model=str(Path(path)), model_alias=name, n_ctx=n_ctx, n_batch=PROMPT_BLOCK, seed=seed,
        n_threads=n_threads or llama_threads(), verbose=False)
    app = server_app.create_app(server_settings=server_settings.ServerSettings(host=host, port=port),
                                model_settings=[model_settings])
    proxy = server_app._llama_proxy  # the one loaded model; llama-cpp-python keeps it module-global
    _decode_like_in_process(proxy(name))
    return app, name


def _check_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; choose another --port") from None


def serve(model: str = "local", *, host: str = "127.0.0.1", port: int = 8080, n_ctx: int = 4096, seed: int = 0,
          n_threads: int | None = None, ready: Any = None) -> None:
    """Run the server until interrupted (blocks). ``ready(name)`` is called once it is listening."""
    import uvicorn

    _check_free(host, port)  # before the model loads: a taken port is one line, not a traceback
    app, name = build_app(model, n_ctx=n_ctx, seed=seed, n_threads=n_threads, host=host, port=port)

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and ready is not None:
                ready(name)

    _Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)).run()
