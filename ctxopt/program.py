"""The built-in programs: one ``dspy.Predict``, one ``dspy.ChainOfThought``, a two-stage pipeline, a ReAct agent.

:class:`TaskProgram` maps the stream's input fields (``task`` first in a
task-aware stream, then the data inputs) to its output field with a single
predictor named ``predict``; a learned context edits that predictor's
instruction and demos. It is the default program of every stream except the
tool-use ones.

``cot`` is the same mapping through ``dspy.ChainOfThought``: its predictor
``predict`` writes a ``reasoning`` field before the output. Labels give no
reasoning, so its demos come from traces: the task LM's own successful ones,
and the reflection LM's, checked by the metric (:mod:`ctxopt.teacher`).

Multi-stage programs (every predictor learns, :mod:`ctxopt.credit`):

* ``two-stage`` (:class:`SelectThenAnswer`): stage ``select`` copies the lines
  of the input that the question needs, stage ``answer`` answers from those
  lines and the question alone (for bAbI-style inputs whose last line is the
  question).
* ``react`` (:func:`react_program`): ``dspy.ReAct`` with the tool stream's
  calculator and lookup tools (:mod:`ctxopt.tools`): predictors ``react``
  (next thought, tool and arguments) and ``extract.predict`` (the answer). The
  default program of ``tools-8`` streams.

:func:`build_program` resolves a program name (:data:`PROGRAMS`), ``builtin``
(the stream's default) or a user factory ``package.module:function``.

Example:
    >>> p = TaskProgram(("task", "input"), "output")
    >>> [name for name, _ in p.named_predictors()]
    ['predict']
    >>> list(p.predict.signature.input_fields), list(p.predict.signature.output_fields)
    (['task', 'input'], ['output'])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import dspy

from ctxopt.errors import ConfigError

if TYPE_CHECKING:
    from ctxopt.tasks import TaskStream

__all__ = ["DEFAULT_INSTRUCTION", "PROGRAMS", "SelectThenAnswer", "TaskProgram", "build_program", "program_for",
           "react_program"]

DEFAULT_INSTRUCTION = "Given the input, produce the output."

_DESCRIPTIONS = {
    "task": "the name of the task to solve",
    "input": "the task input",
    "output": "the answer, and nothing else",
}


def _signature(inputs: Sequence[str], output: str, instruction: str) -> type[dspy.Signature]:
    if not inputs:
        raise ConfigError("a program needs at least one input field")
    if output in inputs:
        raise ConfigError(f"field '{output}' cannot be both an input and the output")
    if len(set(inputs)) != len(inputs):
        raise ConfigError(f"duplicate input fields: {list(inputs)}")
    fields: dict[str, Any] = {}
    for name in inputs:
        desc = _DESCRIPTIONS.get(name)
        fields[name] = (str, dspy.InputField(desc=desc) if desc else dspy.InputField())
    desc = _DESCRIPTIONS.get(output)
    fields[output] = (str, dspy.OutputField(desc=desc) if desc else dspy.OutputField())
    return dspy.make_signature(fields, instruction)


class TaskProgram(dspy.Module):
    """A one-predictor program: ``inputs -> output`` under an instruction.

    Args:
        inputs: Input field names, e.g. ``("task", "input")``.
        output: The output field name.
        instruction: The predictor's starting instruction.

    Example:
        >>> from dspy.utils.dummies import DummyLM
        >>> p = TaskProgram(["input"], "output")
        >>> p.set_lm(DummyLM([{"output": "unfortunate"}]))
        >>> p(input="fortunate").output
        'unfortunate'
    """

    def __init__(self, inputs: Sequence[str], output: str, instruction: str = DEFAULT_INSTRUCTION) -> None:
        super().__init__()
        self.inputs = tuple(inputs)
        self.output = output
        self.predict = dspy.Predict(_signature(self.inputs, output, instruction))

    def forward(self, **kwargs: Any) -> dspy.Prediction:
        missing = [f for f in self.inputs if f not in kwargs]
        if missing:
            raise ConfigError(f"TaskProgram: missing input field(s) {missing}; expects {list(self.inputs)}")
        return self.predict(**{k: kwargs[k] for k in self.inputs})


SELECT_INSTRUCTION = "Copy the lines of the input that are needed to answer its question, one per line."
ANSWER_INSTRUCTION = "Answer the question from the given facts."


class SelectThenAnswer(dspy.Module):
    """Two stages: ``select`` picks the supporting lines of the input, ``answer`` answers from them.

    The question is the input's last line (bAbI: ``Question: Where is Mary?``); the answer stage
    sees only the selected facts and the question, so what stage one keeps decides the answer.

    Example:
        >>> [name for name, _ in SelectThenAnswer(("input",), "output").named_predictors()]
        ['select', 'answer']
    """

    def __init__(self, inputs: Sequence[str], output: str, instruction: str = ANSWER_INSTRUCTION) -> None:
        super().__init__()
        self.inputs, self.output = tuple(inputs), output
        data = [f for f in self.inputs if f != "task"]
        if len(data) != 1:
            raise ConfigError(f"the two-stage program needs one data input field, not {data}")
        self.data = data[0]
        labels = tuple(f for f in self.inputs if f == "task")
        self.select = dspy.Predict(_signature((*labels, self.data), "facts", SELECT_INSTRUCTION))
        self.answer = dspy.Predict(_signature((*labels, "facts", "question"), output, instruction))

    def forward(self, **kwargs: Any) -> dspy.Prediction:
        missing = [f for f in self.inputs if f not in kwargs]
        if missing:
            raise ConfigError(f"SelectThenAnswer: missing input field(s) {missing}; expects {list(self.inputs)}")
        label = {"task": kwargs["task"]} if "task" in self.inputs else {}
        text = str(kwargs[self.data]).strip()
        question = text.splitlines()[-1] if text else ""
        facts = self.select(**label, **{self.data: text}).facts
        return self.answer(**label, facts=facts, question=question)


def react_program(stream: TaskStream, instruction: str | None = None, max_iters: int = 3) -> dspy.ReAct:
    """``dspy.ReAct`` over the stream's fields with the calculator and lookup tools (:mod:`ctxopt.tools`).

    ``max_iters=3`` covers the longest tool task (two lookups and a subtraction); each further turn is
    another call with the whole trajectory in its prompt, which on a small local model costs seconds.
    """
    from ctxopt.tools import agent_tools

    return dspy.ReAct(_signature(stream.program_inputs, stream.output, instruction or DEFAULT_INSTRUCTION),
                      tools=agent_tools(), max_iters=max_iters)


def _predict(stream: TaskStream, instruction: str | None = None) -> TaskProgram:
    return TaskProgram(stream.program_inputs, stream.output, instruction or DEFAULT_INSTRUCTION)


def _cot(stream: TaskStream, instruction: str | None = None) -> dspy.ChainOfThought:
    return dspy.ChainOfThought(_signature(stream.program_inputs, stream.output, instruction or DEFAULT_INSTRUCTION))


def _two_stage(stream: TaskStream, instruction: str | None = None) -> SelectThenAnswer:
    return SelectThenAnswer(stream.program_inputs, stream.output, instruction or ANSWER_INSTRUCTION)


PROGRAMS: dict[str, Callable[..., dspy.Module]] = {"predict": _predict, "cot": _cot, "two-stage": _two_stage,
                                                   "react": react_program}
"""Built-in programs by name: ``factory(stream, instruction=None) -> dspy.Module``."""


def program_for(stream: TaskStream, instruction: str | None = None) -> dspy.Module:
    """The stream's default program: the one its meta names (``react`` for tool streams), else ``predict``.

    Example:
        >>> from ctxopt.streams import load_stream
        >>> program_for(load_stream("ii:sum", sizes=(1, 1, 1))).inputs
        ('task', 'input')
    """
    return PROGRAMS[stream.meta.get("program", "predict")](stream, instruction)


def build_program(spec: str, stream: TaskStream, instruction: str | None = None) -> Any:
    """``builtin`` (the stream's default), a name in :data:`PROGRAMS`, or a user factory ``package.module:function``.

    Example:
        >>> from ctxopt.streams import load_stream
        >>> build_program("two-stage", load_stream("babi:1", sizes=(1, 1, 1))).output
        'output'
    """
    if spec == "builtin":
        return program_for(stream, instruction)
    if spec in PROGRAMS:
        return PROGRAMS[spec](stream, instruction)
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"program {spec!r}: use builtin, {', '.join(PROGRAMS)} or 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"program {spec!r} cannot be imported: {exc}") from exc
    return factory(stream) if callable(factory) else factory
