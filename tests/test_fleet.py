"""A fleet: many agents, each with its own stream, its own C and its own store, on a local Ray cluster."""

from __future__ import annotations

import json
import subprocess

import pytest

from ctxopt.errors import ConfigError
from ctxopt.fleet import FLEET_FILE, agent_configs, load_fleet, run_fleet
from ctxopt.store import Store
from tests.toy import RULES, write_toy_stream

BUDGET = {"preset": "light", "n_trials": 3, "train_minibatch": 4, "val_minibatch": 4, "replay_per_task": 2,
          "gate_replay_per_task": 4}
STREAMS = {"a": ("suffix", "reverse"), "b": ("double", "suffix")}
SHORT = {"a": ("suffix",), "b": ("double",)}  # one task per agent: fifty agents stay quick on two cores


def _fleet_file(tmp_path, n_agents, streams=STREAMS):
    paths = {k: write_toy_stream(tmp_path / f"stream-{k}", names=names) for k, names in streams.items()}
    agents = "\n".join(f"  - name: bot-{i:03d}\n    stream: {paths['ab'[i % 2]]}\n    seed: {i}" for i in range(n_agents))
    text = (f"fleet_dir: {tmp_path / 'fleet'}\n"
            "defaults:\n  task_lm: py:tests.toy:task_lm\n  reflection_lm: py:tests.toy:reflection_lm\n"
            f"  num_threads: 1\n  budget: {json.dumps(BUDGET)}\nagents:\n{agents}\n")
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def _check_agents(tmp_path, summaries, n_agents, streams=STREAMS):
    assert [s["name"] for s in summaries] == [f"bot-{i:03d}" for i in range(n_agents)]
    for i, s in enumerate(summaries):
        names = streams["ab"[i % 2]]
        store_dir = tmp_path / "fleet" / "agents" / s["name"] / "store"
        fsck = subprocess.run(["git", "-C", str(store_dir), "fsck", "--strict"], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stderr
        store = Store.open(store_dir)
        assert len(store.log()) == s["versions"] == 1 + len(names)  # C0, then one version per task
        learned = {it.text for it in store.current().items("predict")}
        assert learned >= {RULES[n][0] for n in names}  # its own stream's rules ...
        others = set(RULES) - set(names)
        assert not learned & {RULES[n][0] for n in others}  # ... and no other agent's
        assert s["acc"] == 1.0 and s["accepted"] == len(names)
    assert json.loads((tmp_path / "fleet" / FLEET_FILE).read_text())["agents"] == summaries


def test_fleet_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("fleet_dir: f\nagents:\n  - name: x\n    stream: ii-8\n  - name: x\n    stream: ii-8\n")
    with pytest.raises(ConfigError, match="two agents are named 'x'"):
        load_fleet(bad)
    bad.write_text("fleet_dir: f\nagents:\n  - name: x\n    stream: ii-8\n    budgett: light\n")
    with pytest.raises(ConfigError, match=r"agent x: budgett: Extra inputs"):
        load_fleet(bad)
    bad.write_text("fleet_dir: f\nagents: {count: 0, stream: ii-8}\n")
    with pytest.raises(ConfigError, match="agents"):
        load_fleet(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_fleet(tmp_path / "none.yaml")


def test_a_fleet_runs_in_process_and_resumes_for_free(tmp_path):
    fleet = load_fleet(_fleet_file(tmp_path, 2))
    summaries = run_fleet(fleet)
    _check_agents(tmp_path, summaries, 2)
    assert run_fleet(fleet) == summaries  # rerun: every agent finished earlier


def test_fifty_agents_on_a_local_ray_cluster_each_keep_their_own_store(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    fleet = load_fleet(_fleet_file(tmp_path, 50, SHORT))
    assert len(agent_configs(fleet)) == 50
    summaries = run_fleet(fleet, "ray", cpus=2)
    _check_agents(tmp_path, summaries, 50, SHORT)
