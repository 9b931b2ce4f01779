"""Run configuration: the YAML file behind ``ctxopt run CONFIG.yaml``, validated by pydantic.

Example ``config.yaml``::

    stream: ii-8                      # built-in stream name or a stream YAML path
    program: builtin                  # the stream's default; or predict, cot, two-stage, react, "package.module:factory"
    stages: credit                    # which predictors learn (ctxopt.credit): credit, rotate or output
    grounded: false                   # also propose data-grounded instructions (ctxopt.grounding)
    task_lm: local
    reflection_lm: local:qwen2.5-coder-1.5b
    budget: light                     # preset, or a mapping: {preset: light, n_trials: 4}
    gate: paired                      # or strict, bootstrap (see ctxopt.gate)
    epsilon: 0.02
    seed: 0
    run_dir: runs/ii-8
    num_threads: 2
    sizes: [40, 30, 50]               # optional train/val/test sizes for built-in streams
    scenario: task-agnostic           # optional: override the stream's scenario (task-aware or task-agnostic)
    consolidate: auto                 # consolidation after every task: auto (on; task-aware: spare LM calls only), true, false
    similarity: auto                  # consolidation's duplicate detection: auto, embedding or lexical
    storage: postgresql+psycopg://ctxopt@localhost/ctxopt   # optional: Optuna studies in a database server
    search_workers: 2                 # optional: search processes per step (needs a database server)

The hard context budget is a budget field: ``budget: {preset: light,
max_context_tokens: 1500}`` (per predictor, on the rendered context; see
:mod:`ctxopt.consolidate`). When a step would exceed it, consolidation runs
first, whether or not ``consolidate`` is set.

A bad key or value is one line naming it (``config.yaml: budget.n_trials: …``).

Example:
    >>> RunConfig.model_validate({"stream": "ii-8", "run_dir": "runs/x"}).budget
    'light'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ctxopt.budget import Budget, get_budget
from ctxopt.errors import ConfigError

__all__ = ["RunConfig", "fit_config", "load_config", "resolve_budget"]


class RunConfig(BaseModel):
    """Everything a run needs; see the module docstring for the YAML form."""

    model_config = ConfigDict(extra="forbid")

    stream: str
    run_dir: str
    program: str = "builtin"
    task_lm: str = "local"
    reflection_lm: str = "local:qwen2.5-coder-1.5b"
    budget: str | dict[str, Any] = "light"
    gate: Literal["paired", "strict", "bootstrap"] = "paired"
    epsilon: float = Field(0.02, ge=0.0, le=1.0)
    seed: int = 0
    num_threads: int = Field(2, ge=1, le=64)
    sizes: tuple[int, int, int] | None = None
    scenario: Literal["task-aware", "task-agnostic"] | None = None
    instruction: str | None = None
    consolidate: bool | None = None
    similarity: Literal["auto", "embedding", "lexical"] = "auto"
    storage: str | None = None
    search_workers: int = Field(1, ge=1, le=64)
    stages: Literal["credit", "rotate", "output"] = "credit"
    grounded: bool = False

    @field_validator("consolidate", mode="before")
    @classmethod
    def _auto_consolidate(cls, value: Any) -> Any:
        return None if value == "auto" else value

    @field_validator("budget")
    @classmethod
    def _check_budget(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        try:
            resolve_budget(value)
        except ConfigError as exc:  # reported by load_config as "<file>: budget: <why>"
            raise ValueError(str(exc)) from exc
        return value

    def budget_obj(self) -> Budget:
        return resolve_budget(self.budget)


def resolve_budget(value: str | dict[str, Any]) -> Budget:
    """A preset name, or a mapping with an optional ``preset`` plus field overrides."""
    if isinstance(value, dict):
        fields = dict(value)
        preset = fields.pop("preset", "light")
        base = get_budget(preset)
        unknown = set(fields) - set(Budget.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown budget key(s) {', '.join(sorted(unknown))}; valid: "
                              f"preset, {', '.join(Budget.__dataclass_fields__)}")
        return get_budget(base, **fields)
    return get_budget(value)


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config; one-line :class:`ConfigError` on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {key}: {msg}") from exc
    from ctxopt.streams import path_exists

    stream = Path(config.stream)
    if not stream.is_absolute() and path_exists(path.parent / stream):
        config = config.model_copy(update={"stream": str(path.parent / stream)})
    return config


def fit_config(config: RunConfig, callbacks: Sequence[Callable[[Any], None]] = (),
               lms: tuple[Any, Any] | None = None) -> Any:
    """Run what ``config`` says (``ctxopt run``, one agent of ``ctxopt fleet``); return the :class:`RunResult`.

    Points DSPy's request cache at ``RUN_DIR/dspy_cache``; resumes a killed run from its last finished task.
    ``lms`` (task LM, reflection LM) reuses LMs already built from ``config``'s specs.
    """
    import dspy

    from ctxopt.lm import get_lm
    from ctxopt.optimizer import ContinualOptimizer
    from ctxopt.program import build_program
    from ctxopt.streams import load_stream

    dspy.configure_cache(disk_cache_dir=str(Path(config.run_dir) / "dspy_cache"))  # the request cache lives with the run
    stream = load_stream(config.stream, seed=config.seed, sizes=config.sizes, scenario=config.scenario)
    program = build_program(config.program, stream, config.instruction)
    task_lm, reflection_lm = lms or (get_lm(config.task_lm), get_lm(config.reflection_lm, max_tokens=768))
    opt = ContinualOptimizer(task_lm, reflection_lm, budget=config.budget_obj(), gate=config.gate,
                             epsilon=config.epsilon, seed=config.seed, num_threads=config.num_threads,
                             callbacks=list(callbacks), consolidate=config.consolidate,
                             consolidator=config.similarity, storage=config.storage,
                             search_workers=config.search_workers, stages=config.stages,
                             grounded=config.grounded)
    return opt.fit(program, stream, run_dir=config.run_dir)
