"""``ctxopt fleet FLEET.yaml``: many agents, one learned context each, in their own stores (resumable)."""

from __future__ import annotations

import argparse

from ctxopt.executor import EXECUTORS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="run many agents, each learning its own stream into its own store (resumable)",
                       description="Run every agent of a fleet file (see ctxopt.fleet) as one job: the loop of "
                                   "`ctxopt run` in FLEET_DIR/agents/<name>/. Rerunning the same command resumes "
                                   "agents that stopped and skips finished ones; FLEET_DIR/fleet.json lists them.")
    p.add_argument("fleet", help="fleet YAML (fleet_dir, defaults, agents)")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: agents one after another in this process (default); ray: each agent is a Ray task "
                        "with its own process and one llama thread")
    p.add_argument("--ray-cpus", type=int, default=None,
                   help="slots of the local Ray cluster, one agent each (default: every core)")
    p.set_defaults(func=cmd_fleet)


def cmd_fleet(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ctxopt.fleet import FLEET_FILE, agent_configs, load_fleet, run_fleet

    console = Console()
    fleet = load_fleet(args.fleet)
    n = len(agent_configs(fleet))
    console.print(f"fleet of {n} agents in {fleet.fleet_dir}, executor {args.executor}")
    summaries = run_fleet(fleet, args.executor, cpus=args.ray_cpus, progress=True)
    table = Table("agent", "stream", "seed", "ACC", "BWT", "accepted", "versions", "head", "task-LM calls")
    for s in summaries:
        fmt = (lambda x: "–" if x is None else f"{x:.3f}")  # noqa: E731
        table.add_row(s["name"], s["stream"], str(s["seed"]), fmt(s["acc"]), fmt(s["bwt"]),
                      f"{s['accepted']}/{s['steps']}", str(s["versions"]), s["head"], str(s["task_calls"]))
    console.print(table)
    console.print(f"summary: {fleet.fleet_dir}/{FLEET_FILE}")
    return 0
