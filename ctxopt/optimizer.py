"""The continual optimizer: propose, search, gate, commit — one task at a time.

For each task of a stream, :class:`ContinualOptimizer` runs one step, a
pipeline of typed stages (:mod:`ctxopt.stages`):

1. **observe** the current context C on a minibatch of the task's *train* split;
2. **propose** edits: reflection on the failures, labeled demo sets, format rules;
3. **search** (Optuna TPE) for the best combination, scoring each candidate on
   a val minibatch of the current task plus a replay sample of earlier tasks' val;
4. **gate** the best candidate on the current task's val examples the search did not score and the
   replay set of every earlier task; it lands only if the current task improves
   and earlier tasks do not drop (by default: significantly, by paired tests;
   a close call grows the replay samples and decides again), otherwise C stays as it was;
   with ``max_context_tokens``, an accepted C that is too large is consolidated
   (**make room**) and must pass the same gate again;
5. **commit** the outcome to the git-backed store (accepted: the new C;
   rejected: an empty commit recording the reason), and credit the items the
   accepted edits added with the gate's paired outcome (their evidence).

:meth:`ContinualOptimizer.fit` runs the steps through the run engine
(:class:`ctxopt.engine.Engine`), the same loop ``ctxopt compare`` runs every
method through: it owns ``state.json``, C₀, resume, the step clock and the
test-row measurement, the only thing that touches test data. State is saved
after every step, so a killed run resumes from its last finished step;
evaluations, LM calls and Optuna trials are all cached, so redoing a
half-finished step costs next to nothing and reproduces the same decisions.

Example:
    >>> opt = ContinualOptimizer(task_lm="local", reflection_lm="local:qwen2.5-coder-1.5b",
    ...                          budget="light", seed=0)                    # doctest: +SKIP
    >>> result = opt.fit(program, stream, run_dir="runs/x")                  # doctest: +SKIP
    >>> result.summary()["acc"]                                            # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dspy

from ctxopt.budget import Budget, Ledger, get_budget
from ctxopt.consolidate import (
    ConsolidationProposer,
    Consolidator,
    PassResult,
    RejectionMemory,
    Tried,
    changed_item_ids,
    credit,
    over_budget,
    rendered_tokens,
    run_pass,
    tolerance_gate,
)
from ctxopt.context import GLOBAL, LearnedContext, canonical_json
from ctxopt.credit import check_policy, choose_stages
from ctxopt.edits import AddDemo
from ctxopt.engine import Engine, RunEvent, measure_row
from ctxopt.errors import BudgetExceeded, ConfigError, EditError
from ctxopt.evaluator import Evaluator
from ctxopt.gate import DEFAULT_GATE, Decision, Gate, PairedScores, PairedTestGate, binomial_below_p, get_gate
from ctxopt.grounding import GroundedInstructionProposer
from ctxopt.lm import get_lm, lm_name, usage_of
from ctxopt.matrix import RunResult, StepRecord
from ctxopt.proposer import (
    DemoProposer,
    FormatRuleProposer,
    Observation,
    Proposal,
    ProposalContext,
    Proposer,
    ReflectionProposer,
    alike,
    dedupe,
)
from ctxopt.retrieval import (
    CORE_AFTER,
    RetrievalSelector,
    archival,
    core_or_archival,
    input_text,
    narrow,
    setting_proposals,
    shield,
    unsaid,
)
from ctxopt.rundir import RunDir
from ctxopt.search import EditSearch, Search, TrialRecord, check_workers
from ctxopt.selector import ContextSelector, default_selector, retrieves
from ctxopt.stages import Gated, Observed, Proposed, Searched, SearchObjective, StepSetup, unpaid
from ctxopt.store import Store
from ctxopt.tasks import TASK_FIELD, Task, TaskStream, example_id, split_visit
from ctxopt.teacher import TeacherDemoProposer

__all__ = [
    "Callback",
    "ContinualOptimizer",
    "Event",
    "ROOM_SCOPES",
    "StepOutcome",
    "measure_row",
    "program_inputs",
    "target_predictor",
]

log = logging.getLogger(__name__)

ROOM_SCOPES = 5  # with max_context_tokens, each step reserves one consolidation check over this many task scopes
GATE_ROUNDS = 2  # an undecided gate grows the replay samples it names at most this many times
REVISIT_ALPHA = 0.1  # a revisit learns again when its train minibatch shows C below its family's bar at this level
REVISIT_CLOSE = 0.3  # and, below this level, first observes a minibatch twice as large
REJECTIONS_FILE = "consolidation_rejections.json"


@dataclass(frozen=True)
class Event:
    """Something that happened in a run, delivered to callbacks (the CLI draws these)."""

    kind: str  # run_start, task_start, phase, observe, propose, trial, gate, commit, measure, task_end, run_end
    step: int
    task: str
    data: dict = field(default_factory=dict)


Callback = Callable[[Event], None]


@dataclass(frozen=True)
class StepOutcome:
    """What one step did: the decision, the chosen proposals, and the context afterwards."""

    step: int
    task: str
    accepted: bool
    reason: str
    context: LearnedContext
    proposals: tuple[str, ...]
    decision: Decision | None
    record: StepRecord


def _form_of(name: str) -> str:
    """A proposal's name without the memory form the selector step gave it ("demos1+narrow" → "demos1")."""
    return name.removesuffix("+narrow").removesuffix("+core")


def _as_lm(lm: Any) -> Any:
    return get_lm(lm) if isinstance(lm, str) else lm


def target_predictor(program: dspy.Module, output: str) -> str:
    """The predictor that produces the task's output field (the last one otherwise)."""
    names = [name for name, _ in program.named_predictors()]
    if not names:
        raise ConfigError("the program has no predictors to learn a context for")
    for name, pred in reversed(program.named_predictors()):
        if output in pred.signature.output_fields:
            return name
    return names[-1]


