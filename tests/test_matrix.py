"""Continual-learning metrics on hand-computed matrices, and run results on disk."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctxopt.errors import DataError
from ctxopt.matrix import (
    RunResult,
    StepRecord,
    acc,
    bwt,
    cumulative_loss,
    forgetting,
    fwt,
    load_results,
)

R3 = [
    [0.8, 0.1, 0.2],
    [0.6, 0.9, 0.3],
    [0.5, 0.7, 1.0],
]
R0_3 = [0.1, 0.2, 0.1]

# Row 1 scores task 2 at 0.8 before it is learned, higher than after (0.6):
# forgetting only counts the steps since a task was learned.
R4 = [
    [1.0, 0.0, 0.5, 0.0],
    [0.5, 1.0, 0.8, 0.25],
    [0.75, 0.5, 0.6, 0.5],
    [0.25, 0.75, 0.5, 1.0],
]
R0_4 = [0.0, 0.25, 0.25, 0.0]


def test_3x3_hand_computed():
    assert acc(R3) == pytest.approx((0.5 + 0.7 + 1.0) / 3)
    assert bwt(R3) == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 2)  # -0.25
    assert fwt(R3, R0_3) == pytest.approx(((0.1 - 0.2) + (0.3 - 0.1)) / 2)  # 0.05
    assert forgetting(R3) == pytest.approx([0.3, 0.2, 0.0])
    # step 0: 0.2; step 1: (0.4 + 0.1)/2; step 2: (0.5 + 0.3 + 0.0)/3
    assert cumulative_loss(R3) == pytest.approx(0.2 + 0.25 + 0.8 / 3)


def test_4x4_hand_computed():
    assert acc(R4) == pytest.approx(0.625)
    assert bwt(R4) == pytest.approx((-0.75 - 0.25 - 0.1) / 3)
    assert fwt(R4, R0_4) == pytest.approx((-0.25 + 0.55 + 0.5) / 3)
    assert forgetting(R4) == pytest.approx([0.75, 0.25, 0.1, 0.0])
    assert cumulative_loss(R4) == pytest.approx(0.0 + 0.25 + 1.15 / 3 + 0.375)


def test_single_task_and_bad_shapes():
    assert (acc([[0.4]]), bwt([[0.4]]), fwt([[0.4]], [0.1]), forgetting([[0.4]])) == (0.4, 0.0, 0.0, [0.0])
    assert cumulative_loss([[0.4]]) == pytest.approx(0.6)
    with pytest.raises(DataError, match="empty"):
        acc([])
    with pytest.raises(DataError, match="square"):
        bwt([[1.0, 0.0]])
    with pytest.raises(DataError, match="r0 has 2 entries, expected 3"):
        fwt(R3, [0.0, 0.0])


matrices = st.integers(1, 5).flatmap(
    lambda n: st.lists(st.lists(st.floats(0, 1), min_size=n, max_size=n), min_size=n, max_size=n)
)


@given(matrices)
def test_forgetting_bounds_backward_transfer(R):
    n = len(R)
    f = forgetting(R)
    assert len(f) == n and f[-1] == 0.0
    if n > 1:  # each task's forgetting is at least its own drop since it was learned
        assert sum(f[:-1]) / (n - 1) >= -bwt(R) - 1e-9
    assert 0.0 <= cumulative_loss(R) <= n + 1e-9


def _run(method: str = "static") -> RunResult:
    steps = [
        StepRecord(i, t, context_tokens=10 * (i + 1), task_calls=50, task_tokens=5000, reflection_calls=2,
                   reflection_tokens=900, wall_s=1.5, accepted=i % 2 == 0, extra={"edits": i})
        for i, t in enumerate(["a", "b", "c"])
    ]
    return RunResult(method, ["a", "b", "c"], R0_3, [list(r) for r in R3], steps, {"stream": "toy"})


def test_run_result_summary_and_round_trip():
    r = _run()
    s = r.summary()
    assert s["acc"] == pytest.approx(acc(R3)) and s["fwt"] == pytest.approx(fwt(R3, R0_3))
    assert (s["calls"], s["tokens"], s["task_calls"], s["reflection_calls"]) == (156, 17700, 150, 6)
    assert s["context_tokens"] == 30 and s["wall_s"] == pytest.approx(4.5)
    assert RunResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_partial_run_scores_the_square_learned_so_far():
    r = RunResult("m", ["a", "b", "c"], R0_3, [list(r) for r in R3[:2]])
    assert not r.complete
    assert r.summary()["acc"] == pytest.approx((0.6 + 0.9) / 2)
    with pytest.raises(DataError, match="row 0 has 2 entries for 3 tasks"):
        RunResult("m", ["a", "b", "c"], R0_3, [[0.1, 0.2]])


def test_save_merges_methods_and_load_reads_subfolders(tmp_path):
    _run("static").save(tmp_path)
    _run("ctxopt").save(tmp_path)
    replaced = _run("static")
    replaced.meta["note"] = "rerun"
    replaced.save(tmp_path)  # same method: replaced, not duplicated
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["schema"] == 1 and [r["method"] for r in data["runs"]] == ["ctxopt", "static"]
    _run("gepa").save(tmp_path / "gepa")
    runs = load_results(tmp_path)
    assert [r.method for r in runs] == ["ctxopt", "static", "gepa"]
    assert runs[1].meta["note"] == "rerun"
    assert not list(tmp_path.glob("*.tmp"))


def test_load_results_errors(tmp_path):
    with pytest.raises(DataError, match="run folder not found"):
        load_results(tmp_path / "nope")
    with pytest.raises(DataError, match="no results.json"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text("{broken")
    with pytest.raises(DataError, match="invalid JSON"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"schema": 1, "runs": [{"method": "m"}]}))
    with pytest.raises(DataError, match="run 1: invalid run result"):
        load_results(tmp_path)
