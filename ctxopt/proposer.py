"""Proposers: where candidate edits come from.

A proposer reads the current context and the traced results of a *train*
minibatch and returns :class:`Proposal` s, each a small bundle of typed edits
with a rationale. The search then decides which proposals to combine. Three
proposers ship and are used together:

* :class:`ReflectionProposer` — the reflection LM reads failures with their
  feedback and the current rules, and answers in a line format
  (``ADD: …``, ``UPDATE r-…: …``, ``DELETE r-…``, ``INSTRUCTION: …``) that is
  parsed tolerantly. Several samples (seeded) give diversity.
* :class:`DemoProposer` — labeled demo sets drawn from the train split, and a
  set bootstrapped from successful traces. These do not depend on the quality
  of a small reflector.
* :class:`FormatRuleProposer` — format rules read straight off the labels and
  the metric's feedback (one word, lowercase, a number, a list, no
  explanation…), again independent of the reflector.

:func:`dedupe` drops proposals that fail to apply, change nothing, or duplicate
another, before they cost any evaluation.

Example:
    >>> parse_reflection("1. **ADD:** Answer in lowercase.\\nDELETE r-1a2b3c4d")
    [('ADD', None, 'Answer in lowercase.'), ('DELETE', 'r-1a2b3c4d', '')]
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import dspy

from ctxopt._text import gist, plain_rule
from ctxopt.context import GLOBAL, Demo, LearnedContext, canonical_json
from ctxopt.edits import (
    AddDemo,
    AddItem,
    DeleteItem,
    Edit,
    RemoveDemo,
    RewriteInstruction,
    UpdateItem,
)
from ctxopt.errors import EditError, EndpointError
from ctxopt.metrics import normalize

__all__ = [
    "DemoProposer",
    "FormatRuleProposer",
    "Observation",
    "Proposal",
    "ProposalContext",
    "Proposer",
    "REFLECTION_PROMPT",
    "ReflectionProposer",
    "alike",
    "dedupe",
    "instruction_edit",
    "parse_reflection",
    "split_when",
    "spread",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Proposal:
    """A named bundle of edits the search may switch on.

    Proposals in the same ``group`` are alternatives (at most one is chosen);
    a proposal with ``group=None`` is an independent on/off choice.
    """

    name: str
    edits: tuple[Edit, ...]
    source: str
    rationale: str = ""
    group: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "rationale": self.rationale, "group": self.group,
                "edits": [e.to_dict() for e in self.edits]}


@dataclass(frozen=True)
class Observation:
    """One traced train example, as a proposer sees it (no val or test data ever)."""

    example: dspy.Example
    score: float
    feedback: str
    prediction: dict[str, Any]
    trace: list = field(default_factory=list)


@dataclass(frozen=True)
class ProposalContext:
    """Everything a proposer may read for one task."""

    context: LearnedContext
    task: str
    scope: str  # item/demo scope for this task: the task name (task-aware) or "global"
    predictor: str  # the predictor that produces the task's output
    inputs: tuple[str, ...]
    output: str
    observations: tuple[Observation, ...]
    train: tuple[dspy.Example, ...]
    seed: int = 0
    charge: Callable[..., bool] = lambda n, kind="reflection": True
    """Book LM calls a proposer makes: ``charge(n)`` for reflection calls, ``charge(n, "task")`` for task-LM
    calls; False means the budget refuses and the call must not be made. The optimizer gives each proposer
    its own handle, so its calls appear under its name in the ledger (``Ledger.by_source``)."""
    output_stage: bool = True
    """False for an earlier stage of a multi-stage program (:mod:`ctxopt.credit`): ``predictor`` does not
    produce ``output``, so proposers read its traces instead of the labels."""
    intermediate: tuple[str, ...] = ()
    """The predictor's output fields before ``output`` (ChainOfThought's ``reasoning``): labels do not give them."""
    metric: Callable[[Any, Any], Any] | None = None
    """The task's metric, ``metric(example, prediction) -> Score``, for proposers that check an answer."""

    @property
    def failures(self) -> list[Observation]:
        return [o for o in self.observations if o.score < 1.0]

    def stage_calls(self, obs: Observation) -> list[dict[str, Any]]:
        """The calls of this proposal's predictor in one example's trace, in order."""
        return [t for t in obs.trace if t.get("predictor") == self.predictor]

    def labeled(self, example: dspy.Example) -> bool:
        """Whether a train example, by its own fields, is a demo of this predictor (output stage, inputs known)."""
        return self.output_stage and all(k == "task" or k in example for k in self.inputs)


