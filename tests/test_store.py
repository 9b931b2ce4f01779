"""The git-backed store: round-trips, history operations, safety and exchange."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import dspy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctxopt.context import Demo, LearnedContext, PredictorContext
from ctxopt.edits import AddDemo, AddItem, DeleteItem, MergeItems, RemoveDemo, RewriteInstruction, UpdateItem
from ctxopt.errors import ConfigError, EditError, StoreError, StoreLockedError
from ctxopt.store import Store, Version, validate_ref_name

BASE = LearnedContext({"qa.predict": PredictorContext("Answer the question."), "cls": PredictorContext("Label it.")})


def git(store: Store, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=store.path, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.init(tmp_path / "store")


def grow(ctx: LearnedContext, n: int, step: int) -> LearnedContext:
    return ctx.apply_edits([AddItem("qa.predict", f"rule {step}.{i}") for i in range(n)], step=step, task="t")


# -- property: edits -> commit -> checkout round-trip -------------------------------

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(str.strip)
scopes = st.sampled_from(["global", "math", "code"])


@st.composite
def edit_sequences(draw):
    ctx = BASE
    versions = []
    for _ in range(draw(st.integers(1, 4))):
        edits = []
        for _ in range(draw(st.integers(1, 3))):
            pred = draw(st.sampled_from(["qa.predict", "cls"]))
            ids = [it.id for it in ctx.items(pred)]
            demo_ids = [d.id for d in ctx.predictor(pred).demos]
            choice = draw(st.integers(0, 6))
            if choice == 0 or not ids and choice in (1, 2, 3):
                kind = draw(st.sampled_from(["rule", "note", "strategy"]))
                e = AddItem(pred, draw(texts), scope=draw(scopes), kind=kind, rationale=draw(texts))
            elif choice == 1:
                e = UpdateItem(pred, draw(st.sampled_from(ids)), draw(texts))
            elif choice == 2:
                e = DeleteItem(pred, draw(st.sampled_from(ids)))
            elif choice == 3 and len(ids) >= 2:
                e = MergeItems(pred, tuple(draw(st.permutations(ids))[:2]), draw(texts))
            elif choice == 4:
                e = RewriteInstruction(pred, draw(texts) + draw(st.sampled_from(["", "\n  second line ", "\n"])))
            elif choice == 5 or not demo_ids:
                e = AddDemo(pred, Demo(inputs={"q": draw(texts)}, outputs={"a": draw(texts)}, scope=draw(scopes)))
            else:
                e = RemoveDemo(pred, draw(st.sampled_from(demo_ids)))
            try:
                ctx = ctx.apply_edits([e], step=len(versions), task="math")
            except EditError:
                continue  # no-ops (same text twice) are filtered, as callers do
            edits.append(e)
        versions.append((ctx, edits))
    return versions


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(edit_sequences())
def test_random_edits_commit_checkout_round_trip(tmp_path_factory, versions):
    store = Store.init(tmp_path_factory.mktemp("prop") / "s")
    store.commit(BASE, "base")
    committed = []
    for i, (ctx, edits) in enumerate(versions):
        v = store.commit(ctx, f"step {i}", {"step": i, "edits": edits})
        assert v.context_hash == ctx.hash
        committed.append((v, ctx))
    for v, ctx in reversed(committed):
        store.checkout(v.rev)
        got = store.current()
        assert got == ctx and got.hash == ctx.hash
        assert store.show(v.short) == ctx


# -- basics ---------------------------------------------------------------------------


def test_commit_log_show_and_metadata(store):
    assert store.head() is None and store.current() is None and store.log() == []
    v0 = store.commit(BASE, "initial context", {"step": 0})
    c1 = grow(BASE, 2, 1)
    meta = {"task": "t", "step": 1, "scores": {"val": 0.75}, "edits": [AddItem("qa.predict", "rule 1.0")]}
    v1 = store.commit(c1, "learned two rules", meta)
    assert [v.rev for v in store.log()] == [v1.rev, v0.rev]
    assert store.log(limit=1) == [store.head()]
    assert v1.parents == (v0.rev,) and v0.parents == ()
    assert store.show() == c1 and store.show(v0.rev) == BASE and store.show("HEAD~1") == BASE
    meta = store.metadata()
    assert meta["scores"] == {"val": 0.75} and meta["task"] == "t" and meta["context_hash"] == c1.hash
    assert meta["edits"][0]["op"] == "add_item"
    assert isinstance(v1, Version) and Version.from_dict(json.loads(json.dumps(v1.to_dict()))) == v1


def test_unchanged_context_is_not_committed_unless_allow_empty(store):
    v0 = store.commit(BASE, "initial")
    assert store.commit(BASE, "again") == v0
    v1 = store.commit(BASE, "again", allow_empty=True)
    assert v1.rev != v0.rev and len(store.log()) == 2


def test_store_files_are_human_readable_and_plain_git_shows_history(store):
    store.commit(BASE, "initial")
    store.commit(grow(BASE, 1, 1), "learned a rule", {"step": 1, "task": "t", "edits": [AddItem("qa.predict", "rule 1.0")]})
    yaml_text = (store.path / "context" / "qa.predict.yaml").read_text()
    assert "rule 1.0" in yaml_text and "instruction: Answer the question." in yaml_text
    log = git(store, "log", "--format=%s%n%b")
    assert "learned a rule" in log and "add rule" in log and "Ctxopt-Context-Hash:" in log and "Ctxopt-Step: 1" in log
    diff = git(store, "diff", "HEAD~1", "HEAD", "--", "context")
    assert "+- id: r-" in diff and "+  text: rule 1.0" in diff
    assert git(store, "status", "--porcelain") == ""


def test_revisions_by_short_sha_branch_tag_and_head_n(store):
    v0 = store.commit(BASE, "a")
    v1 = store.commit(grow(BASE, 1, 1), "b")
    store.tag("first", v0.rev)
    assert store.resolve(v0.rev[:8]) == v0.rev
    assert store.resolve("first") == store.resolve("HEAD~1") == store.resolve("HEAD^") == v0.rev
    assert store.resolve("main") == v1.rev
    for bad in ("nope", "HEAD~9", "--all", "a..b", "HEAD:metadata.json", "x y", ""):
        with pytest.raises(StoreError):
            store.resolve(bad)


def test_semantic_and_textual_diff(store):
    c0 = grow(BASE, 2, 0)
    v0 = store.commit(c0, "a")
    ids = [it.id for it in c0.items("qa.predict")]
    c1 = c0.apply_edits(
        [
            UpdateItem("qa.predict", ids[0], "rule changed"),
            DeleteItem("qa.predict", ids[1]),
            AddItem("cls", "new"),
            RewriteInstruction("cls", "Label."),
        ]
    )
    v1 = store.commit(c1, "b")
    d = store.diff(v0.rev, v1.rev)
    by_name = {p.name: p for p in d.predictors}
    assert by_name["cls"].instruction == ("Label it.", "Label.")
    assert [it.text for it in by_name["cls"].items_added] == ["new"]
    assert [it.id for it in by_name["qa.predict"].items_removed] == [ids[1]]
    assert by_name["qa.predict"].items_changed[0].fields == ("text",)
    text = d.to_text()
    assert "instruction" in text and "+ " in text and "- " in text and "~ " in text
    assert "-  text: rule 0.0" in d.textual and "+  text: rule changed" in d.textual
    assert store.diff("HEAD", "HEAD").is_empty and "no differences" in store.diff("HEAD", "HEAD").to_text()


def test_rollback_is_a_new_commit_and_history_is_kept(store):
    v0 = store.commit(BASE, "a")
    v1 = store.commit(grow(BASE, 1, 1), "b")
    v2 = store.rollback(v0.rev, reason="rule hurt accuracy")
    assert v2.parents == (v1.rev,) and v2.context_hash == BASE.hash and store.current() == BASE
    assert v2.metadata["kind"] == "rollback" and v2.metadata["rollback_to"] == v0.rev
    assert "rule hurt accuracy" in v2.message
    assert [v.rev for v in store.log()] == [v2.rev, v1.rev, v0.rev]
    assert store.rollback(v0.rev) == v2  # already there: nothing new


def test_branch_switch_tag_and_detached_checkout(store):
    v0 = store.commit(BASE, "a")
    store.branch("explore")
    assert store.branches() == ["explore", "main"] and store.current_branch() == "main"
    store.switch("explore")
    v1 = store.commit(grow(BASE, 1, 1), "on explore")
    assert store.current_branch() == "explore" and store.resolve("main") == v0.rev
    store.switch("main")
    assert store.current() == BASE and (store.path / "context" / "qa.predict.yaml").read_text().count("rule") == 0
    store.tag("v1", v1.rev, message="best so far")
    store.tag("v0")
    assert store.tags() == ["v0", "v1"] and store.resolve("v1") == v1.rev
    store.checkout("v1")
    assert store.current_branch() is None and store.current() == grow(BASE, 1, 1)
    store.checkout("main")
    assert store.current_branch() == "main"
    with pytest.raises(StoreError, match="already exists"):
        store.branch("explore")
    with pytest.raises(StoreError, match="already exists"):
        store.tag("v0")
    with pytest.raises(StoreError, match="no branch named 'ghost'"):
        store.switch("ghost")


ODD_NAMES = ["../evil", "a/../b", "-rf", ".hidden", "x.lock", "a b", "HEAD", "refs/heads/x", "a~1", "a:b", "",
             "x" * 101, "deadbeef", "tab\t"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_ref_names_are_rejected(store, name):
    store.commit(BASE, "a")
    with pytest.raises(ConfigError, match="invalid branch name"):
        store.branch(name)
    with pytest.raises(ConfigError, match="invalid tag name"):
        store.tag(name)
    assert store.branches() == ["main"] and store.tags() == []


def test_good_ref_names_pass():
    for name in ("exp-1", "user/try_2", "v1.0", "release/2025.01"):
        assert validate_ref_name(name) == name


def test_a_directory_that_is_not_a_store_gives_one_line_errors(tmp_path):
    for p in (tmp_path / "missing", tmp_path):
        with pytest.raises(StoreError) as info:
            Store.open(p)
        assert "is not a ctxopt store" in str(info.value) and "\n" not in str(info.value)
    subprocess.run(["git", "init", "-q", str(tmp_path / "plain")], check=True)
    with pytest.raises(StoreError, match="not a ctxopt store"):
        Store.open(tmp_path / "plain")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(StoreError, match="not an empty directory"):
        Store.init(tmp_path / "full")


def test_init_is_idempotent(tmp_path):
    s = Store.init(tmp_path / "s")
    v = s.commit(BASE, "a")
    assert Store.init(tmp_path / "s").head() == v


def test_secrets_are_redacted_from_metadata_and_messages(store):
    meta = {
        "lms": {"task": {"model": "openai/gpt-4o-mini", "api_key": "sk-proj-abcdefghijklmnopqrstuv", "max_tokens": 512}},
        "token": "hunter2",
        "client_secret": "s3cr3t",
        "note": "used key sk-abcdefghijklmnop1234 and hf_abcdefghijklmnopqrstuvwx",
        "scores": {"token_count": 10},
        "scenario": "task-agnostic",  # not a key: "sk-" inside a word
    }
    store.commit(BASE, "commit with sk-zzzzzzzzzzzzzzzzzzzz in message", meta)
    raw = json.dumps(store.metadata()) + git(store, "log", "-p", "--all")
    secrets = ("sk-proj-abcdefghijklmnopqrstuv", "hunter2", "s3cr3t", "sk-abcdefghijklmnop1234",
               "hf_abcdefghijklmnopqrstuvwx", "sk-zzzz")
    for secret in secrets:
        assert secret not in raw
    saved = store.metadata()
    assert saved["lms"]["task"]["max_tokens"] == 512 and saved["scores"]["token_count"] == 10
    assert saved["lms"]["task"]["model"] == "openai/gpt-4o-mini" and saved["scenario"] == "task-agnostic"


def test_lm_objects_in_metadata_are_recorded_without_keys(store):
    lm = dspy.LM("openai/gpt-4o-mini", api_key="sk-live-abcdefghijklmnopqrstu", temperature=0.0)
    store.commit(BASE, "a", {"lms": {"task": lm}})
    saved = store.metadata()["lms"]["task"]
    assert saved["model"] == "openai/gpt-4o-mini" and "sk-live" not in json.dumps(saved)


def test_loading_never_unpickles_or_executes(store, tmp_path):
    store.commit(BASE, "a")
    evil = "!!python/object/apply:os.system ['touch " + str(tmp_path / "pwned") + "']"
    (store.path / "context" / "cls.yaml").write_text(f"predictor: cls\ninstruction: {evil}\n")
    subprocess.run(["git", "-c", "user.name=x", "-c", "user.email=x@y", "commit", "-qam", "evil"], cwd=store.path, check=True)
    with pytest.raises(StoreError, match="cls.yaml"):
        store.show()
    assert not (tmp_path / "pwned").exists()


def test_lock_times_out_with_a_clear_message(tmp_path):
    s = Store.init(tmp_path / "s")
    s.commit(BASE, "a")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from ctxopt.store import Store\n"
         "s=Store.open(sys.argv[1])\nwith s.lock():\n    print('locked', flush=True); time.sleep(30)", str(s.path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(StoreLockedError, match=rf"locked by another writer \(pid {holder.pid}\)"):
            Store.open(s.path, lock_timeout=0.3).commit(grow(BASE, 1, 1), "b")
        assert 0.25 < time.monotonic() - t0 < 5
        assert len(s.log()) == 1  # reads need no lock
    finally:
        holder.kill()
        holder.wait()
    Store.open(s.path, lock_timeout=2).commit(grow(BASE, 1, 1), "b")  # the kernel freed the lock


def test_concurrent_writers_are_serialized_into_a_linear_history(tmp_path):
    Store.init(tmp_path / "s").commit(BASE, "base")
    errors = []

    def writer(k: int) -> None:
        s = Store.open(tmp_path / "s")
        try:
            for i in range(5):
                with s.lock():
                    ctx = s.current().apply_edits([AddItem("cls", f"writer {k} rule {i}")])
                    s.commit(ctx, f"writer {k} step {i}")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s = Store.open(tmp_path / "s")
    log = s.log()
    assert len(log) == 16 and all(len(v.parents) <= 1 for v in log)
    assert len(s.current().items("cls")) == 15


def test_export_import_bundle_round_trip(store, tmp_path):
    v0 = store.commit(BASE, "a")
    store.branch("exp")
    v1 = store.commit(grow(BASE, 3, 1), "b", {"step": 1})
    store.tag("best")
    bundle = store.export_bundle(tmp_path / "out" / "ctx.bundle")
    other = Store.import_bundle(bundle, tmp_path / "copy")
    assert [v.rev for v in other.log()] == [v1.rev, v0.rev]
    assert other.current() == store.current() and other.branches() == ["exp", "main"] and other.tags() == ["best"]
    assert other.current_branch() == "main" and other.metadata()["step"] == 1
    assert (other.path / "context" / "qa.predict.yaml").exists()
    with pytest.raises(StoreError, match="not an empty directory"):
        Store.import_bundle(bundle, tmp_path / "copy")
    (tmp_path / "junk.bundle").write_text("not a bundle")
    with pytest.raises(StoreError, match="not a valid git bundle"):
        Store.import_bundle(tmp_path / "junk.bundle", tmp_path / "c2")
    assert not (tmp_path / "c2").exists()
    with pytest.raises(StoreError, match="does not exist"):
        Store.import_bundle(tmp_path / "none.bundle", tmp_path / "c3")


def test_empty_store_cannot_export_or_show(store, tmp_path):
    with pytest.raises(StoreError, match="no versions"):
        store.export_bundle(tmp_path / "b")
    with pytest.raises(StoreError, match="no versions yet"):
        store.show()


class Prog(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qa = dspy.ChainOfThought("question -> answer")
        self.cls = dspy.Predict("text -> label")


def test_export_dspy_loads_with_plain_program_load(store, tmp_path):
    ctx = LearnedContext.from_program(Prog()).apply_edits(
        [AddItem("cls", "Sarcasm is negative."), AddDemo("cls", Demo(inputs={"text": "meh"}, outputs={"label": "neg"}))]
    )
    store.commit(ctx, "learned")
    path = store.export_dspy(Prog(), tmp_path / "prog.json")
    assert "ctxopt" not in path.read_text()
    fresh = Prog()
    fresh.load(str(path))
    assert fresh.cls.signature.instructions == ctx.render("cls")
    assert [dict(d) for d in fresh.cls.demos] == [{"text": "meh", "label": "neg"}]
    # the program-free export is also loadable by DSPy itself
    path2 = store.export_dspy_state(tmp_path / "state.json")
    fresh2 = Prog()
    fresh2.load(str(path2))
    assert fresh2.cls.signature.instructions == ctx.render("cls")
    assert fresh2.qa.predict.signature.instructions == fresh.qa.predict.signature.instructions
    with pytest.raises(ConfigError, match=".json"):
        store.export_dspy(Prog(), tmp_path / "prog.pkl")


def test_stale_git_lock_files_from_a_killed_writer_are_recovered(store):
    store.commit(BASE, "a")
    (store.path / ".git" / "refs" / "heads" / "main.lock").write_text("junk")
    (store.path / ".git" / "index.lock").write_text("")
    v = store.commit(grow(BASE, 1, 1), "b")
    assert store.head() == v and not (store.path / ".git" / "index.lock").exists()


def test_multiline_and_unicode_text_round_trip(store):
    ctx = BASE.apply_edits(
        [
            AddItem("cls", "line one\n  indented\ttab \nline three  "),
            AddItem("cls", "émoji 🙂 — “quotes” 'single' : # not a comment"),
            RewriteInstruction("qa.predict", "  leading spaces\n\ntrailing blank\n\n"),
            AddItem("cls", "yes"),
            AddItem("cls", "0x1F"),
        ]
    )
    store.commit(ctx, "tricky")
    assert store.show() == ctx and store.show().hash == ctx.hash
