"""Parallel search: several worker processes run ask/tell on one study in a real PostgreSQL server."""

from __future__ import annotations

import os

import optuna
import pytest
from optuna.trial import TrialState

from ctxopt.budget import get_budget
from ctxopt.errors import ConfigError
from ctxopt.optimizer import ContinualOptimizer
from ctxopt.program import program_for
from ctxopt.search import EditSearch, open_storage
from ctxopt.store import Store
from tests.pg import postgres_url  # noqa: F401 - the fixture
from tests.toy import reflection_lm, task_lm, toy_stream

BUDGET = dict(n_trials=6, train_minibatch=6, val_minibatch=5, replay_per_task=3, gate_replay_per_task=5)
EXTRA = "ADD: Answer in lowercase letters.\nADD: Never add spaces."


def _fit(tmp_path, name, **kw):
    stream = toy_stream(names=("suffix", "reverse"))
    tl = task_lm()
    opt = ContinualOptimizer(tl, reflection_lm(extra=EXTRA), budget=get_budget("light", **BUDGET), seed=0,
                             num_threads=2, **kw)
    result = opt.fit(program_for(stream), stream, run_dir=tmp_path / name)
    return result, opt, tl


def _studies(url):
    return {s.study_name: s for s in optuna.get_all_study_summaries(storage=open_storage(url))}


def test_two_workers_search_one_study_in_postgres_and_every_call_is_counted(tmp_path, postgres_url):  # noqa: F811
    result, opt, tl = _fit(tmp_path, "two", storage=postgres_url, search_workers=2)
    assert [result.R[i][i] for i in range(2)] == [1.0, 1.0]  # both tasks learned
    studies = _studies(postgres_url)
    mine = sorted(n for n in studies if n.endswith("step01-suffix") or n.endswith("step02-reverse"))
    assert len(mine) == 2 and len({n.split("/")[0] for n in mine}) == 1  # one run key, one study per step
    workers = set()
    for name in mine:
        study = optuna.load_study(study_name=name, storage=open_storage(postgres_url))
        done = study.get_trials(states=(TrialState.COMPLETE,))
        assert len({t.user_attrs.get("context_hash") for t in done if not t.user_attrs.get("prune")}) <= BUDGET["n_trials"]
        workers |= {t.user_attrs["worker"] for t in done if "worker" in t.user_attrs}
        assert not study.get_trials(states=(TrialState.RUNNING,))
    assert workers == {0, 1}  # both processes asked and told
    # the workers' model calls reached the parent's counters, and the budget charged within its limit
    steps = result.steps
    for s in steps:
        assert s.extra["charged_task_calls"] <= opt.budget.task_calls_per_task
    assert tl.usage.snapshot().model_calls >= sum(s.task_calls for s in steps)


def test_a_second_run_in_the_same_database_keeps_its_own_studies(tmp_path, postgres_url):  # noqa: F811
    before = set(_studies(postgres_url))
    _fit(tmp_path, "other", storage=postgres_url)
    new = set(_studies(postgres_url)) - before
    assert len(new) == 2 and len({n.split("/")[0] for n in new}) == 1


def test_rerunning_a_finished_parallel_run_is_free_and_equal(tmp_path, postgres_url):  # noqa: F811
    first, _, _ = _fit(tmp_path, "again", storage=postgres_url, search_workers=2)
    head = Store.open(tmp_path / "again" / "store").current().hash
    second, _, tl = _fit(tmp_path, "again", storage=postgres_url, search_workers=2)
    assert second.R == first.R
    assert Store.open(tmp_path / "again" / "store").current().hash == head
    assert tl.usage.snapshot().model_calls == 0


@pytest.mark.parametrize("storage", [None, "sqlite:///x.db"])
def test_several_workers_without_a_database_server_is_one_line(storage):
    with pytest.raises(ConfigError, match="need a database server"):
        EditSearch(storage, workers=2)
    with pytest.raises(ConfigError, match="need a database server"):
        ContinualOptimizer(task_lm(), reflection_lm(), storage=storage, search_workers=2)


