"""A real PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` in a temporary folder, Unix socket only.

``make test`` installs Debian's ``postgresql`` package (as it installs chromium). ``initdb`` refuses to
run as root, so as root the server runs as the ``postgres`` user (``runuser``) in a folder it owns.
Without the binaries the tests that need the server skip, saying why.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PORT = 5439


def _bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def temporary_postgres(port: int = PORT) -> Iterator[str]:
    """Start a fresh PostgreSQL server in a temporary folder (Unix socket only); yield its SQLAlchemy URL."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise FileNotFoundError("PostgreSQL is not installed (make test installs Debian's postgresql package)")
    base = Path(tempfile.mkdtemp(prefix="ctxopt-pg-"))
    base.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    data = base / "data"
    subprocess.run(_as_server_user([initdb, "-D", str(data), "-A", "trust", "-U", "ctxopt", "--no-sync",
                                    "-E", "UTF8"]), check=True, capture_output=True)
    opts = f"-k {base} -p {port} -c listen_addresses='' -c fsync=off -c max_connections=50"
    subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w", "start"]),
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://ctxopt@/postgres?host={base}&port={port}"
    finally:
        subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL (psycopg 3) of a fresh PostgreSQL server, stopped at the end of the session."""
    if not _bin("initdb") or not _bin("pg_ctl"):
        pytest.skip("PostgreSQL is not installed (make test installs Debian's postgresql package)")
    pytest.importorskip("psycopg")
    with temporary_postgres() as url:
        yield url
