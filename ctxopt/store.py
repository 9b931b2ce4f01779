"""A git-backed, human-readable, append-only store of learned contexts.

Why git, and why the git CLI
----------------------------
A store is an ordinary git repository, so ``git log``, ``git diff`` and
``git show`` inside it show meaningful history, and every tool that reads git
works on it. ctxopt drives the ``git`` command line through :mod:`subprocess`
(see ``ctxopt/_git.py``) rather than a Python binding: git is installed
wherever DSPy developers work, the CLI is git's stable public interface, and
it adds no compiled dependency. (pygit2 needs libgit2 builds; GitPython itself
shells out to the same CLI and adds only a layer.) Calls run with a fixed
identity, no user/system config, hooks disabled and ``commit.gpgsign=false``,
so they work without any setup and never run code found in a repository.

Layout of a version (one commit)::

    context/<predictor>.yaml   one human-readable YAML file per predictor:
                               instruction, ordered items with provenance, demos
    metadata.json              sidecar: context_hash, task, step, scores, LMs,
                               edits applied, kind (commit / rollback)

The file format lives in :mod:`ctxopt.store_format`. The commit message
(:mod:`ctxopt.changelog`) is a subject line, a changelog with one line per
edit saying what changed and why, and trailers (``Ctxopt-Context-Hash``,
``Ctxopt-Task``, ``Ctxopt-Step``). Secrets in metadata and messages are
redacted before anything is written (keys named like
``api_key``/``token``/``secret``; strings like ``sk-…``). Export to DSPy's
own JSON format is in :mod:`ctxopt.dspy_export`.

Reliability
-----------
A commit is built with plumbing only: blobs and trees are written as new
objects (git writes each to a temp file, then renames it), the commit object
is written, and only then ``git update-ref HEAD NEW OLD`` moves the branch:
an atomic compare-and-swap by lock file + rename. A process killed at any
point leaves the branch at the old or the new commit; stray objects are
harmless. The working tree is only a view of HEAD, refreshed after each ref
move; the next write command repairs a view (and removes stale git lock
files) that a kill left behind. Writers are serialized by an ``flock`` on
``.git/ctxopt-writer.flock``; a second writer waits up to ``lock_timeout`` seconds,
then gets :class:`~ctxopt.errors.StoreLockedError`. The kernel drops the lock
when a process dies, so a kill never leaves the store locked; git processes
started under the lock inherit it, so one orphaned by a kill holds the lock
until it exits and never races the next writer. History is never
rewritten: rollback makes a new commit. Loading reads YAML with the safe
loader and JSON; nothing is unpickled or executed. Every git command runs with
``core.fsync=committed`` (objects and refs reach the disk before a ref moves), so
a committed version survives a power loss, not only a kill; the cost per commit
is in ``experiments/results/bench_store.json``.

Revisions accept a full or short sha, a branch, a tag, ``HEAD``, ``HEAD~N``.

Example:
    >>> import tempfile
    >>> from ctxopt.context import LearnedContext, PredictorContext
    >>> store = Store.init(tempfile.mkdtemp() + "/store")
    >>> v1 = store.commit(LearnedContext({"qa": PredictorContext("Answer.")}), "start", {"step": 0})
    >>> store.show(v1.rev) == store.current()
    True
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctxopt._atomic import write_text
from ctxopt._diff import ContextDiff, ItemChange, PredictorDiff, diff_contexts
from ctxopt._git import Git
from ctxopt._redact import redact, redact_text
from ctxopt.changelog import commit_message, parse_commit
from ctxopt.context import Demo, Item, LearnedContext, PredictorContext
from ctxopt.dspy_export import export_program, export_state
from ctxopt.errors import ConfigError, StoreError, StoreLockedError
from ctxopt.store_format import (
    CONTEXT_DIR,
    FORMAT,
    FORMAT_VERSION,
    METADATA_FILE,
    dump_predictor,
    load_predictor,
    predictor_filename,
)

if TYPE_CHECKING:  # pragma: no cover
    import dspy

logger = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT = 30.0
_MARKER = "ctxopt-store.json"  # inside .git: marks a directory as a store
_SYNC_MARKER = "ctxopt-syncing"  # inside .git: a ref moved, the view may be stale
_LOCK_FILE = "ctxopt-writer.flock"

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")
_REV_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*([~^][0-9]{0,6})*$")
_HEX_RE = re.compile(r"^[0-9a-f]{7,64}$")


# -- records ----------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """One version (commit) of a store.

    Example:
        >>> v = Version("ab" * 20, "cd" * 32, "step 3", {"step": 3}, "2025-01-01T00:00:00+00:00", ())
        >>> Version.from_dict(v.to_dict()) == v
        True
    """

    rev: str
    context_hash: str
    message: str
    metadata: dict = field(default_factory=dict, compare=True)
    timestamp: str = ""
    parents: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        """Abbreviated sha (10 hex)."""
        return self.rev[:10]

    @property
    def subject(self) -> str:
        """First line of the message."""
        return self.message.split("\n", 1)[0]

    def __hash__(self) -> int:
        return hash(self.rev)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict."""
        return {
            "rev": self.rev,
            "context_hash": self.context_hash,
            "message": self.message,
            "metadata": self.metadata,
            "timestamp": self.timestamp,
            "parents": list(self.parents),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Version:
        """Inverse of :meth:`to_dict`."""
        return cls(
            rev=d["rev"],
            context_hash=d["context_hash"],
            message=d.get("message", ""),
            metadata=dict(d.get("metadata") or {}),
            timestamp=d.get("timestamp", ""),
            parents=tuple(d.get("parents") or ()),
        )


def validate_ref_name(name: str, what: str = "branch") -> str:
    """Return ``name`` if it is a safe branch/tag name; raise ConfigError otherwise.

    Allowed: letters, digits, ``_ . -`` and ``/`` between components; no ``..``,
    no component starting with ``.`` or ending in ``.lock``, not ``HEAD``, not
    a bare hex string (it would read as a sha), at most 100 characters.
    """
    problem = None
    if not isinstance(name, str) or not name:
        problem = "it is empty"
    elif len(name) > 100:
        problem = "it is longer than 100 characters"
    elif not _NAME_RE.match(name):
        problem = "use letters, digits, '_', '.', '-' and '/' between parts"
    elif ".." in name or name.endswith(".") or any(p.endswith(".lock") for p in name.split("/")):
        problem = "it contains '..', ends with '.', or a part ends with '.lock'"
    elif name in ("HEAD", "FETCH_HEAD", "ORIG_HEAD") or name.startswith("refs/"):
        problem = "it is reserved"
    elif _HEX_RE.match(name):
        problem = "it looks like a commit sha"
    if problem:
        raise ConfigError(f"invalid {what} name {name!r}: {problem}")
    return name


# -- the store --------------------------------------------------------------------


class Store:
    """A directory holding the versioned learned context; a real git repository.

    Use :meth:`init` to create one and :meth:`open` to open one. Writes take a
    process lock (:meth:`lock`); reads need none.

    Example:
        >>> import tempfile
        >>> from ctxopt.context import LearnedContext, PredictorContext
        >>> from ctxopt.edits import AddItem
        >>> store = Store.init(tempfile.mkdtemp() + "/s")
        >>> c0 = LearnedContext({"qa": PredictorContext("Answer.")})
        >>> v0 = store.commit(c0, "initial context")
        >>> v1 = store.commit(c0.apply_edits([AddItem("qa", "Cite.")]), "learned a rule", {"step": 1})
        >>> [it.text for it in store.diff(v0.rev, v1.rev).predictors[0].items_added]
        ['Cite.']
        >>> store.rollback(v0.rev, reason="rule hurt").context_hash == c0.hash
        True
    """

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        """Do not call directly; use :meth:`open` or :meth:`init`."""
        self.path = Path(path).resolve()
        self.lock_timeout = float(lock_timeout)
        self._gitdir = self.path / ".git"
        self._git = Git(self.path)
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- creation ---------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Store:
        """Open an existing store.

        Raises:
            StoreError: one line, if ``path`` is not a ctxopt store.
        """
        p = Path(path)
        marker = p / ".git" / _MARKER
        try:
            info = json.loads(marker.read_text("utf-8"))
        except FileNotFoundError:
            hint = "it does not exist" if not p.exists() else "it has no ctxopt store in it"
            raise StoreError(f"{p} is not a ctxopt store ({hint}); create one with Store.init or `ctxopt import`") from None
        except (OSError, ValueError) as exc:
            raise StoreError(f"{p} is not a readable ctxopt store: {exc}") from None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise StoreError(f"{p} is not a ctxopt store (bad marker {marker})")
        if info.get("version", 0) > FORMAT_VERSION:
            raise StoreError(f"{p} uses store format {info.get('version')}; upgrade ctxopt to read it")
        return cls(p, lock_timeout=lock_timeout)

    @classmethod
    def init(cls, path: str | os.PathLike[str], *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Store:
        """Create an empty store at ``path`` (idempotent if it is already a store).

        The repository is built in a temporary sibling directory and renamed
        into place, so a killed ``init`` leaves nothing half-made.

        Raises:
            StoreError: if ``path`` exists, is not empty and is not a store.
        """
        p = Path(path)
        with contextlib.suppress(StoreError):
            return cls.open(p, lock_timeout=lock_timeout)
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise StoreError(f"cannot create a store at {p}: it exists and is not an empty directory")
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.init-", dir=p.parent))
        try:
            Git(tmp).run("init", "-q", "-b", "main", ".")
            _init_repo_files(tmp / ".git")
            os.rename(tmp, p)  # atomic; replaces an empty directory
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StoreError(f"cannot create a store at {p}: {exc}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(p, lock_timeout=lock_timeout)

    # -- locking ----------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the store's write lock (re-entrant within a thread).

        Args:
            timeout: Seconds to wait for another writer; default ``lock_timeout``.

        Raises:
            StoreLockedError: if the lock is still held after ``timeout`` seconds.
        """
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        timeout = self.lock_timeout if timeout is None else timeout
        fd = os.open(self._gitdir / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                        raise StoreLockedError(
                            f"store {self.path} is locked by another writer (pid {holder}); "
                            f"gave up after {timeout:g} s, retry when it finishes"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.1)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._local.depth = 1
            try:
                with self._git.inherit(fd):
                    self._recover()
                    yield
            finally:
                self._local.depth = 0
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _recover(self) -> None:
        """Under the lock: drop stale git lock files and refresh a stale view of HEAD."""
        stale = [self._gitdir / n for n in ("index.lock", "HEAD.lock", "packed-refs.lock")]
        stale += list((self._gitdir / "refs").rglob("*.lock"))
        found = False
        for f in stale:
            if f.exists():
                logger.warning("removing stale git lock file %s left by a killed writer", f)
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
                found = True
        if found or (self._gitdir / _SYNC_MARKER).exists():
            self._sync_view()

    def _sync_view(self) -> None:
        if self._resolve_opt("HEAD") is not None:
            self._git.run("reset", "-q", "--hard", "HEAD")
        with contextlib.suppress(FileNotFoundError):
            (self._gitdir / _SYNC_MARKER).unlink()

    def _move_head(self, args: list[str]) -> None:
        """Run a ref-moving git command, then refresh the working-tree view."""
        (self._gitdir / _SYNC_MARKER).touch()
        self._git.run(*args)
        self._sync_view()

    # -- revisions --------------------------------------------------------------
    def _check_rev(self, rev: str) -> str:
        if not isinstance(rev, str) or not _REV_RE.match(rev) or ".." in rev or rev.endswith(".lock"):
            raise StoreError(f"invalid revision {rev!r}: use a sha, branch, tag, HEAD or HEAD~N")
        return rev

    def _resolve_opt(self, rev: str) -> str | None:
        rc, out, _ = self._git.run_bytes(
            "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}", check=False
        )
        return out.decode().strip() if rc == 0 else None

    def resolve(self, rev: str = "HEAD") -> str:
        """Full commit sha of ``rev``.

        Raises:
            StoreError: if the revision is malformed or unknown, or the store is empty.
        """
        sha = self._resolve_opt(self._check_rev(rev))
        if sha is None:
            if self._resolve_opt("HEAD") is None:
                raise StoreError(f"store {self.path} has no versions yet")
            raise StoreError(f"unknown revision {rev!r} in store {self.path}")
        return sha

    # -- reading ----------------------------------------------------------------
    def head(self) -> Version | None:
        """The version at HEAD, or None for an empty store."""
        sha = self._resolve_opt("HEAD")
        return None if sha is None else self._versions([sha])[0]

    def current(self) -> LearnedContext | None:
        """The context at HEAD, or None for an empty store."""
        sha = self._resolve_opt("HEAD")
        return None if sha is None else self._read_context(sha)

    def version(self, rev: str = "HEAD") -> Version:
        """The :class:`Version` at ``rev``."""
        return self._versions([self.resolve(rev)])[0]

    def log(self, rev: str = "HEAD", limit: int | None = None) -> list[Version]:
        """Versions reachable from ``rev``, newest first (empty list for an empty store)."""
        if rev == "HEAD" and self._resolve_opt("HEAD") is None:
            return []
        sha = self.resolve(rev)
        args = ["rev-list", "--topo-order"]
        if limit is not None:
            args.append(f"--max-count={int(limit)}")
        shas = self._git.run(*args, sha).split()
        return self._versions(shas)

    def show(self, rev: str = "HEAD") -> LearnedContext:
        """The context stored at ``rev``."""
        return self._read_context(self.resolve(rev))

    def metadata(self, rev: str = "HEAD") -> dict[str, Any]:
        """The metadata sidecar of ``rev``."""
        return self.version(rev).metadata

    def diff(self, a: str, b: str) -> ContextDiff:
        """Semantic diff from ``a`` to ``b``; ``.textual`` holds git's unified diff of the YAML files."""
        sa, sb = self.resolve(a), self.resolve(b)
        textual = self._git.run("diff", "--no-ext-diff", "--no-color", sa, sb, "--", CONTEXT_DIR)
        return diff_contexts(self._read_context(sa), self._read_context(sb), a_rev=sa, b_rev=sb, textual=textual)

    def branches(self) -> list[str]:
        """Branch names, sorted."""
        return self._refs("refs/heads/")

    def tags(self) -> list[str]:
        """Tag names, sorted."""
        return self._refs("refs/tags/")

    def current_branch(self) -> str | None:
        """The checked-out branch, or None when HEAD is detached (after :meth:`checkout` of a sha)."""
        rc, out, _ = self._git.run_bytes("symbolic-ref", "-q", "HEAD", check=False)
        ref = out.decode().strip()
        return ref[len("refs/heads/") :] if rc == 0 and ref.startswith("refs/heads/") else None

    def _refs(self, prefix: str) -> list[str]:
        out = self._git.run("for-each-ref", "--format=%(refname)", prefix)
        return sorted(line[len(prefix) :] for line in out.splitlines() if line)

    def _read_context(self, sha: str) -> LearnedContext:
        listing = self._git.run_bytes("ls-tree", "-z", sha, f"{CONTEXT_DIR}/")[1].decode("utf-8")
        entries = []
        for entry in filter(None, listing.split("\0")):
            meta, path = entry.split("\t", 1)
            mode, typ, obj = meta.split()
            if typ == "blob" and path.endswith(".yaml"):
                entries.append((path, obj))
        blobs = self._git.cat_batch([obj for _, obj in entries])
        predictors: dict[str, PredictorContext] = {}
        for (path, _), blob in zip(entries, blobs):
            where = f"{path} at {sha[:10]}"
            if blob is None:
                raise StoreError(f"{where} is missing from the repository")
            name, pc = load_predictor(blob.decode("utf-8"), where)
            if name in predictors:
                raise StoreError(f"{where}: predictor {name!r} appears in two files")
            predictors[name] = pc
        return LearnedContext(predictors)

    def _versions(self, shas: list[str]) -> list[Version]:
        objects = []
        for s in shas:
            objects += [s, f"{s}:{METADATA_FILE}"]
        blobs = self._git.cat_batch(objects)
        out = []
        for i, s in enumerate(shas):
            raw, meta_raw = blobs[2 * i], blobs[2 * i + 1]
            if raw is None:
                raise StoreError(f"commit {s} is missing from store {self.path}")
            parsed = parse_commit(raw)
            try:
                meta = json.loads(meta_raw) if meta_raw is not None else {}
            except ValueError:
                raise StoreError(f"{METADATA_FILE} at {s[:10]} is not valid JSON") from None
            out.append(
                Version(
                    rev=s,
                    context_hash=str(meta.get("context_hash", "")),
                    message=parsed.message,
                    metadata=meta,
                    timestamp=parsed.timestamp,
                    parents=parsed.parents,
                )
            )
        return out

    # -- writing ----------------------------------------------------------------
    def commit(
        self,
        context: LearnedContext,
        message: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        allow_empty: bool = False,
    ) -> Version:
        """Record ``context`` as a new version on the current branch (or detached HEAD).

        Args:
            context: The context to store.
            message: Commit subject (and optional body); secrets are redacted.
            metadata: JSON-able facts, e.g. ``{"task", "step", "scores", "edits", "lms"}``.
                ``edits`` may hold Edit objects; LM configs are redacted.
            allow_empty: Record a commit even if ``context`` equals HEAD's.
                Otherwise an unchanged context returns the HEAD version.

        Returns:
            The new (or unchanged HEAD) :class:`Version`.
        """
        if not isinstance(context, LearnedContext):
            raise StoreError(f"commit needs a LearnedContext, got {type(context).__name__}")
        if not isinstance(message, str) or not message.strip():
            raise StoreError("a commit needs a non-empty message")
        with self.lock():
            head = self._resolve_opt("HEAD")
            if head is not None and not allow_empty:
                hv = self._versions([head])[0]
                if hv.context_hash == context.hash:
                    return hv
            return self._commit(context, message, dict(metadata or {}), head, kind="commit")

    def _commit(self, context: LearnedContext, message: str, meta: dict[str, Any], head: str | None, *, kind: str) -> Version:
        meta = redact(meta)
        edits = meta.get("edits")
        if edits is not None and not isinstance(edits, list):
            meta["edits"] = edits = [edits]
        meta.update(context_hash=context.hash, kind=kind)
        subject, _, body = redact_text(message.strip()).partition("\n")
        meta["message"] = subject
        files = [(predictor_filename(n), dump_predictor(n, pc)) for n, pc in context.predictors.items()]
        sub = self._git.mktree(("100644", "blob", self._git.hash_blob(t.encode("utf-8")), f) for f, t in files)
        meta_blob = self._git.hash_blob((json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())
        entries = [("100644", "blob", meta_blob, METADATA_FILE)]
        if files:
            entries.append(("040000", "tree", sub, CONTEXT_DIR))
        tree = self._git.mktree(entries)
        text = commit_message(subject, body, meta)
        parent_args = ["-p", head] if head else []
        sha = self._git.run("commit-tree", tree, *parent_args, "-F", "-", input=text)
        self._move_head(["update-ref", "-m", f"ctxopt {kind}: {subject[:60]}", "HEAD", sha, head or ""])
        logger.debug("committed %s (context %s) to %s", sha[:10], context.hash[:12], self.path)
        return self._versions([sha])[0]

    def rollback(self, rev: str, reason: str = "") -> Version:
        """Restore the context of ``rev`` as a new version on top of HEAD (history is kept).

        Returns HEAD unchanged if it already holds that context.
        """
        with self.lock():
            target = self.version(rev)
            head = self.resolve("HEAD")
            hv = self._versions([head])[0]
            if hv.context_hash == target.context_hash:
                return hv
            context = self._read_context(target.rev)
            meta = {"rollback_to": target.rev, "reason": reason}
            for key in ("task", "step"):
                if key in hv.metadata:
                    meta[key] = hv.metadata[key]
            subject = f"Roll back to {target.short}" + (f": {reason}" if reason else "")
            body = f"Restores the context of {target.rev}\n({target.subject})."
            return self._commit(context, f"{subject}\n\n{body}", meta, head, kind="rollback")

    def checkout(self, rev: str) -> Version:
        """Make ``rev`` the current version: a branch name switches to it, anything else detaches HEAD."""
        with self.lock():
            if rev in self.branches():
                return self.switch(rev)
            sha = self.resolve(rev)
            self._move_head(["update-ref", "--no-deref", "-m", f"ctxopt checkout {rev}", "HEAD", sha])
            return self._versions([sha])[0]

    def branch(self, name: str, rev: str = "HEAD") -> Version:
        """Create branch ``name`` at ``rev`` (does not switch to it)."""
        return self._create_ref("refs/heads/", validate_ref_name(name, "branch"), rev, "branch")

    def tag(self, name: str, rev: str = "HEAD", message: str | None = None) -> Version:
        """Create tag ``name`` at ``rev``; with ``message`` an annotated tag."""
        validate_ref_name(name, "tag")
        if message is None:
            return self._create_ref("refs/tags/", name, rev, "tag")
        with self.lock():
            if name in self.tags():
                raise StoreError(f"tag {name!r} already exists")
            sha = self.resolve(rev)
            self._git.run("tag", "-a", "-F", "-", "--", name, sha, input=redact_text(message) or name)
            return self._versions([sha])[0]

    def _create_ref(self, prefix: str, name: str, rev: str, what: str) -> Version:
        with self.lock():
            existing = self._refs(prefix)
            if name in existing:
                raise StoreError(f"{what} {name!r} already exists")
            if any(e.startswith(name + "/") or name.startswith(e + "/") for e in existing):
                raise StoreError(f"{what} {name!r} clashes with an existing {what} that nests with it")
            sha = self.resolve(rev)
            self._git.run("update-ref", "-m", f"ctxopt {what} {name}", f"{prefix}{name}", sha, "")
            return self._versions([sha])[0]

    def switch(self, name: str) -> Version:
        """Switch HEAD to the existing branch ``name``."""
        validate_ref_name(name, "branch")
        with self.lock():
            if name not in self.branches():
                known = ", ".join(self.branches()) or "none"
                raise StoreError(f"no branch named {name!r} (branches: {known})")
            self._move_head(["symbolic-ref", "-m", f"ctxopt switch {name}", "HEAD", f"refs/heads/{name}"])
            return self.version("HEAD")

    # -- exchange ---------------------------------------------------------------
    def export_bundle(self, path: str | os.PathLike[str]) -> Path:
        """Write every branch and tag (and HEAD) into one git bundle file and return its path.

        The file is written to a temp name and renamed, so it is complete or absent.
        """
        if self._resolve_opt("HEAD") is None:
            raise StoreError(f"store {self.path} has no versions to export")
        out = Path(path).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        try:
            self._git.run("bundle", "create", "-q", str(tmp), "--branches", "--tags", "HEAD")
            os.replace(tmp, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return out

    @classmethod
    def import_bundle(
        cls, bundle: str | os.PathLike[str], path: str | os.PathLike[str], *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    ) -> Store:
        """Create a new store at ``path`` from a bundle made by :meth:`export_bundle`.

        Raises:
            StoreError: if the bundle is missing or invalid, holds no ctxopt
                versions, or ``path`` exists and is not empty.
        """
        src = Path(bundle).resolve()
        dst = Path(path)
        if not src.is_file():
            raise StoreError(f"bundle {bundle} does not exist")
        if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
            raise StoreError(f"cannot import into {dst}: it exists and is not an empty directory")
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.import-", dir=dst.parent))
        try:
            git = Git(tmp)
            git.run("init", "-q", "-b", "main", ".")
            if not git.ok("bundle", "verify", "-q", str(src)):
                raise StoreError(f"{bundle} is not a valid git bundle")
            heads = {}
            for line in git.run("bundle", "list-heads", str(src)).splitlines():
                sha, _, ref = line.partition(" ")
                heads[ref] = sha
            git.run("fetch", "-q", "--no-tags", "--update-head-ok", str(src),
                    "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
            branches = sorted(r[len("refs/heads/") :] for r in heads if r.startswith("refs/heads/"))
            head_sha = heads.get("HEAD")
            pick = None
            for cand in ["main", "master", *branches]:
                if cand in branches and (head_sha is None or heads[f"refs/heads/{cand}"] == head_sha):
                    pick = cand
                    break
            if pick is not None:
                git.run("symbolic-ref", "HEAD", f"refs/heads/{pick}")
            elif head_sha is not None:
                git.run("update-ref", "--no-deref", "HEAD", head_sha)
            else:
                raise StoreError(f"{bundle} holds no branch to import")
            _init_repo_files(tmp / ".git")
            store = cls(tmp)
            head = store.head()
            if head is None or not head.context_hash:
                raise StoreError(f"{bundle} does not hold a ctxopt store (no {METADATA_FILE} at HEAD)")
            store.show("HEAD")  # parses every predictor file
            store._sync_view()
            os.rename(tmp, dst)
        except OSError as exc:
            raise StoreError(f"cannot import into {dst}: {exc}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cls.open(dst, lock_timeout=lock_timeout)

    def export_dspy(
        self, program: dspy.Module, path: str | os.PathLike[str], rev: str = "HEAD", task: str | None = None
    ) -> Path:
        """Apply the context at ``rev`` to ``program`` and save it in DSPy's JSON format.

        The file loads with plain ``program.load(path)``; ctxopt is not needed.
        See :func:`ctxopt.dspy_export.export_program`.

        Raises:
            ConfigError: if ``path`` does not end in ``.json`` or predictor names differ.
        """
        return export_program(self.show(rev), program, path, task)

    def export_dspy_state(self, path: str | os.PathLike[str], rev: str = "HEAD", task: str | None = None) -> Path:
        """Write DSPy's state JSON for the context at ``rev`` without needing the program's code.

        ``program.load(path)`` reads it; see :func:`ctxopt.dspy_export.export_state`.
        Use :meth:`export_dspy` when the program is at hand.
        """
        return export_state(self.show(rev), path, task)


# -- helpers ----------------------------------------------------------------------


def _init_repo_files(gitdir: Path) -> None:
    (gitdir / "description").write_text("ctxopt store: versioned learned context\n", "utf-8")
    write_text(gitdir / _MARKER, json.dumps({"format": FORMAT, "version": FORMAT_VERSION}) + "\n")


__all__ = [
    "Store",
    "Version",
    "ContextDiff",
    "PredictorDiff",
    "ItemChange",
    "Demo",
    "Item",
    "validate_ref_name",
]