def test_cli_refuses_two_workers_on_sqlite(tmp_path, capsys):
    from ctxopt.cli import main

    assert main(["compare", "--stream", "ii:antonyms", "--methods", "static,ctxopt", "--search-workers", "2",
                 "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "need a database server" in err[0]


def _props():
    from ctxopt.context import LearnedContext, PredictorContext
    from ctxopt.edits import AddItem
    from ctxopt.proposer import Proposal

    base = LearnedContext({"p": PredictorContext("Answer.")})
    return base, [Proposal(f"r{i}", (AddItem("p", f"Rule number {i}."),), "test") for i in range(6)]


def test_workers_keep_to_n_trials_and_find_the_best(postgres_url):  # noqa: F811
    base, props = _props()

    def objective(ctx):  # rule 2 helps, rule 4 hurts
        texts = {it.text for it in ctx.items("p")}
        return ("Rule number 2." in texts) - ("Rule number 4." in texts)

    result = EditSearch(postgres_url, seed=0, n_trials=10, workers=2).run("unit-best", base, props, objective,
                                                                          step=1, task="t")
    study = optuna.load_study(study_name="unit-best", storage=open_storage(postgres_url))
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len({t.user_attrs["context_hash"] for t in done if not t.user_attrs.get("prune")}) == 10
    assert {t.user_attrs["worker"] for t in done if "worker" in t.user_attrs} == {0, 1}
    # After the trials, parsimony drops every chosen rule that does not change the score.
    assert result.best_value == 1.0 and [p.name for p in result.best_proposals] == ["r2"]


def test_a_dead_endpoint_in_a_worker_stops_the_search_with_its_one_line(postgres_url):  # noqa: F811
    from ctxopt.errors import EndpointError

    base, props = _props()
    parent = os.getpid()

    def objective(ctx):
        if os.getpid() != parent:
            raise EndpointError("LM scripted/x: LMTransportError (connection refused); start the server")
        return 0.0

    with pytest.raises(EndpointError, match="connection refused"):
        EditSearch(postgres_url, seed=0, n_trials=8, workers=2).run("unit-dead", base, props, objective,
                                                                    step=1, task="t")


def test_a_parallel_search_cut_short_resumes_and_reports_each_finished_context_once(postgres_url):  # noqa: F811
    base, props = _props()

    def score(ctx):
        return float(len(ctx.items("p")))

    # The parent scores the seeded points; each worker may score one context, then the budget refuses
    # (as in a step whose budget runs out, or a killed one).
    parent, budgeted = os.getpid(), {"left": 1}

    def stingy(ctx):
        if os.getpid() == parent:
            return score(ctx)
        if budgeted["left"] == 0:
            return None
        budgeted["left"] -= 1
        return score(ctx)

    first = EditSearch(postgres_url, seed=0, n_trials=9, workers=2).run("unit-resume", base, props, stingy,
                                                                        step=1, task="t")
    assert first.stopped_by_budget
    study = optuna.load_study(study_name="unit-resume", storage=open_storage(postgres_url))
    assert {t.user_attrs.get("worker") for t in study.get_trials(states=(TrialState.COMPLETE,))} >= {0, 1}
    reported: list[str] = []
    resumed = EditSearch(postgres_url, seed=0, n_trials=9, workers=2).run(
        "unit-resume", base, props, score, step=1, task="t", on_resumed=lambda ctx: reported.append(ctx.hash))
    study = optuna.load_study(study_name="unit-resume", storage=open_storage(postgres_url))
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    hashes = {t.user_attrs["context_hash"] for t in done}
    trials = {t.user_attrs["context_hash"] for t in done if not t.user_attrs.get("prune")}
    assert len(trials) == 9  # the resumed search completed n_trials distinct contexts (then parsimony's)
    assert len(reported) == len(set(reported))  # charged once each ...
    assert set(reported) <= set(hashes)  # ... and only contexts the study holds
    assert resumed.best_value == max(t.value for t in done)


def test_many_searches_hold_no_idle_connections_to_the_server(postgres_url):  # noqa: F811
    base, props = _props()
    for i in range(12):  # more studies than the test server's 50 connections allow pooled engines for
        EditSearch(postgres_url, seed=0, n_trials=3, workers=2).run(f"unit-pool-{i}", base, props,
                                                                    lambda ctx: float(len(ctx.items("p"))),
                                                                    step=1, task="t")
    study = optuna.create_study(study_name="unit-pool-count", storage=open_storage(postgres_url), load_if_exists=True)
    engine = study._storage._backend.engine if hasattr(study._storage, "_backend") else study._storage.engine
    with engine.connect() as conn:
        from sqlalchemy import text
        others = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                                   "AND pid <> pg_backend_pid()")).scalar()
    assert others == 0  # every search closed what it opened