class Proposer(Protocol):
    """Produces candidate proposals for one task."""

    def propose(self, pc: ProposalContext) -> list[Proposal]: ...


# --------------------------------------------------------------------------- reflection

_LINE = re.compile(
    r"^\s*(?:[-*•]|\d+[.)])?\s*(?:\*\*)?\s*(ADD|UPDATE|DELETE|INSTRUCTION|RULE)\b\s*(?:\*\*)?"
    r"\s*(?:\(?\s*(global)\s*\)?)?\s*([A-Za-z]-[0-9a-f]{8})?\s*(?:\*\*)?\s*[:\-–]?\s*(?:\*\*)?\s*(.*)$",
    re.IGNORECASE,
)

_ID_FIRST = re.compile(r"([A-Za-z]-[0-9a-f]{8})\b\s*(?:\*\*)?\s*[:\-–]?\s*(.*)$")


def parse_reflection(text: str) -> list[tuple[str, str | None, str]]:
    """Parse a reflection into ``(verb, item_id, text)`` triples; unparseable lines are skipped.

    ``RULE:`` is read as ``ADD:``. Surrounding quotes, bullets, numbering and
    Markdown bold are tolerated.
    """
    out: list[tuple[str, str | None, str]] = []
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue
        verb, _glob, item_id, body = m.groups()
        verb = "ADD" if verb.upper() == "RULE" else verb.upper()
        body = body.strip().strip("*").strip().strip("\"'`").strip()
        if not item_id and (mid := _ID_FIRST.match(body)):
            item_id, body = mid.group(1), mid.group(2).strip().strip("*").strip()
        if verb == "DELETE":
            if item_id:
                out.append((verb, item_id, ""))
            continue
        if verb == "UPDATE" and not item_id:
            continue
        if len(body.split()) < 2 or len(body) > 400:
            continue
        out.append((verb, item_id, body))
    return out


REFLECTION_PROMPT = """You are improving the prompt of a small language model on the task "{task}".

Current instruction:
{instruction}

Current rules (id: text):
{rules}

Examples where the model's output was wrong:
{failures}

Study what the expected outputs have in common and what the model did wrong.
Write up to {k} short, concrete rules that would make the model produce exactly the
expected outputs. Describe the transformation from input to output precisely.

Reply ONLY with lines in these forms:
ADD: <a new rule>
UPDATE <rule id>: <better text for an existing rule>
DELETE <rule id>
INSTRUCTION: <a better one-sentence instruction for this task>"""

STAGE_PROMPT = """You are improving one stage, `{stage}`, of a multi-stage program working on the task "{task}".
The program's final answer was wrong on the examples below; this stage's own inputs and
outputs are shown, and its output fed the later stages.

Current instruction of this stage:
{instruction}

Current rules of this stage (id: text):
{rules}

Examples where the final answer was wrong:
{failures}

Study what this stage did wrong. Write up to {k} short, concrete rules for this stage that
would lead the program to the expected final answers.

Reply ONLY with lines in these forms:
ADD: <a new rule>
UPDATE <rule id>: <better text for an existing rule>
DELETE <rule id>"""

REWRITABLE_WORDS = 80
"""An instruction of more words than this (``dspy.ReAct``'s, which lists the tools) is never rewritten:
a rewrite by a small reflector would lose its structure. Rules and demos are added around it."""

SHARED_MEMORY_NOTE = """

The rules are shared with other tasks' inputs, and each input sees only the rules
that apply to inputs like it. End every ADD line with " WHEN: <the kind of input
it applies to>", e.g. "ADD: Answer with the first letter. WHEN: a single word
whose first letter is asked for"."""

_WHEN = re.compile(r"(?:^|\s+)WHEN\s*:\s*", re.IGNORECASE)


