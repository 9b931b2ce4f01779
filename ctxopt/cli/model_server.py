"""``ctxopt model-server``: serve an embedded model over HTTP (OpenAI-compatible), decoding like in-process."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model-server", help="serve an embedded model over OpenAI-compatible HTTP (llama-cpp-python)")
    p.add_argument("--model", default="local", help="local, local:<name> or a .gguf path (default: local, 0.5B)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--n-ctx", type=int, default=4096, help="context window (default 4096)")
    p.add_argument("--n-threads", type=int, default=None,
                   help="llama threads (default: $CTXOPT_LLAMA_THREADS, else all available cores)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ctxopt.model_server import serve

    def ready(name: str) -> None:
        base = f"http://{args.host}:{args.port}/v1"
        print(f"serving {name} at {base}; LM spec: openai/{name}@{base}", file=sys.stderr, flush=True)

    from ctxopt.cli import Terminated

    try:
        serve(args.model, host=args.host, port=args.port, n_ctx=args.n_ctx, n_threads=args.n_threads, ready=ready)
    except KeyboardInterrupt as exc:  # SIGTERM or Ctrl-C: a server has nothing to resume
        print("ctxopt: model server stopped", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    return 0
