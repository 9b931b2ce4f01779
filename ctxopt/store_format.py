"""The on-disk format of a store version: one human-readable YAML file per predictor.

A version (one git commit) holds ``context/<predictor>.yaml`` files, written by
:func:`dump_predictor` and read back by :func:`load_predictor`, and a
``metadata.json`` sidecar. YAML is written with a safe dumper (multi-line text
as ``|`` blocks, so ``git diff`` shows changed lines) and read with the safe
loader only: nothing in a store is ever executed.

Example:
    >>> from ctxopt.context import PredictorContext
    >>> text = dump_predictor("qa", PredictorContext("Answer.\\nBe brief."))
    >>> load_predictor(text, "qa.yaml") == ("qa", PredictorContext("Answer.\\nBe brief."))
    True
    >>> predictor_filename("qa.predict"), predictor_filename(".hidden/x")
    ('qa.predict.yaml', '%2Ehidden%2Fx.yaml')
"""

from __future__ import annotations

import urllib.parse

import yaml

from ctxopt.context import PredictorContext
from ctxopt.errors import EditError, StoreError

FORMAT = "ctxopt-store"
"""The ``format`` field of the marker file that makes a git repository a store."""
FORMAT_VERSION = 1
"""The store format this ctxopt writes; a store with a higher one needs a newer ctxopt."""
SCHEMA_VERSION = 1
"""The schema of a predictor YAML file, named in its header comment."""
CONTEXT_DIR = "context"
"""Folder of a version that holds the predictor YAML files."""
METADATA_FILE = "metadata.json"
"""The metadata sidecar of a version: context hash, task, step, scores, LMs, edits."""


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    pass


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None  # the emitter falls back to quotes when | cannot round-trip
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def predictor_filename(name: str) -> str:
    """File name of a predictor's YAML file.

    Args:
        name: The predictor's name, e.g. ``"qa.predict"``.

    Returns:
        The name %-escaped to a safe file name (never hidden) plus ``.yaml``.
    """
    quoted = urllib.parse.quote(name, safe="")
    if quoted.startswith("."):
        quoted = "%2E" + quoted[1:]
    return quoted + ".yaml"


def dump_predictor(name: str, pc: PredictorContext) -> str:
    """Render one predictor's context as the YAML text stored in ``context/<name>.yaml``.

    Args:
        name: The predictor's name, written into the file.
        pc: Its learned context.

    Returns:
        YAML text with a header comment; :func:`load_predictor` inverts it.
    """
    doc = {"predictor": name, **pc.to_dict()}
    header = f"# Learned context of predictor {name!r}, written by ctxopt (schema {SCHEMA_VERSION}). Edit with ctxopt.\n"
    return header + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def load_predictor(text: str, where: str) -> tuple[str, PredictorContext]:
    """Parse a predictor YAML file with the safe loader.

    Args:
        text: The file's text.
        where: What to call the file in an error, e.g. ``"context/qa.yaml at 1a2b3c4d5e"``.

    Returns:
        The predictor's name and its context.

    Raises:
        StoreError: one line naming ``where``, if the text is not a valid predictor file.
    """
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
        if not isinstance(doc, dict) or not isinstance(doc.get("predictor"), str):
            raise EditError("expected a mapping with a 'predictor' name")
        name = doc.pop("predictor")
        return name, PredictorContext.from_dict(doc)
    except (yaml.YAMLError, EditError, TypeError, ValueError) as exc:
        raise StoreError(f"{where} is not a valid predictor file: {str(exc).splitlines()[0]}") from None


__all__ = [
    "CONTEXT_DIR",
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_FILE",
    "SCHEMA_VERSION",
    "dump_predictor",
    "load_predictor",
    "predictor_filename",
]
