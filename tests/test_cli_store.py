"""The store subcommands, run in-process through ``ctxopt.cli.main``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ctxopt.cli import main
from ctxopt.context import LearnedContext, PredictorContext
from ctxopt.edits import AddItem
from ctxopt.store import Store

BASE = LearnedContext({"qa": PredictorContext("Answer the question.")})


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.init(tmp_path / "store")
    s.commit(BASE, "initial context", {"step": 0})
    learned = BASE.apply_edits([AddItem("qa", "Cite the source.", scope="bio")], step=1, task="bio")
    s.commit(learned, "learned a rule", {"step": 1, "task": "bio"})
    return s


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_log(store, capsys):
    rc, out, err = run(capsys, "log", "--store", str(store.path))
    lines = out.splitlines()
    assert rc == 0 and err == "" and len(lines) == 2
    assert "learned a rule" in lines[0] and "step 1, task bio" in lines[0] and "(HEAD, main)" in lines[0]
    rc, out, _ = run(capsys, "log", "--store", str(store.path), "-n", "1", "--json")
    assert rc == 0 and [v["message"] for v in json.loads(out)] == ["learned a rule"]


def test_log_of_empty_store(tmp_path, capsys):
    Store.init(tmp_path / "e")
    rc, out, _ = run(capsys, "log", "--store", str(tmp_path / "e"))
    assert rc == 0 and "no versions yet" in out


def test_show(store, capsys):
    rc, out, _ = run(capsys, "show", "--store", str(store.path))
    assert rc == 0 and "learned a rule" in out and "[rule, bio] Cite the source." in out
    rc, out, _ = run(capsys, "show", "HEAD~1", "--store", str(store.path), "--rendered")
    assert rc == 0 and out.rstrip().endswith("Answer the question.")
    rc, out, _ = run(capsys, "show", "--store", str(store.path), "--rendered", "--task", "math")
    assert rc == 0 and "Cite" not in out
    rc, out, _ = run(capsys, "show", "--store", str(store.path), "--json")
    assert LearnedContext.from_dict(json.loads(out)["context"]) == store.current()
    rc, _, err = run(capsys, "show", "--store", str(store.path), "--predictor", "nope")
    assert rc == 2 and "no predictor 'nope'" in err


def test_show_and_diff_say_which_entries_are_kept_off_other_inputs(tmp_path, capsys):
    from ctxopt.context import Demo
    from ctxopt.edits import AddDemo, Narrow

    s = Store.init(tmp_path / "store")
    wide = BASE.apply_edits([AddItem("qa", "One letter.", keys=("cat",)),
                             AddDemo("qa", Demo(inputs={"q": "dog"}, outputs={"a": "d"}))], step=1)
    s.commit(wide, "wide", {"step": 1})
    pc = wide.predictor("qa")
    s.commit(wide.apply_edits([Narrow("qa", pc.items[0].id, ("A fine film.",)),
                               Narrow("qa", pc.demos[0].id, ("A dull film.", "Bad."))], step=2), "narrowed", {"step": 2})
    rc, out, _ = run(capsys, "show", "--store", str(s.path))
    assert rc == 0 and "not for 1 inputs like 'A fine film.'] One letter." in out
    assert "not for 2 inputs like 'A dull film.'] q='dog'" in out
    rc, out, _ = run(capsys, "diff", "HEAD~1", "HEAD", "--store", str(s.path))
    assert rc == 0 and "(unless)" in out and f"~ demo {pc.demos[0].id} (unless: 2 counter-keys)" in out


def test_diff(store, capsys):
    rc, out, _ = run(capsys, "diff", "HEAD~1", "HEAD", "--store", str(store.path))
    assert rc == 0 and "+ r-" in out and "[rule, bio] Cite the source." in out
    rc, out, _ = run(capsys, "diff", "HEAD~1", "HEAD", "--store", str(store.path), "--textual")
    assert rc == 0 and "+  text: Cite the source." in out
    rc, out, _ = run(capsys, "diff", "HEAD~1", "HEAD", "--store", str(store.path), "--json")
    assert json.loads(out)["predictors"][0]["items_added"][0]["text"] == "Cite the source."


def test_rollback(store, capsys):
    rc, out, _ = run(capsys, "rollback", "HEAD~1", "--reason", "hurt accuracy", "--store", str(store.path))
    assert rc == 0 and "rolled back to HEAD~1" in out
    assert store.current() == BASE and len(store.log()) == 3 and "hurt accuracy" in store.head().message
    rc, out, _ = run(capsys, "rollback", "HEAD~2", "--store", str(store.path))
    assert rc == 0 and "nothing to roll back" in out and len(store.log()) == 3


def test_branch_tag_switch_checkout(store, capsys):
    p = str(store.path)
    assert run(capsys, "branch", "exp", "HEAD~1", "--store", p)[0] == 0
    rc, out, _ = run(capsys, "branch", "--store", p)
    assert rc == 0 and out.splitlines() == ["  exp", "* main"]
    rc, out, _ = run(capsys, "tag", "best", "--store", p, "-m", "best val score")
    assert rc == 0 and out.startswith("tag best -> ")
    assert run(capsys, "tag", "--store", p)[1].split() == ["best"]
    rc, out, _ = run(capsys, "switch", "exp", "--store", p)
    assert rc == 0 and "switched to branch exp" in out and store.current() == BASE
    rc, out, _ = run(capsys, "checkout", "best", "--store", p)
    assert rc == 0 and "detached HEAD" in out and store.current_branch() is None
    rc, out, _ = run(capsys, "checkout", "main", "--store", p)
    assert rc == 0 and "on branch main" in out


def test_export_import(store, capsys, tmp_path):
    bundle = tmp_path / "ctx.bundle"
    rc, out, _ = run(capsys, "export", str(bundle), "--store", str(store.path))
    assert rc == 0 and bundle.is_file()
    rc, out, _ = run(capsys, "import", str(bundle), "--store", str(tmp_path / "copy"))
    assert rc == 0 and "imported 2 versions" in out
    assert Store.open(tmp_path / "copy").current() == store.current()
    rc, out, err = run(capsys, "export", str(tmp_path / "prog.json"), "--dspy", "--task", "bio",
                       "--store", str(store.path))
    state = json.loads((tmp_path / "prog.json").read_text())
    assert rc == 0 and "Cite the source." in state["qa"]["signature"]["instructions"]
    assert "cannot express per-input retrieval" not in err  # nothing keyed: nothing lost


def test_export_dspy_says_it_cannot_express_retrieval(tmp_path, capsys):
    s = Store.init(tmp_path / "store")
    s.commit(BASE.apply_edits([AddItem("qa", "Cite the source.", keys=("a biology question",))], step=1),
             "learned a keyed rule", {"step": 1})
    rc, _, err = run(capsys, "export", str(tmp_path / "p.json"), "--dspy", "--store", str(s.path))
    assert rc == 0 and "DSPy state cannot express per-input retrieval" in err and "all 1 archival item(s)" in err
    state = json.loads((tmp_path / "p.json").read_text())
    assert "Cite the source." in state["qa"]["signature"]["instructions"]  # the archival item is rendered for all


@pytest.mark.parametrize(
    "argv, message",
    [
        (["log"], "is not a ctxopt store"),
        (["show", "nope"], "unknown revision 'nope'"),
        (["show", "HEAD:metadata.json"], "invalid revision"),
        (["diff", "HEAD", "HEAD~7"], "unknown revision 'HEAD~7'"),
        (["rollback", "../../etc"], "invalid revision"),
        (["branch", "../escape"], "invalid branch name '../escape'"),
        (["branch", "main"], "branch 'main' already exists"),
        (["tag", "a..b"], "invalid tag name"),
        (["switch", "ghost"], "no branch named 'ghost'"),
        (["checkout", "deadbeefdeadbeef"], "unknown revision"),
        (["import", "missing.bundle"], "does not exist"),
        (["export", "x.bundle", "--rev", "HEAD~1"], "--rev and --task apply only with --dspy"),
        (["export", "x.txt", "--dspy"], ".json"),
    ],
)
def test_errors_are_one_line_with_exit_status_2(store, capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    target = str(tmp_path / "not-a-store") if argv == ["log"] else str(store.path)
    rc, out, err = run(capsys, *argv, "--store", target)
    assert rc == 2, (out, err)
    assert err.startswith("ctxopt: error: ") and message in err and err.count("\n") == 1


def test_import_into_a_non_empty_store_fails(store, capsys, tmp_path):
    bundle = store.export_bundle(tmp_path / "b.bundle")
    rc, _, err = run(capsys, "import", str(bundle), "--store", str(store.path))
    assert rc == 2 and "not an empty directory" in err


def test_store_defaults_to_environment_variable(store, capsys, monkeypatch):
    monkeypatch.setenv("CTXOPT_STORE", str(store.path))
    from ctxopt.cli import build_parser

    args = build_parser().parse_args(["log"])
    assert args.store == str(store.path)


def test_lock_timeout_reports_a_clear_error(store, capsys):
    with store.lock():
        rc, _, err = run(capsys, "tag", "t1", "--store", str(store.path), "--lock-timeout", "0.2")
    assert rc == 2 and "locked by another writer" in err


def test_python_dash_m_ctxopt_help_lists_store_commands():
    proc = subprocess.run([sys.executable, "-m", "ctxopt", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for verb in ("log", "show", "diff", "rollback", "branch", "tag", "switch", "checkout", "export", "import"):
        assert f"    {verb} " in proc.stdout
