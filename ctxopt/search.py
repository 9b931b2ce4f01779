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

**Several workers** (``workers=N``, Optuna's pattern for parallel search): the
study lives in a database server (``postgresql+psycopg://…``) and, after the
seeded points, N forked worker processes each run ask/tell on the same study;
the contexts still to score are split between them (worker i scores at most
its share), so the study never holds more than ``n_trials`` distinct contexts. TPE then sees other workers'
running trials (``constant_liar``), so the decisions are no longer
bit-identical to one worker's; one worker (the default) stays deterministic.

**Parsimony.** Among equal scores the best has the fewest proposals, and after
the trials each proposal of the best combination is switched off in turn (last
first) and dropped if the combination scores as well without it. A bundle of
near-identical rules, where one would do, so lands as one.
Budget: each worker may spend 1/N of what the search may spend when the
workers start (``objective.share(N)``); afterwards the parent charges every
distinct context in the study once, exactly as a resumed search does, so a
rerun after a kill charges the same.

Example:
    >>> from ctxopt.search import search_space
    >>> sorted(search_space([]))
    []
"""

from __future__ import annotations

import logging
import os
import signal
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

__all__ = ["FAILED", "NONE", "EditSearch", "Objective", "Search", "SearchResult", "TrialRecord", "check_workers", "chosen",
           "search_space"]

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
        storage: an Optuna storage URL (``sqlite:///run/optuna.db``, ``postgresql+psycopg://…``) or None
            for in-memory.
        seed: the sampler seed.
        n_trials: finished trials per study, seeded points included.
        workers: processes that run ask/tell on the study at once (more than one needs a database server).
        prune: after the trials, drop from the best combination every proposal it scores as well without
            (one extra candidate per chosen proposal at most): the smaller context wins ties.
    """

    storage: str | None
    seed: int = 0
    n_trials: int = 8
    workers: int = 1
    prune: bool = True

    def __post_init__(self) -> None:
        check_workers(self.workers, self.storage)

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
        study = optuna.create_study(study_name=study_name, storage=open_storage(self.storage),
                                    direction="maximize", load_if_exists=True)
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
        resumed: set[str] = set()  # contexts reported to on_resumed: each once

        def report_resumed(ctx: LearnedContext | None) -> None:
            if ctx is not None and on_resumed is not None and ctx.hash not in resumed:
                resumed.add(ctx.hash)
                on_resumed(ctx)

        for t in finished():
            if t.user_attrs.get("context_hash"):
                report_resumed(build(t.params)[0])

        def record(number: int, params: dict, value: float | None, ctx: LearnedContext | None,
                   on: list[Proposal]) -> None:
            rec = TrialRecord(number, params, value, ctx.hash if ctx else None, tuple(p.name for p in on))
            records.append(rec)
            if on_trial:
                on_trial(rec)

        stopped = False
        # Seeded points, most informative first: the unedited context, every switch on (but those that
        # conflict with an earlier one), the first
        # alternative of each group alone, then both together. They take at most half the trials.
        groups = sorted({p.group for p in proposals if p.group})
        unedited = {k: (NONE if k in groups else False) for k in space}
        all_on = dict(unedited)
        for p in proposals:  # every switch on that applies with the ones before it (conflicts stay off)
            if not p.group and build({**all_on, _param(p): True})[0] is not None:
                all_on[_param(p)] = True
        # Groups of content (demo sets, where a rule goes) seed their first alternative; groups of
        # settings (source "retrieval") are left to TPE: one seed holding every setting's first value
        # (k 6, min_score 0.3, …) would judge the content by settings nobody chose.
        firsts: dict[str, str] = {}
        for p in proposals:
            if p.group and p.source != "retrieval":
                firsts.setdefault(p.group, p.name)
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

        def distinct(prunes: bool = True) -> dict[str | None, float]:
            """Value of every distinct context evaluated so far (conflicting params share ``None``)."""
            return {t.user_attrs.get("context_hash"): t.value for t in finished()
                    if prunes or not t.user_attrs.get("prune")}

        if self.workers > 1 and not stopped:
            before = {t.number for t in finished()}
            stopped = self._in_workers(study_name, space, build, objective)
            for t in finished():  # charge what the workers scored, once per distinct context, as a resume does
                ctx, on = build(t.params)
                if t.number in before or t.user_attrs.get("repeat"):
                    continue
                report_resumed(ctx)
                record(t.number, t.params, t.value, ctx, on)

        # TPE may suggest a combination it has already scored: answer it from the study and ask again
        # (no evaluation, no budget), so n_trials counts distinct contexts; asks are capped.
        asks = 0
        while self.workers == 1 and not stopped and len(distinct(False)) < self.n_trials and asks < 4 * self.n_trials:
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

        def best() -> optuna.trial.FrozenTrial | None:
            """Best value; ties go to fewer proposals, then to the earlier trial."""
            complete = [t for t in finished() if t.value is not None and t.value != FAILED]
            return max(complete, key=lambda t: (t.value, -len(chosen(proposals, t.params)), -t.number), default=None)

        top = best()
        if top is None:
            return SearchResult(base, FAILED, [], records, stopped)
        if self.prune and not stopped:
            stopped = self._prune(study, space, proposals, top, build, objective, distinct, record)
            top = best()
        ctx, on = build(top.params)
        return SearchResult(ctx or base, float(top.value), on, records, stopped)

    def _prune(self, study: optuna.Study, space: dict, proposals: Sequence[Proposal], top: optuna.trial.FrozenTrial,
               build: Callable, objective: Objective, distinct: Callable, record: Callable) -> bool:
        """Parsimony: switch off the best combination's proposals one at a time, last first, keeping each
        drop that scores at least as well (so the best's tie-break, fewer proposals, takes the smaller one).

        Each candidate is a trial of the study (``prune`` user attr), so a resumed search re-reads it
        instead of scoring it again. Returns True if the budget refused a candidate.
        """
        params, value = dict(top.params), float(top.value)
        for p in reversed(chosen(proposals, params)):
            trial_params = {**params, _param(p): NONE if p.group else False}
            ctx, on = build(trial_params)
            if ctx is None:
                continue  # another chosen proposal edits what this one adds
            known = distinct()
            if ctx.hash in known:
                score = known[ctx.hash]
            else:
                score = objective(ctx)
                if score is None:
                    return True
                study.add_trial(create_trial(params=trial_params, distributions=space, value=score,
                                             user_attrs={"prune": True, "context_hash": ctx.hash}))
                record(len(study.trials) - 1, trial_params, score, ctx, on)
            if score >= value:
                params, value = trial_params, score
        return False

    def _in_workers(self, study_name: str, space: dict, build: Callable, objective: Objective) -> bool:
        """Run the TPE trials in ``workers`` forked processes on the shared study; True if the budget stopped one.

        A worker's LM usage comes back to the parent (:func:`ctxopt.lm.absorb_usage`); an error in a worker
        (a dead endpoint, say) is raised here, and a worker that dies is one line.
        """
        import multiprocessing

        from ctxopt.lm import absorb_usage

        fork = multiprocessing.get_context("fork")
        part = objective.share(self.workers) if hasattr(objective, "share") else objective
        study = optuna.load_study(study_name=study_name, storage=open_storage(self.storage))
        left = self.n_trials - len({t.user_attrs.get("context_hash")
                                    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))})
        procs, pipes = [], []
        for index in range(self.workers):
            quota = left // self.workers + (index < left % self.workers)  # new contexts this worker may score
            reader, writer = fork.Pipe(duplex=False)
            proc = fork.Process(target=_worker, args=(self, index, quota, study_name, space, build, part, writer),
                                name=f"ctxopt-search-{index}", daemon=True)
            proc.start()
            writer.close()
            procs.append(proc)
            pipes.append(reader)
        messages: list[dict] = []
        try:
            for index, (proc, reader) in enumerate(zip(procs, pipes, strict=True)):
                try:
                    messages.append(reader.recv())
                except EOFError:
                    proc.join()
                    raise RuntimeError(f"search worker {index} died (exit code {proc.exitcode}) "
                                       "before it reported; rerun the same command to resume") from None
                proc.join()
        finally:
            for proc in procs:
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        for msg in messages:
            absorb_usage(msg["usage"])
        for msg in messages:
            if msg.get("error") is not None:
                raise msg["error"]
        return any(msg["stopped"] for msg in messages)


