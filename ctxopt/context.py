"""The learned context C of a DSPy program: instruction, items and demos per predictor.

A :class:`LearnedContext` is an immutable value. It is extracted from any
``dspy.Module`` (:meth:`LearnedContext.from_program`), applied to any program
whose predictor names match (:meth:`LearnedContext.apply_to`), rendered into the
exact text the LM sees (:meth:`LearnedContext.render`), and identified by the
sha256 of its canonical JSON serialization (:attr:`LearnedContext.hash`).
It only changes through edits: any object that satisfies the :class:`Edit`
protocol, normally the typed edits of :mod:`ctxopt.edits`. They return a new
context and never mutate the old one. This module does not import
:mod:`ctxopt.edits`; the edits depend on the context, not the reverse.

dspy is imported lazily, so ``import ctxopt.context`` stays cheap.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ctxopt.errors import ConfigError, EditError
from ctxopt.tokens import count_tokens

if TYPE_CHECKING:  # pragma: no cover
    import dspy

GLOBAL = "global"
"""Scope of an item or demo that applies to every task."""

KINDS = ("rule", "note", "strategy")
"""Valid item kinds, in the order they are rendered."""

SCHEMA_VERSION = 1
_KIND_HEADERS = {"rule": "Rules:", "note": "Notes:", "strategy": "Strategies:"}


def canonical_json(obj: Any) -> str:
    """Serialize ``obj`` as canonical JSON: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:8]


