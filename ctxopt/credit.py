"""Credit to stages: which predictors of a multi-stage program a step edits.

A DSPy program may have several predictors (stages): a fact selector feeding an
answerer, ``dspy.ReAct``'s tool-choosing ``react`` step feeding its ``extract``
step. When an example fails, one of them is to blame. :func:`blamed_stage`
decides which from the traces the evaluator keeps (each stage's inputs and
outputs) and the metric's feedback, in this order:

1. **The feedback names a stage**: its predictor name or one of its output
   fields (``next_tool_name``, ``facts``…). A metric that knows the program says
   so ("no tool was called (next_tool_name was 'finish')").
2. **Did the evidence reach the output stage?** If the expected answer appears
   in what the output stage was given (its trace inputs), the output stage had
   what it needed and is to blame. If not, the last earlier stage that ran is:
   it did not find, select or compute what the answer needed.
3. Otherwise (a one-stage program, no trace) the output stage.

:func:`choose_stages` turns the blame of a train minibatch into a
:class:`StageChoice`: the stages in the order they get the step's reflection
calls, most blamed first (ties, and a minibatch with no blame, go round the
stages step by step, as GEPA's round-robin component selector does). The calls
are dealt out in that order, one at a time (three calls on two stages: 2 and 1),
so the most blamed stage gets the most and every stage gets one when the budget
allows, in case the blame is wrong: the search and the gate judge the edits
anyway. Every stage that ran gets demo proposals, which cost no LM calls.
Policies (``stages=`` of :class:`~ctxopt.optimizer.ContinualOptimizer`):

* ``credit`` (default): as above.
* ``rotate``: the order goes round the stages by step number, whatever the blame.
* ``output``: only the stage that produces the task's output field is edited
  (ctxopt's behaviour before multi-stage learning; the ablation baseline).

For a one-predictor program all three choose the same thing.

Example:
    >>> from ctxopt.proposer import Observation
    >>> import dspy
    >>> ex = dspy.Example(question="q", answer="7").with_inputs("question")
    >>> trace = [{"predictor": "select", "inputs": {"question": "q"}, "outputs": {"facts": "x is 3"}},
    ...          {"predictor": "answer", "inputs": {"facts": "x is 3", "question": "q"}, "outputs": {"answer": "3"}}]
    >>> blamed_stage(Observation(ex, 0.0, "expected '7'", {}, trace), ("select", "answer"), "answer", {})
    'select'
    >>> choice = choose_stages([Observation(ex, 0.0, "expected '7'", {}, trace)], ("select", "answer"), "answer",
    ...                        {}, step=2)
    >>> choice.order, choice.samples(3)
    (('select', 'answer'), {'select': 2, 'answer': 1})
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctxopt.errors import ConfigError
from ctxopt.metrics import gold_answers, normalize

if TYPE_CHECKING:  # pragma: no cover
    from ctxopt.proposer import Observation

__all__ = ["STAGE_POLICIES", "StageChoice", "blamed_stage", "check_policy", "choose_stages"]

STAGE_POLICIES = ("credit", "rotate", "output")


def check_policy(policy: str) -> str:
    """``policy`` if it is one of :data:`STAGE_POLICIES`; a one-line ConfigError otherwise."""
    if policy not in STAGE_POLICIES:
        raise ConfigError(f"unknown stage policy {policy!r}; use one of {', '.join(STAGE_POLICIES)}")
    return policy


@dataclass(frozen=True)
class StageChoice:
    """What one step edits.

    Attributes:
        order: The stages in the order they are dealt reflection calls (first: the most blamed).
        demos: Stages that get demo proposals (every stage that ran; only the output stage under ``output``).
        blame: Failed train examples blamed on each stage.
        why: One line for the run log.
    """

    order: tuple[str, ...]
    demos: tuple[str, ...]
    blame: Mapping[str, int]
    why: str

    def samples(self, total: int) -> dict[str, int]:
        """``total`` reflection calls dealt out over :attr:`order`, one at a time; stages with none are left out."""
        dealt = Counter(self.order[i % len(self.order)] for i in range(max(0, total)))
        return {s: dealt[s] for s in self.order if dealt[s]}

    def to_dict(self) -> dict[str, Any]:
        return {"order": list(self.order), "demos": list(self.demos), "blame": dict(self.blame), "why": self.why}


def _names_stage(feedback: str, stage: str, outputs: Sequence[str]) -> bool:
    text = (feedback or "").lower()
    return any(word and word.lower() in text for word in (stage.rsplit(".", 1)[0], *outputs) if len(word) > 3)


def blamed_stage(obs: Observation, stages: Sequence[str], output_stage: str,
                 outputs: Mapping[str, Sequence[str]]) -> str:
    """The stage one failed example is blamed on (see the module docstring).

    Args:
        obs: The traced example.
        stages: The program's predictor names, in program order.
        output_stage: The predictor that produces the task's output field.
        outputs: Each stage's output field names.
    """
    upstream = [s for s in stages if s != output_stage]
    for stage in upstream:
        if _names_stage(obs.feedback, stage, outputs.get(stage, ())):
            return stage
    ran = [t.get("predictor") for t in obs.trace]
    earlier = [s for s in ran if s in upstream]
    if not earlier:
        return output_stage
    golds = [g for g in (normalize(a) for a in gold_answers(obs.example, _output_field(obs, outputs, output_stage)))
             if g]
    given = " ".join(normalize(v) for t in obs.trace if t.get("predictor") == output_stage
                     for v in (t.get("inputs") or {}).values())
    if golds and any(f" {g} " in f" {given} " for g in golds):
        return output_stage
    return earlier[-1]


def _output_field(obs: Observation, outputs: Mapping[str, Sequence[str]], output_stage: str) -> str:
    labels = [k for k in obs.example.labels().keys()] if hasattr(obs.example, "labels") else []
    fields = outputs.get(output_stage, ())
    return next((f for f in fields if f in labels), labels[0] if labels else (fields[-1] if fields else "output"))


def choose_stages(observations: Sequence[Observation], stages: Sequence[str], output_stage: str,
                  outputs: Mapping[str, Sequence[str]], *, step: int, policy: str = "credit") -> StageChoice:
    """The stages one step edits, from its observed train minibatch (see the module docstring)."""
    check_policy(policy)
    if policy == "output" or len(stages) <= 1:
        return StageChoice((output_stage,), (output_stage,), {}, "the output stage only")
    i = (step - 1) % len(stages)
    turn = tuple(stages[i:]) + tuple(stages[:i])  # round-robin order for this step
    ran = {t.get("predictor") for o in observations for t in o.trace}
    demos = tuple(s for s in stages if s in ran or s == output_stage)
    blame = Counter(blamed_stage(o, stages, output_stage, outputs) for o in observations if o.score < 1.0)
    if policy == "rotate" or not blame:
        return StageChoice(turn, demos, dict(blame), f"round-robin turn of step {step}")
    order = tuple(sorted(turn, key=lambda s: -blame.get(s, 0)))  # stable: ties keep the round-robin order
    shown = ", ".join(f"{s} {blame[s]}" for s in stages if s in blame)
    return StageChoice(order, demos, dict(blame), f"failures blamed: {shown}")
