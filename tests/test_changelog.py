"""Commit messages of a store read like a changelog: one line per edit, what changed and why (ctxopt.changelog)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ctxopt.changelog import changelog_lines, commit_message, parse_commit
from ctxopt.context import Demo, LearnedContext, PredictorContext
from ctxopt.edits import AddDemo, AddItem, DeleteItem, RewriteInstruction
from ctxopt.store import Store

BASE = LearnedContext({"qa": PredictorContext("Answer the question.")})
DEMO = Demo(inputs={"word": "hot"}, outputs={"antonym": "cold"}, scope="antonyms")
RULE = AddItem("qa", "Give the opposite of the word, in lower case. " * 4, rationale="answers were capitalised")
INSTR = RewriteInstruction("qa", "Name the antonym of the word.")


def proposal(name: str, source: str, edits: list, rationale: str | None = None) -> dict:
    """A proposal dict as the optimizer stores it in commit metadata."""
    d = {"proposal": name, "source": source, "edits": [e.to_dict() for e in edits]}
    if rationale is not None:
        d["rationale"] = rationale
    return d


def git_log(store: Store) -> str:
    return subprocess.run(["git", "-C", str(store.path), "log"], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.init(tmp_path / "store")
    s.commit(BASE, "initial context C0", {"step": 0})
    return s


def test_git_log_of_an_optimizer_commit_reads_like_a_changelog(store):
    learned = BASE.apply_edits([AddDemo("qa", DEMO), RULE, INSTR], step=1, task="antonyms")
    meta = {
        "step": 1,
        "task": "antonyms",
        "edits": [
            proposal("demos0", "demos", [AddDemo("qa", DEMO)], rationale="labelled demo set 0"),
            proposal("refl-1", "reflection", [RULE, INSTR]),
        ],
    }
    store.commit(learned, "step 1 antonyms: accept 2 proposal(s) — val 0.50 → 0.80", meta)
    log = git_log(store)
    lines = [line.strip() for line in log.splitlines()]
    demo = f"- qa: add demo {DEMO.id} [task antonyms] word='hot' → antonym='cold'  (demos proposal demos0: labelled demo set 0)"
    assert demo in lines
    rule = next(line for line in lines if line.startswith(f"- qa: add rule {RULE.item_id}"))
    assert rule.endswith("(reflection proposal refl-1: answers were capitalised)")  # the edit's own rationale
    assert "…" in rule and len(rule) < 200  # the long rule text is shortened
    assert "- qa: rewrite instruction: 'Name the antonym of the word.'  (reflection proposal refl-1)" in lines
    assert not any("{'" in line or "'edits':" in line for line in lines)


def test_git_log_of_plain_edit_dicts_and_edit_objects(store):
    learned = BASE.apply_edits([RULE, INSTR], step=1)
    store.commit(learned, "hand edit", {"edits": [RULE.to_dict(), INSTR]})
    lines = [line.strip() for line in git_log(store).splitlines()]
    rule = next(line for line in lines if line.startswith(f"- qa: add rule {RULE.item_id}"))
    assert rule.endswith("(answers were capitalised)")
    assert "- qa: rewrite instruction: 'Name the antonym of the word.'" in lines
    assert not any("{'" in line for line in lines)


# -- the formatter on its own ---------------------------------------------------------


def test_proposal_dicts_give_one_line_per_edit_with_what_and_why():
    lines = changelog_lines([proposal("demos0", "demos", [AddDemo("qa", DEMO)], rationale="labelled demo set 0"),
                             proposal("refl-2", "reflection", [INSTR], rationale="")])
    assert lines == [
        f"- qa: add demo {DEMO.id} [task antonyms] word='hot' → antonym='cold'  (demos proposal demos0: labelled demo set 0)",
        "- qa: rewrite instruction: 'Name the antonym of the word.'  (reflection proposal refl-2)",
    ]


def test_plain_edit_dicts_and_edit_objects_still_format():
    lines = changelog_lines([INSTR.to_dict(), RULE, DeleteItem("qa", "r-1a2b3c4d", rationale="hurt\naccuracy")])
    assert lines[0] == "- qa: rewrite instruction: 'Name the antonym of the word.'"
    assert lines[1].startswith(f"- qa: add rule {RULE.item_id}: 'Give the opposite") and "…" in lines[1]
    assert lines[1].endswith("(answers were capitalised)")
    assert lines[2] == "- qa: delete item r-1a2b3c4d  (hurt accuracy)"


def test_long_texts_are_shortened():
    long_demo = Demo(inputs={"text": "x " * 200, "a": 1, "b": [1], "c": {"k": 1}}, outputs={"label": "y" * 100})
    (line,) = changelog_lines([proposal("p", "demos", [AddDemo("qa", long_demo)], rationale="why " * 100)])
    assert len(line) < 250 and line.count("…") >= 3 and "\n" not in line
    assert "b=<1 item>, …" in line and "label='yyyy" in line


@pytest.mark.parametrize(
    "entry, expected",
    [
        ({"note": "hand-made", "nested": {"a": {"b": 1}}, "n": None}, "- note='hand-made', nested=<1 field>, n=null"),
        ({"op": "frobnicate", "predictor": "qa"}, "- op='frobnicate', predictor='qa'"),
        ({"op": "add_item", "predictor": "qa"}, "- op='add_item', predictor='qa'"),  # missing text: not an edit
        ({"proposal": "p", "source": "ablation", "edits": []}, "- no edits  (ablation proposal p)"),
        ({"kind": "merge", "rationale": "near-duplicates", "edits": ["odd"]}, "- odd  (merge: near-duplicates)"),
        ("free text\nover two lines", "- free text over two lines"),
        (["a", 2], "- 'a', 2"),
        (7, "- 7"),
        ({}, "- (empty)"),
    ],
)
def test_unknown_shapes_give_one_readable_line(entry, expected):
    assert changelog_lines([entry]) == [expected]


def test_at_most_limit_lines_then_a_count():
    edits = [AddItem("qa", f"rule {i}") for i in range(5)]
    lines = changelog_lines([proposal("p", "reflection", edits)], limit=3)
    assert len(lines) == 4 and lines[-1] == "- … and 2 more"


def test_parse_commit_strips_the_trailers_commit_message_writes():
    meta = {"context_hash": "ab12", "kind": "commit", "task": "t", "step": 3, "scores": {"val": 0.5},
            "edits": [INSTR.to_dict()]}
    text = commit_message("step 3", "body line", meta)
    trailers = ["Ctxopt-Context-Hash: ab12", "Ctxopt-Kind: commit", "Ctxopt-Task: t", "Ctxopt-Step: 3",
                'Ctxopt-Scores: {"val":0.5}']
    assert text.splitlines()[-5:] == trailers
    raw = f"tree {'0' * 40}\nparent {'1' * 40}\ncommitter c <c@x> 1700000000 +0130\n\n{text}".encode()
    parsed = parse_commit(raw)
    assert parsed.parents == ("1" * 40,) and parsed.timestamp == "2023-11-14T23:43:20+01:30"
    assert parsed.message == "step 3\n\nbody line\n\nEdits:\n- qa: rewrite instruction: 'Name the antonym of the word.'"


def test_a_nul_byte_in_an_edit_is_committed_escaped(tmp_path):
    from ctxopt.context import LearnedContext, PredictorContext
    from ctxopt.edits import AddItem
    from ctxopt.store import Store

    store = Store.init(tmp_path / "s")
    base = LearnedContext({"p": PredictorContext("Answer.")})
    store.commit(base, "C0")
    edit = AddItem("p", "0", rationale="\x00")  # found by the property test in test_store.py
    ctx = base.apply_edits([edit], step=0, task="t")
    v = store.commit(ctx, "step 0", {"step": 0, "edits": [edit.to_dict()]})
    assert store.current().hash == ctx.hash
    assert "\x00" not in v.message and store.log()[0].rev == v.rev
