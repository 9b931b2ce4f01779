"""The ``ctxopt`` command line: one parser, one module per group of subcommands.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)``, which adds
its subcommands and sets ``func`` on each subparser: ``func(args) -> int``.
Subcommands are thin wrappers over the library API. Every :class:`CtxoptError`
becomes one line on stderr and exit status 2. SIGTERM (``kill``) is turned into
an interrupt, so locks are released and a store is switched back to its branch
before the process exits (status 143); rerunning the command resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator

from ctxopt.errors import CtxoptError

# Modules under ctxopt.cli that register subcommands, in --help order.
COMMAND_MODULES = ("demo", "run", "compare", "fleet", "sleep", "transfer", "store", "streams", "model_server")


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While active, SIGTERM raises :class:`Terminated` so ``finally`` blocks and context managers run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctxopt",
        description="Continual learning in token space for DSPy programs.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"ctxopt.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ctxopt.cli.{name}":
                raise
            continue  # a command group not built yet
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed as one line
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        with sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except CtxoptError as exc:
        print(f"ctxopt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"ctxopt: {how}; rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
