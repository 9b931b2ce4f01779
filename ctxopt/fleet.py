"""A fleet: many agents, each learning its own stream into its own context C, in its own store.

``ctxopt fleet FLEET.yaml [--executor ray]`` runs every agent as one job
(:mod:`ctxopt.executor`): the same loop as ``ctxopt run``, in
``FLEET_DIR/agents/<name>/`` (``state.json``, git store, caches). Agents share
nothing, so they run in any order and in parallel, and a killed agent resumes
from its last finished task. After every run ``FLEET_DIR/fleet.json`` lists each
agent's ACC, accepted steps, store versions and head.

``FLEET.yaml``::

    fleet_dir: runs/fleet
    defaults:                     # any `ctxopt run` config field but run_dir
      task_lm: local
      reflection_lm: local:qwen2.5-coder-1.5b
      budget: light
      scenario: task-agnostic
    agents:                       # a list of agents ...
      - name: support
        stream: ii:antonyms,ii:synonyms
      - name: triage
        stream: babi:1,2
        seed: 1
    # ... or a generated fleet: count agents on one stream, seeds 0..count-1
    # agents: {count: 50, stream: ii:antonyms,ii:synonyms, prefix: agent}

Example:
    >>> cfg = FleetConfig.model_validate({"fleet_dir": "f", "agents": {"count": 2, "stream": "ii-8"}})
    >>> [(c.run_dir, c.seed) for c in agent_configs(cfg)]
    [('f/agents/agent-000', 0), ('f/agents/agent-001', 1)]
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ctxopt._atomic import write_text
from ctxopt.config import RunConfig
from ctxopt.errors import ConfigError

__all__ = ["FLEET_FILE", "AgentSpec", "FleetConfig", "agent_configs", "load_fleet", "run_agent", "run_fleet"]

FLEET_FILE = "fleet.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class AgentSpec(BaseModel):
    """One agent: a name (its folder) and ``ctxopt run`` config fields that override the defaults."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=_NAME.pattern)


class AgentTemplate(BaseModel):
    """``count`` agents on one stream, named ``<prefix>-000``…, seeded 0, 1, …"""

    model_config = ConfigDict(extra="forbid")
    count: int = Field(ge=1, le=100_000)
    stream: str
    prefix: str = Field("agent", pattern=_NAME.pattern)


class FleetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fleet_dir: str
    defaults: dict[str, Any] = Field(default_factory=dict)
    agents: list[AgentSpec] | AgentTemplate


def load_fleet(path: str | Path) -> FleetConfig:
    """Read and validate a fleet file; one-line :class:`ConfigError` on any problem (agents' configs included)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"fleet file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        fleet = FleetConfig.model_validate(data)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"{path}: {where}: {err['msg']}") from None
    try:
        agent_configs(fleet)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return fleet


def agent_configs(fleet: FleetConfig) -> list[RunConfig]:
    """Each agent's ``ctxopt run`` config: defaults, then its own fields; run_dir ``FLEET_DIR/agents/<name>``."""
    if "run_dir" in fleet.defaults:
        raise ConfigError("defaults.run_dir: each agent's run directory is FLEET_DIR/agents/<name>")
    if isinstance(fleet.agents, AgentTemplate):
        t = fleet.agents
        specs = [{"name": f"{t.prefix}-{i:03d}", "stream": t.stream, "seed": i} for i in range(t.count)]
    else:
        specs = [a.model_dump() for a in fleet.agents]
    names = [s["name"] for s in specs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"agents: two agents are named {dup!r}; each agent needs its own name (its folder)")
    configs = []
    for spec in specs:
        name = spec.pop("name")
        if "run_dir" in spec:
            raise ConfigError(f"agent {name}: run_dir is FLEET_DIR/agents/{name}; do not set it")
        try:
            configs.append(RunConfig.model_validate({**fleet.defaults, **spec,
                                                     "run_dir": f"{fleet.fleet_dir}/agents/{name}"}))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError(f"agent {name}: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None
    return configs


def run_agent(**config: Any) -> dict[str, Any]:
    """One agent's job: fit its config (resuming), and return its summary as plain data."""
    from ctxopt.config import fit_config
    from ctxopt.store import Store

    cfg = RunConfig.model_validate(config)
    result = fit_config(cfg)
    store = Store.open(Path(cfg.run_dir) / "store")
    summary = result.summary()
    return {"name": Path(cfg.run_dir).name, "stream": cfg.stream, "seed": cfg.seed, "acc": summary["acc"],
            "bwt": summary["bwt"], "steps": len(result.steps), "accepted": sum(bool(s.accepted) for s in result.steps),
            "versions": len(store.log()), "head": store.current().hash[:12], "run_dir": cfg.run_dir,
            "task_calls": summary["task_calls"], "wall_s": round(summary["wall_s"], 1)}


def run_fleet(fleet: FleetConfig, executor: str = "local", *, cpus: int | None = None,
              progress: bool = False) -> list[dict[str, Any]]:
    """Run every agent (resuming any that stopped); write ``FLEET_DIR/fleet.json``; return the summaries."""
    from ctxopt.executor import Job, run_jobs
    from ctxopt.rundir import STATE_FILE
    from ctxopt.streams import load_stream

    configs = agent_configs(fleet)
    folder = Path(fleet.fleet_dir)
    folder.mkdir(parents=True, exist_ok=True)
    sizes: dict[tuple, int] = {}
    jobs = []
    for cfg in configs:
        key = (cfg.stream, cfg.sizes, cfg.scenario)
        if key not in sizes:
            sizes[key] = len(load_stream(cfg.stream, seed=cfg.seed, sizes=cfg.sizes, scenario=cfg.scenario))
        run_dir = Path(cfg.run_dir).resolve()
        jobs.append(Job(Path(cfg.run_dir).name, "ctxopt.fleet:run_agent",
                        cfg.model_copy(update={"run_dir": str(run_dir)}).model_dump(),
                        state_file=str(run_dir / STATE_FILE), total=sizes[key]))
    summaries = run_jobs(jobs, executor, cpus=cpus, progress=progress)
    for s, cfg in zip(summaries, configs, strict=True):
        s["run_dir"] = cfg.run_dir
    write_text(folder / FLEET_FILE, json.dumps({"agents": summaries}, indent=1))
    return summaries
