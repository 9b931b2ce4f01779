"""Transfer of a learned context to another task LM, with scripted fake LMs."""

from __future__ import annotations

import json

import pytest

import ctxopt
import ctxopt.portability as transfer_module
import ctxopt.streams
from ctxopt.budget import get_budget
from ctxopt.cli import main
from ctxopt.errors import ConfigError, StoreLockedError
from ctxopt.optimizer import ContinualOptimizer
from ctxopt.portability import branch_for, measure_test, resolve_stream, transfer
from ctxopt.program import program_for
from ctxopt.store import Store
from tests.fakes import chat_fields, scripted_lm
from tests.toy import RULES, _field, reflection_lm, task_lm, toy_stream

SMALL = dict(n_trials=4, train_minibatch=6, val_minibatch=5, replay_per_task=3, gate_replay_per_task=5)
REVERSE_RULE = RULES["reverse"][0]


def _last(user: str, name: str) -> str:
    marker = f"[[ ## {name} ## ]]"
    return _field(marker + user.rsplit(marker, 1)[-1], name)


def contrarian_answer(system: str, user: str) -> str:
    """A different model: it reverses words natively, but the learned 'reverse' rule confuses it."""
    word, task = _last(user, "input"), _last(user, "task")
    if REVERSE_RULE in system:
        return chat_fields(output=word + "!")
    taught = [(system.rfind(rule), fn) for rule, fn in RULES.values() if rule in system]
    if taught:
        return chat_fields(output=max(taught, key=lambda t: t[0])[1](word))
    return chat_fields(output=word[::-1] if task == "reverse" else word)


