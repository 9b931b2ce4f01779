"""The continual optimizer: propose, search, gate, commit — one task at a time.

For each task of a stream, :class:`ContinualOptimizer`:

1. **observes** the current context C on a minibatch of the task's *train* split;
2. **proposes** edits: reflection on the failures, labeled demo sets, format rules;
3. **searches** (Optuna TPE) for the best combination, scoring each candidate on
   a val minibatch of the current task plus a replay sample of earlier tasks' val;
4. **gates** the best candidate on the full val of the current task and the
   replay set of every earlier task; it lands only if the current task improves
   and no earlier task drops by more than ε, otherwise C stays as it was;
5. **commits** the outcome to the git-backed store (accepted: the new C;
   rejected: an empty commit recording the reason);
6. **measures** the test row of the accuracy matrix — the only step that
   touches test data.

State is saved after every step, so a killed run resumes from its last finished
step; evaluations, LM calls and Optuna trials are all cached, so redoing a
half-finished step costs next to nothing and reproduces the same decisions.

Example:
    >>> opt = ContinualOptimizer(task_lm="local", reflection_lm="local:qwen2.5-coder-1.5b",
    ...                          budget="light", seed=0)                    # doctest: +SKIP
    >>> result = opt.fit(program, stream, run_dir="runs/x")                  # doctest: +SKIP
    >>> result.summary()["acc"]                                            # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dspy

from ctxopt._atomic import write_json
from ctxopt._clock import StepClock
from ctxopt.budget import Budget, Ledger, get_budget
from ctxopt.consolidate import (
    Consolidator,
    PassResult,
    Tried,
    over_budget,
    rendered_tokens,
    run_pass,
    tolerance_gate,
)
from ctxopt.context import GLOBAL, LearnedContext
from ctxopt.errors import BudgetExceeded, ConfigError
from ctxopt.evaluator import EvalResult, Evaluator
from ctxopt.gate import Decision, Gate, PairedScores, get_gate
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
    dedupe,
)
from ctxopt.search import EditSearch, Search, TrialRecord
from ctxopt.selector import ContextSelector
from ctxopt.store import Store
from ctxopt.tasks import Task, TaskStream, example_id
from ctxopt.tokens import TOKENIZER

__all__ = [
    "Callback",
    "ContinualOptimizer",
    "Event",
    "ROOM_SCOPES",
    "STATE_VERSION",
    "STEP_CLOCK_FILE",
    "StepOutcome",
    "measure_row",
    "program_inputs",
    "target_predictor",
]

log = logging.getLogger(__name__)

STATE_VERSION = 1
STEP_CLOCK_FILE = "step_clock.json"  # seconds spent on the step in progress (kept across kills)
ROOM_SCOPES = 5  # with max_context_tokens, each step reserves one consolidation check over this many task scopes


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
    test_row: tuple[float, ...] | None
    record: StepRecord


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
        gate: ``strict``, ``bootstrap`` or a :class:`Gate` object.
        epsilon: tolerated drop of an earlier task's score (gate).
        seed: seeds minibatches, reflection samples and the TPE sampler.
        num_threads: evaluator threads.
        callbacks: functions receiving :class:`Event` s.
        measure_test: fill the accuracy matrix after each task (needs test splits).
        proposers: override the default proposers (reflection, demos, format rules).
        extra_proposers: proposers consulted before the default (or given) ones.
        run_dir: where caches, the Optuna study and results go (``fit(run_dir=...)`` sets it too).
        store: an existing :class:`Store` to commit to; default ``run_dir/store``.
        consolidate: run a gated sleep-time consolidation pass after every task (:mod:`ctxopt.consolidate`).
        consolidator: the :class:`Consolidator` to use, or a similarity name (``auto``, ``embedding``,
            ``lexical``) for the default one on ``reflection_lm``. With ``budget.max_context_tokens``
            set, it also makes room when a step would exceed the budget.
        selector: What of C the model sees for each input (:mod:`ctxopt.selector`); default: all in scope.
            It must depend only on the part of C in the input's scope (the gate skips tasks whose scope is unchanged).
        search: The :class:`~ctxopt.search.Search` that combines proposals; default: TPE (``EditSearch``).
        evaluator: The :class:`Evaluator` to learn and measure with; default: a cached one in the run directory
            (on ``task_lm``, with ``selector``).
    """

    def __init__(
        self,
        task_lm: Any = "local",
        reflection_lm: Any = "local:qwen2.5-coder-1.5b",
        *,
        budget: str | Budget | dict | None = "light",
        gate: str | Gate = "strict",
        epsilon: float = 0.02,
        seed: int = 0,
        num_threads: int = 4,
        callbacks: Sequence[Callback] = (),
        measure_test: bool = True,
        proposers: Sequence[Proposer] | None = None,
        extra_proposers: Sequence[Proposer] = (),
        run_dir: str | Path | None = None,
        store: Store | None = None,
        consolidate: bool = False,
        consolidator: Consolidator | str | None = None,
        selector: ContextSelector | None = None,
        evaluator: Evaluator | None = None,
        search: Search | None = None,
    ) -> None:
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
        self.run_dir: Path | None = Path(run_dir) if run_dir else None
        self._given_store = store  # commit into an existing store (e.g. a transfer branch)
        self._store: Store | None = store
        self._given_evaluator = evaluator  # evaluate with this one instead of a cached one in the run directory
        self._evaluator: Evaluator | None = evaluator
        self.selector = selector
        self.search = search  # default: a seeded TPE study in RUN_DIR/optuna.db (EditSearch)
        self.ledger = Ledger(self.budget)
        self._seen: list[Task] = []
        self._context: LearnedContext | None = None
        self._scenario = "task-aware"
        self._step = 0
        self.consolidate = consolidate
        self.consolidator = consolidator if isinstance(consolidator, Consolidator) else Consolidator(
            self.reflection_lm, similarity=consolidator or "auto", charge=self._charge_reflection)

    # ------------------------------------------------------------------ plumbing

    def emit(self, kind: str, task: str = "", **data: Any) -> None:
        event = Event(kind, self._step, task, data)
        for cb in self.callbacks:
            cb(event)

    @property
    def context(self) -> LearnedContext | None:
        """The current learned context."""
        return self._context

    def _paths(self) -> tuple[Path, Store, Evaluator]:
        if self.run_dir is None:
            raise ConfigError("no run directory: pass store=DIR to fit() or run_dir=DIR to ContinualOptimizer")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self._store is None:
            self._store = Store.init(self.run_dir / "store")
        if self._evaluator is None:
            self._evaluator = Evaluator(self.task_lm, num_threads=self.num_threads,
                                        cache_dir=self.run_dir / "eval_cache", selector=self.selector)
        return self.run_dir, self._store, self._evaluator

    def _proposer_list(self, charge: Callable[[int], bool]) -> list[Proposer]:
        if self._proposers is not None:
            return [*self._extra_proposers, *self._proposers]
        return [
            *self._extra_proposers,
            FormatRuleProposer(),
            DemoProposer(),
            ReflectionProposer(self.reflection_lm, samples=self.budget.reflection_calls_per_task, charge=charge),
        ]

    def _evaluate(self, program: dspy.Module, ctx: LearnedContext, task: Task,
                  examples: Sequence[dspy.Example], *, charge: bool = True) -> EvalResult:
        if charge:
            self.ledger.charge("task", len(examples) * len(program.named_predictors()), "observe")
        return self._evaluator.evaluate(program, ctx, task, list(examples), scenario=self._scenario)

    @staticmethod
    def _scores(result: EvalResult) -> dict[str, float]:
        return {r.example_id: r.score for r in result.results}

    def _sample(self, examples: Sequence[dspy.Example], n: int, *salt: Any) -> list[dspy.Example]:
        rng = random.Random(f"{self.seed}:" + ":".join(map(str, salt)))
        pool = sorted(examples, key=example_id)
        rng.shuffle(pool)
        return pool[:n]

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
        run_dir, st, state_path, state = self._open_run(stream, _run_dir_arg(run_dir, store, "fit"))
        if state is None:
            self._context = st.current() or LearnedContext.from_program(program)
            if st.head() is None:
                st.commit(self._context, "initial context C0", {"step": 0, "task": None, "stream": stream.name,
                                                                  "scenario": stream.scenario,
                                                                  "stream_meta": dict(stream.meta),
                                                                  "lms": self._lms()})
            state = {"version": STATE_VERSION, "stream": stream.name, "tasks": list(stream.names), "seed": self.seed,
                     "scenario": stream.scenario, "stream_meta": dict(stream.meta),
                     "done": 0, "r0": None, "R": [], "steps": [], "context_hash": self._context.hash,
                     "rev": st.head().rev, "ledger": self.ledger.to_dict()}
        else:
            self._check_budget(state_path, state)
            self._context = st.show(state["rev"])
            self.ledger = Ledger.from_dict(state["ledger"])
        self._seen = list(stream.tasks[: state["done"]])
        self.emit("run_start", stream=stream.name, tasks=list(stream.names), resumed_at=state["done"])
        if self.measure_test and state["r0"] is None:
            self._step = 0
            state["r0"] = list(self._measure(program, stream, self._context))
            write_json(state_path, state)
        for i, task in enumerate(stream.tasks):
            if i < state["done"]:
                continue
            self._step = i + 1
            outcome = self.step(program, task, _stream=stream, _keep_clock=True)
            state["done"] = i + 1
            state["R"].append(list(outcome.test_row) if outcome.test_row is not None else None)
            state["steps"].append(outcome.record.to_dict())
            state["context_hash"] = self._context.hash
            state["rev"] = st.head().rev
            state["ledger"] = self.ledger.to_dict()
            write_json(state_path, state)
            StepClock(run_dir / STEP_CLOCK_FILE, i + 1).finish()  # only once the step is saved
        measured = state["r0"] is not None
        result = RunResult(
            method="ctxopt",
            tasks=list(stream.names) if measured else [],  # without measurement there is no matrix
            r0=state["r0"] or [],
            R=[row for row in state["R"] if row is not None],
            steps=[StepRecord.from_dict(s) for s in state["steps"]],
            meta={"stream": stream.name, "stream_tasks": list(stream.names), "scenario": stream.scenario, "seed": self.seed,
                  "budget": self.budget.to_dict(), "lms": self._lms(), "final_context_hash": self._context.hash,
                  "final_rev": st.head().rev, "final_context_tokens": self._context.token_count(),
                  "tokenizer": TOKENIZER},
        )
        if measured:
            result.save(run_dir)
        self.emit("run_end", summary=result.summary() if result.R else {})
        return result

    def step(self, program: dspy.Module, task: Task, *, context: LearnedContext | None = None,
             seen: Sequence[Task] | None = None, scenario: str | None = None,
             _stream: TaskStream | None = None, _keep_clock: bool = False) -> StepOutcome:
        """Learn from one newly arrived task and (if a stream is known) measure the test row.

        Args:
            program: the program being taught.
            task: the new task (its train and val splits only are used).
            context: start from this context instead of the optimizer's current one (or the store's HEAD).
            seen: the tasks met before, for the replay check; default: those this optimizer has stepped through.
            scenario: ``task-aware`` (default) or ``task-agnostic``.
        """
        if context is not None:
            self._context = context
        if seen is not None:
            self._seen = [t for t in seen if t.name != task.name]
            self._step = len(self._seen) + 1
        if scenario is not None:
            self._scenario = scenario
        run_dir, st, _ = self._paths()
        if self._context is None:
            self._context = st.current() or LearnedContext.from_program(program)
            if st.head() is None:
                st.commit(self._context, "initial context C0", {"step": 0, "lms": self._lms()})
        if self._step == 0 or (self._seen and self._step <= len(self._seen)):
            self._step = len(self._seen) + 1
        step, base = self._step, self._context
        with StepClock(run_dir / STEP_CLOCK_FILE, step) as clock:  # a resumed step keeps earlier attempts' time
            t_usage, r_usage = usage_of(self.task_lm), usage_of(self.reflection_lm)
            self.ledger.start_task(task.name)
            self.emit("task_start", task.name, index=step, budget=self.budget.to_dict())
            scope = task.name if self._scenario == "task-aware" else GLOBAL
            predictor = target_predictor(program, task.output)
            n_pred = len(program.named_predictors())

            try:
                decision, best, chosen_props, reason = self._learn(program, task, base, step, scope, predictor, n_pred,
                                                                   run_dir)
            except BudgetExceeded as exc:
                decision, best, chosen_props, reason = None, base, [], f"budget: {exc}"
                self.emit("phase", task.name, phase="budget", message=str(exc))

            accepted = bool(decision and decision.accepted)  # _learn returns no decision when best is base
            passes: list[PassResult] = []
            if accepted and over_budget(best, self.budget.max_context_tokens):  # consolidation first, else reject
                best, accepted, reason, room = self._make_room(program, task, base, best, reason, step)
                passes.append(room)
            metadata = {
                "step": step, "task": task.name, "accepted": accepted, "reason": reason,
                "decision": decision.to_dict() if decision else None,
                "edits": [{"proposal": p.name, "source": p.source, "rationale": p.rationale,
                           "edits": [e.to_dict() for e in p.edits]}
                          for p in chosen_props],
                "lms": self._lms(), "ledger": {"task_calls": self.ledger.spent_task.get(task.name, 0),
                                               "reflection_calls": self.ledger.spent_reflection.get(task.name, 0)},
            }
            if passes:
                metadata["consolidation"] = passes[0].to_dict()
            if accepted:
                self._context = best
                version = st.commit(best, f"step {step} {task.name}: accept {len(chosen_props)} proposal(s) — {reason}",
                                    metadata)
                self.emit("commit", task.name, rev=version.rev, reason=reason, proposals=[p.name for p in chosen_props])
            else:
                head_meta = st.metadata("HEAD") if st.head() else {}
                if not (head_meta.get("step") == step and head_meta.get("task") == task.name):
                    st.commit(base, f"step {step} {task.name}: roll back — {reason}", metadata, allow_empty=True)
                self.emit("rollback", task.name, reason=reason, proposals=[p.name for p in chosen_props])
            if task not in self._seen:
                self._seen.append(task)
            if self.consolidate:
                passes.append(self._sleep(program, task, step))

            test_row = None
            if self.measure_test and _stream is not None:
                test_row = tuple(self._measure(program, _stream, self._context))
            t_used, r_used = usage_of(self.task_lm) - t_usage, usage_of(self.reflection_lm) - r_usage
            record = StepRecord(
                step=step, task=task.name, context_tokens=self._context.token_count(),
                task_calls=t_used.calls, task_tokens=t_used.tokens, reflection_calls=r_used.calls,
                reflection_tokens=r_used.tokens, wall_s=round(clock.seconds, 3), accepted=accepted,
                extra={"reason": reason, "charged_task_calls": self.ledger.spent_task.get(task.name, 0),
                       "charged_by_source": dict(self.ledger.by_source.get(task.name, {})),
                       "charged_reflection_calls": self.ledger.spent_reflection.get(task.name, 0),
                       "items": sum(len(p.items) for _, p in self._context.predictors.items()),
                       "context_hash": self._context.hash, "attempts": clock.attempts,
                       **self._consolidation_figures(passes)},
            )
        if not _keep_clock:  # fit finishes the clock itself, after it has saved the step
            clock.finish()
        self.emit("task_end", task.name, accepted=accepted, reason=reason, record=record.to_dict())
        return StepOutcome(step, task.name, accepted, reason, self._context, tuple(p.name for p in chosen_props),
                           decision, test_row, record)

    # ------------------------------------------------------------------ the learning step

    def _learn(self, program, task, base, step, scope, predictor, n_pred, run_dir
               ) -> tuple[Decision | None, LearnedContext, list[Proposal], str]:
        earlier = [t for t in self._seen if t.name != task.name]
        # Reserve the gate's cost up front so the search can never starve it; with a context budget, also
        # room for one consolidation check over a few task scopes, should the step need to make room.
        reserved = self._gate_cost(task, n_pred)
        if self.budget.max_context_tokens is not None:
            reserved += n_pred * ROOM_SCOPES * self.budget.gate_replay_per_task

        # 1. observe on a train minibatch
        self.emit("phase", task.name, phase="observe")
        minibatch = self._sample(task.train, self.budget.train_minibatch, "train", step, task.name)
        observed = self._evaluate(program, base, task, minibatch)
        by_id = {example_id(e): e for e in minibatch}
        observations = tuple(Observation(by_id[r.example_id], r.score, r.feedback, dict(r.prediction),
                                         list(r.trace)) for r in observed.results)
        self.emit("observe", task.name, score=observed.mean, n=len(minibatch),
                  failures=sum(o.score < 1 for o in observations))

        # 2. propose
        self.emit("phase", task.name, phase="propose")

        charge_reflection = self.ledger.handle("proposer:ReflectionProposer")

        pctx = ProposalContext(context=base, task=task.name, scope=scope, predictor=predictor,
                               inputs=tuple(program_inputs(program, predictor)), output=task.output,
                               observations=observations, train=tuple(task.train), seed=self.seed * 100 + step)
        raw: list[Proposal] = []
        for proposer in self._proposer_list(charge_reflection):
            raw.extend(proposer.propose(replace(pctx, charge=self.ledger.handle(f"proposer:{type(proposer).__name__}"))))
        proposals, dropped = dedupe(base, raw, step=step, task=task.name)
        self.emit("propose", task.name, proposals=[p.to_dict() for p in proposals], dropped=dropped)
        if not proposals:
            return None, base, [], "no usable proposals"

        # 3. search on val minibatch + replay sample
        self.emit("phase", task.name, phase="search")
        cur_mb = self._sample(task.val, self.budget.val_minibatch, "val", task.name)
        replay_mb = {t.name: self._sample(t.val, self.budget.replay_per_task, "replay", t.name) for t in earlier}
        tasks_by_name = {t.name: t for t in earlier}
        # A candidate is scored on the replay sample of the earlier tasks whose prompts it changes; on the
        # others it scores exactly as the current context does, so they are neither run nor charged.
        def changed(ctx: LearnedContext) -> list[str]:
            return [n for n in replay_mb if self._view(ctx, tasks_by_name[n]) != self._view(base, tasks_by_name[n])]

        def cost(contexts: dict[str, LearnedContext]) -> int:
            """Calls to score ``contexts`` (the current one among them): the val minibatch for each, the replay
            sample of each changed task for each context that changes it, and once for the current context."""
            changes = [changed(c) for h, c in contexts.items() if h != base.hash]
            replayed = {n for ch in changes for n in ch}
            return n_pred * (len(cur_mb) * len(contexts) + sum(len(replay_mb[n]) for ch in changes for n in ch)
                             + sum(len(replay_mb[n]) for n in replayed))

        # The search may spend what is left after reserving the gate; it pays once per distinct
        # context, counted from the study itself so a resumed search is charged exactly the same.
        allowance = self.ledger.remaining("task") - reserved
        evaluated: dict[str, LearnedContext] = {}

        def replay_mean(ctx: LearnedContext, name: str) -> float:
            return self._evaluator.evaluate(program, ctx, tasks_by_name[name], replay_mb[name],
                                            scenario=self._scenario).mean

        def objective(ctx: LearnedContext) -> float | None:
            if cost({**evaluated, ctx.hash: ctx}) > allowance:
                return None
            evaluated[ctx.hash] = ctx
            cur = self._evaluator.evaluate(program, ctx, task, cur_mb, scenario=self._scenario).mean
            penalty = sum(max(0.0, replay_mean(base, n) - replay_mean(ctx, n)) for n in changed(ctx))
            return cur - 2.0 * penalty

        worst = n_pred * (len(cur_mb) + sum(len(v) for v in replay_mb.values()))
        if worst > allowance:
            raise BudgetExceeded(f"task-LM budget too small to search task {task.name}: "
                                 f"{worst} + reserved for the gate {reserved} > {self.ledger.remaining('task')} left")
        self._evaluator.evaluate(program, base, task, cur_mb, scenario=self._scenario)
        evaluated[base.hash] = base

        def on_trial(rec: TrialRecord) -> None:
            self.emit("trial", task.name, **rec.to_dict())

        search = self.search or EditSearch(EditSearch.sqlite_url(run_dir), seed=self.seed, n_trials=self.budget.n_trials)
        result = search.run(f"step{step:02d}-{task.name}", base, proposals, objective, step=step, task=task.name,
                            on_trial=on_trial, evaluated=evaluated)
        self.ledger.charge("task", cost(evaluated), "search")
        if result.best.hash == base.hash:
            why = "search found no combination better than the current context"
            if result.stopped_by_budget:
                why += " before the budget ran out"
            return None, base, [], why

        # 4. gate on full val + replay sets (current C's replay scores come from the cache)
        self.emit("phase", task.name, phase="gate")
        current, *replay = self._paired(program, task, base, result.best, changed_only=True, keep_current=True)
        decision = self.gate.decide(current, replay)
        self.emit("gate", task.name, **decision.to_dict())
        return decision, result.best, result.best_proposals, decision.reason

    # ------------------------------------------------------------------ consolidation (ctxopt.consolidate)

    def _charge_reflection(self, n: int) -> bool:
        if self.ledger.task is None or not self.ledger.can_spend("reflection", n):
            return False
        self.ledger.charge("reflection", n, "consolidation")
        return True

    def _gate_sets(self, task: Task) -> list[tuple[Task, list[dspy.Example]]]:
        """The learning gate's examples: full val of ``task``, the gate replay sample of every other seen task."""
        others = [t for t in self._seen if t.name != task.name]
        return [(task, list(task.val))] + [
            (t, self._sample(t.val, self.budget.gate_replay_per_task, "gate", t.name)) for t in others]

    def _gate_cost(self, task: Task, n_pred: int) -> int:
        """Calls charged for one gate check: both sides on the current task's val, the candidate side on replay.

        The current context's replay scores are not charged again: the replay samples are fixed per task,
        so the current context was scored on them when it passed its own gate (they come from the caches).
        """
        current, *replay = self._gate_sets(task)
        return n_pred * (2 * len(current[1]) + sum(len(exs) for _, exs in replay))

    def _paired(self, program: dspy.Module, task: Task, before: LearnedContext, after: LearnedContext, *,
                changed_only: bool = False, keep_current: bool = False, charge: bool = True,
                source: str = "gate"
                ) -> list[PairedScores]:
        """Paired scores of ``before`` and ``after`` on the gate sets; the first entry is ``task`` itself.

        ``changed_only`` keeps only the tasks whose prompts differ (:meth:`LearnedContext.view`; with
        ``keep_current`` the current task is always kept): on the
        others both sides score the same, so they are neither run nor charged. ``charge=False`` is for a
        re-check whose scores were all computed, and paid for, by earlier checks.
        """
        n_pred = len(program.named_predictors())
        sets = self._gate_sets(task)
        cost = self._gate_cost(task, n_pred)
        if changed_only:
            keep = [i for i, (t, _) in enumerate(sets)
                    if (i == 0 and keep_current) or self._view(before, t) != self._view(after, t)]
            cost = n_pred * sum((2 if i == 0 else 1) * len(sets[i][1]) for i in keep)
            sets = [sets[i] for i in keep]
        if charge:
            self.ledger.charge("task", cost, source)  # raises: nothing run
        return [PairedScores(t.name, self._scores(self._evaluator.evaluate(program, before, t, exs,
                                                                            scenario=self._scenario)),
                             self._scores(self._evaluator.evaluate(program, after, t, exs, scenario=self._scenario)))
                for t, exs in sets]

    def _view(self, ctx: LearnedContext, task: Task) -> str:
        """What the program sees for ``task`` under ``ctx`` (equal views make equal prompts)."""
        return ctx.view(task.name if self._scenario == "task-aware" else None)

    def _consolidation_check(self, program: dspy.Module, task: Task) -> Callable[..., Decision]:
        """A consolidation lands iff no seen task's val score falls by more than ε (the run's gate as tolerance).

        Only the tasks whose prompts the consolidation changes are scored (and charged); the rest cannot move.
        """
        gate = tolerance_gate(self.gate)

        def check(before: LearnedContext, after: LearnedContext) -> Decision:
            scores = self._paired(program, task, before, after, changed_only=True, source="consolidation")
            if not scores:
                return Decision(True, "no seen task's prompt changes", 0.0, {})
            return gate.decide(scores[0], scores[1:])

        return check

    def _on_candidate(self, task: Task) -> Callable[[Tried], None]:
        return lambda t: self.emit("consolidation", task.name, consolidation=t.consolidation.kind, outcome=t.outcome,
                                   reason=t.reason, rationale=t.consolidation.rationale)

    def _make_room(self, program: dspy.Module, task: Task, base: LearnedContext, best: LearnedContext, reason: str,
                   step: int) -> tuple[LearnedContext, bool, str, PassResult]:
        """Consolidate an over-budget candidate; it lands only if it then fits and still passes the gate."""
        limit = self.budget.max_context_tokens
        too_big = ", ".join(f"{n} {t} tokens" for n, t in over_budget(best, limit).items())
        self.emit("phase", task.name, phase="consolidate", why=f"{too_big} > max_context_tokens={limit}")
        pb, pa = base.predictors, best.predictors
        protect = {x.id for n, pc in pa.items() for x in (*pc.items, *pc.demos)
                   if n not in pb or x not in (*pb[n].items, *pb[n].demos)}  # what this step learned
        room = run_pass(best, self.consolidator, self._consolidation_check(program, task), max_tokens=limit,
                        protect=protect, step=step, task=task.name, on_candidate=self._on_candidate(task))
        if not room.fits:
            return base, False, (f"rendered context would be {too_big} > max_context_tokens={limit} and "
                                 f"consolidation could not make room ({room.summary()})"), room
        # The same examples as the gate: every score was computed by the gate (base) or by the consolidation
        # checks (the tasks whose prompts changed), so this re-check runs nothing new and is not charged again.
        scores = self._paired(program, task, base, room.context, charge=False)
        decision = self.gate.decide(scores[0], scores[1:])
        if not decision.accepted:
            return base, False, (f"after consolidating to fit max_context_tokens={limit} ({room.summary()}) "
                                 f"the step no longer passes the gate: {decision.reason}"), room
        return room.context, True, f"{reason}; consolidated to fit max_context_tokens={limit}: {room.summary()}", room

    def _sleep(self, program: dspy.Module, task: Task, step: int) -> PassResult:
        """The sleep-time pass between tasks: gated consolidation of C, committed if anything lands."""
        self.emit("phase", task.name, phase="sleep")
        st, limit = self._store, self.budget.max_context_tokens
        result = run_pass(self._context, self.consolidator, self._consolidation_check(program, task),
                          max_tokens=limit, step=step, task=task.name, on_candidate=self._on_candidate(task))
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
        run_dir, st, state_path, state = self._open_run(stream, _run_dir_arg(run_dir, store, "sleep"))
        if state is not None:
            self._context, done = st.show(state["rev"]), state["done"]
            self.ledger = Ledger.from_dict({**state["ledger"], "budget": self.budget.to_dict()})
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
            state.update(rev=st.head().rev, context_hash=self._context.hash, ledger=self.ledger.to_dict())
            state.setdefault("sleeps", []).append({"after_step": done, **result.counts()})
            write_json(state_path, state)
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

    # ------------------------------------------------------------------ measurement (test only)

    def _measure(self, program: dspy.Module, stream: TaskStream, ctx: LearnedContext) -> list[float]:
        self.emit("phase", "", phase="measure")
        row = measure_row(self._evaluator, program, stream, ctx)
        self.emit("measure", "", row=row, tasks=list(stream.names))
        return row

    def _lms(self) -> dict[str, str]:
        return {"task_lm": lm_name(self.task_lm), "reflection_lm": lm_name(self.reflection_lm)}

    def _open_run(self, stream: TaskStream, store: str | Path | None) -> tuple[Path, Store, Path, dict | None]:
        """Bind the run directory, and read its saved state (None for a new run)."""
        if store is not None and (self.run_dir is None or Path(store) != self.run_dir):
            self.run_dir = Path(store)
            # A new run directory: its own store and caches, never the previous run's (unless a store was given).
            self._store, self._evaluator = self._given_store, self._given_evaluator
            self._context, self._seen, self._step = None, [], 0
            self.ledger = Ledger(self.budget)
        run_dir, st, _ = self._paths()
        self._scenario = stream.scenario
        state_path = run_dir / "state.json"
        return run_dir, st, state_path, self._load_state(state_path, stream)

    def _load_state(self, path: Path, stream: TaskStream) -> dict | None:
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"{path}: run state version {state.get('version')} is not {STATE_VERSION}; "
                              "use a new run directory")
        if state.get("tasks") != list(stream.names) or state.get("seed") != self.seed:
            raise ConfigError(f"{path}: this run directory holds a different run (stream {state.get('stream')}, "
                              f"seed {state.get('seed')}); use a new run directory")
        return state

    def _check_budget(self, path: Path, state: dict) -> None:
        """Refuse to resume a run under another budget: the two budgets' charges would mix."""
        old, new = state.get("ledger", {}).get("budget", {}), self.budget.to_dict()
        changed = [f"{k} {old.get(k)} → {new.get(k)}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if changed:
            raise ConfigError(f"{path}: this run was started with another budget ({'; '.join(changed)}); "
                              "resume it with its original budget or use a new run directory")


def _run_dir_arg(run_dir: str | Path | None, store: str | Path | None, method: str) -> str | Path | None:
    """``run_dir``, or the deprecated ``store=`` alias (with a DeprecationWarning)."""
    if store is not None:
        warnings.warn(f"ContinualOptimizer.{method}(store=...) is deprecated; pass run_dir=...", DeprecationWarning,
                      stacklevel=3)
        if run_dir is not None and Path(run_dir) != Path(store):
            raise ConfigError(f"{method}: run_dir={run_dir} and store={store} disagree; pass run_dir only")
        return store
    return run_dir


def measure_row(evaluator: Evaluator, program: dspy.Module, stream: TaskStream,
                context: LearnedContext | None) -> list[float]:
    """One row of the accuracy matrix: the test score of ``context`` on every task of ``stream``.

    This is the only place learning code reaches test splits, through
    :meth:`Evaluator.evaluate_test`; every method in a comparison measures with it.
    """
    return [round(evaluator.evaluate_test(program, context, task, scenario=stream.scenario).mean, 6)
            for task in stream.tasks]


def program_inputs(program: dspy.Module, predictor: str) -> list[str]:
    """Input field names of one named predictor."""
    for name, pred in program.named_predictors():
        if name == predictor:
            return list(pred.signature.input_fields)
    raise ConfigError(f"the program has no predictor named {predictor!r}")