def split_when(body: str) -> tuple[str, str]:
    """A reflected rule and its "applies when" text (empty when none was given).

    Example:
        >>> split_when("Answer with one letter. WHEN: the first letter of a word is asked")
        ('Answer with one letter.', 'the first letter of a word is asked')
        >>> split_when("Be brief.")
        ('Be brief.', '')
        >>> split_when('When: a question with "where" in it')  # no rule at all (babi, stop 32)
        ('', 'a question with "where" in it')
    """
    parts = _WHEN.split(body, maxsplit=1)
    return (parts[0].strip(), parts[1].strip().strip("\"'`").strip()) if len(parts) == 2 else (body, "")


_PAST_OUTCOME = re.compile(r"^(your |my |this )?(answer|output|prediction|response|result)s? (was|were)\b")
"""A report of how an answer went, on :func:`ctxopt.metrics.normalize`d text (articles removed)."""


def restates_feedback(rule: str, failures: Sequence[Observation]) -> bool:
    """True if ``rule`` only reports how one answer went, which teaches the model nothing.

    A small reflector often copies the metric's verdict into a rule ("The answer was empty."). Such a
    "rule" is dropped: it is one of the failures' feedback clauses, or it says what an answer *was*.

    Example:
        >>> fails = [Observation(None, 0.0, "the answer was empty; expected 'b'", {})]
        >>> restates_feedback("The answer was empty.", fails), restates_feedback("Answer with one letter.", fails)
        (True, False)
    """
    plain = normalize(rule)
    clauses = {normalize(c) for o in failures for c in re.split(r"[;\n]", o.feedback or "") if c.strip()}
    return plain in clauses or bool(_PAST_OUTCOME.match(plain))


def is_placeholder(text: str) -> bool:
    """True if ``text`` is only a slot of the reply format, copied back (``<a new rule>``): no rule at all.

    Example:
        >>> is_placeholder("<a new rule>"), is_placeholder(" <better text> "), is_placeholder("Answer <x> only.")
        (True, True, False)
    """
    return bool(re.fullmatch(r"\s*<[^<>]*>\s*", text or ""))


_NAME = re.compile(r"\b[A-Z][a-z]{2,}\b")


def example_names(rule: str, failures: Sequence[Observation]) -> list[str]:
    """Capitalized words of ``rule`` that are names in the failed examples' inputs (a rule about one case).

    A small reflector reading a stage's failures often writes a rule for the person or place in front
    of it ("copy the facts about Sandra"), which teaches the stage nothing about the next input.
    Words at the start of a sentence in the rule are ignored.

    Example:
        >>> import dspy
        >>> ex = dspy.Example(input="Sandra went to the garden. Question: Where is Sandra?").with_inputs("input")
        >>> fails = [Observation(ex, 0.0, "", {})]
        >>> example_names("When asked where Sandra is, copy her lines.", fails), example_names("Copy every line.", fails)
        (['Sandra'], [])
    """
    inputs = " ".join(str(v) for o in failures for t in o.trace for v in (t.get("inputs") or {}).values())
    inputs += " " + " ".join(str(v) for o in failures for k, v in o.example.inputs().items() if k != "task")
    starts = {m.group(1) for m in re.finditer(r"(?:^|[.!?:]\s+)([A-Z][a-z]+)", rule)}
    return sorted({w for w in _NAME.findall(rule) if w not in starts and re.search(rf"\b{w}\b", inputs)})


def _fmt_failure(i: int, obs: Observation, inputs: Sequence[str], output: str) -> str:
    shown = "\n".join(f"{k}: {obs.example.get(k)}" for k in inputs if k != "task")
    got = obs.prediction.get(output, "")
    return (f"### Example {i}\n{shown}\nModel output: {got}\nExpected output: {obs.example.get(output)}\n"
            f"Feedback: {obs.feedback}")