SQLITE_WAIT_S = 60.0  # seconds a SQLite study waits for a lock held by another process


def open_storage(url: str | None) -> optuna.storages.BaseStorage | str | None:
    """The Optuna storage for ``url``: a database server's without a connection pool.

    A pooled engine keeps idle connections open until it is garbage-collected, and a forked worker
    inherits its parent's; over many steps and workers that exhausts the server's ``max_connections``.
    Without a pool each storage call opens and closes its own connection (milliseconds, against seconds
    per scored context). A SQLite file waits up to a minute for another process's lock (the driver's
    default is 5 s, too short for a loaded machine where a killed run's successor finds the file
    busy); in-memory studies are left as Optuna opens them.
    """
    if url is None:
        return url
    if url.startswith("sqlite"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_WAIT_S}})
    from sqlalchemy.pool import NullPool

    return optuna.storages.RDBStorage(url, engine_kwargs={"poolclass": NullPool})


def check_workers(workers: int, storage: str | None) -> None:
    """Raise ConfigError unless ``workers`` search processes can share ``storage``."""
    from ctxopt.errors import ConfigError

    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"search workers must be a positive integer, got {workers!r}")
    if workers > 1 and (storage is None or storage.startswith("sqlite")):
        raise ConfigError(f"{workers} search workers need a database server for the study "
                          "(--storage postgresql+psycopg://USER@HOST/DB); SQLite serialises writers")


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies, so a killed run leaves no worker behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _worker(search: EditSearch, index: int, quota: int, study_name: str, space: dict, build: Callable,
            objective: Objective, out) -> None:
    """One search worker (a forked process): ask/tell on the shared study until it scored ``quota`` new contexts."""
    from ctxopt.lm import usage_marks

    _die_with_parent()
    start = usage_marks()
    msg: dict = {"stopped": False, "error": None}
    try:
        msg["stopped"] = _ask_tell(search, index, quota, study_name, space, build, objective)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        try:
            import pickle

            pickle.dumps(exc)
            msg["error"] = exc
        except Exception:  # noqa: BLE001
            msg["error"] = RuntimeError(f"search worker {index}: {type(exc).__name__}: {exc}")
    end = usage_marks()
    msg["usage"] = {key: (end[key] - start[key]).to_dict() for key in end if key in start}
    out.send(msg)
    out.close()
    os._exit(0)  # skip the parent's atexit handlers and finalizers (its models, its database connections)


