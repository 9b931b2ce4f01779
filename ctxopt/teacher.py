"""Teacher-bootstrapped demos for predictors with intermediate fields (ChainOfThought's ``reasoning``).

A labelled train example gives a predictor's inputs and its final output, but not the fields in between:
a ChainOfThought demo built from labels alone shows no reasoning. :class:`TeacherDemoProposer` has the
reflection LM (the teacher) write them. One call shows the teacher a few solved train examples, to say
what the task is, and asks it to work out other train inputs, writing every output field of the
predictor in order. The teacher does not see those inputs' labels. Its answer to each input is scored
with the task's metric against the label, as DSPy's ``BootstrapFewShot`` keeps a trace only where the
metric passes; a passing answer becomes a demo with the teacher's intermediate fields and the label as
its output. The demo set is one more alternative in the predictor's demo group, so the search weighs it
against the labelled sets and the gate judges it like any other edit.

It costs one reflection call per task. With reflection turned off (no call left in the budget) it
proposes nothing, and the task LM's own successful traces, which :class:`ctxopt.proposer.DemoProposer`
already turns into a demo set, are the bootstrapped demos. A predictor without intermediate fields
(``dspy.Predict``) gets nothing from it and costs nothing.

Only train examples are read; val and test never reach a proposer.

Example:
    >>> parse_solutions("EXAMPLE 1\\nreasoning: 2 plus 3.\\noutput: 5\\nEXAMPLE 2\\noutput: 7", ("reasoning", "output"))
    {1: {'reasoning': '2 plus 3.', 'output': '5'}, 2: {'output': '7'}}
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ctxopt.context import Demo
from ctxopt.edits import AddDemo, RemoveDemo
from ctxopt.errors import EndpointError
from ctxopt.proposer import Proposal, ProposalContext

__all__ = ["TEACHER_PROMPT", "TeacherDemoProposer", "parse_solutions"]

log = logging.getLogger(__name__)

TEACHER_PROMPT = """You are the teacher of a small language model. Solve examples of its task carefully, so that
it can learn from your work.

Its instruction: {instruction}

Solved examples of the task:
{solved}

Now solve each example below. For each, write {fields} in this order, each on its own line after its
name. {field_help}

{unsolved}

Reply ONLY with one block per example, in this form:
{form}"""

_BLOCK = re.compile(r"^\s*(?:[-*#•]\s*)*(?:\*\*)?\s*EXAMPLE\s*(\d+)\s*(?:\*\*)?\s*:?\s*(?:\*\*)?\s*$", re.IGNORECASE)


def parse_solutions(text: str, fields: Sequence[str]) -> dict[int, dict[str, str]]:
    """``{example number: {field: text}}`` from a teacher's reply; a field's text may run over several lines.

    Lines before the first ``EXAMPLE n`` header, and lines that name no field before any field began, are
    skipped. Markdown bold, bullets and quotes around names and values are tolerated.
    """
    names = "|".join(re.escape(f) for f in sorted(fields, key=len, reverse=True))
    start = re.compile(rf"^\s*(?:[-*•]\s*)?(?:\*\*)?\s*({names})\s*(?:\*\*)?\s*[:\-–]\s*(?:\*\*)?\s*(.*)$",
                       re.IGNORECASE)
    out: dict[int, dict[str, str]] = {}
    current: dict[str, str] | None = None
    name = None
    for raw in text.splitlines():
        if m := _BLOCK.match(raw):
            current, name = out.setdefault(int(m.group(1)), {}), None
        elif current is not None and (m := start.match(raw)):
            name = next(f for f in fields if f.lower() == m.group(1).lower())
            current[name] = m.group(2).strip()
        elif current is not None and name is not None and raw.strip():
            current[name] = f"{current[name]} {raw.strip()}".strip()
    return {k: {f: v.strip().strip("*").strip().strip("\"'`").strip() for f, v in block.items()}
            for k, block in out.items()}


@dataclass
class TeacherDemoProposer:
    """A demo set whose intermediate fields the reflection LM wrote, kept where the metric passes.

    Attributes:
        lm: The teacher: the reflection LM (``lm(prompt, **kwargs) -> [text]``).
        solved: How many labelled train examples the prompt shows as the task's description.
        asked: How many other train inputs the teacher works out (at most this many demos).
    """

    lm: object
    solved: int = 3
    asked: int = 6

    def prompt(self, pc: ProposalContext, solved: Sequence, asked: Sequence) -> str:
        fields = [k for k in pc.inputs if k != "task"] or list(pc.inputs)
        outs = [*pc.intermediate, pc.output]

        def show(ex, with_label: bool) -> str:
            lines = [f"{k}: {ex.get(k)}" for k in fields]
            return "\n".join([*lines, f"{pc.output}: {ex.get(pc.output)}"] if with_label else lines)

        return TEACHER_PROMPT.format(
            instruction=pc.context.predictor(pc.predictor).instruction,
            solved="\n\n".join(show(ex, True) for ex in solved),
            fields=", ".join(outs),
            field_help=(f"Keep each {', '.join(pc.intermediate)} to a few short sentences; "
                        f"{pc.output} is the final answer only, in the form the solved examples use."),
            unsolved="\n\n".join(f"EXAMPLE {i}\n{show(ex, False)}" for i, ex in enumerate(asked, 1)),
            form="\n".join(["EXAMPLE 1", *(f"{f}: <{f}>" for f in outs), "EXAMPLE 2", "..."]))

    def propose(self, pc: ProposalContext) -> list[Proposal]:
        labeled = [ex for ex in pc.train if pc.labeled(ex)]
        if self.lm is None or not pc.intermediate or pc.metric is None or len(labeled) < 3:
            return []  # nothing between the inputs and the label to write, or nothing to check it with
        rng = random.Random(f"{pc.seed}:teacher")
        shown = rng.sample(labeled, min(len(labeled), self.solved + self.asked))
        solved, asked = shown[: self.solved], shown[self.solved:]
        if len(asked) < 2 or not pc.charge(1):
            return []
        try:
            text = self.lm(self.prompt(pc, solved, asked))[0]
        except EndpointError:
            raise  # a dead endpoint stops the run (ctxopt.endpoint)
        except Exception as exc:  # one failed call is a lost proposal, never a crash
            log.warning("teacher call failed: %s", exc)
            return []
        solutions = parse_solutions(text if isinstance(text, str) else str(text), [*pc.intermediate, pc.output])
        demos = []
        for i, ex in enumerate(asked, 1):
            got = solutions.get(i, {})
            if not all(got.get(f) for f in (*pc.intermediate, pc.output)):
                continue
            if pc.metric(ex, {pc.output: got[pc.output]}).score < 1.0:
                continue  # kept only where the metric passes
            outputs = {**{f: got[f] for f in pc.intermediate}, pc.output: ex.get(pc.output)}
            demos.append(Demo(inputs={k: ex.get(k) for k in pc.inputs}, outputs=outputs, scope=pc.scope))
        if len(demos) < 2:
            return []
        existing = [d for d in pc.context.predictor(pc.predictor).demos if d.scope == pc.scope]
        edits = (*(RemoveDemo(pc.predictor, d.id, rationale="replaced by a new demo set") for d in existing),
                 *(AddDemo(pc.predictor, d, rationale="teacher-written trace, metric passed") for d in demos))
        return [Proposal("demos-teacher" if pc.output_stage else f"demos-teacher:{pc.predictor}", edits, "teacher",
                         f"{len(demos)} of {len(asked)} train inputs the teacher solved, with its "
                         f"{', '.join(pc.intermediate)}", group="demos" if pc.output_stage else f"demos:{pc.predictor}")]