def _clip(value: Any, limit: int = 600) -> str:
    text = " ".join(str(value).split()) if not isinstance(value, str) else value.strip()
    return text if len(text) <= limit else text[: limit // 2] + " … " + text[-limit // 2:]


def _fmt_stage_failure(i: int, obs: Observation, pc: ProposalContext) -> str:
    """A failed example as one stage saw it: its last call's inputs and outputs, then the final outcome."""
    calls = pc.stage_calls(obs)
    last = calls[-1] if calls else {"inputs": {}, "outputs": {}}
    seen = "\n".join(f"{k}: {_clip(v)}" for k, v in (last.get("inputs") or {}).items() if k != "task")
    did = "\n".join(f"{k}: {_clip(v)}" for k, v in (last.get("outputs") or {}).items())
    return (f"### Example {i} (this stage ran {len(calls)} time(s); its last call)\nStage inputs:\n{seen or '(none)'}\n"
            f"Stage outputs:\n{did or '(the stage did not run)'}\n"
            f"Final answer: {obs.prediction.get(pc.output, '')}\nExpected final answer: {obs.example.get(pc.output)}\n"
            f"Feedback: {obs.feedback}")


@dataclass
class ReflectionProposer:
    """Ask the reflection LM for edits; ``samples`` seeded samples, the first greedy."""

    lm: Any
    samples: int = 3
    max_failures: int = 6
    max_edits: int = 4
    charge: Callable[[int], bool] = lambda n: True  # returns False when the budget refuses

    def prompt(self, pc: ProposalContext) -> str:
        pctx = pc.context.predictor(pc.predictor)
        items = pctx.scoped_items(pc.task if pc.scope != GLOBAL else None)
        rules = "\n".join(f"{it.id}: {it.text}" for it in items) or "(none)"
        shown = pc.failures[: self.max_failures]
        if pc.output_stage:
            failures = "\n\n".join(_fmt_failure(i, o, pc.inputs, pc.output) for i, o in enumerate(shown, 1))
            prompt = REFLECTION_PROMPT.format(task=pc.task, instruction=pctx.instruction, rules=rules,
                                              failures=failures, k=self.max_edits)
        else:
            failures = "\n\n".join(_fmt_stage_failure(i, o, pc) for i, o in enumerate(shown, 1))
            prompt = STAGE_PROMPT.format(stage=pc.predictor, task=pc.task, instruction=pctx.instruction,
                                         rules=rules, failures=failures, k=self.max_edits)
        return prompt + SHARED_MEMORY_NOTE if pc.scope == GLOBAL else prompt

    def propose(self, pc: ProposalContext) -> list[Proposal]:
        if not pc.failures:
            return []
        prompt = self.prompt(pc)
        proposals: list[Proposal] = []
        for s in range(self.samples):
            if not self.charge(1):
                log.info("reflection budget exhausted after %d samples", s)
                break
            kwargs = {} if s == 0 else {"temperature": 0.7, "seed": pc.seed * 1000 + s}
            try:
                text = self.lm(prompt, **kwargs)[0]
            except EndpointError:
                raise  # a dead endpoint stops the run (ctxopt.endpoint)
            except Exception as exc:  # one failed reflection is one lost sample, never a crash
                log.warning("reflection sample %d failed: %s", s, exc)
                continue
            text = text if isinstance(text, str) else str(text)
            for j, (verb, item_id, body) in enumerate(parse_reflection(text)[: self.max_edits]):
                if verb != "DELETE" and is_placeholder(split_when(body)[0]):
                    log.info("reflection sample %d: dropped %r, a slot of the reply format copied back", s, body)
                    continue
                if verb in ("ADD", "UPDATE") and restates_feedback(split_when(body)[0], pc.failures):
                    log.info("reflection sample %d: dropped %r, which only restates the metric's feedback", s, body)
                    continue
                if not pc.output_stage and verb in ("ADD", "UPDATE") and (names := example_names(body, pc.failures)):
                    log.info("reflection sample %d: dropped stage rule %r, which names %s from its examples",
                             s, body, ", ".join(names))
                    continue
                edit = self._edit(pc, verb, item_id, body)
                if edit is not None:
                    proposals.append(Proposal(f"reflect{s}.{j}", (edit,), "reflection", body or verb))
        return proposals

    def _edit(self, pc: ProposalContext, verb: str, item_id: str | None, body: str) -> Edit | None:
        why = "reflection on failed train examples"
        try:
            if verb == "ADD":
                rule, when = split_when(body)
                if not rule:  # only an "applies when", no rule: it taught "When: a question with where" (babi)
                    return None
                return AddItem(pc.predictor, plain_rule(rule), scope=pc.scope, rationale=why,
                               keys=(when,) if when else ())
            if verb == "UPDATE":
                return UpdateItem(pc.predictor, item_id, plain_rule(body), rationale=why)
            if verb == "DELETE":
                return DeleteItem(pc.predictor, item_id, rationale=why)
        except EditError:
            return None
        return instruction_edit(pc, body, why)


def instruction_edit(pc: ProposalContext, body: str, why: str) -> Edit | None:
    """The edit a proposed instruction becomes; None if it is not a valid edit.

    A rewrite of the shared instruction with one memory for all inputs (``scope`` global), unless the
    instruction is too long to rewrite (:data:`REWRITABLE_WORDS`); otherwise a strategy item in the scope.
    """
    try:
        rewritable = len(pc.context.predictor(pc.predictor).instruction.split()) <= REWRITABLE_WORDS
        if pc.scope == GLOBAL and rewritable:
            return RewriteInstruction(pc.predictor, body, rationale=why)
        # In a task-aware stream an instruction for one task is a task-scoped strategy.
        return AddItem(pc.predictor, body, scope=pc.scope, kind="strategy", rationale=why)
    except EditError:
        return None


# --------------------------------------------------------------------------- demos


def spread(items: Sequence[T], key: Callable[[T], str]) -> list[T]:
    """``items`` reordered round-robin over their ``key`` values, in order of first appearance.

    The successes a model has on a task are biased towards its own default answer: on
    reasoning-gym's letter_counting the 0.5B's wins were mostly "2", and a set of the
    first four successful traces taught "2" four times (assistant-8, stop 32). Taking the
    traces one answer value at a time keeps the set as varied as the wins allow.

    Example:
        >>> spread(["2a", "2b", "1a", "2c", "3a"], key=lambda s: s[0])
        ['2a', '1a', '3a', '2b', '2c']
    """
    queues: dict[str, list[T]] = {}
    for item in items:
        queues.setdefault(key(item), []).append(item)
    out: list[T] = []
    while queues:
        for k in list(queues):
            out.append(queues[k].pop(0))
            if not queues[k]:
                del queues[k]
    return out


@dataclass
class DemoProposer:
    """Alternative demo sets for the task: labeled ones from train, and successful traces.

    One labeled set is drawn per entry of ``sizes``: the search chooses how many demos (8, as many as
    ``LabeledFewShot``'s default, or 4) and, between two draws of 8, which ones. The traced set takes
    the successes one answer value at a time (:func:`spread`), and is not offered when every success
    gives the same answer on a task whose train labels vary: it would only teach the model its own guess.
    """

    sizes: tuple[int, ...] = (8, 4, 8)

    def _demo(self, pc: ProposalContext, inputs: dict, outputs: dict) -> Demo:
        return Demo(inputs=inputs, outputs=outputs, scope=pc.scope)

    def propose(self, pc: ProposalContext) -> list[Proposal]:
        rng = random.Random(pc.seed)
        existing = [d for d in pc.context.predictor(pc.predictor).demos if d.scope == pc.scope]
        clear = tuple(RemoveDemo(pc.predictor, d.id, rationale="replaced by a new demo set") for d in existing)
        out: list[Proposal] = []
        train = [ex for ex in pc.train if pc.labeled(ex)]
        group = "demos" if pc.output_stage else f"demos:{pc.predictor}"
        for s, wanted in enumerate(self.sizes):
            size = min(wanted, len(train))
            if size == 0:
                break
            chosen = rng.sample(train, size)
            demos = {self._demo(pc, {k: ex.get(k) for k in pc.inputs}, {pc.output: ex.get(pc.output)})
                     for ex in chosen}
            edits = clear + tuple(AddDemo(pc.predictor, d, rationale="labeled train example")
                                  for d in sorted(demos, key=lambda d: d.id))
            out.append(Proposal(f"demos{s}", edits, "demos", f"{size} labeled train demos", group=group))
        traced = [step for o in pc.observations if o.score >= 1.0 for step in pc.stage_calls(o)[:1]]
        answers = {canonical_json(step["outputs"]) for step in traced}
        varied = len({canonical_json(ex.get(pc.output)) for ex in train}) > 1
        if len(traced) >= 2 and (len(answers) > 1 or not (varied and pc.output_stage)):
            demos = set()
            for step in spread(traced, lambda t: canonical_json(t["outputs"]))[: max(self.sizes, default=0)]:
                demos.add(self._demo(pc, dict(step["inputs"]), dict(step["outputs"])))
            if len(demos) >= 2:
                edits = clear + tuple(AddDemo(pc.predictor, d, rationale="successful trace")
                                      for d in sorted(demos, key=lambda d: d.id))
                name = "demos-traced" if pc.output_stage else f"demos-traced:{pc.predictor}"
                out.append(Proposal(name, edits, "demos", f"{len(demos)} successful traces"
                                    + ("" if pc.output_stage else f" of {pc.predictor}"),
                                    group=group))
        return out


# --------------------------------------------------------------------------- format rules


def _words(text: Any) -> list[str]:
    return str(text or "").split()


@dataclass
class FormatRuleProposer:
    """Rules read off the train labels and the metric's feedback; no LM involved."""

    def propose(self, pc: ProposalContext) -> list[Proposal]:
        labels = [str(ex.get(pc.output) or "") for ex in pc.train]
        if not labels or not pc.output_stage:  # format rules are about the output field
            return []
        fails = pc.failures
        rules: list[tuple[str, str]] = []
        lengths = [len(_words(lab)) for lab in labels]
        if all(n == 1 for n in lengths):
            if all(len(lab.strip()) == 1 for lab in labels):
                rules.append(("Answer with a single character only.", "every train label is one character"))
            else:
                rules.append(("Answer with a single word only, with no explanation.",
                              "every train label is one word"))
        elif max(lengths) <= 4:
            rules.append((f"Answer with at most {max(lengths)} words, with no explanation.",
                          f"train labels have at most {max(lengths)} words"))
        if all(re.fullmatch(r"-?\d+(\.\d+)?", lab.strip()) for lab in labels):
            rules.append(("Answer with the number only, written in digits.", "every train label is a number"))
        if all(lab == lab.lower() for lab in labels) and any(
                str(o.prediction.get(pc.output, "")) != str(o.prediction.get(pc.output, "")).lower() for o in fails):
            rules.append(("Write the answer in lowercase.", "labels are lowercase, failed outputs were not"))
        if sum("," in lab for lab in labels) >= 0.8 * len(labels):
            rules.append(("Answer with a comma-separated list.", "train labels are comma-separated lists"))
        verbose = [o for o in fails if len(_words(o.prediction.get(pc.output))) > 2 * len(_words(o.example.get(pc.output))) + 1]
        if fails and len(verbose) >= max(1, len(fails) // 2):
            rules.append(("Give only the final answer; do not repeat the input or explain.",
                          f"{len(verbose)} of {len(fails)} failures were much longer than the label"))
        for hint in sorted({h for o in fails for h in _feedback_hints(o.feedback)}):
            rules.append((hint, "hint from the metric's feedback"))
        out = []
        for i, (text, why) in enumerate(rules):
            try:
                edit = AddItem(pc.predictor, text, scope=pc.scope, rationale=why)
            except EditError:
                continue
            out.append(Proposal(f"format{i}", (edit,), "format", why))
        return out


def _feedback_hints(feedback: str) -> list[str]:
    """Generic advice inside a metric's feedback ("…; answer with one word"), quotes excluded, and not its
    verdict on the answer ("the answer was empty" became a rule in ii-8 task-agnostic, stop 30).

    Example:
        >>> _feedback_hints("the answer was empty; expected 'b'; answer with one word")
        ['Answer with one word.']
    """
    hints = []
    for part in re.split(r"[;\n]", feedback or ""):
        part = part.strip().rstrip(".")
        if part and not re.search(r"['\"‘’“”]", part) and len(part.split()) >= 3 and not part.lower().startswith(
                ("expected", "got", "score", "correct")) and not _PAST_OUTCOME.match(normalize(part)):
            hints.append(part[0].upper() + part[1:] + ".")
    return hints


# --------------------------------------------------------------------------- alike


def alike(proposals: Sequence[Proposal], sim: Any) -> list[Proposal]:
    """Reflected items that ask the same thing become alternatives of one group.

    Reflection samples often write one lesson twice in other words, and the search, free to switch
    both on, lands both when the pair scores a flipped answer better on a 10-example minibatch (ii-8,
    stop 35: "translate the input text into Spanish" as a rule beside "Translate the given text from
    English to Spanish" as a strategy). Two proposals that each add one item (a rule or a strategy) are
    alike when the :func:`~ctxopt._text.gist` of their texts scores at least halfway between the
    similarity's ``related`` and ``merge`` thresholds (0.7 for all-MiniLM-L6-v2, where that pair scores
    0.77 and complementary rules of one task such as "Separate the letters with spaces." and "Output the
    letters of the word in order." 0.60). Alike proposals, and the forms of each that share its group
    (its core or narrowed twin), join one group ``alike:<first name>``: the search chooses at most one.
    Everything else is returned as it was, in order. Run it after :func:`dedupe`: a proposal whose only
    alike partner is its exact duplicate stays an on/off switch, which the search's seeds switch on.

    Example:
        >>> from ctxopt.edits import AddItem
        >>> from ctxopt.similarity import LexicalSimilarity
        >>> rule = lambda name, text: Proposal(name, (AddItem("p", text),), "reflection")
        >>> out = alike([rule("a", "The model should always answer in one word."), rule("b", "Reverse the word."),
        ...              rule("c", "Answer in one word!")], LexicalSimilarity())
        >>> [(p.name, p.group) for p in out]
        [('a', 'alike:a'), ('b', None), ('c', 'alike:a')]
    """
    def item(p: Proposal) -> tuple[str, str] | None:  # (predictor, gist) of a proposal adding one item
        if p.source == "reflection" and len(p.edits) == 1 and isinstance(e := p.edits[0], AddItem):
            return e.predictor, gist(e.text)
        return None

    first: dict[str, tuple[str, str]] = {}  # a group's first item speaks for it
    for p in proposals:
        if (it := item(p)) is not None:
            first.setdefault(p.group or p.name, it)
    keys = list(first)
    if len(keys) < 2:
        return list(proposals)
    scores = sim.matrix([first[k][1] for k in keys])
    cut = (sim.related + sim.merge) / 2
    root = list(range(len(keys)))

    def find(i: int) -> int:
        while root[i] != i:
            i = root[i]
        return i

    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            if scores[i][j] >= cut and first[keys[i]][0] == first[keys[j]][0]:
                root[max(find(i), find(j))] = min(find(i), find(j))
    members: dict[int, list[str]] = {}
    for i, k in enumerate(keys):
        members.setdefault(find(i), []).append(k)
    joined = {k: f"alike:{ks[0].removeprefix('memory:')}" for ks in members.values() if len(ks) > 1 for k in ks}
    return [replace(p, group=joined[p.group or p.name]) if (p.group or p.name) in joined else p for p in proposals]


# --------------------------------------------------------------------------- dedupe


def dedupe(context: LearnedContext, proposals: Sequence[Proposal], *, step: int, task: str
           ) -> tuple[list[Proposal], list[tuple[str, str]]]:
    """Keep proposals that apply cleanly, change the context, and differ from each other.

    Returns the kept proposals and ``(name, reason)`` for each dropped one.
    """
    kept: list[Proposal] = []
    dropped: list[tuple[str, str]] = []
    seen = {context.hash}
    for p in proposals:
        try:
            h = context.apply_edits(p.edits, step=step, task=task).hash
        except EditError as exc:
            dropped.append((p.name, f"invalid: {exc}"))
            continue
        if h in seen:
            dropped.append((p.name, "no-op or duplicate"))
            continue
        seen.add(h)
        kept.append(p)
    return kept, dropped
