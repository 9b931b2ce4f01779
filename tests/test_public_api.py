"""The public surface: one typed __init__, an __all__ in every public module, no private names across modules."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import ctxopt

PKG = Path(ctxopt.__file__).parent


def test_every_exported_name_resolves_and_type_checkers_see_the_same_names():
    names = [n for n in ctxopt.__all__ if n != "__version__"]
    for name in names:
        assert getattr(ctxopt, name) is not None
    tree = ast.parse((PKG / "__init__.py").read_text())
    typed = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.If)
             for sub in node.body if isinstance(sub, ast.ImportFrom) for a in sub.names}
    assert typed == set(names)


def test_extension_types_are_exported():
    for name in ("Proposer", "Proposal", "ProposalContext", "Gate", "Decision", "Search", "ContextSelector",
                 "Edit", "RunResult", "Event", "Method", "Outcome", "Budget", "Ledger"):
        assert name in ctxopt.__all__


def test_every_public_module_has_an_all():
    missing = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if any(part.startswith("_") for part in rel.parts) or rel.parts[0] in ("cli", "data"):
            continue
        mod = importlib.import_module("ctxopt." + ".".join(rel.with_suffix("").parts))
        if not hasattr(mod, "__all__"):
            missing.append(str(rel))
    assert missing == []


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ctxopt"):
                offenders += [f"{path.relative_to(PKG)}: {a.name}" for a in node.names
                              if a.name.startswith("_") and a.name != "__version__"]
    assert offenders == []
