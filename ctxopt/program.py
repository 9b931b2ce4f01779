"""The built-in program of the demos and benchmarks: one ``dspy.Predict``.

:class:`TaskProgram` maps the stream's input fields (``task`` first in a
task-aware stream, then the data inputs) to its output field with a single
predictor named ``predict``; a learned context edits that predictor's
instruction and demos.

Example:
    >>> p = TaskProgram(("task", "input"), "output")
    >>> [name for name, _ in p.named_predictors()]
    ['predict']
    >>> list(p.predict.signature.input_fields), list(p.predict.signature.output_fields)
    (['task', 'input'], ['output'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dspy

from ctxopt.errors import ConfigError

if TYPE_CHECKING:
    from ctxopt.tasks import TaskStream

__all__ = ["TaskProgram", "program_for", "DEFAULT_INSTRUCTION"]

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


def program_for(stream: TaskStream, instruction: str = DEFAULT_INSTRUCTION) -> TaskProgram:
    """The built-in program for a stream: its program inputs to its output.

    Example:
        >>> from ctxopt.streams import load_stream
        >>> program_for(load_stream("ii:sum", sizes=(1, 1, 1))).inputs
        ('task', 'input')
    """
    return TaskProgram(stream.program_inputs, stream.output, instruction)
