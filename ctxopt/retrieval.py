"""Per-input retrieval: core memory always, archival memory by similarity to the input.

:class:`RetrievalSelector` is a :class:`~ctxopt.selector.ContextSelector` that
splits each predictor's context in two:

* **Core memory**, always rendered: the instruction and the items marked
  ``pinned``.
* **Archival memory**, retrieved per input: every other item and every demo.
  A demo's key is the text of its inputs; an item's keys are its ``keys``
  (an "applies when …" text and the inputs that produced it), or its text
  when it has none.

For one input, the query is the text of its input fields (the ``task`` label
left out, joined by newlines). Each candidate scores the highest similarity of
the query to any of its keys; one with counter-keys (``unless``: other tasks'
inputs, :func:`narrow`) is left out when one of them matches the query at least
as well (:meth:`ctxopt.similarity.Similarity.scores`).
The ``k_items`` best items and ``k_demos`` best demos scoring at least
``min_score``, and within ``margin`` of the best score of any item or demo
for this input, are kept; ties go to the smaller id, and the kept ones stay in
C's order, so the same input always gets the same prompt. With a task label
(a task-aware call) only items and demos in the task's scope are candidates;
without one (task-agnostic) retrieval alone decides.

:meth:`RetrievalSelector.explain` says what was chosen for an input and how
well each choice matched.

Example:
    >>> from ctxopt.context import Demo, Item, LearnedContext, PredictorContext
    >>> ctx = LearnedContext({"p": PredictorContext("Answer.", items=(
    ...     Item(id="r-fmt", text="Answer in one word.", pinned=True),
    ...     Item(id="r-plural", text="Add s to make a plural.", keys=("plural of a noun",)),
    ...     Item(id="r-antonym", text="Give the opposite.", keys=("antonym of an adjective",)),
    ... ))})
    >>> sel = RetrievalSelector("lexical", k_items=1)
    >>> [it.id for it in sel.select(ctx, None, {"input": "the plural of cat"}).items("p")]
    ['r-fmt', 'r-plural']
    >>> why = sel.explain(ctx, None, {"input": "antonym of hot"})["p"]
    >>> why.pinned, [hit.id for hit in why.items]
    (('r-fmt',), ['r-antonym'])
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ctxopt._text import condition, gist, shorten
from ctxopt.context import Demo, Item, LearnedContext, PredictorContext, canonical_json
from ctxopt.edits import AddDemo, AddItem, DeleteItem, Narrow, RemoveDemo, RewriteInstruction, SetRetrieval, UpdateItem
from ctxopt.errors import ConfigError
from ctxopt.proposer import Proposal
from ctxopt.similarity import Similarity, check_similarity_name, get_similarity
from ctxopt.tasks import TASK_FIELD, split_visit
from ctxopt.tokens import count_tokens

__all__ = ["CORE_AFTER", "MAX_KEYS", "MAX_UNLESS", "RETRIEVAL_CHOICES", "Hit", "Retrieval", "RetrievalSelector", "archival",
           "core_or_archival", "hit_rates", "input_text", "narrow", "setting_proposals", "shield"]

MAX_KEYS = 6
"""Retrieval keys one new item gets at most (the first inputs that produced it)."""


def input_text(inputs: Mapping[str, Any]) -> str:
    """The retrieval text of an input: its field values in order, without the ``task`` label, one per line.

    Example:
        >>> input_text({"task": "antonyms", "input": "hot", "n": 2})
        'hot\\n2'
    """
    return "\n".join(v if isinstance(v, str) else canonical_json(v) for k, v in inputs.items() if k != TASK_FIELD)


def _item_keys(item: Item) -> tuple[str, ...]:
    return item.keys or (item.text,)


def _demo_keys(demo: Demo) -> tuple[str, ...]:
    return (input_text(demo.inputs),)


@dataclass(frozen=True)
class Hit:
    """One retrieved item or demo: its id, its score and the key that scored it."""

    id: str
    score: float
    key: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "key": self.key}


@dataclass(frozen=True)
class Retrieval:
    """What one predictor shows for one input.

    Attributes:
        query: The text the keys were compared with (:func:`input_text`).
        pinned: Ids of the pinned (core) items in scope, always shown.
        items: The retrieved items, in the context's order.
        demos: The retrieved demos, in the context's order.
    """

    query: str
    pinned: tuple[str, ...]
    items: tuple[Hit, ...]
    demos: tuple[Hit, ...]
    kept_off: tuple[str, ...] = ()
    """Ids of the items and demos left out because one of their counter-keys matched the query best."""

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "pinned": list(self.pinned), "kept_off": list(self.kept_off),
                "items": [h.to_dict() for h in self.items], "demos": [h.to_dict() for h in self.demos]}


class RetrievalSelector:
    """Shows the pinned items, and the items and demos whose keys best match the input.

    Args:
        similarity: ``auto`` (embeddings when installed, else lexical),
            ``embedding``, ``lexical`` or a :class:`~ctxopt.similarity.Similarity`;
            a name is resolved on first use, so building a selector loads no model.
        k_items: How many unpinned items to show at most.
        k_demos: How many demos to show at most.
        min_score: The similarity a retrieved item or demo needs at least.
        margin: How far below the input's best-matching item or demo a retrieved one may score (1.0: no
            limit; the default 0.1 keeps apart the tasks of the built-in streams whose inputs differ,
            ``experiments/task_separability.py``). An absolute threshold cannot serve tasks whose inputs
            match their own keys weakly and other tasks' keys weaker still; a margin shows each input the
            memory it matches best.
        max_tokens: A per-call token budget (:func:`~ctxopt.tokens.count_tokens`) for the instruction, the
            pinned items and what is retrieved; the best-scoring hits are kept while they fit. None: no budget.
        reach: How far below its keys' own cohesion an input may match an entry and still retrieve it
            (1.0: no limit). An entry's cohesion is the smallest similarity of one of its keys to the
            nearest other: an item's keys, or the inputs of the demos learned on the same task (their
            ``source_task``). An entry with one key has no floor. With few entries in memory, top-k
            retrieval shows them to every input, and one task's lessons reached tasks not yet seen
            (assistant-8: word_sequence_reversal 0.12 → 0.04 from a letter-counting rule, stop 32). With
            0.1, on train keys and val inputs, an entry keyed by 6 train inputs reaches all of its own
            task's inputs and none of the others' on assistant-8, 99% and 38% on babi-10, 100% and 78% on
            ii-8 (``experiments/task_separability.py``).

    Raises:
        ConfigError: an unknown similarity name, a negative k, ``min_score`` outside [0, 1], or a bad ``max_tokens``.
    """

    def __init__(self, similarity: str | Similarity = "auto", *, k_items: int = 3, k_demos: int = 4,
                 min_score: float = 0.0, margin: float = 0.1, max_tokens: int | None = None,
                 reach: float = 0.1) -> None:
        if isinstance(similarity, str):
            check_similarity_name(similarity)
        for name, k in (("k_items", k_items), ("k_demos", k_demos)):
            if not isinstance(k, int) or isinstance(k, bool) or k < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {k!r}")
        for name, x in (("min_score", min_score), ("margin", margin), ("reach", reach)):
            if not 0.0 <= float(x) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {x!r}")
        self.similarity = similarity
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise ConfigError(f"max_tokens must be a positive integer or None, got {max_tokens!r}")
        self.k_items, self.k_demos, self.min_score, self.margin = k_items, k_demos, float(min_score), float(margin)
        self.max_tokens, self.reach = max_tokens, float(reach)
        self._sim: Similarity | None = None
        self._cohesion: dict[tuple[str, ...], float | None] = {}

    @property
    def sim(self) -> Similarity:
        """The similarity backend, resolved on first use."""
        if self._sim is None:
            self._sim = get_similarity(self.similarity)
        return self._sim

    def __repr__(self) -> str:
        return (f"RetrievalSelector({self.similarity!r}, k_items={self.k_items}, k_demos={self.k_demos}, "
                f"min_score={self.min_score}, margin={self.margin}, max_tokens={self.max_tokens}, reach={self.reach})")

    def explain(self, context: LearnedContext, task: str | None, inputs: Mapping[str, Any]) -> dict[str, Retrieval]:
        """What each predictor shows for this input, and why: the pinned ids and the retrieved hits with scores."""
        query = input_text(inputs)
        out: dict[str, Retrieval] = {}
        for name, pc in context.predictors.items():
            k_items, k_demos, min_score = self.settings(pc)
            reach = self.reach_for(pc)
            items = pc.scoped_items(task)
            archival = [it for it in items if not it.pinned]
            demos = pc.scoped_demos(task)
            sets: dict[str, list[str]] = {}
            for d in demos:
                if d.source_task:
                    sets.setdefault(d.source_task, []).extend(_demo_keys(d))
            off: list[str] = []
            why = Retrieval(
                query=query,
                pinned=tuple(it.id for it in items if it.pinned),
                items=self._top(query, [(it.id, _item_keys(it), it.unless, self._floor(_item_keys(it), reach))
                                        for it in archival], k_items, min_score, off),
                demos=self._top(query, [(d.id, _demo_keys(d), d.unless,
                                         self._floor(tuple(sets[d.source_task]) if d.source_task else (), reach))
                                        for d in demos], k_demos, min_score, off),
            )
            why = replace(why, kept_off=tuple(off))
            why = _within_margin(why, self.margin_for(pc))
            budget = pc.retrieval_settings().get("max_tokens", self.max_tokens)
            out[name] = why if budget is None else self._within_budget(why, pc, task, int(budget))
        return out

    def _within_budget(self, why: Retrieval, pc: Any, task: str | None, budget: int) -> Retrieval:
        """``why`` cut to ``max_tokens``: the best-scoring hits first (items and demos together) while they fit."""
        cost = {it.id: count_tokens(it.text) for it in pc.scoped_items(task)}
        cost.update({d.id: count_tokens(canonical_json([d.inputs, d.outputs])) for d in pc.scoped_demos(task)})
        left = budget - count_tokens(pc.instruction) - sum(cost[i] for i in why.pinned)
        kept: set[str] = set()
        for hit in sorted((*why.items, *why.demos), key=lambda h: (-h.score, h.id)):
            if cost[hit.id] <= left:
                kept.add(hit.id)
                left -= cost[hit.id]
        return replace(why, items=tuple(h for h in why.items if h.id in kept),
                       demos=tuple(h for h in why.demos if h.id in kept))

    def select(self, context: LearnedContext, task: str | None, inputs: Mapping[str, Any]) -> LearnedContext:
        """The context with only the pinned and retrieved items and the retrieved demos (rendered core first)."""
        out = context
        for name, why in self.explain(context, task, inputs).items():
            pc = context.predictor(name)
            shown = set(why.pinned) | {h.id for h in why.items}
            demos = {h.id for h in why.demos}
            kept = replace(pc, items=tuple(it for it in pc.items if it.id in shown),
                           demos=tuple(d for d in pc.demos if d.id in demos))
            if kept != pc:
                out = out.with_predictor(name, kept)
        return out

    def settings(self, pc: PredictorContext) -> tuple[int, int, float]:
        """``(k_items, k_demos, min_score)`` for one predictor: its learned settings (C's versioned state), else this
        selector's."""
        learned = pc.retrieval_settings()
        return (int(learned.get("k_items", self.k_items)), int(learned.get("k_demos", self.k_demos)),
                float(learned.get("min_score", self.min_score)))

    def margin_for(self, pc: PredictorContext) -> float:
        """The predictor's ``margin``: its learned one (C's versioned state), else this selector's."""
        return float(pc.retrieval_settings().get("margin", self.margin))

    def reach_for(self, pc: PredictorContext) -> float:
        """The predictor's ``reach``: its learned one (C's versioned state), else this selector's."""
        return float(pc.retrieval_settings().get("reach", self.reach))

    def _floor(self, keys: tuple[str, ...], reach: float) -> float | None:
        """The score an input needs to retrieve an entry keyed by ``keys``: their cohesion less ``reach``."""
        if reach >= 1.0:
            return None
        unique = tuple(dict.fromkeys(keys))
        if unique not in self._cohesion:
            if len(unique) < 2:
                self._cohesion[unique] = None
            else:
                m = self.sim.matrix(list(unique))
                self._cohesion[unique] = min(max(m[i][j] for j in range(len(unique)) if j != i)
                                             for i in range(len(unique)))
        cohesion = self._cohesion[unique]
        return None if cohesion is None else cohesion - reach

    def _top(self, query: str, candidates: Sequence[tuple[str, tuple[str, ...], tuple[str, ...], float | None]],
             k: int, min_score: float, kept_off: list[str]) -> tuple[Hit, ...]:
        """The best ``k`` candidates scoring at least ``min_score`` (ties: smaller id first), in the given order.

        A candidate is ``(id, keys, unless, floor)``; one whose best counter-key (``unless``) scores at least its
        best key is left out, and its id appended to ``kept_off``: the input is nearer to another task's inputs
        than to anything the entry was learned from. One whose best key scores below its ``floor`` (None: none)
        is left out too: the input is less like its keys than they are like each other."""
        if k == 0 or not candidates:
            return ()
        scores = iter(self.sim.scores(query, [key for _, keys, unless, _ in candidates for key in (*keys, *unless)]))
        hits: list[tuple[int, Hit]] = []
        for position, (cid, keys, unless, floor) in enumerate(candidates):
            per_key = [(next(scores), key) for key in keys]
            against = max((next(scores) for _ in unless), default=None)
            best = max(score for score, _ in per_key)
            if against is not None and against >= best:
                kept_off.append(cid)
                continue
            if floor is not None and best < floor:
                continue
            hits.append((position, Hit(cid, best, next(key for score, key in per_key if score == best))))
        ranked = sorted((h for h in hits if h[1].score >= min_score), key=lambda h: (-h[1].score, h[1].id))
        return tuple(hit for _, hit in sorted(ranked[:k], key=lambda h: h[0]))


def _within_margin(why: Retrieval, margin: float) -> Retrieval:
    """``why`` without the hits scoring more than ``margin`` below its best item or demo."""
    hits = (*why.items, *why.demos)
    if margin >= 1.0 or not hits:
        return why
    floor = max(h.score for h in hits) - margin
    return replace(why, items=tuple(h for h in why.items if h.score >= floor),
                   demos=tuple(h for h in why.demos if h.score >= floor))


def archival(proposals: Sequence[Proposal], keys: Sequence[str], instruction: str | None = None,
             own: Collection[str] = ()) -> list[Proposal]:
    """``proposals`` rewritten for one memory shared by every input (a retrieving selector).

    * A new item gets ``keys`` after its own (the reflector's "applies when"
      text): the inputs that produced it (the failed train inputs it answers),
      at most :data:`MAX_KEYS`, so it is retrieved for inputs like them.
    * A rewrite of the instruction becomes a keyed ``strategy`` item: the
      instruction is core memory, shown to every input, and one task's
      instruction must not take over the others. A rewrite that only restates
      ``instruction`` (the current one) is dropped: as an item it would add nothing.
    * A demo set adds its demos and removes only ``own``: the ids of the demos
      this task's family left on an earlier visit (their ``source_task``), which
      the new set replaces, so a revisit refines the family's demos instead of
      piling a second set on them (16 plural demos after two visits, stop 30).
      The other demos are other inputs' archival memory.
    * An update or deletion of an item already in memory is dropped: the item
      may be what other inputs rely on, and one task's failures cannot tell.
      Changing shared items is consolidation's work, gated on every task's
      replay (:mod:`ctxopt.consolidate`). (A reflector reading plural failures
      deleted sentiment's "Answer with a single word only", and a replay sample
      of 10 did not show the cost.)

    Example:
        >>> from ctxopt.edits import AddItem, RewriteInstruction
        >>> out = archival([Proposal("r", (AddItem("p", "Use digits."), RewriteInstruction("p", "Add."),), "reflection")],
        ...                ["2 plus 3", "7 plus 1"])
        >>> [(type(e).__name__, e.kind, e.keys) for e in out[0].edits]
        [('AddItem', 'rule', ('2 plus 3', '7 plus 1')), ('AddItem', 'strategy', ('2 plus 3', '7 plus 1'))]
    """
    unique = tuple(dict.fromkeys(shorten(k, 300) for k in keys if k and k.strip()))[:MAX_KEYS]
    out: list[Proposal] = []
    for p in proposals:
        edits = []
        for e in p.edits:
            if isinstance(e, (DeleteItem, UpdateItem)) or (isinstance(e, RemoveDemo) and e.demo_id not in own):
                continue
            if isinstance(e, RewriteInstruction):
                if instruction is not None and " ".join(e.text.split()) == " ".join(instruction.split()):
                    continue
                e = AddItem(e.predictor, e.text, kind="strategy", rationale=e.rationale, keys=unique)
            elif isinstance(e, AddItem) and not e.pinned:
                e = replace(e, keys=tuple(dict.fromkeys((*e.keys, *unique))))  # its "applies when", then inputs
            edits.append(e)
        if edits:
            out.append(replace(p, edits=tuple(edits)))
    return out


RETRIEVAL_CHOICES: dict[str, tuple[float, ...]] = {"k_demos": (2, 4, 8), "k_items": (1, 3, 6),
                                                   "min_score": (0.0, 0.3, 0.5, 0.7, 0.85),
                                                   "margin": (0.05, 0.1, 0.2, 1.0)}
"""The values the search may choose for each retrieval setting (bounded, so prompts stay bounded).

``min_score`` lets a step trade recall for isolation: with a threshold, an input unlike
every key of a memory entry sees none of it, so one task's lessons stop reaching other
tasks' inputs (the first steps of ii-8 task-agnostic, where a small memory was retrieved
for every input). The values span what all-MiniLM-L6-v2 gives between tasks: about 0.1–0.35
between different ii-8 tasks' inputs, 0.5–0.9 between bAbI stories of different tasks.
``margin`` (1.0: off; 0.1 unless C says otherwise) keeps only what scores within it of the
input's best match, whatever the scale."""


def setting_proposals(context: LearnedContext, predictor: str, selector: RetrievalSelector, *,
                      threshold: bool = True) -> list[Proposal]:
    """Alternatives to the predictor's retrieval settings, one group per setting (``retrieval:k_demos``, …).

    Each group offers the other values of :data:`RETRIEVAL_CHOICES` (k larger first, ``min_score``
    and ``margin`` smaller first); the search
    may keep the current value (its ``"none"``) or pick one, and the gate judges the result
    on replay like any edit. A chosen value is stored in C (:class:`~ctxopt.edits.SetRetrieval`).
    A group is offered only once the memory holds more entries of its kind than the smallest
    choice: before that no value changes what an input sees, and each extra search dimension
    costs the search trials. ``min_score`` and ``margin`` are offered once anything is retrieved, and only with
    ``threshold`` (the optimizer passes it when earlier tasks are replayed: a threshold can only
    cost the current task, and shows its worth on the others).

    Example:
        >>> from ctxopt.context import Demo, Item, PredictorContext
        >>> small = LearnedContext({"p": PredictorContext("Answer.")})
        >>> setting_proposals(small, "p", RetrievalSelector("lexical"))
        []
        >>> demos = tuple(Demo(inputs={"q": str(i)}, outputs={"a": str(i)}) for i in range(3))
        >>> items = tuple(Item(id=f"r-{i}", text=f"Rule {i}.") for i in range(2))
        >>> ctx = LearnedContext({"p": PredictorContext("Answer.", items=items, demos=demos)})
        >>> [p.name for p in setting_proposals(ctx, "p", RetrievalSelector("lexical"))]  # doctest: +NORMALIZE_WHITESPACE
        ['k_demos=8', 'k_demos=2', 'k_items=6', 'k_items=1', 'min_score=0.3', 'min_score=0.5', 'min_score=0.7',
         'min_score=0.85', 'margin=0.05', 'margin=0.2', 'margin=1']
        >>> [p.name for p in setting_proposals(ctx, "p", RetrievalSelector("lexical"), threshold=False)]
        ['k_demos=8', 'k_demos=2', 'k_items=6', 'k_items=1']
    """
    pc = context.predictor(predictor)
    k_items, k_demos, min_score = selector.settings(pc)
    held = {"k_demos": len(pc.demos), "k_items": sum(not it.pinned for it in pc.items)}
    out = []
    for setting, current in (("k_demos", k_demos), ("k_items", k_items)):
        if held[setting] <= min(RETRIEVAL_CHOICES[setting]):
            continue  # memory too small for any choice to change what an input sees
        for value in sorted(set(RETRIEVAL_CHOICES[setting]) - {current}, reverse=True):
            out.append(_setting(predictor, setting, current, int(value)))
    if threshold and held["k_demos"] + held["k_items"]:  # a threshold matters as soon as anything is retrieved
        margin = selector.margin_for(pc)
        for setting, current in (("min_score", min_score), ("margin", margin)):
            for value in sorted(set(RETRIEVAL_CHOICES[setting]) - {current}):
                out.append(_setting(predictor, setting, current, value))
    return out


def _setting(predictor: str, setting: str, current: float, value: float) -> Proposal:
    """One alternative value of one retrieval setting, in the setting's search group."""
    return Proposal(f"{setting}={value:g}", (SetRetrieval(predictor, setting, value,
                                                        rationale=f"retrieve with {setting} {value:g} instead of {current:g}"),),
                    "retrieval", rationale=f"{setting} {current:g} → {value:g}", group=f"retrieval:{setting}")


CORE_AFTER = 2
"""Earlier tasks a step must have before a new rule may go to core memory (see :func:`core_or_archival`)."""


def core_or_archival(proposals: Sequence[Proposal]) -> list[Proposal]:
    """Let the search place each new rule in archival memory (retrieved by its keys) or in core memory (pinned).

    Every ungrouped proposal that only adds unpinned rules becomes a group ``memory:<name>`` of
    two alternatives: the proposal as it is (archival, first) and the same rules pinned with no
    keys (``<name>+core``). A pinned rule is shown to every input, so it lands only if replay of
    the earlier tasks says it hurts none of them; the optimizer offers this choice only from the
    step that has :data:`CORE_AFTER` earlier tasks to replay. On the first task nothing would
    protect the others: a format rule learned there ("answer with a single character") pinned for
    every input took the agent over on ii-8 (stop 23). A rule that opens with its own condition
    ("When the input is a list of numbers, …", :func:`ctxopt._text.condition`) says it is not for
    every input, so it stays archival: pinned, every other request would see it and the model would
    have to judge the condition (the demo at d07e91c pinned exactly that rule).

    Example:
        >>> from ctxopt.edits import AddItem
        >>> out = core_or_archival([Proposal("r", (AddItem("p", "Answer in one word.", keys=("a word",)),), "reflection")])
        >>> [(p.name, p.group, p.edits[0].pinned) for p in out]
        [('r', 'memory:r', False), ('r+core', 'memory:r', True)]
    """
    out: list[Proposal] = []
    for p in proposals:
        rules = p.group is None and p.edits and all(
            isinstance(e, AddItem) and e.kind == "rule" and not e.pinned and condition(e.text) is None
            for e in p.edits)
        if not rules:
            out.append(p)
            continue
        group = f"memory:{p.name}"
        out.append(replace(p, group=group))
        out.append(replace(p, name=f"{p.name}+core", group=group, rationale=f"{p.rationale} (core memory)".strip(),
                           edits=tuple(replace(e, pinned=True, keys=()) for e in p.edits)))
    return out


MAX_UNLESS = 8
"""Counter-keys one narrowed item or demo gets at most (see :func:`narrow`)."""


def _nearest(keys: Sequence[str], others: Sequence[str], sim: Similarity) -> tuple[str, ...]:
    """The :data:`MAX_UNLESS` texts of ``others`` (not among ``keys``) most similar to any of ``keys``; ties: first."""
    candidates = [o for o in dict.fromkeys(others) if o.strip() and o not in keys]
    if not candidates:
        return ()
    best = [max(column) for column in zip(*(sim.scores(key, candidates) for key in keys))]
    return tuple(candidates[i] for i in sorted(range(len(candidates)), key=lambda i: (-best[i], i))[:MAX_UNLESS])


def narrow(proposals: Sequence[Proposal], others: Sequence[str], sim: Similarity) -> list[Proposal]:
    """Offer each proposal that adds archival memory a narrowed twin that other tasks' inputs do not reach.

    ``others`` are inputs of the earlier tasks (the search's replay pool: the gate
    judges on a sample kept apart from it). Each new unpinned item and each new
    demo of the twin (``<name>+narrow``) gets as ``unless`` the :data:`MAX_UNLESS`
    of them most similar to its keys, and is then left out for any input nearer
    to one of those than to its own keys (:meth:`RetrievalSelector.explain`):
    a nearest-neighbour boundary between this task's inputs and the others'.
    Keys alone cannot draw it: all-MiniLM-L6-v2 puts one word 0.15–0.4 from any
    other word and from short sentences alike, so sentiment's "Answer with a
    single word" reached first_word_letter's inputs in ii-8 task-agnostic
    (stop 29), and a margin or threshold on raw scores cut the task's own
    inputs first. The twin and the proposal are alternatives of one group (the
    proposal's, or ``memory:<name>``), the twin first; the search keeps the
    wide one where reaching other inputs helps them (transfer), and the gate
    judges either on replay.

    Example:
        >>> from ctxopt.edits import AddItem
        >>> from ctxopt.similarity import LexicalSimilarity
        >>> out = narrow([Proposal("r", (AddItem("p", "Add s.", keys=("plural of cat",)),), "reflection")],
        ...              ["antonym of hot", "plural of dog"], LexicalSimilarity())
        >>> [(p.name, p.group, p.edits[0].unless) for p in out]
        [('r+narrow', 'memory:r', ('plural of dog', 'antonym of hot')), ('r', 'memory:r', ())]
    """
    def narrowed(e: Any) -> Any:
        if isinstance(e, AddItem) and not e.pinned:
            return replace(e, unless=_nearest(e.keys or (e.text,), others, sim))
        if isinstance(e, AddDemo):
            return replace(e, demo=replace(e.demo, unless=_nearest(_demo_keys(e.demo), others, sim)))
        return e

    out: list[Proposal] = []
    for p in proposals:
        edits = tuple(narrowed(e) for e in p.edits)
        if edits == p.edits:
            out.append(p)
            continue
        group = p.group or f"memory:{p.name}"
        out.append(replace(p, name=f"{p.name}+narrow", group=group, edits=edits,
                           rationale=f"{p.rationale} (not for other tasks' inputs)".strip()))
        out.append(replace(p, group=group))
    return out


def shield(context: LearnedContext, predictor: str, inputs: Sequence[Mapping[str, Any]], selector: RetrievalSelector,
           family: str, *, demos: bool = True) -> list[Proposal]:
    """One proposal, ``shield``: keep the memory other tasks left off this task's inputs.

    The archival items and demos that ``inputs`` (this task's train inputs) retrieve,
    but that were not learned on this task's ``family`` (by their ``source_task``; a demo
    stored before demos carried one counts unless ``demos`` is false, as on a revisit,
    where the family's own demos are what its inputs retrieve), each get as counter-keys the :data:`MAX_UNLESS` of those
    inputs most similar to their keys (:class:`~ctxopt.edits.Narrow`). A rule an
    early task wrote while nothing else was known ("Answer with a single character
    only." from first_word_letter, reaching sentiment's short sentences) can then
    stop reaching a later task. The search switches it on or off, and the gate
    replays the tasks whose own inputs it changes, as for any edit. Like the
    retrieval settings, it is left to TPE rather than seeded (source ``retrieval``,
    group ``shield``): switched on in a seed it cost a whole replay of every
    earlier task whose inputs it touched (ii-8, stop 30). Nothing is proposed
    where no such entry is retrieved.

    Example:
        >>> from ctxopt.context import Item, PredictorContext
        >>> ctx = LearnedContext({"p": PredictorContext("Answer.", items=(
        ...     Item(id="r-1", text="One letter.", keys=("cat", "dog"), source_task="first_letter"),))})
        >>> [p] = shield(ctx, "p", [{"input": "cat toy"}, {"input": "dog bed"}], RetrievalSelector("lexical"), "plural")
        >>> p.name, p.edits[0].target, p.edits[0].unless
        ('shield', 'r-1', ('cat toy', 'dog bed'))
        >>> shield(ctx, "p", [{"input": "cat toy"}], RetrievalSelector("lexical"), "first_letter")
        []
    """
    pc = context.predictor(predictor)
    texts = [input_text(i) for i in inputs]
    reached = {h.id for i in inputs for why in [selector.explain(context, None, i)[predictor]]
               for h in (*why.items, *why.demos)}
    def other(source: str | None, unknown: bool) -> bool:
        return unknown if source is None else split_visit(source)[0] != family

    entries = [(it.id, _item_keys(it)) for it in pc.items if it.id in reached and not it.pinned
               and other(it.source_task, True)]
    entries += [(d.id, _demo_keys(d)) for d in pc.demos if d.id in reached and other(d.source_task, demos)]
    edits = [Narrow(predictor, eid, unless, rationale=f"learned on another task; reached {family}'s inputs")
             for eid, keys in entries if (unless := _nearest(keys, texts, selector.sim))]
    return [Proposal("shield", tuple(edits), "retrieval", rationale=f"keep other tasks' memory off {family}'s inputs",
                     group="shield")] if edits else []


def unsaid(proposals: Sequence[Proposal], context: LearnedContext, predictor: str,
           inputs: Sequence[Mapping[str, Any]], selector: RetrievalSelector) -> tuple[list[Proposal], list[tuple[str, str]]]:
    """Leave out new items that restate what ``inputs`` already see, or what an earlier proposal adds.

    An added item on ``predictor`` whose text scores at least the similarity's
    ``merge`` threshold against a pinned item, an item one of ``inputs`` (this
    task's observed inputs) retrieves, or an item an earlier kept proposal adds,
    is cut from its proposal; a proposal left with no edits is dropped. The gate
    cannot do this: on a 0.5B model a second wording of a format rule can win
    a val minibatch by a flipped answer, and babi-10 task-agnostic kept "Answer with
    a single word only, with no explanation." beside "Answer with the single
    word only, no extra words." (0.84 with all-MiniLM-L6-v2), stop 31. The
    threshold is a paraphrase's, not a related rule's: "Answer with a single
    character only." scores 0.60 against the latter and stays.

    Returns the kept proposals and ``(name, reason)`` for each cut or dropped one.

    Example:
        >>> from ctxopt.edits import AddItem
        >>> ctx = LearnedContext({"p": PredictorContext("Answer.", items=(
        ...     Item(id="r-1", text="Answer in one word.", pinned=True),))})
        >>> kept, cut = unsaid([Proposal("a", (AddItem("p", "Answer in one word!"), AddItem("p", "Use digits.")),
        ...                              "reflection"), Proposal("b", (AddItem("p", "Use digits."),), "reflection")],
        ...                    ctx, "p", [{"input": "2 plus 3"}], RetrievalSelector("lexical"))
        >>> [[e.text for e in p.edits] for p in kept], cut
        ([['Use digits.']], [('a', 'restates r-1'), ('b', 'restates a')])
    """
    pc, sim = context.predictor(predictor), selector.sim
    reached = {h.id for i in inputs for h in selector.explain(context, None, i)[predictor].items}
    said = [(it.id, it.text) for it in pc.items if it.pinned or it.id in reached]
    kept: list[Proposal] = []
    cut: list[tuple[str, str]] = []
    for p in proposals:
        edits, adds = [], []
        for e in p.edits:
            if isinstance(e, AddItem) and e.predictor == predictor and said:
                scores = sim.scores(gist(e.text), [gist(text) for _, text in said])  # framing aside
                best = max(range(len(said)), key=scores.__getitem__)
                if scores[best] >= sim.merge:
                    cut.append((p.name, f"restates {said[best][0]}"))
                    continue
            edits.append(e)
            if isinstance(e, AddItem) and e.predictor == predictor:
                adds.append((p.name, e.text))
        if edits:
            kept.append(p if len(edits) == len(p.edits) else replace(p, edits=tuple(edits)))
            said += adds
    return kept, cut


def hit_rates(selector: RetrievalSelector, context: LearnedContext, tasks: Sequence[Any],
              task_aware: bool = False) -> dict[str, float | None]:
    """Per task: the share of items retrieved for its val inputs that were learned on that task.

    A diagnostic of task-agnostic memory (the report shows it): 1.0 means every
    retrieved item came from the input's own task, lower means other tasks'
    items crowd in. Pinned items are not retrieved and do not count; a task
    for which nothing was retrieved gets None. Uses val inputs, never test.
    """
    out: dict[str, float | None] = {}
    for task in tasks:
        family = getattr(task, "family", task.name)
        hits = total = 0
        for ex in task.val:
            for name, why in selector.explain(context, family if task_aware else None,
                                              dict(ex.inputs().items())).items():
                pc = context.predictor(name)
                for hit in why.items:
                    total += 1
                    hits += pc.item(hit.id).source_task in (task.name, family)
        out[task.name] = round(hits / total, 4) if total else None
    return out
