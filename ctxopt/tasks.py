"""Tasks and task streams: what a continual learner meets, one task at a time.

A :class:`Task` holds a name, the input and output field names, a metric and
three splits. ``train`` and ``val`` are public tuples of ``dspy.Example``; the
**test split is sealed**: it is not an attribute of the task, and no public
function returns it. Only :mod:`ctxopt.evaluator` (``Evaluator.evaluate_test``,
which fills the accuracy matrix) opens it, through the module-private
:func:`sealed_test_split`. Code handed a task (an optimizer, a proposer) therefore sees
train and val only.

A :class:`TaskStream` is an ordered tuple of tasks that share their input and
output fields, plus a scenario:

* ``task-aware``: every example also carries the input field ``task`` (the
  task's name), so the program is told which task it is solving;
* ``task-agnostic``: it is not.

**Revisits.** A task may come back later in a stream with fresh examples. Each
visit is its own task (its own column of the accuracy matrix), named
``<family>@<k>`` for visit ``k ≥ 2`` (:func:`visit_name`). Its :attr:`Task.family`,
the name without the suffix, is what the program is told in a task-aware
stream and the scope its learned items live in, so a revisit sees what the
first visit left.

Every example has a stable id (:func:`example_id`), stored in the non-input
field ``_id``; evaluation caches key on it.

Example:
    >>> import dspy
    >>> from ctxopt.metrics import get_metric
    >>> ex = lambda i: dspy.Example(input=str(i), output=str(i)).with_inputs("input")
    >>> t = Task.from_splits("echo", ("input",), "output", get_metric("exact_match", "output"),
    ...                      train=[ex(1)], val=[ex(2)], test=[ex(3)])
    >>> len(t.train), len(t.val), t.test_size
    (1, 1, 1)
    >>> hasattr(t, "test")
    False
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import dspy

from ctxopt.errors import ConfigError
from ctxopt.metrics import Metric

__all__ = [
    "Task",
    "TaskStream",
    "Scenario",
    "SCENARIOS",
    "TASK_FIELD",
    "ID_FIELD",
    "example_id",
    "make_example",
    "split_visit",
    "visit_name",
    "visits",
]

Scenario = Literal["task-aware", "task-agnostic"]
SCENARIOS: tuple[str, ...] = ("task-aware", "task-agnostic")
TASK_FIELD = "task"
ID_FIELD = "_id"
VISIT_SEP = "@"
T = TypeVar("T")


# ------------------------------------------------------------------ visits


def visit_name(family: str, visit: int) -> str:
    """The task name of a family's ``visit``-th visit: the family itself, then ``family@k``.

    Example:
        >>> visit_name("antonyms", 1), visit_name("antonyms", 2)
        ('antonyms', 'antonyms@2')
    """
    if visit < 1:
        raise ConfigError(f"task '{family}': visit must be ≥ 1, got {visit}")
    return family if visit == 1 else f"{family}{VISIT_SEP}{visit}"


def split_visit(name: str) -> tuple[str, int]:
    """``(family, visit)`` of a task name; a name without an ``@k`` suffix (k ≥ 2) is visit 1.

    Example:
        >>> split_visit("antonyms@2"), split_visit("antonyms"), split_visit("a@b"), split_visit("x@1")
        (('antonyms', 2), ('antonyms', 1), ('a@b', 1), ('x@1', 1))
    """
    family, sep, k = name.rpartition(VISIT_SEP)
    if sep and family and k.isdigit() and not k.startswith("0") and int(k) >= 2:
        return family, int(k)
    return name, 1


def visits(families: Iterable[T]) -> list[tuple[T, int]]:
    """Number the visits of a sequence in which a family may recur: ``(family, k)`` per entry.

    Example:
        >>> visits(["antonyms", "sum", "antonyms"])
        [('antonyms', 1), ('sum', 1), ('antonyms', 2)]
    """
    seen: dict[T, int] = {}
    out: list[tuple[T, int]] = []
    for f in families:
        seen[f] = seen.get(f, 0) + 1
        out.append((f, seen[f]))
    return out


# ------------------------------------------------------------------ examples


def _content_hash(data: dict[str, Any]) -> str:
    public = {k: v for k, v in data.items() if not k.startswith("_")}
    blob = json.dumps(public, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def make_example(
    fields: dict[str, Any],
    inputs: Sequence[str],
    *,
    task: str | None = None,
    answers: Sequence[str] | None = None,
) -> dspy.Example:
    """Build an example with its inputs marked and a stable content-derived id.

    Args:
        fields: The example's fields (inputs and output).
        inputs: The names of the input fields.
        task: If given, added as the input field ``task`` (task-aware streams).
        answers: All acceptable answers, stored in the non-input ``_answers``.

    Returns:
        A ``dspy.Example`` whose ``_id`` is ``"<task or 'x'>:<sha256 prefix>"``.

    Example:
        >>> e = make_example({"input": "a", "output": "b"}, ["input"], task="t")
        >>> sorted(e.inputs().keys()), example_id(e).startswith("t:")
        (['input', 'task'], True)
    """
    data = dict(fields)
    input_names = list(inputs)
    if task is not None:
        data[TASK_FIELD] = task
        if TASK_FIELD not in input_names:
            input_names = [TASK_FIELD, *input_names]
    if answers:
        data["_answers"] = tuple(str(a) for a in answers)
    data[ID_FIELD] = f"{task or 'x'}:{_content_hash(data)}"
    return dspy.Example(**data).with_inputs(*input_names)


def example_id(example: Any) -> str:
    """The stable id of an example: its ``_id`` field, else a hash of its public fields.

    Example:
        >>> example_id(dspy.Example(input="a", output="b")) == example_id(dspy.Example(output="b", input="a"))
        True
    """
    try:
        value = example.get(ID_FIELD) if hasattr(example, "get") else None
    except Exception:  # noqa: BLE001
        value = None
    if value:
        return str(value)
    data = example.toDict() if hasattr(example, "toDict") else dict(example)
    return f"x:{_content_hash(data)}"


# ------------------------------------------------------------------ sealed test split

# The sealed examples live here, keyed by their holder; the holder itself keeps
# no reference to them, so walking a task's attributes never reaches them.
_SEALED: weakref.WeakKeyDictionary[_SealedSplit, tuple[dspy.Example, ...]] = weakref.WeakKeyDictionary()


class _SealedSplit:
    """An opaque handle to a test split. It tells its size and nothing else."""

    __slots__ = ("size", "__weakref__")

    def __init__(self, examples: Iterable[dspy.Example]) -> None:
        items = tuple(examples)
        object.__setattr__(self, "size", len(items))
        _SEALED[self] = items

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a sealed split is immutable")

    def __repr__(self) -> str:
        return f"<sealed test split: {self.size} examples>"

    def __copy__(self) -> _SealedSplit:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _SealedSplit:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_SealedSplit, (_SEALED.get(self, ()),))

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


def sealed_test_split(task: Task) -> tuple[dspy.Example, ...]:
    """Open a task's sealed test split. For ``ctxopt.evaluator`` only."""
    return _SEALED.get(task._test, ())