def _beaten(study: optuna.Study, number: int, key: str | None) -> bool:
    """Another trial has scored the same context, or an earlier one claims it: it is that trial's to score."""
    return any(t.number != number and t.user_attrs.get("context_hash") == key
               and (t.state == TrialState.COMPLETE or t.number < number)
               for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)))


def _retried(call: Callable, *args, **kwargs):
    """``call(*args, **kwargs)``, again after a short wait while the database reports a commit failure.

    Two workers writing the same study at once can make PostgreSQL abort one transaction
    (optuna raises ``StorageInternalError``); the aborted write left nothing behind, so it is
    safe to repeat. The last failure is raised.
    """
    import time

    for attempt in range(5):
        try:
            return call(*args, **kwargs)
        except optuna.exceptions.StorageInternalError:
            time.sleep(0.05 * 2 ** attempt)
    return call(*args, **kwargs)  # the sixth and last attempt raises what it meets


def _ask_tell(search: EditSearch, index: int, quota: int, study_name: str, space: dict, build: Callable,
              objective: Objective) -> bool:
    study = optuna.load_study(study_name=study_name, storage=open_storage(search.storage))  # its own connections

    def claimed() -> dict[str | None, float | None]:
        """Every distinct context finished or being scored by some worker (None: not scored yet)."""
        out: dict[str | None, float | None] = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if "context_hash" in t.user_attrs:
                key = t.user_attrs["context_hash"]
                if t.state == TrialState.COMPLETE or key not in out:
                    out[key] = t.value
        return out

    asks = scored = 0
    while scored < quota and asks < 4 * search.n_trials:
        known = claimed()
        asks += 1
        n_done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        study.sampler = optuna.samplers.TPESampler(seed=search.seed * 7919 + n_done + 104729 * (index + 1),
                                                   n_startup_trials=3, constant_liar=True)
        trial = _retried(study.ask, space)
        ctx, on = build(dict(trial.params))
        key = ctx.hash if ctx is not None else None
        if key in known:  # scored, or being scored by another worker: not a new context
            if known[key] is None:
                _retried(study.tell, trial, state=TrialState.FAIL)
            else:
                trial.set_user_attr("context_hash", key)
                trial.set_user_attr("repeat", True)
                _retried(study.tell, trial, known[key])
            continue
        trial.set_user_attr("context_hash", key)  # claim it before scoring
        trial.set_user_attr("worker", index)
        if _beaten(study, trial.number, key):
            _retried(study.tell, trial, state=TrialState.FAIL)
            continue
        value = objective(ctx) if ctx is not None else FAILED
        if value is None:
            _retried(study.tell, trial, state=TrialState.FAIL)
            return True
        if _beaten(study, trial.number, key):  # claimed at the same moment by an earlier trial: keep one copy
            _retried(study.tell, trial, state=TrialState.FAIL)
            continue
        _retried(study.tell, trial, value)
        scored += 1
    return False