def _check_str(value: Any, what: str, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise EditError(f"{what} must be a string, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise EditError(f"{what} must not be empty")
    return value


def _check_scope(scope: Any) -> str:
    scope = _check_str(scope, "scope")
    if scope != scope.strip() or "\n" in scope:
        raise EditError(f"scope {scope!r} must not contain newlines or surrounding spaces")
    return scope


def _json_value(value: Any) -> Any:
    """Keep JSON-compatible demo values as they are; turn anything else into text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


@dataclass(frozen=True)
class Item:
    """One learned rule, note or strategy of a predictor.

    Attributes:
        id: Stable id, e.g. ``"r-1a2b3c4d"``; unique within its predictor.
        text: What the LM reads.
        scope: :data:`GLOBAL` or a task tag; a task-scoped item is rendered only
            for inputs of that task when the task is known.
        kind: ``"rule"``, ``"note"`` or ``"strategy"``.
        source_task: Task during which the item was created (provenance).
        source_step: Stream step at which it was created (provenance).
        rationale: The feedback or reasoning that led to the item.
        created_step: Step of creation.
        updated_step: Step of the last change.
        helpful: How often the item was judged helpful.
        harmful: How often the item was judged harmful.
        pinned: Core memory: a per-input selector always keeps it
            (:class:`~ctxopt.retrieval.RetrievalSelector`).
        keys: Retrieval keys of archival memory: an "applies when …" text and
            the inputs that produced the item; none means its text is its key.
        unless: Counter-keys: inputs of other tasks the item must not reach. An input
            nearer to one of them than to every key does not retrieve the item
            (:func:`~ctxopt.retrieval.narrow`).

    ``pinned``, ``keys`` and ``unless`` are serialized only when set, so a context without
    them keeps the dict, YAML and :attr:`LearnedContext.hash` it always had.

    Example:
        >>> item = Item(id="r-00000001", text="Show units.", scope="physics")
        >>> Item.from_dict(item.to_dict()) == item, "keys" in item.to_dict()
        (True, False)
        >>> keyed = Item(id="r-00000002", text="Show units.", keys=["applies when a quantity is asked"], pinned=True)
        >>> Item.from_dict(keyed.to_dict()) == keyed, keyed.to_dict()["keys"]
        (True, ['applies when a quantity is asked'])
    """

    id: str
    text: str
    scope: str = GLOBAL
    kind: str = "rule"
    source_task: str | None = None
    source_step: int | None = None
    rationale: str = ""
    created_step: int = 0
    updated_step: int = 0
    helpful: int = 0
    harmful: int = 0
    pinned: bool = False
    keys: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_str(self.id, "item id")
        if any(c.isspace() for c in self.id):
            raise EditError(f"item id {self.id!r} must not contain whitespace")
        _check_str(self.text, f"text of item {self.id}")
        _check_scope(self.scope)
        if self.kind not in KINDS:
            raise EditError(f"item {self.id}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        _check_str(self.rationale, f"rationale of item {self.id}", empty_ok=True)
        if self.source_task is not None:
            _check_str(self.source_task, f"source_task of item {self.id}")
        for name in ("source_step", "created_step", "updated_step", "helpful", "harmful"):
            value = getattr(self, name)
            if value is None and name == "source_step":
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise EditError(f"item {self.id}: {name} must be an integer, got {value!r}")
        if not isinstance(self.pinned, bool):
            raise EditError(f"item {self.id}: pinned must be true or false, got {self.pinned!r}")
        if isinstance(self.keys, str) or not isinstance(self.keys, Iterable):
            raise EditError(f"item {self.id}: keys must be a list of strings, got {self.keys!r}")
        object.__setattr__(self, "keys", tuple(self.keys))
        for key in self.keys:
            _check_str(key, f"a key of item {self.id}")
        object.__setattr__(self, "unless", check_counter_keys(self.unless, f"item {self.id}"))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict; :meth:`from_dict` inverts it (``pinned``, ``keys``, ``unless`` only when set)."""
        d: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "scope": self.scope,
            "text": self.text,
            "source_task": self.source_task,
            "source_step": self.source_step,
            "rationale": self.rationale,
            "created_step": self.created_step,
            "updated_step": self.updated_step,
            "helpful": self.helpful,
            "harmful": self.harmful,
        }
        if self.pinned:
            d["pinned"] = True
        if self.keys:
            d["keys"] = list(self.keys)
        if self.unless:
            d["unless"] = list(self.unless)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Item:
        """Build an item from :meth:`to_dict` output; raises EditError if invalid."""
        if not isinstance(d, Mapping):
            raise EditError(f"an item must be a mapping, got {type(d).__name__}")
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise EditError(f"item {d.get('id')!r} has unknown fields: {', '.join(sorted(unknown))}")
        if "id" not in d or "text" not in d:
            raise EditError(f"item {d.get('id')!r} lacks 'id' or 'text'")
        return cls(**dict(d))


def check_counter_keys(unless: Any, owner: str) -> tuple[str, ...]:
    """``unless`` as a tuple of non-empty strings; raises EditError otherwise."""
    if isinstance(unless, str) or not isinstance(unless, Iterable):
        raise EditError(f"{owner}: unless must be a list of strings, got {unless!r}")
    out = tuple(unless)
    for key in out:
        _check_str(key, f"an unless key of {owner}")
    return out


def demo_id(inputs: Mapping[str, Any], outputs: Mapping[str, Any], scope: str = GLOBAL) -> str:
    """Stable content id of a demo, e.g. ``"d-1a2b3c4d"``."""
    payload = canonical_json({"inputs": inputs, "outputs": outputs, "scope": scope})
    return "d-" + _short_hash(payload)


@dataclass(frozen=True)
class Demo:
    """One input/output example shown to a predictor.

    ``id`` defaults to a stable hash of the content (pass ``id=""`` or omit it).
    Values are kept as JSON values (normally strings). ``unless`` holds
    counter-keys, as :attr:`Item.unless` does, and ``source_task`` the task whose
    train split the demo came from, as :attr:`Item.source_task` does (both
    serialized only when set; neither is part of the id).

    Example:
        >>> d = Demo(inputs={"question": "2+2?"}, outputs={"answer": "4"})
        >>> d.id.startswith("d-") and Demo.from_dict(d.to_dict()) == d
        True
    """

    id: str = ""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    scope: str = GLOBAL
    unless: tuple[str, ...] = ()
    source_task: str | None = None

    def __post_init__(self) -> None:
        for name in ("inputs", "outputs"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise EditError(f"demo {name} must be a mapping, got {type(value).__name__}")
            object.__setattr__(self, name, {str(k): _json_value(v) for k, v in value.items()})
        if not self.inputs and not self.outputs:
            raise EditError("a demo needs at least one input or output field")
        _check_scope(self.scope)
        if not self.id:
            object.__setattr__(self, "id", demo_id(self.inputs, self.outputs, self.scope))
        _check_str(self.id, "demo id")
        if self.source_task is not None:
            _check_str(self.source_task, f"source_task of demo {self.id}")
        object.__setattr__(self, "unless", check_counter_keys(self.unless, f"demo {self.id}"))

    def __hash__(self) -> int:
        return hash(canonical_json(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict; :meth:`from_dict` inverts it (``unless`` and ``source_task`` only when set)."""
        d: dict[str, Any] = {"id": self.id, "scope": self.scope, "inputs": dict(self.inputs),
                             "outputs": dict(self.outputs)}
        if self.unless:
            d["unless"] = list(self.unless)
        if self.source_task is not None:
            d["source_task"] = self.source_task
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Demo:
        """Build a demo from :meth:`to_dict` output; raises EditError if invalid."""
        if not isinstance(d, Mapping):
            raise EditError(f"a demo must be a mapping, got {type(d).__name__}")
        unknown = set(d) - {"id", "scope", "inputs", "outputs", "unless", "source_task"}
        if unknown:
            raise EditError(f"demo {d.get('id')!r} has unknown fields: {', '.join(sorted(unknown))}")
        return cls(
            id=d.get("id", ""),
            inputs=d.get("inputs", {}),
            outputs=d.get("outputs", {}),
            scope=d.get("scope", GLOBAL),
            unless=d.get("unless", ()),
            source_task=d.get("source_task"),
        )


@dataclass(frozen=True)
class PredictorContext:
    """The learned context of one predictor: instruction, ordered items, demos.

    Example:
        >>> pc = PredictorContext("Answer briefly.", items=(Item("r-1", "Be exact."),))
        >>> PredictorContext.from_dict(pc.to_dict()) == pc
        True
    """

    instruction: str
    items: tuple[Item, ...] = ()
    demos: tuple[Demo, ...] = ()
    retrieval: tuple[tuple[str, int | float], ...] = ()
    """Learned retrieval settings (:data:`RETRIEVAL_SETTINGS`) as sorted pairs; empty: the selector's own."""

    def __post_init__(self) -> None:
        _check_str(self.instruction, "instruction", empty_ok=True)
        object.__setattr__(self, "items", tuple(self.items))
        object.__setattr__(self, "demos", tuple(self.demos))
        settings = dict(self.retrieval.items() if isinstance(self.retrieval, Mapping) else self.retrieval)
        for key, value in settings.items():
            check_retrieval_setting(key, value)
        object.__setattr__(self, "retrieval", tuple(sorted(settings.items())))
        for kind, values in (("item", self.items), ("demo", self.demos)):
            seen: set[str] = set()
            for v in values:
                if not isinstance(v, Item if kind == "item" else Demo):
                    raise EditError(f"expected a {kind}, got {type(v).__name__}")
                if v.id in seen:
                    raise EditError(f"duplicate {kind} id {v.id!r}")
                seen.add(v.id)

    def item(self, item_id: str) -> Item:
        """Return the item with ``item_id``; raises EditError if there is none."""
        for it in self.items:
            if it.id == item_id:
                return it
        known = ", ".join(it.id for it in self.items[:10]) or "none"
        raise EditError(f"no item with id {item_id!r} (known ids: {known})")

    def scoped_items(self, task: str | None) -> tuple[Item, ...]:
        """Items in scope for ``task`` (global + that task's; all items if task is None), in the order shown.

        Core first: pinned global items, then the other global items, then task-scoped ones, each in C's
        order. Prompts that differ in their task- or input-specific items then share the longest prefix,
        which the engine's KV cache reuses (:mod:`ctxopt.kv_cache`).
        """
        items = self.items if task is None else tuple(it for it in self.items if it.scope in (GLOBAL, task))
        return tuple(sorted(items, key=lambda it: (it.scope != GLOBAL, not it.pinned)))

    def scoped_demos(self, task: str | None) -> tuple[Demo, ...]:
        """Demos in scope for ``task`` (global + that task's; all demos if task is None): global first, in C's order."""
        demos = self.demos if task is None else tuple(d for d in self.demos if d.scope in (GLOBAL, task))
        return tuple(sorted(demos, key=lambda d: d.scope != GLOBAL))

    def task_scopes(self) -> tuple[str, ...]:
        """The task scopes (every scope but :data:`GLOBAL`) of its items and demos, sorted."""
        return tuple(sorted(({it.scope for it in self.items} | {d.scope for d in self.demos}) - {GLOBAL}))

    def retrieval_settings(self) -> dict[str, int | float]:
        """The learned retrieval settings, e.g. ``{"k_demos": 8}`` (only those set)."""
        return dict(self.retrieval)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict; :meth:`from_dict` inverts it. ``retrieval`` only when set."""
        out: dict[str, Any] = {
            "instruction": self.instruction,
            "items": [it.to_dict() for it in self.items],
            "demos": [d.to_dict() for d in self.demos],
        }
        if self.retrieval:
            out["retrieval"] = dict(self.retrieval)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PredictorContext:
        """Build from :meth:`to_dict` output; raises EditError if invalid."""
        if not isinstance(d, Mapping) or "instruction" not in d:
            raise EditError("a predictor context must be a mapping with an 'instruction'")
        retrieval = d.get("retrieval") or {}
        if not isinstance(retrieval, Mapping):
            raise EditError("'retrieval' must be a mapping of settings")
        return cls(
            instruction=d["instruction"],
            items=tuple(Item.from_dict(x) for x in d.get("items") or ()),
            demos=tuple(Demo.from_dict(x) for x in d.get("demos") or ()),
            retrieval=tuple(retrieval.items()),
        )


RETRIEVAL_SETTINGS = ("k_items", "k_demos", "min_score", "margin", "max_tokens", "reach")
"""Retrieval settings a context may carry (:class:`ctxopt.retrieval.RetrievalSelector` reads them)."""


def check_retrieval_setting(key: str, value: Any) -> None:
    """Raise EditError unless ``key`` is a retrieval setting and ``value`` fits it.

    ``k_items`` and ``k_demos`` are integers ≥ 0, ``min_score``, ``margin`` and ``reach`` are in [0, 1], and ``max_tokens``
    (the per-call token budget of what is shown) is an integer ≥ 1.
    """
    if key not in RETRIEVAL_SETTINGS:
        raise EditError(f"unknown retrieval setting {key!r}; known: {', '.join(RETRIEVAL_SETTINGS)}")
    if key == "max_tokens":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EditError(f"retrieval setting max_tokens must be a positive integer, got {value!r}")
    elif key in ("min_score", "margin", "reach"):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
            raise EditError(f"retrieval setting {key} must be a number in [0, 1], got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EditError(f"retrieval setting {key} must be a non-negative integer, got {value!r}")


@runtime_checkable
class Edit(Protocol):
    """What :meth:`LearnedContext.apply_edits` needs of an edit.

    The typed edits of :mod:`ctxopt.edits` implement it; this module never
    imports them.
    """

    @property
    def op(self) -> str:
        """The edit's tag, e.g. ``"add_item"``; also the ``"op"`` of :meth:`to_dict`."""
        ...

    def apply(self, predictors: Mapping[str, PredictorContext], *, step: int, task: str | None) -> dict[str, PredictorContext]:
        """Return a new name -> context dict with the edit applied; ``predictors`` is not changed.

        Args:
            predictors: The predictor contexts before the edit.
            step: Stream step, recorded as provenance of new or changed items.
            task: Task being learned (None if unknown), recorded as provenance.

        Raises:
            EditError: if the edit cannot be applied (unknown predictor or item, no-op, …).
        """
        ...

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict with an ``"op"`` key."""
        ...


def _render_items(lines: list[str], items: Iterable[Item], *, label_kind: bool) -> None:
    for it in items:
        prefix = f"({it.kind}) " if label_kind and it.kind != "rule" else ""
        text = it.text.strip().replace("\n", "\n  ")
        lines.append(f"- {prefix}{text}")


@dataclass(frozen=True)
class LearnedContext:
    """Immutable learned state of a DSPy program, keyed by predictor name.

    Args:
        predictors: Predictor name -> :class:`PredictorContext`. Stored as a
            read-only mapping ordered by name.

    Example:
        >>> ctx = LearnedContext({"qa": PredictorContext("Answer the question.")})
        >>> from ctxopt.edits import AddItem
        >>> ctx2 = ctx.apply_edits([AddItem("qa", "Give units.", scope="physics")], step=1)
        >>> print(ctx2.render("qa", task="physics"))
        Answer the question.
        <BLANKLINE>
        Rules:
        - Give units.
        >>> ctx.hash != ctx2.hash and ctx2 == LearnedContext.from_dict(ctx2.to_dict())
        True
    """

    predictors: Mapping[str, PredictorContext] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.predictors, Mapping):
            raise EditError("predictors must be a mapping of name -> PredictorContext")
        ordered: dict[str, PredictorContext] = {}
        for name in sorted(self.predictors):
            pc = self.predictors[name]
            _check_str(name, "predictor name")
            if not isinstance(pc, PredictorContext):
                raise EditError(f"predictor {name!r}: expected a PredictorContext, got {type(pc).__name__}")
            ordered[name] = pc
        object.__setattr__(self, "predictors", MappingProxyType(ordered))

    def __hash__(self) -> int:
        return hash(self.hash)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LearnedContext):
            return NotImplemented
        return dict(self.predictors) == dict(other.predictors)

    # -- access --------------------------------------------------------------
    def predictor(self, name: str) -> PredictorContext:
        """Return the context of predictor ``name``; raises EditError if absent."""
        try:
            return self.predictors[name]
        except KeyError:
            known = ", ".join(self.predictors) or "none"
            raise EditError(f"no predictor named {name!r} (known: {known})") from None

    def items(self, predictor: str) -> tuple[Item, ...]:
        """The ordered items of ``predictor``."""
        return self.predictor(predictor).items

    def with_predictor(self, name: str, pc: PredictorContext) -> LearnedContext:
        """Return a copy with predictor ``name`` set to ``pc`` (added if new)."""
        return LearnedContext({**self.predictors, name: pc})

    # -- serialization -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict; :meth:`from_dict` inverts it."""
        return {
            "schema": SCHEMA_VERSION,
            "predictors": {name: pc.to_dict() for name, pc in self.predictors.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LearnedContext:
        """Build from :meth:`to_dict` output; raises EditError if invalid."""
        if not isinstance(d, Mapping) or not isinstance(d.get("predictors"), Mapping):
            raise EditError("a learned context must be a mapping with a 'predictors' mapping")
        schema = d.get("schema", SCHEMA_VERSION)
        if schema != SCHEMA_VERSION:
            raise EditError(f"unsupported context schema {schema!r}; this ctxopt reads schema {SCHEMA_VERSION}")
        return cls({name: PredictorContext.from_dict(pc) for name, pc in d["predictors"].items()})

    def to_json(self) -> str:
        """Canonical JSON text (sorted keys); the input of :attr:`hash`."""
        return canonical_json(self.to_dict())

    @functools.cached_property
    def hash(self) -> str:
        """sha256 hex digest of the canonical serialization; equal contexts, equal hash."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    # -- rendering -----------------------------------------------------------
    def render(self, predictor: str, task: str | None = None) -> str:
        """Render the instruction text the LM sees for ``predictor``.

        The instruction comes first, then the in-scope items grouped by kind
        (``Rules:``, ``Notes:``, ``Strategies:``). With a known ``task`` only
        global items and that task's items are shown. With ``task=None`` the
        global items come first, then each task's items under ``For task X:``.
        With no items the result is the instruction itself.
        """
        pc = self.predictor(predictor)
        items = pc.scoped_items(task)
        shown = items if task is not None else tuple(it for it in items if it.scope == GLOBAL)
        lines: list[str] = []
        for kind in KINDS:
            group = [it for it in shown if it.kind == kind]
            if group:
                if lines:
                    lines.append("")
                lines.append(_KIND_HEADERS[kind])
                _render_items(lines, group, label_kind=False)
        if task is None:
            for scope in sorted({it.scope for it in items if it.scope != GLOBAL}):
                if lines:
                    lines.append("")
                lines.append(f"For task {scope}:")
                _render_items(lines, (it for it in items if it.scope == scope), label_kind=True)
        if not lines:
            return pc.instruction
        head = pc.instruction.rstrip()
        return (head + "\n\n" if head else "") + "\n".join(lines)

    def render_demos(self, predictor: str, task: str | None = None) -> str:
        """Render the in-scope demos of ``predictor`` as ``field: value`` blocks."""
        blocks = []
        for d in self.predictor(predictor).scoped_demos(task):
            fields = {**d.inputs, **d.outputs}
            blocks.append("\n".join(f"{k}: {v if isinstance(v, str) else canonical_json(v)}" for k, v in fields.items()))
        return "\n\n".join(blocks)

    def token_count(self, predictor: str | None = None, task: str | None = None) -> int:
        """Tokens of the rendered text plus demos; summed over predictors if ``predictor`` is None.

        Tokens are :data:`ctxopt.tokens.TOKENIZER` tokens (:func:`ctxopt.tokens.count_tokens`),
        the same on every install.
        """
        names = [predictor] if predictor is not None else list(self.predictors)
        total = 0
        for name in names:
            text = self.render(name, task)
            demos = self.render_demos(name, task)
            if demos:
                text = text + "\n\n" + demos
            total += count_tokens(text)
        return total

    # -- edits ---------------------------------------------------------------
    def apply_edits(self, edits: Sequence[Edit], *, step: int = 0, task: str | None = None) -> LearnedContext:
        """Apply ``edits`` in order and return the new context (all or nothing).

        Each edit's :meth:`Edit.apply` gets the predictors as changed by the edits before it.

        Raises:
            EditError: if any edit is invalid; ``self`` is never changed.
        """
        predictors: dict[str, PredictorContext] = dict(self.predictors)
        for i, edit in enumerate(edits):
            try:
                if not isinstance(edit, Edit):
                    raise EditError(f"not an edit: {edit!r}")
                predictors = edit.apply(predictors, step=step, task=task)
            except EditError as exc:
                raise EditError(f"edit {i + 1} of {len(edits)} rejected, nothing applied: {exc}") from None
        return LearnedContext(predictors)

    # -- DSPy ----------------------------------------------------------------
    @classmethod
    def from_program(cls, program: dspy.Module) -> LearnedContext:
        """Extract instruction and demos of every named predictor of ``program``.

        Demo fields are split by the signature: input fields go to ``inputs``,
        every other key to ``outputs``. Items start empty.
        """
        predictors: dict[str, PredictorContext] = {}
        for name, pred in program.named_predictors():
            sig = pred.signature
            input_names = set(sig.input_fields)
            demos: list[Demo] = []
            for raw in getattr(pred, "demos", None) or ():
                data = dict(raw.toDict() if hasattr(raw, "toDict") else raw)
                inputs = {k: v for k, v in data.items() if k in input_names}
                outputs = {k: v for k, v in data.items() if k not in input_names}
                demo = Demo(inputs=inputs, outputs=outputs)
                if all(d.id != demo.id for d in demos):
                    demos.append(demo)
            predictors[name] = PredictorContext(instruction=sig.instructions or "", demos=tuple(demos))
        return cls(predictors)

    def view(self, task: str | None = None) -> str:
        """What :meth:`apply_to` gives a program for ``task``: each predictor's rendered text and demos.

        Two contexts with the same view for a task make the same prompts on it.
        """
        return canonical_json({name: [self.render(name, task), [[d.inputs, d.outputs] for d in pc.scoped_demos(task)]]
                               for name, pc in sorted(self.predictors.items())})

    def apply_to(self, program: dspy.Module, task: str | None = None) -> dspy.Module:
        """Set rendered instructions and in-scope demos on ``program`` (in place) and return it.

        Raises:
            ConfigError: if the program's predictor names differ from this context's.
        """
        import dspy

        named = dict(program.named_predictors())
        missing = sorted(set(self.predictors) - set(named))
        extra = sorted(set(named) - set(self.predictors))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"context predictors missing from the program: {', '.join(missing)}")
            if extra:
                parts.append(f"program predictors missing from the context: {', '.join(extra)}")
            raise ConfigError("cannot apply the context: " + "; ".join(parts))
        for name, pred in named.items():
            pred.signature = pred.signature.with_instructions(self.render(name, task))
            pred.demos = [
                dspy.Example(**d.inputs, **d.outputs).with_inputs(*d.inputs)
                for d in self.predictors[name].scoped_demos(task)
            ]
        return program


def replace_item(pc: PredictorContext, item_id: str, new: Item | None) -> PredictorContext:
    """Return ``pc`` with item ``item_id`` replaced by ``new`` (or removed if None)."""
    pc.item(item_id)
    if new is None:
        return replace(pc, items=tuple(it for it in pc.items if it.id != item_id))
    return replace(pc, items=tuple(new if it.id == item_id else it for it in pc.items))


__all__ = [
    "GLOBAL",
    "KINDS",
    "Item",
    "Demo",
    "Edit",
    "PredictorContext",
    "RETRIEVAL_SETTINGS",
    "check_counter_keys",
    "check_retrieval_setting",
    "LearnedContext",
    "canonical_json",
    "count_tokens",  # re-exported from ctxopt.tokens for existing importers; new code imports it from there
    "demo_id",
    "replace_item",
]