# ------------------------------------------------------------------ Task


@dataclass(frozen=True)
class Task:
    """One task: named splits of examples, its fields and its metric.

    Build one with :meth:`from_splits`, which seals the test split. The test
    split is not an attribute; :attr:`test_size` tells its size.

    Attributes:
        name: Unique name within a stream; ``family@k`` for a revisit (see :attr:`family`).
        inputs: The data input fields (without ``task``).
        output: The output field.
        metric: ``metric(example, prediction) -> Score``.
        train: Examples an optimizer may learn from.
        val: Examples an optimizer may select and gate with.

    Example:
        >>> import dspy
        >>> from ctxopt.metrics import get_metric
        >>> e = dspy.Example(input="x", output="y").with_inputs("input")
        >>> Task.from_splits("t", ("input",), "output", get_metric("exact_match", "output"),
        ...                  [e], [e], [e]).describe()["sizes"]
        {'train': 1, 'val': 1, 'test': 1}
    """

    name: str
    inputs: tuple[str, ...]
    output: str
    metric: Metric
    train: tuple[dspy.Example, ...]
    val: tuple[dspy.Example, ...]
    _test: _SealedSplit = field(repr=False, compare=False)
    description: str = ""

    @classmethod
    def from_splits(
        cls,
        name: str,
        inputs: Sequence[str],
        output: str,
        metric: Metric,
        train: Iterable[dspy.Example],
        val: Iterable[dspy.Example],
        test: Iterable[dspy.Example],
        *,
        description: str = "",
    ) -> Task:
        """Create a task; the test examples are sealed and not kept as an attribute."""
        return cls(
            name=name,
            inputs=tuple(inputs),
            output=output,
            metric=metric,
            train=tuple(train),
            val=tuple(val),
            _test=_SealedSplit(test),
            description=description,
        )

    @property
    def family(self) -> str:
        """The name without a visit suffix: the task label and item scope shared by every visit.

        Example:
            >>> import dspy
            >>> from ctxopt.metrics import get_metric
            >>> t = Task.from_splits("antonyms@2", ("input",), "output", get_metric("exact_match", "output"), [], [], [])
            >>> t.family, t.visit
            ('antonyms', 2)
        """
        return split_visit(self.name)[0]

    @property
    def visit(self) -> int:
        """1 for a task's first visit, k for ``family@k``."""
        return split_visit(self.name)[1]

    @property
    def test_size(self) -> int:
        """Number of test examples (the examples themselves stay sealed)."""
        return self._test.size

    @property
    def metric_name(self) -> str:
        return str(getattr(self.metric, "name", None) or getattr(self.metric, "__name__", type(self.metric).__name__))

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (no examples)."""
        return {
            "name": self.name,
            "inputs": list(self.inputs),
            "output": self.output,
            "metric": self.metric_name,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": self.test_size},
            "description": self.description,
        }


# ------------------------------------------------------------------ TaskStream


@dataclass(frozen=True)
class TaskStream:
    """An ordered sequence of tasks sharing input and output fields.

    Attributes:
        name: The stream's name.
        scenario: ``"task-aware"`` (the program receives the task name as the
            input ``task``) or ``"task-agnostic"``.
        tasks: The tasks, in the order a learner meets them.

    Example:
        >>> import dspy
        >>> from ctxopt.metrics import get_metric
        >>> e = dspy.Example(input="x", output="y").with_inputs("input")
        >>> t = Task.from_splits("t", ("input",), "output", get_metric("f1", "output"), [e], [e], [e])
        >>> s = TaskStream("s", "task-aware", (t,))
        >>> s.program_inputs, s.output, s.names, len(s)
        (('task', 'input'), 'output', ('t',), 1)
    """

    name: str
    scenario: Scenario
    tasks: tuple[Task, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ConfigError(f"stream '{self.name}': unknown scenario '{self.scenario}'; use one of {', '.join(SCENARIOS)}")
        if not self.tasks:
            raise ConfigError(f"stream '{self.name}' has no tasks")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        seen: set[str] = set()
        for t in self.tasks:
            if t.name in seen:
                raise ConfigError(f"stream '{self.name}': duplicate task name '{t.name}'")
            seen.add(t.name)
        first = self.tasks[0]
        for t in self.tasks[1:]:
            if t.inputs != first.inputs or t.output != first.output:
                raise ConfigError(
                    f"stream '{self.name}': task '{t.name}' has fields {list(t.inputs)} -> {t.output}, "
                    f"but '{first.name}' has {list(first.inputs)} -> {first.output}; all tasks must share them"
                )

    @property
    def inputs(self) -> tuple[str, ...]:
        """The data input fields shared by all tasks (without ``task``)."""
        return self.tasks[0].inputs

    @property
    def program_inputs(self) -> tuple[str, ...]:
        """The program's input fields: ``task`` first when task-aware, then the data inputs."""
        if self.scenario == "task-aware":
            return (TASK_FIELD, *(f for f in self.inputs if f != TASK_FIELD))
        return self.inputs

    @property
    def output(self) -> str:
        return self.tasks[0].output

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    @property
    def task_aware(self) -> bool:
        return self.scenario == "task-aware"

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, key: int | str) -> Task:
        if isinstance(key, str):
            for t in self.tasks:
                if t.name == key:
                    return t
            raise KeyError(f"stream '{self.name}' has no task '{key}'; tasks: {', '.join(self.names)}")
        return self.tasks[key]

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary of the stream (no examples)."""
        return {
            "name": self.name,
            "scenario": self.scenario,
            "inputs": list(self.inputs),
            "output": self.output,
            "tasks": [t.describe() for t in self.tasks],
            **({"meta": self.meta} if self.meta else {}),
        }
