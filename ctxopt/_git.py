"""A thin runner over the git command line, used only by :mod:`ctxopt.store`.

Every call runs ``git`` with a fixed identity, no global/system config, hooks
disabled, no pager and no prompts, so a store behaves the same on every
machine and no repository content can make git run code.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ctxopt.errors import StoreError

IDENTITY = ("ctxopt", "ctxopt@localhost")
_BASE = (
    "-c", "commit.gpgsign=false",
    "-c", "tag.gpgsign=false",
    "-c", f"core.hooksPath={os.devnull}",
    "-c", "core.pager=cat",
    "-c", "color.ui=false",
    "-c", "diff.external=",
    "-c", "core.quotePath=false",
    "-c", "core.fsync=committed",  # objects and refs are fsynced before a ref moves (git >= 2.36)
    "-c", "core.fsyncMethod=fsync",
)  # fmt: skip


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME=IDENTITY[0],
        GIT_AUTHOR_EMAIL=IDENTITY[1],
        GIT_COMMITTER_NAME=IDENTITY[0],
        GIT_COMMITTER_EMAIL=IDENTITY[1],
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
    )
    return env


_ENV = _env()


class Git:
    """Run git commands in one repository.

    Example:
        >>> Git(Path(".")).run("--version").startswith("git version")  # doctest: +SKIP
        True
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self._local = threading.local()

    @contextlib.contextmanager
    def inherit(self, fd: int) -> Iterator[None]:
        """Let git processes started by this thread inherit ``fd`` (e.g. a held flock).

        A git child that outlives a killed parent then keeps the lock until it
        exits, so the next writer never runs alongside an orphaned git.
        """
        old = getattr(self._local, "fds", ())
        self._local.fds = (*old, fd)
        try:
            yield
        finally:
            self._local.fds = old

    def run_bytes(self, *args: str, input: bytes | None = None, check: bool = True) -> tuple[int, bytes, bytes]:
        """Run ``git args``; return (returncode, stdout, stderr). Raise StoreError if check and it fails."""
        cmd = ["git", *_BASE, *args]
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.workdir,
                input=input,
                capture_output=True,
                env=_ENV,
                check=False,
                pass_fds=getattr(self._local, "fds", ()),
            )
        except FileNotFoundError:
            raise StoreError("the git command was not found; install git to use a ctxopt store") from None
        if check and proc.returncode != 0:
            msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            detail = msg[-1] if msg else f"exit status {proc.returncode}"
            raise StoreError(f"git {args[0]} failed in {self.workdir}: {detail}")
        return proc.returncode, proc.stdout, proc.stderr

    def run(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """Run ``git args`` and return stdout as text with the trailing newline removed."""
        _, out, _ = self.run_bytes(*args, input=None if input is None else input.encode("utf-8"), check=check)
        return out.decode("utf-8", "replace").rstrip("\n")

    def ok(self, *args: str) -> bool:
        """True if ``git args`` exits 0."""
        return self.run_bytes(*args, check=False)[0] == 0

    def hash_blob(self, data: bytes) -> str:
        """Write ``data`` as a blob object and return its sha."""
        return self.run_bytes("hash-object", "-w", "--stdin", input=data)[1].decode().strip()

    def mktree(self, entries: Iterable[tuple[str, str, str, str]]) -> str:
        """Write a tree from ``(mode, type, sha, name)`` entries; return its sha."""
        text = "".join(f"{mode} {typ} {sha}\t{name}\0" for mode, typ, sha, name in entries)
        return self.run_bytes("mktree", "-z", input=text.encode("utf-8"))[1].decode().strip()

    def cat_batch(self, objects: Sequence[str]) -> list[bytes | None]:
        """Contents of many objects (``sha`` or ``rev:path``) in one process; None if missing."""
        if not objects:
            return []
        data = "".join(f"{o}\n" for o in objects).encode("utf-8")
        out = self.run_bytes("cat-file", "--batch", input=data)[1]
        results: list[bytes | None] = []
        pos = 0
        for _ in objects:
            nl = out.index(b"\n", pos)
            header = out[pos:nl].split(b" ")
            pos = nl + 1
            if len(header) != 3 or header[1] == b"missing":
                results.append(None)
                continue
            size = int(header[2])
            results.append(out[pos : pos + size])
            pos += size + 1
        return results
