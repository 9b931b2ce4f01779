"""Instruction proposals grounded in the data and the program, as MIPROv2 writes them.

Reflection (:class:`ctxopt.proposer.ReflectionProposer`) starts from what went wrong. This proposer
starts from what the task *is*: the reflection LM reads the program's signature, the current
instruction and a seeded sample of labelled train examples, writes a one-line summary of the data,
and then one instruction per *tip* (say it plainly, describe the mapping, state the output's form,
go step by step). It costs one reflection call for all the tips together. The instructions are
alternatives in one search group, so the search picks at most one of them, and the gate judges it
like any other edit.

Where each instruction lands follows the same rule as reflection's ``INSTRUCTION:`` line
(:func:`ctxopt.proposer.instruction_edit`):

* the shared instruction is rewritten in a task-agnostic stream (where the optimizer turns the
  rewrite into a keyed strategy item, so one task does not take over every input);
* in a task-aware stream it becomes a strategy item scoped to the task;
* an instruction longer than :data:`ctxopt.proposer.REWRITABLE_WORDS` (ReAct's) is never rewritten.

With reflection turned off (no reflection call left in the budget) the proposer still offers one
instruction, built from the signature and the shape of the train labels, with no model call.

Only train examples are read; val and test never reach a proposer.

Example:
    >>> parse_grounded("SUMMARY: words and their plurals\\nINSTRUCTION 1: Give the plural of the word.")
    ('words and their plurals', ['Give the plural of the word.'])
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ctxopt.errors import EndpointError
from ctxopt.proposer import Proposal, ProposalContext, instruction_edit

__all__ = ["GROUNDED_PROMPT", "TIPS", "GroundedInstructionProposer", "parse_grounded", "template_instruction"]

log = logging.getLogger(__name__)

TIPS: dict[str, str] = {
    "plain": "Say what to do in one short, direct sentence.",
    "describe": "Describe what the input is, what the output is, and how the output follows from the input.",
    "format": "Say exactly what form the output takes: its length, case, punctuation and nothing else.",
    "steps": "Say in order the steps that turn the input into the output.",
}
"""One instruction is asked for per tip; their order is the order of the proposals."""

GROUNDED_PROMPT = """You write the instruction for a small language model that runs one step of a program.

The step reads: {inputs}
The step writes: {output}
Its current instruction: {instruction}

Labelled examples of the task:
{examples}

First write one line that starts with "SUMMARY:" and says what these examples have in common:
what the inputs are, what the outputs are, and how each output follows from its input.
Then write {n} different instructions for this step, one per line, each following its tip:
{tips}

Each instruction must work for any input of this kind, not only the examples above.
Reply ONLY with these lines:
SUMMARY: <one sentence>
{forms}"""

_SUMMARY = re.compile(r"^\s*(?:[-*•]\s*)?(?:\*\*)?SUMMARY(?:\*\*)?\s*[:\-–]\s*(.+)$", re.IGNORECASE)
_INSTRUCTION = re.compile(r"^\s*(?:[-*•]\s*)?(?:\*\*)?INSTRUCTION\s*(\d+)?(?:\*\*)?\s*(?:\([^)]*\))?\s*[:\-–]\s*(.+)$",
                          re.IGNORECASE)


def parse_grounded(text: str) -> tuple[str, list[str]]:
    """``(summary, instructions)`` from a reply; unparseable lines, and instructions under 3 words, are skipped."""
    summary, instructions = "", []
    for raw in text.splitlines():
        if not summary and (m := _SUMMARY.match(raw)):
            summary = _clean(m.group(1))
        elif m := _INSTRUCTION.match(raw):
            body = _clean(m.group(2))
            if len(body.split()) >= 3 and len(body) <= 400 and body not in instructions:
                instructions.append(body)
    return summary, instructions


def _clean(text: str) -> str:
    return text.strip().strip("*").strip().strip("\"'`").strip()


def template_instruction(pc: ProposalContext) -> str:
    """An instruction from the signature and the train labels alone (no model call)."""
    inputs = ", ".join(f"`{k}`" for k in pc.inputs if k != "task")
    labels = [str(ex.get(pc.output) or "").strip() for ex in pc.train if pc.labeled(ex)]
    words = [len(lab.split()) for lab in labels if lab]
    shape = ""
    if words and max(words) == 1:
        shape = " as a single character" if all(len(lab) == 1 for lab in labels if lab) else " as a single word"
    elif words and max(words) <= 4:
        shape = f" in at most {max(words)} words"
    return f"Read {inputs} and give the `{pc.output}`{shape}, with no explanation."


@dataclass
class GroundedInstructionProposer:
    """Instructions written from a data summary, the program's signature and a tip; one reflection call.

    Attributes:
        lm: The reflection LM (``lm(prompt, **kwargs) -> [text]``).
        tips: The tips, one instruction each (:data:`TIPS` by name).
        examples: How many labelled train examples the prompt shows (a seeded sample).
        charge: Books the call; False (no reflection call left) falls back to :func:`template_instruction`.
    """

    lm: object
    tips: Sequence[str] = tuple(TIPS)
    examples: int = 8
    charge: Callable[[int], bool] = lambda n: True

    def prompt(self, pc: ProposalContext) -> str:
        labeled = [ex for ex in pc.train if pc.labeled(ex)]
        shown = random.Random(pc.seed).sample(labeled, min(self.examples, len(labeled)))
        fields = [k for k in pc.inputs if k != "task"]
        examples = "\n\n".join("\n".join([*(f"{k}: {ex.get(k)}" for k in fields), f"{pc.output}: {ex.get(pc.output)}"])
                               for ex in shown)
        tips = "\n".join(f"{i}. {TIPS[t]}" for i, t in enumerate(self.tips, 1))
        forms = "\n".join(f"INSTRUCTION {i}: <instruction following tip {i}>" for i in range(1, len(self.tips) + 1))
        return GROUNDED_PROMPT.format(inputs=", ".join(fields), output=pc.output,
                                      instruction=pc.context.predictor(pc.predictor).instruction,
                                      examples=examples, n=len(self.tips), tips=tips, forms=forms)

    def propose(self, pc: ProposalContext) -> list[Proposal]:
        if not pc.output_stage or not any(pc.labeled(ex) for ex in pc.train):
            return []  # the labels say what the output stage should write; an earlier stage has none
        group = f"instruction:{pc.predictor}"
        if not self.charge(1):
            return self._proposals(pc, [template_instruction(pc)], "the signature and the train labels", group)
        try:
            text = self.lm(self.prompt(pc))[0]
        except EndpointError:
            raise  # a dead endpoint stops the run (ctxopt.endpoint)
        except Exception as exc:  # one failed call is a lost proposal, never a crash
            log.warning("grounded instruction call failed: %s", exc)
            return []
        summary, instructions = parse_grounded(text if isinstance(text, str) else str(text))
        why = f"grounded in the data ({summary})" if summary else "grounded in the data"
        return self._proposals(pc, instructions[: len(self.tips)], why, group)

    def _proposals(self, pc: ProposalContext, instructions: list[str], why: str, group: str) -> list[Proposal]:
        out = []
        for i, body in enumerate(instructions):
            edit = instruction_edit(pc, body, why)
            if edit is not None:
                out.append(Proposal(f"grounded{i}", (edit,), "grounded", why, group=group))
        return out