def allergic_answer(system: str, user: str) -> str:
    """A model that solves every task alone and breaks whenever any learned rule is shown."""
    word, task = _last(user, "input"), _last(user, "task")
    if any(rule in system for rule, _ in RULES.values()):
        return chat_fields(output="?")
    return chat_fields(output=RULES[task][1](word))


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A run directory whose store holds C learned on the toy stream with the original task LM."""
    stream = toy_stream()
    run = tmp_path_factory.mktemp("learned") / "run"
    opt = ContinualOptimizer(task_lm(), reflection_lm(), budget=get_budget("light", **SMALL), seed=0,
                             num_threads=2, measure_test=False)
    opt.fit(program_for(stream), stream, run_dir=run)
    return run


def _copy_run(learned, tmp_path):
    bundle = Store.open(learned / "store").export_bundle(tmp_path / "c.bundle")
    return Store.import_bundle(bundle, tmp_path / "run" / "store")


def test_branch_names_follow_the_store_rules():
    assert branch_for("local:qwen2.5-coder-1.5b") == "transfer/local-qwen2.5-coder-1.5b"
    assert branch_for("openai/gpt-4o-mini") == "transfer/openai-gpt-4o-mini"
    assert branch_for("x..lock") == "transfer/x-lock"
    with pytest.raises(ConfigError):
        branch_for("///")


def test_seen_tasks_come_from_the_history(learned):
    store = Store.open(learned / "store")
    stream, seen, seed = resolve_stream(store, stream=toy_stream())
    assert [t.name for t in seen] == ["suffix", "reverse", "double"] and seed == 0
    first = store.log()[-2].rev  # after step 1 only
    assert [t.name for t in resolve_stream(store, first, stream=toy_stream())[1]] == ["suffix"]
    with pytest.raises(ConfigError, match="cannot load stream 'toy'"):  # state.json names a stream that is not built in
        resolve_stream(store)


def test_transfer_reports_per_task_deltas_and_commits_on_a_branch(learned, tmp_path):
    store = _copy_run(learned, tmp_path)
    head_before = store.resolve("HEAD")
    new = scripted_lm(contrarian_answer, name="scripted/contrarian")
    res = transfer(store, new, stream=toy_stream(), work_dir=tmp_path / "work")
    by_task = {r.task: r for r in res.rows}
    assert (by_task["suffix"].without, by_task["suffix"].with_c) == (0.0, 1.0)
    assert (by_task["reverse"].without, by_task["reverse"].with_c, by_task["reverse"].delta) == (1.0, 0.0, -1.0)
    assert res.kept == "transferred" and res.branch == "transfer/scripted-contrarian"
    assert "worse than without C on: reverse" in res.reason  # never silent
    # The store's HEAD is where it was; the transfer lives on its branch, recorded in the history.
    assert store.current_branch() == "main" and store.resolve("HEAD") == head_before
    assert store.resolve(res.branch) == res.final_rev
    phases = [v.metadata["transfer"]["phase"] for v in store.log(res.branch) if "transfer" in v.metadata]
    assert phases == ["result", "apply"]
    apply = store.log(res.branch)[1].metadata["transfer"]
    assert apply["val"]["reverse"] == {"without": 1.0, "with": 0.0, "delta": -1.0}
    assert apply["source_rev"] == head_before and apply["to_lm"] == "scripted/contrarian"
    assert json.loads((tmp_path / "work" / "transfer.json").read_text())["kept"] == "transferred"


def test_adapt_drops_the_rule_that_hurts_the_new_model(learned, tmp_path):
    store = _copy_run(learned, tmp_path)
    new = scripted_lm(contrarian_answer, name="scripted/contrarian")
    res = transfer(store, new, adapt=True, stream=toy_stream(), reflection_lm=reflection_lm(),
                   budget=get_budget("light", **SMALL), work_dir=tmp_path / "work")
    assert res.kept == "adapted"
    assert [r.adapted for r in res.rows] == [1.0, 1.0, 1.0]
    final = store.show(res.branch)
    texts = {it.text for it in final.items("predict")}
    assert REVERSE_RULE not in texts
    assert RULES["suffix"][0] in texts and RULES["double"][0] in texts  # rules that help are kept
    # The adapt step that removed it is a gated, committed step on the branch.
    steps = [v.metadata for v in store.log(res.branch) if v.metadata.get("task") == "reverse"]
    assert steps and steps[0]["accepted"] is True
    assert any(e["proposal"].startswith("ablate.") for e in steps[0]["edits"])
    assert store.show("main") == store.show(res.source_rev)  # the source C is untouched


def test_a_context_worse_than_none_is_never_kept(learned, tmp_path):
    store = _copy_run(learned, tmp_path)
    res = transfer(store, scripted_lm(allergic_answer, name="scripted/allergic"), stream=toy_stream(),
                   work_dir=tmp_path / "work")
    assert [r.with_c for r in res.rows] == [0.0, 0.0, 0.0] and [r.without for r in res.rows] == [1.0, 1.0, 1.0]
    assert res.kept == "none" and res.fell_back
    assert "fell back to the program without C" in res.reason
    head = store.version(res.branch)
    assert head.subject.startswith("transfer: fall back to the program without C")
    assert store.show(res.branch) == ctxopt.LearnedContext.from_program(program_for(toy_stream()))
    assert head.metadata["transfer"]["kept"] == "none"


def test_a_run_writing_to_the_store_meanwhile_fails_loudly(learned, tmp_path):
    store = _copy_run(learned, tmp_path)
    refused = []

    def other_writer(event):
        if event.kind == "phase" and event.data.get("phase") == "commit":  # HEAD is on the transfer branch now
            with pytest.raises(StoreLockedError):
                Store.open(store.path, lock_timeout=0.2).commit(store.current(), "a run's step", allow_empty=True)
            refused.append(True)

    res = transfer(store, scripted_lm(contrarian_answer, name="scripted/contrarian"), stream=toy_stream(),
                   work_dir=tmp_path / "work", callbacks=[other_writer])
    assert refused and store.current_branch() == "main"
    assert not any(v.subject == "a run's step" for v in store.log(res.branch))


def test_transfers_are_recorded_each_time(learned, tmp_path):
    store = _copy_run(learned, tmp_path)
    new = scripted_lm(contrarian_answer, name="scripted/contrarian")
    first = transfer(store, new, stream=toy_stream(), work_dir=tmp_path / "w")
    second = transfer(store, new, stream=toy_stream(), work_dir=tmp_path / "w")
    assert first.final_rev != second.final_rev
    results = [v for v in store.log(first.branch) if v.metadata.get("transfer", {}).get("phase") == "result"]
    assert len(results) == 2


def test_measure_test_reports_acc_after_the_decisions(learned, tmp_path):
    store = _copy_run(learned, tmp_path)
    new = scripted_lm(contrarian_answer, name="scripted/contrarian")
    stream = toy_stream()
    res = transfer(store, new, stream=stream, work_dir=tmp_path / "work")
    acc = measure_test(res, new, stream)
    assert acc["none"]["row"] == [0.0, 1.0, 0.0] and acc["transferred"]["row"] == [1.0, 0.0, 1.0]
    assert acc["final"]["acc"] == pytest.approx(2 / 3, abs=1e-5)


def test_cli_transfer_prints_deltas_and_the_branch(learned, tmp_path, monkeypatch, capsys):
    store = _copy_run(learned, tmp_path)
    new = scripted_lm(contrarian_answer, name="scripted/contrarian")
    monkeypatch.setattr(transfer_module, "get_lm", lambda spec, **kw: new if spec == "fake:new" else reflection_lm())
    monkeypatch.setattr(ctxopt.streams, "load_stream", lambda name, **kw: toy_stream())
    rc = main(["transfer", "--store", str(store.path), "--to-lm", "fake:new", "--json",
               "--work-dir", str(tmp_path / "w")])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["branch"] == "transfer/fake-new" and out["kept"] == "transferred"
    assert {r["task"]: r["delta"] for r in out["rows"]} == {"suffix": 1.0, "reverse": -1.0, "double": 1.0}
    rc = main(["transfer", "--store", str(tmp_path / "nope"), "--to-lm", "fake:new"])
    assert rc == 2 and "not a ctxopt store" in capsys.readouterr().err
