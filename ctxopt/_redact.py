"""Make metadata JSON-safe and strip secrets before anything is written to a store.

Two rules: a mapping key that names a credential (``api_key``, ``token``,
``client_secret``, ``password``, ``authorization`` …) gets its value replaced,
and any string that looks like a key (``sk-…``, ``hf_…``, ``ghp_…``,
``AKIA…``, ``Bearer …``) is masked wherever it appears.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***REDACTED***"

# Keys whose last word names a credential. "max_tokens" and "token_count" stay.
_SECRET_KEY = re.compile(
    r"(^|[_\-.])(api[_\-]?key|apikey|key[_\-]?secret|secret|secret[_\-]?key|token|access[_\-]?token|"
    r"refresh[_\-]?token|auth[_\-]?token|password|passwd|passphrase|authorization|credentials?|"
    r"private[_\-]?key|cookie)$",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"(?<![A-Za-z0-9])"  # a key starts a word: "task-agnostic" holds no "sk-agnostic" key
    r"(sk-[A-Za-z0-9_\-]{8,}"  # OpenAI / Anthropic style
    r"|hf_[A-Za-z0-9]{16,}"  # Hugging Face
    r"|gh[pousr]_[A-Za-z0-9]{16,}"  # GitHub
    r"|github_pat_[A-Za-z0-9_]{16,}"
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|AIza[0-9A-Za-z_\-]{30,}"  # Google API key
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{12,}=*)"
)


def is_secret_key(key: str) -> bool:
    """True if a mapping key names a credential."""
    return bool(_SECRET_KEY.search(key.strip()))


def redact_text(text: str) -> str:
    """Mask substrings of ``text`` that look like API keys or bearer tokens."""
    return _SECRET_VALUE.sub(REDACTED, text)


def jsonable(obj: Any, _depth: int = 0) -> Any:
    """Turn ``obj`` into JSON values: records via ``to_dict``, LMs via model + kwargs, else ``str``."""
    if _depth > 20:
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [jsonable(v, _depth + 1) for v in items]
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return jsonable(to_dict(), _depth + 1)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj), _depth + 1)
    model, kwargs = getattr(obj, "model", None), getattr(obj, "kwargs", None)
    if isinstance(model, str) and isinstance(kwargs, Mapping):  # a dspy.LM and the like
        return jsonable({"model": model, **kwargs}, _depth + 1)
    return str(obj)


def redact(obj: Any) -> Any:
    """Return a JSON-safe copy of ``obj`` with secret-named keys and key-like strings masked.

    Example:
        >>> redact({"lm": {"model": "gpt-x", "api_key": "abc", "max_tokens": 5}, "note": "key sk-abcdefghijkl"})
        {'lm': {'model': 'gpt-x', 'api_key': '***REDACTED***', 'max_tokens': 5}, 'note': 'key ***REDACTED***'}
    """
    return _redact(jsonable(obj))


def _redact(obj: Any) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if is_secret_key(k) and v not in (None, "", [], {}):
                out[k] = REDACTED
            else:
                out[k] = _redact(v)
        return out
    if isinstance(obj, list):
        return [_redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj
