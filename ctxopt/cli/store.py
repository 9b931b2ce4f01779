"""Store subcommands: log, show, diff, rollback, branch, tag, switch, checkout, export, import.

``show --for-input TEXT`` prints the exact prompt the model gets for one input
(:func:`ctxopt.prompt.prompt_messages`) under a per-input selection of C
(:class:`~ctxopt.retrieval.RetrievalSelector` by default), and what was retrieved
with its similarity. The program is ``--program`` (default: the built-in one)
built for ``--stream`` (default: the stream recorded in the store's first version).

Every command takes ``--store DIR`` (default: ``$CTXOPT_STORE`` or ``./ctxopt-store``).
They are thin wrappers over :class:`ctxopt.store.Store`; errors are
:class:`~ctxopt.errors.CtxoptError` and print as one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ctxopt.dspy_export import retrieval_note
from ctxopt.errors import ConfigError, StoreError

DEFAULT_STORE = "ctxopt-store"


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        metavar="DIR",
        default=os.environ.get("CTXOPT_STORE", DEFAULT_STORE),
        help="store directory (default: $CTXOPT_STORE or ./ctxopt-store)",
    )


def _open(args: argparse.Namespace):  # noqa: ANN202 - Store, imported lazily
    from ctxopt.store import Store

    return Store.open(args.store, lock_timeout=args.lock_timeout)


def _summary(meta: dict[str, Any]) -> str:
    parts = []
    if meta.get("step") is not None:
        parts.append(f"step {meta['step']}")
    if meta.get("task") is not None:
        parts.append(f"task {meta['task']}")
    if meta.get("kind") == "rollback":
        parts.append("rollback")
    return ", ".join(parts)


def cmd_log(args: argparse.Namespace) -> int:
    store = _open(args)
    versions = store.log(args.rev, limit=args.limit)
    if args.json:
        _out(json.dumps([v.to_dict() for v in versions], indent=2, ensure_ascii=False))
        return 0
    if not versions:
        _out(f"store {store.path} has no versions yet")
        return 0
    decorations: dict[str, list[str]] = {}
    for b in store.branches():
        decorations.setdefault(store.resolve(b), []).append(b)
    for t in store.tags():
        decorations.setdefault(store.resolve(t), []).append(f"tag:{t}")
    head = store.resolve("HEAD")
    for v in versions:
        deco = decorations.get(v.rev, [])
        if v.rev == head:
            deco = ["HEAD", *deco]
        extra = _summary(v.metadata)
        line = f"{v.short}  {v.timestamp[:19]}  ctx {v.context_hash[:12]}  {v.subject}"
        if extra:
            line += f"  [{extra}]"
        if deco:
            line += f"  ({', '.join(deco)})"
        _out(line)
    return 0


def _clip(value: Any, width: int = 60) -> str:
    flat = " ".join(str(value).split())
    return repr(flat if len(flat) <= width else flat[: width - 1] + "…")


def cmd_show(args: argparse.Namespace) -> int:
    store = _open(args)
    version = store.version(args.rev)
    ctx = store.show(version.rev)
    if args.for_input is not None:
        return _show_for_input(args, store, version, ctx)
    names = _program_order(store, version.rev, ctx)
    if args.predictor is not None:
        if args.predictor not in ctx.predictors:
            raise ConfigError(f"no predictor {args.predictor!r} at {version.short} (predictors: {', '.join(names)})")
        names = [args.predictor]
    if args.json:
        _out(json.dumps({"version": version.to_dict(), "context": ctx.to_dict()}, indent=2, ensure_ascii=False))
        return 0
    _out(f"version {version.rev}")
    _out(f"context {version.context_hash}")
    _out(f"date    {version.timestamp}")
    _out(f"message {version.subject}")
    extra = _summary(version.metadata)
    if extra:
        _out(f"meta    {extra}")
    for name in names:
        pc = ctx.predictors[name]
        _out("")
        _out(f"== {name}  ({len(pc.items)} items, {len(pc.demos)} demos, {ctx.token_count(name, args.task)} tokens)")
        if args.rendered:
            _out(ctx.render(name, args.task))
            continue
        _out(f"instruction: {pc.instruction}")
        if pc.retrieval:
            learned = ", ".join(f"{k} {v:g}" for k, v in pc.retrieval)
            _out(f"retrieval: {learned}  (learned; a retrieving selector uses these)")
        for it in pc.scoped_items(args.task):
            counts = f" +{it.helpful}/-{it.harmful}" if it.helpful or it.harmful else ""
            pin = ", pinned" if it.pinned else ""
            _out(f"  {it.id} [{it.kind}, {it.scope}{pin}{counts}{_narrowed(it)}] {' '.join(it.text.split())}")
        for d in pc.scoped_demos(args.task):
            shown = lambda fields: "; ".join(f"{k}={_clip(v)}" for k, v in fields.items() if k != "task")  # noqa: E731
            source = f", from {d.source_task}" if d.source_task and d.source_task != d.scope else ""
            _out(f"  demo {d.id} [{d.scope}{source}{_narrowed(d)}] {shown(d.inputs)} → {shown(d.outputs)}")
    return 0


def _narrowed(entry: Any) -> str:
    """``, not for N inputs like '…'`` for an item or demo with counter-keys, else nothing."""
    return f", not for {len(entry.unless)} inputs like {_clip(entry.unless[0], 40)}" if entry.unless else ""


def _program_order(store: Any, rev: str, ctx: Any) -> list[str]:
    """C's predictor names in the order the program calls them, as its initial version recorded (else by name)."""
    recorded = store.log(rev)[-1].metadata.get("predictors") or []
    known = [n for n in recorded if n in ctx.predictors]
    return known + [n for n in ctx.predictors if n not in known]


def _program(args: argparse.Namespace, store: Any, rev: str) -> Any:
    """The program C belongs to: ``--program`` built for ``--stream``, else for the stream the store recorded."""
    from ctxopt.program import build_program
    from ctxopt.streams import load_stream

    first = store.log(rev)[-1].metadata  # a run's initial version records its stream and scenario
    spec, scenario = args.stream or first.get("stream"), first.get("scenario")
    if not spec:
        raise ConfigError(f"store {store.path} does not record its stream; pass --stream SPEC (and --program SPEC)")
    try:
        stream = load_stream(spec, scenario=scenario)
    except ConfigError as exc:
        raise ConfigError(f"cannot load stream {spec!r} for the program ({exc}); pass --stream SPEC") from None
    return build_program(args.program, stream)


def _show_for_input(args: argparse.Namespace, store: Any, version: Any, ctx: Any) -> int:
    """``show --for-input TEXT``: what the model sees for that input, and what was retrieved for it."""
    from ctxopt.prompt import format_messages, prompt_messages
    from ctxopt.retrieval import RetrievalSelector
    from ctxopt.selector import ScopeSelector
    from ctxopt.tasks import TASK_FIELD

    program = _program(args, store, version.rev)
    named = dict(program.named_predictors())
    name = args.predictor or next(iter(named), "")
    if name not in named:
        raise ConfigError(f"the program has no predictor {name!r} (predictors: {', '.join(named) or 'none'})")
    fields = list(named[name].signature.input_fields)
    data_fields = [f for f in fields if f != TASK_FIELD]
    field = args.field or (data_fields[0] if data_fields else "")
    if field not in data_fields:
        raise ConfigError(f"predictor {name!r} has no input field {field!r} (input fields: {', '.join(data_fields)})")
    if TASK_FIELD in fields and args.task is None:
        raise ConfigError(f"predictor {name!r} takes the task label as input field {TASK_FIELD!r}; pass --task NAME")
    inputs = {TASK_FIELD: args.task} if args.task is not None else {}  # a task-aware example carries its label
    inputs[field] = args.for_input
    if args.selector == "retrieval":
        selector: Any = RetrievalSelector(args.similarity, k_items=args.k_items, k_demos=args.k_demos,
                                          min_score=args.min_score, margin=args.margin, reach=args.reach)
    else:
        selector = ScopeSelector()
    messages = prompt_messages(program, ctx, inputs, predictor=name, task=args.task, selector=selector)
    why = selector.explain(ctx, args.task, inputs)[name] if isinstance(selector, RetrievalSelector) else None
    if args.json:
        _out(json.dumps({"version": version.rev, "predictor": name, "inputs": inputs, "selector": args.selector,
                         "retrieval": why.to_dict() if why else None, "messages": messages},
                        indent=2, ensure_ascii=False))
        return 0
    head = f"version {version.rev}  predictor {name}  selector {args.selector}"
    for line in what_is_shown(ctx.predictor(name), args.task, selector, why, head):
        _out(line)
    _out("")
    _out(format_messages(messages))
    return 0


def what_is_shown(pc: Any, task: str | None, selector: Any, why: Any, head: str) -> list[str]:
    """Lines naming what of predictor context ``pc`` one input is shown: every item and demo in scope
    (``why`` None), or what ``selector`` retrieved for it (``why``, its explanation), with similarities."""
    if why is None:
        return [head, f"shown: all {len(pc.scoped_items(task))} items and {len(pc.scoped_demos(task))} demos in scope"]
    k_items, k_demos, min_score = selector.settings(pc)
    learned = " learned" if pc.retrieval else ""
    margin, reach = selector.margin_for(pc), selector.reach_for(pc)
    lines = [f"{head} ({selector.sim.name},{learned} k_items {k_items}, k_demos {k_demos}, min_score {min_score:g}"
             + (f", margin {margin:g}" if margin < 1 else "") + (f", reach {reach:g})" if reach < 1 else ")")]
    items = {it.id: it for it in pc.items}
    lines += [f"  pinned      {item_id} {_clip(items[item_id].text)}" for item_id in why.pinned]
    lines += [f"  item {hit.score:.3f} {hit.id} {_clip(items[hit.id].text)}  (key {_clip(hit.key, 40)})"
              for hit in why.items]
    lines += [f"  demo {hit.score:.3f} {hit.id} {_clip(hit.key)}" for hit in why.demos]
    lines.append(f"retrieved {len(why.items)} of {len(pc.scoped_items(task)) - len(why.pinned)} items, "
                 f"{len(why.demos)} of {len(pc.scoped_demos(task))} demos"
                 + (f"; {len(why.kept_off)} kept off by their counter-keys" if why.kept_off else ""))
    return lines


def cmd_diff(args: argparse.Namespace) -> int:
    store = _open(args)
    diff = store.diff(args.a, args.b)
    if args.json:
        _out(json.dumps(diff.to_dict(), indent=2, ensure_ascii=False))
    elif args.textual:
        _out(diff.textual)
    else:
        _out(diff.to_text())
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    store = _open(args)
    before = store.resolve("HEAD")
    v = store.rollback(args.rev, reason=args.reason)
    if v.rev == before:
        _out(f"HEAD {v.short} already has the context of {args.rev}; nothing to roll back")
    else:
        _out(f"rolled back to {args.rev}: new version {v.short} (context {v.context_hash[:12]})")
    return 0


def _ref_cmd(kind: str):  # noqa: ANN202
    def run(args: argparse.Namespace) -> int:
        store = _open(args)
        if args.name is None:
            names = store.branches() if kind == "branch" else store.tags()
            current = store.current_branch() if kind == "branch" else None
            for n in names:
                _out(("* " if n == current else "  ") + n if kind == "branch" else n)
            return 0
        if kind == "branch":
            v = store.branch(args.name, args.rev)
        else:
            v = store.tag(args.name, args.rev, message=args.message)
        _out(f"{kind} {args.name} -> {v.short}")
        return 0

    return run


def cmd_switch(args: argparse.Namespace) -> int:
    v = _open(args).switch(args.name)
    _out(f"switched to branch {args.name} at {v.short}")
    return 0


def cmd_checkout(args: argparse.Namespace) -> int:
    store = _open(args)
    v = store.checkout(args.rev)
    branch = store.current_branch()
    where = f"branch {branch}" if branch else "detached HEAD"
    _out(f"checked out {v.short} (context {v.context_hash[:12]}) on {where}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    store = _open(args)
    if args.dspy:
        out = store.export_dspy_state(args.path, rev=args.rev, task=args.task)
        _out(f"wrote DSPy state of {args.rev} to {out} (load with program.load)")
        note = retrieval_note(store.show(args.rev))
        if note:
            print(f"note: {note}", file=sys.stderr)
    else:
        if args.rev != "HEAD" or args.task is not None:
            raise ConfigError("--rev and --task apply only with --dspy; a bundle holds the whole history")
        out = store.export_bundle(args.path)
        _out(f"wrote bundle {out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ctxopt.store import Store

    if not os.path.isfile(args.bundle):
        raise StoreError(f"bundle {args.bundle} does not exist")
    store = Store.import_bundle(args.bundle, args.store, lock_timeout=args.lock_timeout)
    head = store.head()
    _out(f"imported {len(store.log())} versions into {store.path} (HEAD {head.short if head else 'none'})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the store subcommands to the ``ctxopt`` parser."""

    def add(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, help=help, description=help)
        _store_arg(p)
        p.add_argument("--lock-timeout", type=float, default=30.0, metavar="S", help="seconds to wait for the store lock")
        p.set_defaults(func=func)
        return p

    p = add("log", cmd_log, "list the versions of the learned context, newest first")
    p.add_argument("rev", nargs="?", default="HEAD", metavar="REV")
    p.add_argument("-n", "--limit", type=int, default=None, help="show at most N versions")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("show", cmd_show, "show the learned context at a version")
    p.add_argument("rev", nargs="?", default="HEAD", metavar="REV")
    p.add_argument("--predictor", default=None, help="only this predictor")
    p.add_argument("--task", default=None,
                   help="only items and demos in scope for this task (with --for-input: a task-aware call's label)")
    p.add_argument("--rendered", action="store_true", help="print the text the LM sees")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--for-input", default=None, metavar="TEXT",
                   help="print the exact prompt the model gets for this input, and what was retrieved for it")
    p.add_argument("--field", default=None, metavar="NAME",
                   help="input field that gets TEXT (default: the predictor's first input field but 'task')")
    p.add_argument("--selector", choices=("retrieval", "scope"), default="retrieval",
                   help="with --for-input: per-input retrieval (default), or everything in scope")
    p.add_argument("--similarity", choices=("auto", "embedding", "lexical"), default="auto",
                   help="retrieval similarity: sentence embeddings if installed (auto), or lexical")
    p.add_argument("--k-items", type=int, default=3, metavar="N", help="items retrieved per input (default 3)")
    p.add_argument("--k-demos", type=int, default=4, metavar="N",
                   help="demos retrieved per input (default 4; C's learned settings win)")
    p.add_argument("--min-score", type=float, default=0.0, metavar="S",
                   help="similarity a retrieved item or demo needs (default 0)")
    p.add_argument("--margin", type=float, default=0.1, metavar="M",
                   help="how far below the input's best match a retrieved one may score (default 0.1; 1: no limit)")
    p.add_argument("--reach", type=float, default=0.1, metavar="R",
                   help="how far below its keys' own cohesion an input may match an entry (default 0.1; 1: no limit)")
    p.add_argument("--stream", default=None, metavar="SPEC",
                   help="with --for-input: the stream the program is built for (default: the one the store recorded)")
    p.add_argument("--program", default="builtin", metavar="SPEC",
                   help="with --for-input: 'builtin' (default) or 'package.module:factory'")

    p = add("diff", cmd_diff, "compare two versions: items added/removed/changed, instruction changes")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--textual", action="store_true", help="print git's unified diff of the context files")
    fmt.add_argument("--json", action="store_true", help="print JSON")

    p = add("rollback", cmd_rollback, "restore an old version as a new version (history is kept)")
    p.add_argument("rev", metavar="REV")
    p.add_argument("--reason", default="", help="why; recorded in the commit")

    p = add("branch", _ref_cmd("branch"), "create a branch at REV (default HEAD), or list branches")
    p.add_argument("name", nargs="?", default=None, metavar="NAME")
    p.add_argument("rev", nargs="?", default="HEAD", metavar="REV")

    p = add("tag", _ref_cmd("tag"), "tag a version (default HEAD), or list tags")
    p.add_argument("name", nargs="?", default=None, metavar="NAME")
    p.add_argument("rev", nargs="?", default="HEAD", metavar="REV")
    p.add_argument("-m", "--message", default=None, help="annotated tag message")

    p = add("switch", cmd_switch, "switch to an existing branch")
    p.add_argument("name", metavar="NAME")

    p = add("checkout", cmd_checkout, "make REV current: a branch switches, a sha or tag detaches HEAD")
    p.add_argument("rev", metavar="REV")

    p = add("export", cmd_export, "write the store as one bundle file, or DSPy state JSON with --dspy")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--dspy", action="store_true", help="write DSPy's program state JSON (program.load reads it)")
    p.add_argument("--rev", default="HEAD", help="version to export with --dspy")
    p.add_argument("--task", default=None, help="render for this task with --dspy")

    p = add("import", cmd_import, "create the store at --store from a bundle file")
    p.add_argument("bundle", metavar="BUNDLE")
