"""A run directory: the one place that reads and writes a run's state.

Every run, ``ctxopt run``/``fit`` or one method of ``ctxopt compare``, lives in
a folder that :class:`RunDir` owns:

* ``state.json``: what a resumed run needs, written atomically after every
  step: the run's identity (method, stream, tasks, scenario, seed, budget,
  LMs), how many tasks are done, row R₀ and the rows of R, the step records,
  the store revision of the current context, and the method's own state (the
  optimizer's budget ledger);
* ``store/``: the git-backed store; its first version is C₀;
* ``learn_clock.json``: the seconds spent on the step in progress, kept
  across kills (:class:`~ctxopt._clock.StepClock`); removed once the step is
  saved.

A run resumes only under the identity it was started with; anything else is
refused with one line naming the old and new settings. Readers of a finished
run (``ctxopt sleep``, ``transfer``, ``distill``) use :meth:`RunDir.of_store`
and :meth:`RunDir.read_state`.

Example:
    >>> import tempfile
    >>> run = RunDir(tempfile.mkdtemp())
    >>> run.load({"seed": 0}) is None
    True
    >>> run.save(run.new_state({"seed": 0}, rev="abc"))
    >>> run.load({"seed": 0})["done"]
    0
    >>> try:
    ...     run.load({"seed": 1})
    ... except Exception as exc:
    ...     print(str(exc).split(": ", 1)[1])
    this run directory holds another run (seed 0 → 1); resume it with its original settings or use a new run directory
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ctxopt._atomic import write_json
from ctxopt._clock import StepClock
from ctxopt._text import shorten
from ctxopt.errors import ConfigError
from ctxopt.store import Store

__all__ = ["CLOCK_FILE", "STATE_FILE", "STATE_VERSION", "RunDir"]

STATE_FILE = "state.json"
STATE_VERSION = 2
CLOCK_FILE = "learn_clock.json"


def _short(value: Any) -> str:
    return shorten(json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else value, 60)


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``key old → new`` for every differing key (nested dicts, e.g. the budget, as ``budget.key``)."""
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key} {_short(a)} → {_short(b)}")
    return out


class RunDir:
    """One run's folder: ``state.json``, the store and the step clock.

    Args:
        path: The folder (created on first write).
        store: Commit into this store instead of ``path/store`` (e.g. a transfer branch).
    """

    def __init__(self, path: str | Path, store: Store | None = None) -> None:
        self.path = Path(path)
        self._store = store

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def of_store(cls, store: Store) -> RunDir:
        """The run directory that holds ``store`` (its parent folder)."""
        return cls(store.path.parent, store)

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE

    @property
    def store(self) -> Store:
        """The run's git-backed store (``path/store``, created on first use)."""
        if self._store is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._store = Store.init(self.path / "store")
        return self._store

    # ------------------------------------------------------------------ state

    def read_state(self) -> dict[str, Any] | None:
        """The saved state as it is, or None when there is none (for readers of a finished run)."""
        if not self.state_path.is_file():
            return None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.state_path} is not readable run state ({exc})") from None
        if not isinstance(state, dict):
            raise ConfigError(f"{self.state_path} is not readable run state (not a JSON object)")
        return state

    def identity(self) -> dict[str, Any]:
        """The saved run's identity (method, stream, tasks, seed, …), or {} when there is no state."""
        state = self.read_state()
        return dict(state.get("identity") or {}) if state else {}

    def done(self) -> int:
        """How many tasks the saved run has finished (0 without state)."""
        state = self.read_state()
        return int(state.get("done") or 0) if state else 0

    def load(self, identity: dict[str, Any]) -> dict[str, Any] | None:
        """The state of the run started with ``identity``, or None for a new run.

        Raises:
            ConfigError: the folder holds a run of another state version or identity.
        """
        state = self.read_state()
        if state is None:
            return None
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"{self.state_path}: run state version {state.get('version')} is not {STATE_VERSION}; "
                              "use a new run directory")
        changed = _differences(state.get("identity") or {}, identity)
        if changed:
            raise ConfigError(f"{self.state_path}: this run directory holds another run ({'; '.join(changed)}); "
                              "resume it with its original settings or use a new run directory")
        return state

    @staticmethod
    def new_state(identity: dict[str, Any], rev: str | None) -> dict[str, Any]:
        """The state of a run that has done nothing yet."""
        return {"version": STATE_VERSION, "identity": dict(identity), "done": 0, "r0": None, "R": [], "steps": [],
                "rev": rev, "method_state": {}}

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically (a kill leaves the previous state or this one, never half of it)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.state_path, state)

    # ------------------------------------------------------------------ the step clock

    def clock(self, step: int) -> StepClock:
        """The wall clock of ``step``, adding the seconds earlier (killed) attempts spent on it."""
        self.path.mkdir(parents=True, exist_ok=True)
        return StepClock(self.path / CLOCK_FILE, step)
