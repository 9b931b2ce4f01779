"""Search over which proposals to combine: an Optuna TPE study, ask/tell.

Each independent proposal is an on/off switch (``use:<name>``); each group of
alternatives (demo sets) is one categorical choice (``<group>``, ``"none"``
included). The unedited context is seeded into the study as a finished trial
(``add_trial``) before TPE starts, along with a few informative starting points.

The study lives in SQLite inside the run directory (``optuna.db``), one study
per step, so it can be resumed and inspected with ``optuna-dashboard``.
Resuming reproduces an uninterrupted run exactly: the sampler is re-seeded
before every ``ask`` from the seed and the number of finished trials, so each
suggestion depends only on the study's finished history; a trial left running
by a killed process is marked failed and does not count.

Example:
    >>> from ctxopt.search import search_space
    >>> sorted(search_space([]))
    []
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from ctxopt.context import LearnedContext
from ctxopt.errors import EditError
from ctxopt.proposer import Proposal

__all__ = ["FAILED", "NONE", "EditSearch", "Objective", "Search", "SearchResult", "TrialRecord", "chosen", "search_space"]

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

NONE = "none"
FAILED = -10.0  # the value of a trial whose proposals conflict


def _param(p: Proposal) -> str:
    return p.group if p.group else f"use:{p.name}"


def search_space(proposals: Sequence[Proposal]) -> dict[str, CategoricalDistribution]:
    """The Optuna distributions for a list of proposals."""
    space: dict[str, list] = {}
    for p in proposals:
        if p.group:
            space.setdefault(p.group, [NONE]).append(p.name)
        else:
            space[f"use:{p.name}"] = [False, True]
    return {k: CategoricalDistribution(v) for k, v in space.items()}


def chosen(proposals: Sequence[Proposal], params: dict) -> list[Proposal]:
    """The proposals a set of trial params switches on, in proposal order."""
    return [p for p in proposals if (params.get(p.group) == p.name if p.group else params.get(_param(p)) is True)]


@dataclass(frozen=True)
class TrialRecord:
    number: int
    params: dict
    value: float | None
    context_hash: str | None
    proposals: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"number": self.number, "params": self.params, "value": self.value,
                "context_hash": self.context_hash, "proposals": list(self.proposals)}


@dataclass
class SearchResult:
    best: LearnedContext
    best_value: float
    best_proposals: list[Proposal]
    trials: list[TrialRecord] = field(default_factory=list)
    stopped_by_budget: bool = False


Objective = Callable[[LearnedContext], "float | None"]  # None: the budget refused the evaluation


class Search(Protocol):
    """Chooses which proposals to combine: scores candidates with ``objective`` and returns the best.

    ``objective(ctx)`` returns a score, or None once the budget refuses; a search must then stop.
    A search that resumes the work of a killed earlier attempt passes each context that attempt
    scored to ``on_resumed``, so the caller charges a resumed search like a fresh one.
    """

    def run(self, study_name: str, base: LearnedContext, proposals: Sequence[Proposal], objective: Objective,
            *, step: int, task: str, on_trial: Callable[[TrialRecord], None] | None = None,
            on_resumed: Callable[[LearnedContext], None] | None = None) -> SearchResult: ...


@dataclass
class EditSearch:
    """Choose the best combination of proposals with a seeded TPE study.

    Args:
        storage: an Optuna storage URL (``sqlite:///run/optuna.db``) or None for in-memory.
        seed: the sampler seed.
        n_trials: finished trials per study, seeded points included.
    """

    storage: str | None
    seed: int = 0
    n_trials: int = 8

    @staticmethod
    def sqlite_url(run_dir: str | Path) -> str:
        path = Path(run_dir) / "optuna.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"

    def run(self, study_name: str, base: LearnedContext, proposals: Sequence[Proposal], objective: Objective,
            *, step: int, task: str, on_trial: Callable[[TrialRecord], None] | None = None,
            on_resumed: Callable[[LearnedContext], None] | None = None) -> SearchResult:
        """Run (or resume) the study ``study_name``; return the best context found.

        ``on_resumed``, if given, receives the context of every trial a previous
        process already finished, so a caller charging a budget per distinct
        context charges a resumed search exactly like a fresh one.
        """
        space = search_space(proposals)
        study = optuna.create_study(study_name=study_name, storage=self.storage, direction="maximize",
                                    load_if_exists=True)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            study.tell(t.number, state=TrialState.FAIL)  # left behind by a killed process

        def build(params: dict) -> tuple[LearnedContext | None, list[Proposal]]:
            on = chosen(proposals, params)
            edits = [e for p in on for e in p.edits]
            try:
                return base.apply_edits(edits, step=step, task=task), on
            except EditError as exc:  # proposals that conflict with each other
                log.debug("trial params %s conflict: %s", params, exc)
                return None, on

        def finished() -> list[optuna.trial.FrozenTrial]:
            return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))

        records: list[TrialRecord] = []
        if on_resumed is not None:
            for t in finished():
                ctx = build(t.params)[0] if t.user_attrs.get("context_hash") else None
                if ctx is not None:
                    on_resumed(ctx)

        def record(number: int, params: dict, value: float | None, ctx: LearnedContext | None,
                   on: list[Proposal]) -> None:
            rec = TrialRecord(number, params, value, ctx.hash if ctx else None, tuple(p.name for p in on))
            records.append(rec)
            if on_trial:
                on_trial(rec)

        stopped = False
        # Seeded points, most informative first: the unedited context, every switch on, the first
        # alternative of each group alone, then both together. They take at most half the trials.
        groups = sorted({p.group for p in proposals if p.group})
        unedited = {k: (NONE if k in groups else False) for k in space}
        all_on = {**unedited, **{_param(p): True for p in proposals if not p.group}}
        firsts = {g: next(p.name for p in proposals if p.group == g) for g in groups}
        seeds: list[dict] = []
        for params in (unedited, all_on, {**unedited, **firsts}, {**all_on, **firsts}):
            if params not in seeds:
                seeds.append(params)
        seeds = seeds[: max(2, self.n_trials // 2)]
        done_params = [t.params for t in finished()]
        for params in seeds:
            if params in done_params:
                continue
            ctx, on = build(params)
            value = objective(ctx) if ctx is not None else FAILED
            if value is None:
                stopped = True
                break
            study.add_trial(create_trial(params=params, distributions=space, value=value,
                                         user_attrs={"seeded": True, "context_hash": ctx.hash if ctx else None}))
            record(len(study.trials) - 1, params, value, ctx, on)
            done_params.append(params)

        def distinct() -> dict[str | None, float]:
            """Value of every distinct context evaluated so far (conflicting params share ``None``)."""
            return {t.user_attrs.get("context_hash"): t.value for t in finished()}

        # TPE may suggest a combination it has already scored: answer it from the study and ask again
        # (no evaluation, no budget), so n_trials counts distinct contexts; asks are capped.
        asks = 0
        while not stopped and len(distinct()) < self.n_trials and asks < 4 * self.n_trials:
            asks += 1
            n_done = len(finished())
            study.sampler = optuna.samplers.TPESampler(seed=self.seed * 7919 + n_done, n_startup_trials=3)
            trial = study.ask(space)
            params = dict(trial.params)
            ctx, on = build(params)
            known = distinct()
            key = ctx.hash if ctx is not None else None
            if key in known:
                trial.set_user_attr("context_hash", key)
                trial.set_user_attr("repeat", True)
                study.tell(trial, known[key])
                continue
            value = objective(ctx) if ctx is not None else FAILED
            if value is None:
                study.tell(trial, state=TrialState.FAIL)
                stopped = True
                break
            trial.set_user_attr("context_hash", ctx.hash if ctx else None)
            study.tell(trial, value)
            record(trial.number, params, value, ctx, on)

        complete = [t for t in finished() if t.value is not None and t.value != FAILED]
        if not complete:
            return SearchResult(base, FAILED, [], records, stopped)
        # Best value; ties go to fewer proposals, then to the earlier trial.
        best = max(complete, key=lambda t: (t.value, -len(chosen(proposals, t.params)), -t.number))
        ctx, on = build(best.params)
        return SearchResult(ctx or base, float(best.value), on, records, stopped)
