"""Wall time of one step that survives a kill.

A resumed run restarts a step that was cut off from its beginning; what the
killed attempt already did is answered from the caches at once. The step's
wall time should still say what the step cost. While a step runs, a
:class:`StepClock` writes the seconds spent so far to a small JSON file every
:data:`INTERVAL_S` seconds and on exit; the next attempt at the same step adds
them, so at most one interval is lost to ``SIGKILL``. The owner calls
:meth:`StepClock.finish` once the step is saved.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "clock.json"
    >>> with StepClock(path, step=1) as clock:
    ...     pass
    >>> clock.attempts, StepClock(path, step=1).attempts, StepClock(path, step=2).attempts
    (1, 2, 1)
    >>> clock.finish(); StepClock(path, step=1).attempts
    1
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from ctxopt._atomic import write_json

INTERVAL_S = 15.0


class StepClock:
    """Seconds spent on step ``step`` over all its attempts, kept in ``path``.

    ``attempts`` counts this attempt too; ``prior`` is what earlier attempts spent.
    """

    def __init__(self, path: str | Path, step: int) -> None:
        self.path, self.step = Path(path), step
        self.prior, self.attempts = 0.0, 1
        if self.path.exists():
            old = json.loads(self.path.read_text(encoding="utf-8"))
            if old.get("step") == step:
                self.prior, self.attempts = float(old["seconds"]), int(old["attempts"]) + 1
        self._stop = threading.Event()
        self._started: float | None = None
        self._ended: float | None = None

    @property
    def seconds(self) -> float:
        """Seconds over all attempts (frozen once the step has left the clock)."""
        if self._started is None:
            return self.prior
        return self.prior + (self._ended or time.perf_counter()) - self._started

    def _write(self) -> None:
        write_json(self.path, {"step": self.step, "seconds": round(self.seconds, 3), "attempts": self.attempts})

    def _beat(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            self._write()

    def __enter__(self) -> StepClock:
        self._started = time.perf_counter()
        self._write()
        self._thread = threading.Thread(target=self._beat, name="ctxopt-step-clock", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._ended = time.perf_counter()
        self._write()

    def finish(self) -> None:
        """The step is saved: forget its time, so no later step is charged for it."""
        self.path.unlink(missing_ok=True)
