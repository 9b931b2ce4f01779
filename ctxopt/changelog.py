"""The text of a store commit: a subject, a changelog of the edits, and ``Ctxopt-`` trailers.

Plain ``git log`` inside a store reads like a changelog. :func:`commit_message`
renders one line per edit (what changed, via :func:`ctxopt.edits.describe`,
and why, from the proposal or the edit's rationale), then trailers that
:func:`parse_commit` strips again when a version is read back.

Commit metadata ``"edits"`` may hold either shape, mixed:

* plain edit dicts (``Edit.to_dict()``) or Edit objects;
* proposal dicts, as the optimizer stores them: ``{"proposal": name, "source": …,
  "rationale": …, "edits": [edit dicts]}`` (a consolidation's ``{"kind": …,
  "rationale": …, "edits": […]}`` reads the same way).

Anything else still becomes one readable line (``key=value`` pairs, long texts
shortened), never a Python repr of a dict.

Example:
    >>> from ctxopt.edits import AddItem
    >>> rule = AddItem("qa", "Cite the source.")
    >>> changelog_lines([{"proposal": "refl-1", "source": "reflection", "rationale": "answers lacked sources",
    ...                   "edits": [rule.to_dict()]}])
    ["- qa: add rule r-bb89d2dd: 'Cite the source.'  (reflection proposal refl-1: answers lacked sources)"]
    >>> changelog_lines([{"note": "hand-made", "count": 2, "extra": {"a": 1}}])
    ["- note='hand-made', count=2, extra=<1 field>"]
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ctxopt._redact import jsonable
from ctxopt.edits import AddDemo, describe, edit_from_dict
from ctxopt.errors import EditError

MAX_LINES = 50
"""Edit lines a commit message lists at most; the rest are counted in one last line."""
TRAILER_PREFIX = "Ctxopt-"
"""Prefix of the trailers that close every store commit message."""
_REASON_WIDTH = 80
_VALUE_WIDTH = 30
_LINE_WIDTH = 160
_DEMO_FIELDS = 3


@dataclass(frozen=True)
class CommitText:
    """What :func:`parse_commit` reads from a raw git commit object.

    Attributes:
        parents: Full shas of the parent commits.
        timestamp: Committer time, ISO 8601 with its UTC offset ("" if unreadable).
        message: The message without the trailing ``Ctxopt-`` trailers.
    """

    parents: tuple[str, ...]
    timestamp: str
    message: str


def _clip(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _value(value: Any) -> str:
    """A short, one-line rendering of a JSON value (nested containers are counted, not shown)."""
    if isinstance(value, str):
        return repr(_clip(value, _VALUE_WIDTH))
    if isinstance(value, Mapping):
        return f"<{len(value)} field{'' if len(value) == 1 else 's'}>"
    if isinstance(value, (list, tuple)):
        return f"<{len(value)} item{'' if len(value) == 1 else 's'}>"
    return _clip(json.dumps(value) if value is None or isinstance(value, bool) else str(value), _VALUE_WIDTH)


def _fields(mapping: Mapping[str, Any], most: int) -> str:
    """``key=value`` pairs of ``mapping``, at most ``most`` of them."""
    pairs = [f"{k}={_value(v)}" for k, v in list(mapping.items())[:most]]
    return ", ".join(pairs + (["…"] if len(mapping) > most else []))


def _plain(entry: Any) -> str:
    """One readable line for an entry of unknown shape."""
    if isinstance(entry, Mapping):
        text = _fields(entry, 8) or "(empty)"
    elif isinstance(entry, (list, tuple)):
        text = ", ".join(_value(v) for v in entry) or "(empty)"
    else:
        text = str(entry)
    return _clip(text, _LINE_WIDTH)


def _what(edit_dict: Mapping[str, Any]) -> tuple[str, str]:
    """What an edit dict changes, and its own rationale; unknown or invalid edits fall back to key=value."""
    try:
        edit = edit_from_dict(edit_dict)
    except EditError:
        return _plain(edit_dict), ""
    text = describe(edit)
    if isinstance(edit, AddDemo):
        text += f" {_fields(edit.demo.inputs, _DEMO_FIELDS)} → {_fields(edit.demo.outputs, _DEMO_FIELDS)}"
    return text, edit.rationale


def _why(label: str, name: str, rationale: str) -> str:
    head = " ".join(p for p in (_clip(label, 30), f"proposal {_clip(name, 40)}" if name else "") if p)
    rationale = _clip(rationale, _REASON_WIDTH)
    return f"{head}: {rationale}" if head and rationale else head or rationale


def _line(what: str, why: str) -> str:
    return f"- {what}" + (f"  ({why})" if why else "")


def _entry_lines(entry: Any) -> list[str]:
    """Changelog lines of one entry of commit metadata ``"edits"`` (an edit, a proposal, or anything)."""
    if not isinstance(entry, Mapping):
        return [_line(_plain(entry), "")]
    if "op" in entry:
        what, rationale = _what(entry)
        return [_line(what, _clip(rationale, _REASON_WIDTH))]
    edits = entry.get("edits")
    if not isinstance(edits, list):
        return [_line(_plain(entry), "")]
    label = str(entry.get("source") or entry.get("kind") or "")
    name = str(entry.get("proposal") or entry.get("name") or "")
    reason = str(entry.get("rationale") or "")
    if not edits:
        return [_line("no edits", _why(label, name, reason))]
    lines = []
    for inner in edits:
        what, own = _what(inner) if isinstance(inner, Mapping) else (_plain(inner), "")
        lines.append(_line(what, _why(label, name, reason or own)))
    return lines


def changelog_lines(edits: Sequence[Any], limit: int = MAX_LINES) -> list[str]:
    """One ``- what  (why)`` line per edit, for a commit message.

    Args:
        edits: Entries of commit metadata ``"edits"``: edit dicts, Edit objects,
            proposal dicts holding edit dicts, or anything else (rendered as ``key=value``).
        limit: Most lines to list; further ones are counted in a last ``- … and N more`` line.

    Returns:
        The lines, each starting with ``"- "``; never a Python repr of a dict.
    """
    lines: list[str] = []
    for entry in jsonable(list(edits)):
        lines += _entry_lines(entry)
    if len(lines) > limit:
        lines = lines[:limit] + [f"- … and {len(lines) - limit} more"]
    return lines


def commit_message(subject: str, body: str, meta: Mapping[str, Any]) -> str:
    """The full commit message of a store version.

    Args:
        subject: First line (already redacted).
        body: Free text after the subject, may be empty.
        meta: The version's metadata; needs ``context_hash`` and ``kind``, and may hold
            ``edits``, ``task``, ``step`` and ``scores``.

    Returns:
        Subject, body, an ``Edits:`` changelog, and ``Ctxopt-`` trailers, ending in a newline.

    Example:
        >>> print(commit_message("start", "", {"context_hash": "ab12", "kind": "commit", "step": 0}), end="")
        start
        <BLANKLINE>
        Ctxopt-Context-Hash: ab12
        Ctxopt-Kind: commit
        Ctxopt-Step: 0
    """
    parts = [subject]
    if body.strip():
        parts.append(body.strip())
    if meta.get("edits"):
        parts.append("Edits:\n" + "\n".join(changelog_lines(meta["edits"])))
    trailers = [f"{TRAILER_PREFIX}Context-Hash: {meta['context_hash']}", f"{TRAILER_PREFIX}Kind: {meta['kind']}"]
    for key in ("task", "step"):
        if meta.get(key) is not None:
            trailers.append(f"{TRAILER_PREFIX}{key.capitalize()}: {' '.join(str(meta[key]).split())}")
    if meta.get("scores") is not None:
        trailers.append(f"{TRAILER_PREFIX}Scores: " + json.dumps(meta["scores"], sort_keys=True, separators=(",", ":"))[:500])
    parts.append("\n".join(trailers))
    return ("\n\n".join(parts) + "\n").replace("\x00", "\\0")  # git refuses a NUL byte in a commit message


def parse_commit(raw: bytes) -> CommitText:
    """Read parents, committer time and message (trailers stripped) from a raw git commit object.

    Args:
        raw: The object as ``git cat-file commit`` prints it.

    Returns:
        A :class:`CommitText`.
    """
    header, _, message = raw.decode("utf-8", "replace").partition("\n\n")
    parents: list[str] = []
    timestamp = ""
    for line in header.splitlines():
        if line.startswith("parent "):
            parents.append(line[7:].strip())
        elif line.startswith("committer "):
            parts = line.rsplit(" ", 2)
            with contextlib.suppress(ValueError, IndexError):
                tz = parts[2]
                offset = _dt.timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5])) * (-1 if tz[0] == "-" else 1)
                timestamp = _dt.datetime.fromtimestamp(int(parts[1]), _dt.timezone(offset)).isoformat()
    lines = message.rstrip("\n").split("\n")
    while lines and (lines[-1].startswith(TRAILER_PREFIX) or not lines[-1].strip()):
        lines.pop()
    return CommitText(tuple(parents), timestamp, "\n".join(lines))


__all__ = ["MAX_LINES", "TRAILER_PREFIX", "CommitText", "changelog_lines", "commit_message", "parse_commit"]
