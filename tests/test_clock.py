"""StepClock: a step's wall time survives a kill, and only that step's."""

from __future__ import annotations

import json
import time

from ctxopt import _clock
from ctxopt._clock import StepClock


def test_the_clock_is_on_disk_while_the_step_runs_and_the_next_attempt_adds_it(tmp_path, monkeypatch):
    monkeypatch.setattr(_clock, "INTERVAL_S", 0.02)
    path = tmp_path / "clock.json"
    with StepClock(path, 4) as first:
        time.sleep(0.2)
        mid = json.loads(path.read_text())  # what a SIGKILL would leave behind
    assert mid["step"] == 4 and mid["attempts"] == 1 and 0.1 <= mid["seconds"] < first.seconds
    frozen = first.seconds
    time.sleep(0.05)
    assert first.seconds == frozen  # stops counting when the step leaves the clock
    with StepClock(path, 4) as second:
        time.sleep(0.1)
    assert second.attempts == 2 and second.prior == round(frozen, 3) and second.seconds >= frozen + 0.1


def test_another_step_or_a_finished_one_starts_from_zero(tmp_path):
    path = tmp_path / "clock.json"
    with StepClock(path, 1):
        time.sleep(0.05)
    assert StepClock(path, 2).prior == 0.0 and StepClock(path, 2).attempts == 1
    StepClock(path, 1).finish()
    assert not path.exists() and StepClock(path, 1).prior == 0.0