class ContinualOptimizer:
    """Carry a learned context through a stream of tasks with gated delta edits.

    Args:
        task_lm: LM spec or ``dspy.LM`` that runs the program.
        reflection_lm: LM spec or ``dspy.LM`` that proposes edits.
        budget: preset name (``light``/``medium``/``heavy``), dict, or :class:`Budget`.
        gate: ``paired`` (default: paired tests, robust to a flipped answer; :mod:`ctxopt.gate`), ``strict``,
            ``bootstrap`` or a :class:`Gate` object.
        epsilon: tolerated drop of an earlier task's score (``paired``: of their mean, tested).
        seed: seeds minibatches, reflection samples and the TPE sampler.
        num_threads: evaluator threads.
        callbacks: functions receiving :class:`Event` s.
        measure_test: fill the accuracy matrix after each task (needs test splits).
        proposers: override the default proposers (reflection, demos, format rules).
        extra_proposers: proposers consulted before the default (or given) ones.
        run_dir: where caches, the Optuna study and results go (``fit(run_dir=...)`` sets it too).
        store: an existing :class:`Store` to commit to; default ``run_dir/store``.
        consolidate: run a gated sleep-time consolidation pass after every task (:mod:`ctxopt.consolidate`);
            default (None): yes. In a task-agnostic stream, whose one memory every input shares, it keeps a share of
            the reflection calls; in a task-aware one, whose memory is fenced per task, it uses only the calls a step
            left (without them a merge keeps the better-supported text and contradictions are found lexically);
            ``True`` keeps the share in both.
        consolidator: a :class:`~ctxopt.consolidate.ConsolidationProposer`, or a similarity name (``auto``,
            ``embedding``, ``lexical``) for the default :class:`Consolidator` on ``reflection_lm``. With
            ``budget.max_context_tokens`` set, it also makes room when a step would exceed the budget. When
            consolidation can run, its share of the reflection calls is kept from the proposers.
        selector: What of C the model sees for each input (:mod:`ctxopt.selector`); default: everything in the
            task's scope in a task-aware stream, per-input retrieval (core memory + retrieved items and demos,
            :class:`~ctxopt.retrieval.RetrievalSelector`) in a task-agnostic one. With a retrieving selector,
            new items carry retrieval keys and demos accumulate as archival memory (:func:`~ctxopt.retrieval.archival`).
        search: The :class:`~ctxopt.search.Search` that combines proposals; default: TPE (``EditSearch``).
        storage: The Optuna storage of the default search's studies; default ``sqlite:///RUN_DIR/optuna.db``.
            A database server (``postgresql+psycopg://USER@HOST/DB``) can hold the studies of many runs:
            each run's study names start with a key of its run directory.
        search_workers: Processes that search at once on the same study (more than one needs a database
            server in ``storage``; see :class:`~ctxopt.search.EditSearch`). One (the default) is deterministic.
        evaluator: The :class:`Evaluator` to learn and measure with; default: a cached one in the run directory
            (on ``task_lm``, with ``selector``).
        stages: Which predictors of a multi-stage program a step edits (:mod:`ctxopt.credit`): ``credit``
            (default: reflection on the stage most failures are blamed on, demos for every stage that ran),
            ``rotate`` (reflection goes round the stages) or ``output`` (only the output field's predictor).
        grounded: Also propose instructions written from a summary of the train data, the program's signature
            and a set of tips (:mod:`ctxopt.grounding`, MIPROv2-style); one of the step's reflection calls.
    """

    def __init__(
        self,
        task_lm: Any = "local",
        reflection_lm: Any = "local:qwen2.5-coder-1.5b",
        *,
        budget: str | Budget | dict | None = "light",
        gate: str | Gate = DEFAULT_GATE,
        epsilon: float = 0.02,
        seed: int = 0,
        num_threads: int = 4,
        callbacks: Sequence[Callback] = (),
        measure_test: bool = True,
        proposers: Sequence[Proposer] | None = None,
        extra_proposers: Sequence[Proposer] = (),
        run_dir: str | Path | None = None,
        store: Store | None = None,
        consolidate: bool | None = None,
        consolidator: ConsolidationProposer | str | None = None,
        selector: ContextSelector | None = None,
        evaluator: Evaluator | None = None,
        search: Search | None = None,
        storage: str | None = None,
        search_workers: int = 1,
        stages: str = "credit",
        grounded: bool = False,
    ) -> None:
        check_workers(search_workers, storage)
        self.stages = check_policy(stages)
        self.grounded = bool(grounded)
        self.task_lm = _as_lm(task_lm)
        self.reflection_lm = _as_lm(reflection_lm)
        self.budget = get_budget(budget)
        self.gate = get_gate(gate, epsilon=epsilon) if isinstance(gate, str) else gate
        self.seed = seed
        self.num_threads = num_threads
        self.callbacks = list(callbacks)
        self.measure_test = measure_test
        self._proposers = proposers
        self._extra_proposers = list(extra_proposers)
        self._given_store = store  # commit into an existing store (e.g. a transfer branch)
        self._given_evaluator = evaluator  # evaluate with this one instead of a cached one in the run directory
        self.selector = selector
        self._selectors: dict[str, ContextSelector] = {}
        self.search = search  # default: a seeded TPE study in RUN_DIR/optuna.db (EditSearch)
        self.storage, self.search_workers = storage, search_workers
        self.consolidate = consolidate
        self.consolidator: ConsolidationProposer = (
            Consolidator(self.reflection_lm, similarity=consolidator or "auto",
                         charge=self._charge_consolidation)
            if consolidator is None or isinstance(consolidator, str) else consolidator)
        self._run: RunDir | None = None
        self._evaluator: Evaluator | None = None
        self._rejections: RejectionMemory | None = None
        self._reset()
        if run_dir is not None:
            self._bind(run_dir)

    # ------------------------------------------------------------------ plumbing

    def _reset(self) -> None:
        """Forget the run: a new ledger, no current context, no tasks seen."""
        self.ledger = Ledger(self.budget)
        self._context: LearnedContext | None = None
        self._seen: list[Task] = []
        self._ended: dict[str, float] = {}  # task family -> its full-val score when its last accepted visit ended
        self._paid: set[str] = set()  # prompt keys (StepSetup.keys) the search and the gate charged in this run
        self._scenario = "task-aware"
        self._step = 0
        self._search_figures: dict[str, Any] = {}  # the current step's search_scored and search_cut, stage blame

    def _bind(self, run_dir: str | Path) -> RunDir:
        """Use ``run_dir`` from now on; a different folder from before starts a new run (store, caches, ledger)."""
        path = Path(run_dir)
        if self._run is not None and self._run.path == path:
            return self._run
        if self._run is not None:
            if self._evaluator is not None and self._evaluator is not self._given_evaluator:
                self._evaluator.close()
            self._reset()
        self._run = RunDir(path, self._given_store)
        self._evaluator = self._given_evaluator or Evaluator(
            self.task_lm, num_threads=self.num_threads, cache_dir=path / "eval_cache", selector=self.selector)
        self._rejections = RejectionMemory(path / REJECTIONS_FILE)
        return self._run

    @property
    def run_dir(self) -> Path | None:
        """The run directory, once bound."""
        return self._run.path if self._run is not None else None

    def _require_run(self) -> tuple[RunDir, Store, Evaluator]:
        if self._run is None or self._evaluator is None:
            raise ConfigError("no run directory: pass run_dir=DIR to fit() or to ContinualOptimizer")
        return self._run, self._run.store, self._evaluator

    def selector_for(self, scenario: str) -> ContextSelector:
        """The selector this optimizer learns and measures with in ``scenario`` (one object per scenario)."""
        if self.selector is not None:
            return self.selector
        if scenario not in self._selectors:
            similarity = getattr(self.consolidator, "similarity", "auto")
            self._selectors[scenario] = default_selector(scenario, similarity if isinstance(similarity, str) else "auto")
        return self._selectors[scenario]

    def _use_scenario(self, scenario: str) -> None:
        self._scenario = scenario
        if self._evaluator is not None and self._evaluator is not self._given_evaluator:
            self._evaluator = self._evaluator.using(self.selector_for(scenario))

    def emit(self, kind: str, task: str = "", **data: Any) -> None:
        event = Event(kind, self._step, task, data)
        for cb in self.callbacks:
            cb(event)

    @property
    def context(self) -> LearnedContext | None:
        """The current learned context."""
        return self._context

    def _sleeps(self) -> bool:
        """Whether a consolidation pass runs after every step (``consolidate``; None: yes)."""
        return True if self.consolidate is None else bool(self.consolidate)

    def _consolidation_on(self) -> bool:
        return self._sleeps() or self.budget.max_context_tokens is not None

    def _consolidation_reserve(self) -> int:
        """Reflection calls kept from the proposers for consolidation: its per-pass need, at most a third.

        None by default in a task-aware stream without a context budget: there each task's memory is fenced,
        and a pass that finds the reflection calls spent still dedupes and keeps the better-supported of two
        paraphrases or of two contradicting items, all gated; an LM writes merged text only with calls left.
        ``consolidate=True`` keeps the share there too.
        """
        fenced = self.consolidate is None and self._scenario == "task-aware" and self.budget.max_context_tokens is None
        if not self._consolidation_on() or fenced:
            return 0
        return min(self.consolidator.lm_calls_per_pass, max(1, self.budget.reflection_calls_per_task // 3))

    def _proposer_list(self) -> list[Proposer]:
        if self._proposers is not None:
            return [*self._extra_proposers, *self._proposers]
        keep = self._consolidation_reserve()
        charge = self.ledger.handle("proposer:ReflectionProposer", keep=keep)
        grounded = ([GroundedInstructionProposer(self.reflection_lm, charge=self.ledger.handle(
            "proposer:GroundedInstructionProposer", keep=keep))] if self.grounded else [])
        return [
            *self._extra_proposers,
            *grounded,  # first: its one call comes before reflection's samples
            FormatRuleProposer(),
            DemoProposer(),
            TeacherDemoProposer(self.reflection_lm),  # before reflection: its one call (CoT programs only) comes first
            ReflectionProposer(self.reflection_lm, samples=self.budget.reflection_calls_per_task, charge=charge),
        ]

    def _evaluate(self, program: dspy.Module, ctx: LearnedContext, task: Task,
                  examples: Sequence[dspy.Example]) -> float:
        return self._evaluator.evaluate(program, ctx, task, list(examples), scenario=self._scenario).mean

    @staticmethod
    def _scores(result: Any) -> dict[str, float]:
        return {r.example_id: r.score for r in result.results}

    def _sample(self, examples: Sequence[dspy.Example], n: int, *salt: Any) -> list[dspy.Example]:
        rng = random.Random(f"{self.seed}:" + ":".join(map(str, salt)))
        pool = sorted(examples, key=example_id)
        rng.shuffle(pool)
        return pool[:n]

    def _lms(self) -> dict[str, str]:
        return {"task_lm": lm_name(self.task_lm), "reflection_lm": lm_name(self.reflection_lm)}

    # ------------------------------------------------------------------ public API

    def fit(self, program: dspy.Module, stream: TaskStream, run_dir: str | Path | None = None, *,
            store: str | Path | None = None) -> RunResult:
        """Learn on every task of ``stream`` in order; resume if the run directory holds a partial run.

        Args:
            program: any ``dspy.Module``; its initial instructions/demos are C₀.
            stream: the tasks, in order.
            run_dir: the run directory (holds the git store, caches, the Optuna study and results).
            store: deprecated alias of ``run_dir`` (kept for one release).

        Returns:
            The run's :class:`RunResult`: accuracy matrix R, row R₀, per-step records.
        """
        arg = _run_dir_arg(run_dir, store, "fit")
        if arg is not None:
            self._bind(arg)
        self._require_run()
        self._use_scenario(stream.scenario)
        run, _, evaluator = self._require_run()
        engine = Engine(program, stream, self.task_lm, self.reflection_lm, self.budget, self.seed,
                        evaluator if self.measure_test else None, num_threads=self.num_threads,
                        max_context_tokens=self.budget.max_context_tokens or 0, catch_errors=False,
                        callbacks=[self._relay(stream)])
        from ctxopt.baselines.continual import CtxoptMethod

        return engine.run(CtxoptMethod(optimizer=self), run, evaluator)

    def _relay(self, stream: TaskStream) -> Callable[[RunEvent], None]:
        """The engine's events, as this optimizer's :class:`Event` s (``run_start``, ``measure``, ``run_end``;
        a test row's progress as the ``measure`` phase)."""
        def relay(event: RunEvent) -> None:
            self._step = event.step
            if event.kind == "method_start":
                self.emit("run_start", stream=stream.name, tasks=list(stream.names), resumed_at=event.data["resumed_at"])
            elif event.kind == "progress" and "total" in event.data:  # a test row, task by task
                self.emit("phase", event.task, phase="measure", total=event.data["total"], done=event.data["done"])
            elif event.kind == "measure":
                self.emit("measure", row=event.data["row"], tasks=list(stream.names))
            elif event.kind == "method_end":
                self.emit("run_end", summary=event.data["summary"])
        return relay

    def resume_state(self) -> dict[str, Any]:
        """What a resumed run needs from this optimizer (the engine keeps it in ``state.json``)."""
        return {"ledger": self.ledger.to_dict(), "ended": dict(self._ended), "paid": sorted(self._paid)}

    def restore(self, state: dict[str, Any], seen: Sequence[Task] = ()) -> None:
        """Continue from :meth:`resume_state` output, with ``seen`` the tasks learned so far."""
        if state.get("ledger"):
            self.ledger = Ledger.from_dict({**state["ledger"], "budget": self.budget.to_dict()})
        self._seen = list(seen)
        self._ended = dict(state.get("ended") or {})
        self._paid = set(state.get("paid") or ())

    def step(self, program: dspy.Module, task: Task, *, context: LearnedContext | None = None,
             seen: Sequence[Task] | None = None, scenario: str | None = None) -> StepOutcome:
        """Learn from one newly arrived task (its train and val splits only); commit the outcome.

        Args:
            program: the program being taught.
            task: the new task.
            context: start from this context instead of the optimizer's current one (or the store's HEAD).
            seen: the tasks met before, for the replay check; default: those this optimizer has stepped through.
            scenario: ``task-aware`` or ``task-agnostic``; default: the last one used (``task-aware`` at first).
        """
        _, st, _ = self._require_run()
        if scenario is not None:
            self._use_scenario(scenario)
        earlier = [t for t in (self._seen if seen is None else seen) if t.name != task.name]
        base = context or self._context or st.current()
        if base is None:
            base = LearnedContext.from_program(program)
            st.commit(base, "initial context C0", {"step": 0, "lms": self._lms(),
                                                   "predictors": [n for n, _ in program.named_predictors()]})
        self._step = len(earlier) + 1
        setup = StepSetup(step=self._step, task=task, base=base, earlier=tuple(earlier), scenario=self._scenario,
                          scope=task.family if self._scenario == "task-aware" else GLOBAL,
                          predictor=target_predictor(program, task.output), n_pred=len(program.named_predictors()),
                          selector=self._evaluator.selector)
        started = time.perf_counter()
        t_usage, r_usage = usage_of(self.task_lm), usage_of(self.reflection_lm)
        self.ledger.start_task(task.name)
        self.emit("task_start", task.name, index=setup.step, budget=self.budget.to_dict())

        self._search_figures = {}
        try:
            gated = self._learn(program, setup)
        except BudgetExceeded as exc:
            gated = Gated.rolled_back(base, f"budget: {exc}")
            self.emit("phase", task.name, phase="budget", message=str(exc))
        self._commit(setup, gated)
        self._context, self._seen = (gated.context if gated.accepted else base), [*earlier, task]
        if gated.accepted and gated.val_after is not None:  # a family that learned nothing keeps no bar
            self._ended[task.family] = gated.val_after
        passes = [gated.room] if gated.room is not None else []
        if self._sleeps():
            passes.append(self._sleep(program, task, setup.step))

        t_used, r_used = usage_of(self.task_lm) - t_usage, usage_of(self.reflection_lm) - r_usage
        record = StepRecord(
            step=setup.step, task=task.name, context_tokens=self._context.token_count(),
            task_calls=t_used.calls, task_tokens=t_used.tokens, reflection_calls=r_used.calls,
            reflection_tokens=r_used.tokens, wall_s=round(time.perf_counter() - started, 3), accepted=gated.accepted,
            extra={"reason": gated.reason, "charged_task_calls": self.ledger.spent_task.get(task.name, 0),
                   "charged_by_source": dict(self.ledger.by_source.get(task.name, {})),
                   "charged_reflection_calls": self.ledger.spent_reflection.get(task.name, 0),
                   "items": sum(len(p.items) for _, p in self._context.predictors.items()),
                   "context_hash": self._context.hash, "gate_outcome": gated.gate_outcome,
                   "gate_rounds": gated.gate_rounds, "gate_fallback": list(gated.fallback),
                   **self._search_figures, **self._consolidation_figures(passes)},
        )
        self.emit("task_end", task.name, accepted=gated.accepted, reason=gated.reason, record=record.to_dict())
        return StepOutcome(setup.step, task.name, gated.accepted, gated.reason, self._context,
                           tuple(p.name for p in gated.proposals), gated.decision, record)

    # ------------------------------------------------------------------ the stages of a step

    def _learn(self, program: dspy.Module, setup: StepSetup) -> Gated:
        observed = self._observe(program, setup)
        if observed.observations and all(o.score >= 1.0 for o in observed.observations):
            # Already solved (a task met before, or one C transfers to): nothing to reflect on, and a search
            # could only trade this task's score for noise. The step costs one train minibatch.
            return Gated.rolled_back(setup.base, f"nothing to learn: all {len(observed.observations)} observed "
                                                 "train examples already pass")
        if self._revisit_close(setup, observed):  # a close call: observe twice as many before deciding
            observed = self._observe(program, setup, n=2 * len(observed.observations))
        if (revisit := self._revisit_cut(setup, observed)) is not None:
            return Gated.rolled_back(setup.base, revisit)
        proposed = self._propose(program, setup, observed)
        if not proposed.proposals:
            return Gated.rolled_back(setup.base, "no usable proposals")
        setup = replace(setup, fresh=self._fresh_train(setup, observed, proposed))
        searched = self._search(program, setup, proposed)
        if searched.best.hash == setup.base.hash:
            why = "search found no combination better than the current context"
            if searched.stopped_by_budget:
                why += " before the budget ran out"
            return Gated.rolled_back(setup.base, why)
        gated = self._gate(program, setup, searched, proposed.proposals)
        if gated.accepted and over_budget(gated.context, self.budget.max_context_tokens):
            gated = self._make_room(program, setup, gated)
        return gated

    def _fresh_train(self, setup: StepSetup, observed: Observed, proposed: Proposed) -> tuple[dspy.Example, ...]:
        """The task's train examples that no proposer of the step was shown, in a seeded order: what a close gain
        test grows into (the gate's sample of the task already holds all of its val but the search's minibatch,
        :meth:`_held_out`).

        Left out: the observed minibatch (reflection reads its failures, traced demos its successes), and every
        example one of whose input values is a demo's, in C or in a proposal (a labelled demo set, a teacher's
        trace: a model shown an example with its answer scores it for free). The format proposer reads only the
        shape of all train labels. With grounded instructions on, none: their prompt shows a sample of train
        examples with their labels."""
        if self.grounded:
            return ()
        demos = [d for _, pc in setup.base.predictors.items() for d in pc.demos]
        demos += [e.demo for p in proposed.proposals for e in p.edits if isinstance(e, AddDemo)]
        shown = {canonical_json(v) for d in demos for v in d.inputs.values()}
        seen = {example_id(o.example) for o in observed.observations}
        rest = [e for e in setup.task.train if example_id(e) not in seen and not any(
            canonical_json(v) in shown for k, v in e.inputs().items() if k != TASK_FIELD)]
        return tuple(self._sample(rest, len(rest), "fresh", setup.step, setup.task.name))

    def _revisit_p(self, setup: StepSetup, observed: Observed) -> tuple[float, float] | None:
        """For a revisit of a family whose last accepted visit ended at a val score (its bar): the one-sided
        binomial p that C's passes on the train minibatch come from a rate as high as the bar, and the bar;
        None for a first visit, a family that never learned anything, or nothing observed."""
        family = setup.task.family
        bar = self._ended.get(family) if setup.task.name != family else None
        if bar is None or not observed.observations:
            return None
        n = len(observed.observations)
        return binomial_below_p(observed.score * n, n, bar), bar

    def _revisit_close(self, setup: StepSetup, observed: Observed) -> bool:
        """Whether a revisit's minibatch neither shows C below its bar nor clears it (p between
        :data:`REVISIT_ALPHA` and :data:`REVISIT_CLOSE`), and it is the first minibatch."""
        tested = self._revisit_p(setup, observed)
        return (tested is not None and REVISIT_ALPHA <= tested[0] < REVISIT_CLOSE
                and len(observed.observations) <= self.budget.train_minibatch)

    def _revisit_cut(self, setup: StepSetup, observed: Observed) -> str | None:
        """Why a revisit stops after observing, or None: a visit of the family was accepted, ending at a val
        score, and C's passes on this visit's train minibatch do not show it below that score (one-sided exact
        binomial test, p ≥ :data:`REVISIT_ALPHA`; a close call first doubles the minibatch), so nothing was
        shown forgotten that a search could win back. A family first met, one that never learned anything
        (every visit rolled back), or one shown to have lost ground learns in full."""
        tested = self._revisit_p(setup, observed)
        if tested is None or tested[0] < REVISIT_ALPHA:
            return None
        p, bar = tested
        return (f"revisit of {setup.task.family}: C scores {observed.score:.2f} on {len(observed.observations)} train "
                f"examples, against {bar:.2f} on val when its last visit ended (binomial p={p:.2f} ≥ "
                f"{REVISIT_ALPHA}); nothing shown forgotten to learn again")

    def _reserved(self, setup: StepSetup) -> int:
        """Task-LM calls kept from the search: the gate's cost, one round of growing one earlier task's
        replay sample (both sides), should the gate be undecided, and, with a context budget, one
        consolidation check over a few task scopes, should the step need to make room.

        The gate's cost holds no example of the search's val minibatch (:meth:`_held_out`), unless val is
        too small to leave one out: then the search has paid for both sides of it when the gate runs."""
        reserved = self._gate_cost(setup)
        if len(self._held_out(setup.task)) == len(setup.task.val):
            reserved -= 2 * setup.n_pred * len(self._search_val(setup.task))
        if setup.earlier:
            reserved += 2 * setup.n_pred * self.budget.gate_replay_per_task
        if self.budget.max_context_tokens is not None:
            reserved += setup.n_pred * ROOM_SCOPES * self.budget.gate_replay_per_task
        return reserved

    def _observe(self, program: dspy.Module, setup: StepSetup, n: int | None = None) -> Observed:
        """Score C on a train minibatch (``n`` examples, the budget's by default; a larger one starts with the
        smaller's examples, which are not charged again): the failures and feedback the proposers read."""
        task = setup.task
        self.emit("phase", task.name, phase="observe")
        first = min(self.budget.train_minibatch, len(task.train))
        minibatch = self._sample(task.train, n or self.budget.train_minibatch, "train", setup.step, task.name)
        self.ledger.charge("task", (len(minibatch) - (first if n else 0)) * setup.n_pred, "observe")
        result = self._evaluator.evaluate(program, setup.base, task, minibatch, scenario=self._scenario)
        by_id = {example_id(e): e for e in minibatch}
        observations = tuple(Observation(by_id[r.example_id], r.score, r.feedback, dict(r.prediction),
                                         list(r.trace)) for r in result.results)
        self.emit("observe", task.name, score=result.mean, n=len(minibatch),
                  failures=sum(o.score < 1 for o in observations))
        return Observed(result.mean, observations)

    def _propose(self, program: dspy.Module, setup: StepSetup, observed: Observed) -> Proposed:
        """Every proposer's edits for C, each proposer charged under its own name; duplicates dropped."""
        task = setup.task
        self.emit("phase", task.name, phase="propose")
        named = dict(program.named_predictors())
        choice = choose_stages(observed.observations, tuple(named), setup.predictor,
                               {n: tuple(p.signature.output_fields) for n, p in named.items()},
                               step=setup.step, policy=self.stages)
        if len(named) > 1:
            self.emit("stages", task.name, **choice.to_dict())
            self._search_figures.update(stage_order=list(choice.order), stage_blame=dict(choice.blame))
        keep = self._consolidation_reserve()
        proposers = self._proposer_list()
        # reflection calls dealt out over the stages: what the budget leaves after consolidation's reserve,
        # so that a reserve cannot starve the last stage in the order
        # the output predictor's other output fields (ChainOfThought's reasoning), for intermediate-aware proposers
        between = tuple(f for f in named[setup.predictor].signature.output_fields if f != task.output)
        teacher = any(isinstance(p, TeacherDemoProposer) for p in proposers) and bool(between)
        available = max(0, self.ledger.remaining("reflection") - keep - int(self.grounded) - int(teacher))
        raw: list[Proposal] = []
        cut: list[tuple[str, str]] = []
        for stage in dict.fromkeys((*choice.order, *choice.demos)):  # the most blamed stage first
            pctx = ProposalContext(context=setup.base, task=task.family, scope=setup.scope, predictor=stage,
                                   inputs=tuple(program_inputs(program, stage)), output=task.output,
                                   observations=observed.observations, train=tuple(task.train),
                                   seed=self.seed * 100 + setup.step, output_stage=stage == setup.predictor,
                                   intermediate=between if stage == setup.predictor else (),
                                   metric=task.metric)
            for proposer in proposers:
                if isinstance(proposer, ReflectionProposer) and len(named) > 1:  # its calls dealt out by blame
                    if not (n := choice.samples(min(proposer.samples, available)).get(stage)):
                        continue
                    proposer = replace(proposer, samples=n)
                elif stage not in choice.demos:
                    continue
                raw += proposer.propose(replace(pctx, charge=self.ledger.handle(
                    f"proposer:{type(proposer).__name__}", keep=keep)))
        if retrieves(setup.selector):  # one memory for all inputs: keyed items, accumulating demos
            raw = archival(raw, [input_text(dict(o.example.inputs().items())) for o in observed.observations
                                 if o.score < 1] or [input_text(dict(o.example.inputs().items()))
                                                      for o in observed.observations],
                           instruction=setup.base.predictor(setup.predictor).instruction,
                           own={d.id for _, pc in setup.base.predictors.items() for d in pc.demos
                                if d.source_task and split_visit(d.source_task)[0] == task.family})
            if isinstance(setup.selector, RetrievalSelector):  # says nothing these inputs already see
                raw, cut = unsaid(raw, setup.base, setup.predictor, [dict(o.example.inputs().items())
                                                                     for o in observed.observations], setup.selector)
            if len(setup.earlier) >= CORE_AFTER:  # pinned = shown to every input: only where replay can check it
                raw = core_or_archival(raw)  # the search places each new rule: retrieved, or pinned
            if isinstance(setup.selector, RetrievalSelector):  # may keep new entries off other tasks' inputs
                raw = narrow(raw, [input_text(dict(e.inputs().items())) for t in setup.earlier
                                   if t.family != task.family for e in self._search_replay(t)], setup.selector.sim)
                # and may keep what other tasks left off this task's inputs
                raw += shield(setup.base, setup.predictor, [dict(o.example.inputs().items())
                                                             for o in observed.observations], setup.selector, task.family,
                              demos=task.visit == 1)
                # and chooses how much is retrieved
                raw += setting_proposals(setup.base, setup.predictor, setup.selector,
                                        threshold=bool(setup.earlier))
        proposals, dropped = dedupe(setup.base, raw, step=setup.step, task=task.name)
        if (sim := getattr(self.consolidator, "sim", None)) is not None:
            proposals = alike(proposals, sim)  # one lesson in other words: the search lands at most one of them
        dropped = [*cut, *dropped]
        self.emit("propose", task.name, proposals=[p.to_dict() for p in proposals], dropped=dropped)
        return Proposed(tuple(proposals), tuple(dropped))

    def _search(self, program: dspy.Module, setup: StepSetup, proposed: Proposed) -> Searched:
        """The best combination of proposals on a val minibatch plus replay samples (charged as it scores)."""
        task, run = setup.task, self._run
        self.emit("phase", task.name, phase="search")
        reserved = self._reserved(setup)
        objective = SearchObjective(
            setup, lambda ctx, t, exs: self._evaluate(program, ctx, t, exs),
            val=self._search_val(task),
            replay={t.name: self._search_replay(t) for t in setup.earlier},
            charge=self.ledger.handle("search", keep=reserved),
            # With per-input retrieval a candidate changes the prompts of few earlier inputs, and which ones
            # decides whether the gate passes it: replay every pool input it changes (a pinned rule changes
            # them all, and 3 of them hid first_word_letter 0.8 → 0.2 in ii-8 task-agnostic, stop 30).
            # (replay_per_task 0 still turns the search's replay off).
            replay_k=None if retrieves(setup.selector) and self.budget.replay_per_task else self.budget.replay_per_task,
            max_drop=getattr(self.gate, "max_drop", getattr(self.gate, "epsilon", None)), paid=self._paid)
        if objective.least() > self.ledger.remaining("task") - reserved:
            raise BudgetExceeded(f"task-LM budget too small to search task {task.name}: {objective.least()} + "
                                 f"reserved for the gate {reserved} > {self.ledger.remaining('task')} left")
        objective(setup.base)  # the current context's val score: the bar to beat

        def on_trial(rec: TrialRecord) -> None:
            self.emit("trial", task.name, **rec.to_dict())

        search = self.search or EditSearch(self.storage or EditSearch.sqlite_url(run.path), seed=self.seed,
                                           n_trials=self.budget.n_trials, workers=self.search_workers)
        study = f"step{setup.step:02d}-{task.name}"
        if self.storage:  # a shared database: the run's key keeps its studies apart from other runs'
            study = f"{hashlib.sha256(str(run.path.resolve()).encode()).hexdigest()[:12]}/{study}"
        result = search.run(study, setup.base, list(proposed.proposals), objective,
                            step=setup.step, task=task.name, on_trial=on_trial, on_resumed=objective.resumed)
        # Contexts the search scored (the current C included), and those it stopped after the val head.
        self._search_figures.update(search_scored=len(objective.values), search_cut=len(objective.cut))
        return Searched(result.best, tuple(result.best_proposals), result.stopped_by_budget)

    def _gate(self, program: dspy.Module, setup: StepSetup, searched: Searched,
              offered: Sequence[Proposal] = ()) -> Gated:
        """The task's val without the search's minibatch (:meth:`_held_out`) and the replay sample of every
        earlier task whose view changes.

        While the gate is undecided, the replay samples it names grow (:meth:`_grown`) and it decides
        again, at most :data:`GATE_ROUNDS` times. The examples a round adds are charged under ``gate``
        for both sides, each prompt once a run (:meth:`_gate_check`; charges never depend on caches). An
        undecided gate that stays so, whose named samples are already whole, or whose growth the budget
        refuses, rejects and says why.

        **One fallback after harm.** A candidate that gains on the task but costs an earlier one is often
        a bundle: the proposals that reach the broken earlier inputs, and others that do not, or that have
        a twin that does not (babi-10 task-agnostic, stop 34: qa6's demos with a reflection rule pinned to
        core memory, which reached every qa1 input). The gate then judges, once, the bundle with every
        proposal that changes the prompt of a broken earlier example swapped for such a twin or left out
        (:meth:`_fallback`), at half the gain test's level. The fallback runs only once the whole bundle's
        gain test passed at α, so with no real gain anywhere a step still lands at most as often as one test
        at α allows; where the bundle's gain came only from what the fallback drops, the fallback, a null
        edit then, passes at most α/2 of the time.
        """
        task, base = setup.task, setup.base
        self.emit("phase", task.name, phase="gate")
        decision, first, scores, rounds, sizes = self._judge(program, setup, searched.best, self.gate)
        best, proposals, cut = searched.best, searched.proposals, []
        if not decision.accepted and (fallback := self._fallback(setup, searched, decision, scores, offered)):
            ctx, kept, cut = fallback
            self.emit("phase", task.name, phase="gate", fallback=[p.name for p in kept], without=cut)
            second, _, again, more, grown = self._judge(program, setup, ctx,
                                                        replace(self.gate, alpha=self.gate.alpha / 2))
            without = (f"fallback {', '.join(cut)} (swapped or left out: it reached earlier inputs the whole "
                       f"candidate broke; gain test at α/2)")
            if second.accepted:
                reason = f"{second.reason}; {without}, after the whole candidate was rejected: {decision.reason}"
                decision, scores, sizes = replace(second, reason=reason), again, grown
                best, proposals, rounds = ctx, kept, rounds + more
            else:
                decision = replace(decision, reason=f"{decision.reason}; {without}: {second.reason}")
        self.emit("gate", task.name, **decision.to_dict(), first_outcome=first.outcome, rounds=rounds)
        gate_run = {"gate_outcome": first.outcome, "gate_rounds": rounds, "replay_sizes": sizes, "fallback": tuple(cut)}
        val = scores[0].only(example_id(e) for e in self._held_out(task))  # not the train examples a close gain grew into
        if not decision.accepted:
            return Gated(False, base, decision.reason, proposals, decision, **gate_run, val_after=val.mean_before)
        # The gate's paired outcome is the evidence for the items these proposals added or changed.
        best = credit(best, changed_item_ids(base, best), scores)
        return Gated(True, best, decision.reason, proposals, decision, **gate_run, val_after=val.mean_after)

    def _judge(self, program: dspy.Module, setup: StepSetup, candidate: LearnedContext, gate: Gate
               ) -> tuple[Decision, Decision, list[PairedScores], int, dict[str, int]]:
        """``gate``'s decision on ``candidate`` against the current C, growing replay samples while it is
        undecided: the decision, the first one, the last paired scores, the rounds grown and the sizes."""
        task, base = setup.task, setup.base
        sizes: dict[str, int] = {}
        scores = self._paired(program, setup, base, candidate, changed_only=True, keep_current=True)
        decision = first = gate.decide(scores[0], scores[1:])
        rounds = 0
        while decision.outcome == "undecided":
            grown, _ = self._grown(setup, decision.grow, sizes)
            cost = setup.n_pred * len(self._gate_check(setup, base, candidate, sizes={**sizes, **grown})[1])
            if rounds == GATE_ROUNDS:
                why = " of growing the samples"
            elif not grown:
                why = f": the samples of {', '.join(decision.grow) or 'no task'} cannot grow"
            elif not self.ledger.can_spend("task", cost):
                why = f": growing the samples needs {cost} task-LM calls, {self.ledger.remaining('task')} left"
            else:
                sizes.update(grown)
                rounds += 1
                self.emit("phase", task.name, phase="gate", grow=dict(grown), round=rounds)
                scores = self._paired(program, setup, base, candidate, changed_only=True, keep_current=True,
                                      sizes=sizes)  # charges the examples the grown samples add
                # a second look at the current task's gain: at half the level (see ctxopt.gate)
                again = replace(gate, alpha=gate.alpha / 2) if task.name in sizes and isinstance(
                    gate, PairedTestGate) else gate
                decision = again.decide(scores[0], scores[1:])
                continue
            decision = replace(decision, accepted=False, outcome="rejected",
                               reason=f"undecided after {rounds} round(s){why} ({decision.reason})")
            break
        return decision, first, scores, rounds, sizes

    def _fallback(self, setup: StepSetup, searched: Searched, decision: Decision, scores: Sequence[PairedScores],
                  offered: Sequence[Proposal] = ()) -> tuple[LearnedContext, tuple[Proposal, ...], list[str]] | None:
        """After a rejection for harm (the task's gain passed the paired gate's sign test), the best candidate
        with each proposal that, applied alone to the current C, changes the prompt of an earlier example the
        candidate broke replaced by the first alternative of its group among ``offered`` (the step's
        proposals: its own archival or narrowed form first, then the group's other draws) that changes none
        of them, or else left out. Returns that context, its proposals and what was replaced or left out
        ("a → b", "a"); None when nothing reaches a broken example, nothing would be left, or the budget
        cannot pay for the first gate check."""
        if not isinstance(self.gate, PairedTestGate) or decision.p_value is None or decision.p_value >= self.gate.alpha:
            return None
        tasks, base = {t.name: t for t in setup.earlier}, setup.base
        broken = {s.task: [e for e in tasks[s.task].val if s.after.get(example_id(e), 1.0) < s.before.get(example_id(e), 0.0)]
                  for s in scores[1:] if s.broken and s.task in tasks}
        if not broken:
            return None

        def clear(p: Proposal) -> bool:  # applied alone, it leaves every broken example's prompt as it was
            try:
                alone = base.apply_edits(list(p.edits), step=setup.step, task=setup.task.name)
            except EditError:
                return False
            return not any(setup.differing(base, alone, tasks[n], exs) for n, exs in broken.items())

        kept, cut = [], []
        for p in searched.proposals:
            if clear(p):
                kept.append(p)
                continue
            group = [q for q in offered if p.group and q.group == p.group and q.name != p.name]
            group.sort(key=lambda q: _form_of(q.name) != _form_of(p.name))  # its own forms before other draws
            twin = next((q for q in group if clear(q)), None)
            cut.append(f"{p.name} → {twin.name}" if twin else p.name)
            kept += [twin] if twin else []
        if not cut or not kept:
            return None
        try:
            ctx = base.apply_edits([e for p in kept for e in p.edits], step=setup.step, task=setup.task.name)
        except EditError:
            return None
        keys = self._gate_check(setup, base, ctx)[1]
        if ctx.hash == base.hash or not self.ledger.can_spend("task", setup.n_pred * len(keys)):
            return None
        return ctx, tuple(kept), cut

    def _grown(self, setup: StepSetup, names: Sequence[str], sizes: dict[str, int]) -> tuple[dict[str, int], int]:
        """The samples of ``names`` doubled: an earlier task's replay sample up to its whole val, the current
        task's held-out val (:meth:`_held_out`) with up to as many of its fresh train examples (``setup.fresh``).
        Returns the new sizes of those that grow and how many examples they add. A grown sample is a longer
        prefix of the same order, so it holds the smaller one and every score computed on it."""
        tasks = {t.name: t for t in setup.earlier}
        grown, added = {}, 0
        for name in names:
            if name == setup.task.name:
                held = len(self._held_out(setup.task))
                whole, old = held + len(setup.fresh), sizes.get(name, held)
            elif name in tasks:
                whole = len(tasks[name].val)
                old = min(sizes.get(name, self.budget.gate_replay_per_task), whole)
            else:
                continue
            if min(2 * old, whole) > old:
                grown[name] = min(2 * old, whole)
                added += grown[name] - old
        return grown, added

    def _make_room(self, program: dspy.Module, setup: StepSetup, gated: Gated) -> Gated:
        """Consolidate an over-budget accepted C; it lands only if it then fits and passes the same gate."""
        task, base, best, limit = setup.task, setup.base, gated.context, self.budget.max_context_tokens
        too_big = ", ".join(f"{n} {t} tokens" for n, t in over_budget(best, limit).items())
        self.emit("phase", task.name, phase="consolidate", why=f"{too_big} > max_context_tokens={limit}")
        pb, pa = base.predictors, best.predictors
        protect = {x.id for n, pc in pa.items() for x in (*pc.items, *pc.demos)
                   if n not in pb or x not in (*pb[n].items, *pb[n].demos)}  # what this step learned
        room = run_pass(best, self.consolidator, self._check(program, setup, "consolidation"), max_tokens=limit,
                        protect=protect, step=setup.step, task=task.name, on_candidate=self._on_candidate(task),
                        memory=self._rejections)
        if not room.fits:
            return replace(gated, accepted=False, context=base, room=room,
                           reason=f"rendered context would be {too_big} > max_context_tokens={limit} and "
                                  f"consolidation could not make room ({room.summary()})")
        # The same examples as the gate's last round: what the gate and the consolidation checks scored is
        # paid for, so this charges only the prompts the consolidation changed on examples a grown sample adds.
        scores = self._paired(program, setup, base, room.context, sizes=gated.replay_sizes)
        decision = self.gate.decide(scores[0], scores[1:])
        if not decision.accepted:
            return replace(gated, accepted=False, context=base, room=room, decision=decision,
                           reason=f"after consolidating to fit max_context_tokens={limit} ({room.summary()}) the "
                                  f"step no longer passes the gate: {decision.reason}")
        return replace(gated, context=room.context, room=room,
                       reason=f"{gated.reason}; consolidated to fit max_context_tokens={limit}: {room.summary()}")

    def _commit(self, setup: StepSetup, gated: Gated) -> None:
        """The store's record of the step: the new C if accepted, else an empty commit saying why."""
        st, task = self._run.store, setup.task
        metadata = {
            "step": setup.step, "task": task.name, "accepted": gated.accepted, "reason": gated.reason,
            "decision": gated.decision.to_dict() if gated.decision else None,
            "edits": [{"proposal": p.name, "source": p.source, "rationale": p.rationale,
                       "edits": [e.to_dict() for e in p.edits]} for p in gated.proposals],
            "lms": self._lms(), "ledger": {"task_calls": self.ledger.spent_task.get(task.name, 0),
                                           "reflection_calls": self.ledger.spent_reflection.get(task.name, 0)},
        }
        if gated.room is not None:
            metadata["consolidation"] = gated.room.to_dict()
        names = [p.name for p in gated.proposals]
        if gated.accepted:
            version = st.commit(gated.context, f"step {setup.step} {task.name}: accept {len(names)} proposal(s) — "
                                               f"{gated.reason}", metadata)
            self.emit("commit", task.name, rev=version.rev, reason=gated.reason, proposals=names)
            return
        head_meta = st.metadata("HEAD") if st.head() else {}
        if not (head_meta.get("step") == setup.step and head_meta.get("task") == task.name):
            st.commit(setup.base, f"step {setup.step} {task.name}: roll back — {gated.reason}", metadata,
                      allow_empty=True)
        self.emit("rollback", task.name, reason=gated.reason, proposals=names)

    # ------------------------------------------------------------------ paired scores (gate, consolidation)

    def _search_replay(self, task: Task) -> list[dspy.Example]:
        """The search's replay pool for an earlier task: ``gate_replay_per_task`` examples from the back of the
        gate's seeded order, so that the gate judges the search's choice on examples the search did not see.

        The gate's sample is a prefix of that order and grows toward the back; the two meet only when the
        sample and the pool together exceed the task's val.
        """
        order = self._sample(task.val, len(task.val), "gate", task.name)
        return order[::-1][:self.budget.gate_replay_per_task]

    def _search_val(self, task: Task) -> list[dspy.Example]:
        """The val minibatch the search scores every candidate on (seeded by the task's name)."""
        return self._sample(task.val, self.budget.val_minibatch, "val", task.name)

    def _held_out(self, task: Task) -> list[dspy.Example]:
        """``task``'s val without the search's minibatch, in val's order; all of val when that would leave
        fewer examples than the minibatch has (a val of 12 beside a minibatch of 10 would leave 2, on which
        no gain is significant, and the task could never learn).

        The search picks the best of many candidates on its minibatch, so the winner's score there is
        biased upward, and a gain test that counts those examples counts the pick's luck (ii-8 at stop 35:
        first_word_letter's winner scored 0.6 on the minibatch, the best of 14 contexts, and 0.5 on val).
        The gate's test of the current task uses only the examples the search did not score, as its
        replay samples already do for the earlier tasks (:meth:`_search_replay`).
        """
        seen = {example_id(e) for e in self._search_val(task)}
        rest = [e for e in task.val if example_id(e) not in seen]
        return rest if rest and len(rest) >= len(seen) else list(task.val)

    def _gate_sets(self, task: Task, earlier: Sequence[Task], sizes: Mapping[str, int] | None = None,
                   fresh: Sequence[dspy.Example] = ()) -> list[tuple[Task, list[dspy.Example]]]:
        """The gate's examples: ``task``'s val without the search's minibatch (:meth:`_held_out`), the gate
        replay sample of every earlier task.

        A replay sample holds ``gate_replay_per_task`` examples, or ``sizes[task]`` once the gate grew it:
        a longer prefix of the same seeded order. Once a close gain test grew the current task's sample to
        ``sizes[task]`` examples, its held-out val is followed by the first of ``fresh`` (:meth:`_fresh_train`)
        that make up that size.
        """
        others, sizes = [t for t in earlier if t.name != task.name], sizes or {}
        held = self._held_out(task)
        return [(task, held + list(fresh[:max(0, sizes.get(task.name, len(held)) - len(held))]))] + [
            (t, self._sample(t.val, sizes.get(t.name, self.budget.gate_replay_per_task), "gate", t.name))
            for t in others]

    def _gate_cost(self, setup: StepSetup, sizes: Mapping[str, int] | None = None) -> int:
        """Calls charged for one gate check: both sides on the current task's val, the candidate side on replay.

        The current context's replay scores are not charged again: the replay samples are fixed per task,
        so the current context was scored on them when it passed its own gate (they come from the caches).
        Examples a grown sample adds are charged for both sides by :meth:`_gate` as it grows them.
        """
        current, *replay = self._gate_sets(setup.task, setup.earlier, sizes, setup.fresh)
        return setup.n_pred * (2 * len(current[1]) + sum(len(exs) for _, exs in replay))

    def _paired(self, program: dspy.Module, setup: StepSetup, before: LearnedContext, after: LearnedContext, *,
                changed_only: bool = False, keep_current: bool = False, source: str = "gate",
                sizes: Mapping[str, int] | None = None) -> list[PairedScores]:
        """Paired scores of ``before`` and ``after`` on the gate sets; the first entry is the step's task.

        ``changed_only`` keeps only the tasks whose prompts differ (with ``keep_current`` the current task
        is always kept): on the others both sides score the same, so they are neither run nor charged.
        ``sizes`` are grown replay sample sizes (:meth:`_gate_sets`). Charged under ``source``: the prompts
        no earlier charge of the run paid for (:meth:`_gate_check`), so a re-check on a grown sample pays for
        the examples it adds, and the current context's replay, scored when it passed its own gate, is free.
        """
        sets, keys = self._gate_check(setup, before, after, sizes=sizes, changed_only=changed_only,
                                      keep_current=keep_current)
        self.ledger.charge("task", setup.n_pred * len(keys), source)  # raises: nothing run
        self._paid.update(keys)
        ev, scenario = self._evaluator, self._scenario
        return [PairedScores(t.name, self._scores(ev.evaluate(program, before, t, exs, scenario=scenario)),
                             self._scores(ev.evaluate(program, after, t, exs, scenario=scenario)))
                for t, exs in sets]

    def _gate_check(self, setup: StepSetup, before: LearnedContext, after: LearnedContext, *,
                    sizes: Mapping[str, int] | None = None, changed_only: bool = True, keep_current: bool = True
                    ) -> tuple[list[tuple[Task, list[dspy.Example]]], list[str]]:
        """What one gate check of ``after`` against ``before`` scores (see :meth:`_paired`), and the prompt keys
        of it that no charge of this run paid for: what a cold run, whose evaluator caches every prompt it
        computed, would send to the model."""
        sets = self._gate_sets(setup.task, setup.earlier, sizes, setup.fresh)
        if changed_only:
            sets = [(t, exs) for i, (t, exs) in enumerate(sets)
                    if (i == 0 and keep_current) or setup.differs(before, after, t, exs)]
        keys = (k for t, exs in sets for ctx in (before, after) for k in setup.keys(ctx, t, exs))
        return sets, unpaid(keys, self._paid)

    def _check(self, program: dspy.Module, setup: StepSetup, source: str) -> Callable[..., Decision]:
        """A consolidation lands iff no seen task's val score falls by more than ε (the run's gate as tolerance).

        Only the tasks whose prompts the consolidation changes are scored (and charged); the rest cannot move.
        """
        gate = tolerance_gate(self.gate)

        def check(before: LearnedContext, after: LearnedContext) -> Decision:
            scores = self._paired(program, setup, before, after, changed_only=True, source=source)
            if not scores:
                return Decision(True, "no seen task's prompt changes", 0.0, {})
            return gate.decide(scores[0], scores[1:])

        return check

    def _consolidation_check(self, program: dspy.Module, task: Task) -> Callable[..., Decision]:
        """:meth:`_check` for a sleep pass after ``task``, over every task seen so far."""
        setup = StepSetup(step=self._step, task=task, base=self._context, earlier=tuple(self._seen),
                          scenario=self._scenario, scope=GLOBAL, predictor="", n_pred=len(program.named_predictors()),
                          selector=self._evaluator.selector)
        return self._check(program, setup, "consolidation")

    # ------------------------------------------------------------------ sleep-time consolidation

    def _charge_consolidation(self, n: int) -> bool:
        if self.ledger.task is None or not self.ledger.can_spend("reflection", n):
            return False
        self.ledger.charge("reflection", n, "consolidation")
        return True

    def _on_candidate(self, task: Task) -> Callable[[Tried], None]:
        return lambda t: self.emit("consolidation", task.name, consolidation=t.consolidation.kind, outcome=t.outcome,
                                   reason=t.reason, rationale=t.consolidation.rationale)

    def _sleep(self, program: dspy.Module, task: Task, step: int) -> PassResult:
        """The sleep-time pass between tasks: gated consolidation of C, committed if anything lands."""
        self.emit("phase", task.name, phase="sleep")
        st, limit = self._run.store, self.budget.max_context_tokens
        result = run_pass(self._context, self.consolidator, self._consolidation_check(program, task),
                          max_tokens=limit, step=step, task=task.name, on_candidate=self._on_candidate(task),
                          memory=self._rejections)
        meta = {"step": step, "task": task.name, "sleep": True, "consolidation": result.to_dict(), "lms": self._lms()}
        if result.accepted:
            self._context = result.context
            st.commit(result.context, f"sleep after step {step} {task.name}: {result.summary()}", meta)
        elif result.rolled_back:
            reasons = "; ".join(t.reason for t in result.tried if t.outcome == "rolled_back")
            st.commit(self._context, f"sleep after step {step} {task.name}: roll back {result.rolled_back} "
                                     f"consolidation(s) — {reasons}", meta, allow_empty=True)
        self.emit("sleep", task.name, **result.counts(), summary=result.summary())
        return result

    def sleep(self, program: dspy.Module, stream: TaskStream, run_dir: str | Path | None = None, *,
              store: str | Path | None = None) -> PassResult:
        """One gated consolidation pass over the tasks of ``stream`` learned so far (``ctxopt sleep``).

        Reads the run's ``state.json`` when there is one (else the tasks named in
        the store's history), gates every candidate on val of every seen task,
        commits what lands, records rollbacks, and updates the run state so a
        resumed ``fit`` carries the consolidated context forward.
        """
        arg = _run_dir_arg(run_dir, store, "sleep")
        if arg is not None:
            self._bind(arg)
        run, st, _ = self._require_run()
        self._use_scenario(stream.scenario)
        state = run.read_state()
        if state is not None:
            identity = state.get("identity") or {}
            if identity.get("tasks") not in (None, list(stream.names)) or identity.get("seed") not in (None, self.seed):
                raise ConfigError(f"{run.state_path}: this run directory holds a different run (stream "
                                  f"{identity.get('stream')}, seed {identity.get('seed')}); use a new run directory")
            self._context, done = st.show(state["rev"]), state["done"]
            self.restore(state.get("method_state") or {})
        else:
            self._context = st.current()
            named = {v.metadata.get("task") for v in st.log()}
            done = max((i + 1 for i, t in enumerate(stream.tasks) if t.name in named), default=0)
        if self._context is None or done == 0:
            raise ConfigError(f"{st.path}: no learned task of stream {stream.name} to consolidate yet")
        self._seen, self._step = list(stream.tasks[:done]), done
        self.ledger.start_task(f"sleep@{done}")
        result = self._sleep(program, self._seen[-1], done)
        if state is not None:
            state.update(rev=st.head().rev, method_state=self.resume_state())
            state.setdefault("sleeps", []).append({"after_step": done, **result.counts()})
            run.save(state)
        return result

    def _consolidation_figures(self, passes: Sequence[PassResult]) -> dict[str, Any]:
        ctx = self._context
        return {"consolidations_proposed": sum(p.proposed for p in passes),
                "consolidations_accepted": sum(p.accepted for p in passes),
                "consolidations_rolled_back": sum(p.rolled_back for p in passes),
                "consolidation_kinds": [t.consolidation.kind for p in passes for t in p.tried
                                        if t.outcome == "accepted"],
                "predictor_tokens": {n: rendered_tokens(ctx, n) for n in ctx.predictors},
                "max_context_tokens": self.budget.max_context_tokens}


def _run_dir_arg(run_dir: str | Path | None, store: str | Path | None, method: str) -> str | Path | None:
    """``run_dir``, or the deprecated ``store=`` alias (with a DeprecationWarning)."""
    if store is not None:
        warnings.warn(f"ContinualOptimizer.{method}(store=...) is deprecated; pass run_dir=...", DeprecationWarning,
                      stacklevel=3)
        if run_dir is not None and Path(run_dir) != Path(store):
            raise ConfigError(f"{method}: run_dir={run_dir} and store={store} disagree; pass run_dir only")
        return store
    return run_dir


def program_inputs(program: dspy.Module, predictor: str) -> list[str]:
    """Input field names of one named predictor."""
    for name, pred in program.named_predictors():
        if name == predictor:
            return list(pred.signature.input_fields)
    raise ConfigError(f"the program has no predictor named {predictor!r}")
