"""Scaling out on the embedded models: parallel search on PostgreSQL, compare on Ray, a fleet of real agents.

Three parts, each a ``ctxopt`` command run as a subprocess from its own run directory under
``runs/bench-scale/`` (rerunning resumes; a finished part is read back from its files):

* ``search``: ctxopt on ii-8's first two tasks (light budget, seed 0, default sizes), its search studies
  in a fresh PostgreSQL server (``tests/pg.py``), once with one search worker (2 llama threads) and once
  with two (1 llama thread each, so both use the 2 cores). Reports learning wall time, model calls, the
  accuracy matrices and the decisions that differ (accepted or not, the proposals chosen, the context).
* ``ray``: ``ctxopt compare --methods static,ctxopt`` on the same two tasks at ``--sizes 16,12,16``,
  cold, in-process and with ``--executor ray``; the matrices must be identical. A ctxopt worker is
  killed once it has finished a step; Ray retries its job, which resumes.
* ``fleet``: ``ctxopt fleet`` with 3 agents on the real models (one ii task each, ``--sizes 16,12,16``),
  as Ray tasks; each store must hold its own history.
* ``storage``: Optuna ask/tell latency and rows per trial, SQLite against PostgreSQL, with 1 and 2
  processes on one study (TPE with ``constant_liar``, 10 on/off switches, an instant objective): the cost
  of the study itself, apart from any LM call.

Writes ``experiments/results/bench_scale.json`` and prints the figures.

Usage:
    python experiments/bench_scale.py [search] [ray] [fleet]   # default: all three
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ctxopt._atomic import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.pg

BASE = ROOT / "runs" / "bench-scale"
OUT = ROOT / "experiments" / "results" / "bench_scale.json"
TWO = "ii:first_word_letter,singular_to_plural"  # ii-8's first two tasks
SMALL = "16,12,16"


def _ctxopt(args: list[str], threads: int, log: Path) -> float:
    env = {**os.environ, "CTXOPT_LLAMA_THREADS": str(threads), "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": str(ROOT)}
    print(f"$ CTXOPT_LLAMA_THREADS={threads} ctxopt {' '.join(args)}", flush=True)
    start = time.perf_counter()
    with open(log, "a") as fh:
        rc = subprocess.run([sys.executable, "-m", "ctxopt", *args], env=env, stdout=fh, stderr=subprocess.STDOUT,
                            cwd=ROOT).returncode
    if rc != 0:
        raise SystemExit(f"bench_scale: ctxopt {args[0]} failed (exit {rc}); see {log}")
    return time.perf_counter() - start


def _result(run: Path, method: str = "ctxopt") -> dict:
    from ctxopt.matrix import load_results

    [r] = [r for r in load_results(run) if r.method == method]
    return {"r0": r.r0, "R": r.R, "acc": r.summary()["acc"], "learn_wall_s": round(sum(s.wall_s for s in r.steps), 1),
            "task_model_calls": sum(int(s.extra.get("task_model_calls", 0) or 0) for s in r.steps),
            "charged_task_calls": sum(int(s.extra.get("charged_task_calls", 0) or 0) for s in r.steps),
            "steps": [{"task": s.task, "accepted": s.accepted, "note": s.extra.get("note"),
                       "proposals": s.extra.get("proposals"), "context_hash": s.extra.get("context_hash")}
                      for s in r.steps]}


def _head(run: Path) -> str:
    from ctxopt.store import Store

    return Store.open(run / "ctxopt" / "store").current().hash[:12]


def part_search() -> dict:
    from tests.pg import temporary_postgres

    out = {}
    with temporary_postgres(port=5441) as url:
        for workers, threads in ((1, 2), (2, 1)):
            run = BASE / f"search-w{workers}"
            run.mkdir(parents=True, exist_ok=True)
            wall = _ctxopt(["compare", "--stream", TWO, "--methods", "ctxopt", "--budget", "light", "--seed", "0",
                            "--run-dir", str(run), "--storage", url, "--search-workers", str(workers)],
                           threads, run / "log.txt")
            out[f"workers={workers}"] = {**_result(run), "command_wall_s": round(wall, 1), "head": _head(run),
                                         "llama_threads": threads}
    one, two = out["workers=1"], out["workers=2"]
    out["differs"] = [{"task": a["task"], "one": {k: a[k] for k in ("accepted", "proposals", "context_hash")},
                       "two": {k: b[k] for k in ("accepted", "proposals", "context_hash")}}
                      for a, b in zip(one["steps"], two["steps"], strict=True)
                      if (a["accepted"], a["proposals"], a["context_hash"]) != (b["accepted"], b["proposals"], b["context_hash"])]
    return out


def part_ray() -> dict:
    local, ray_run = BASE / "ray-local", BASE / "ray-ray"
    args = ["compare", "--stream", TWO, "--methods", "static,ctxopt", "--budget", "light", "--seed", "0",
            "--sizes", SMALL]
    for run in (local, ray_run):
        run.mkdir(parents=True, exist_ok=True)
    wall_local = _ctxopt([*args, "--run-dir", str(local)], 2, local / "log.txt")
    killed = []
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    print(f"$ ctxopt {' '.join(args)} --run-dir {ray_run} --executor ray", flush=True)
    start = time.perf_counter()
    with open(ray_run / "log.txt", "a") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "ctxopt", *args, "--run-dir", str(ray_run), "--executor", "ray"],
                                env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        state = ray_run / "ctxopt" / "state.json"
        while proc.poll() is None:
            try:
                done = int(json.loads(state.read_text()).get("done", 0))
            except (OSError, ValueError):
                done = 0
            if done == 1 and not killed:  # ctxopt finished its first task: kill the worker that runs it
                for pid in _pids("ray::ctxopt s0"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.5)
    wall_ray = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench_scale: compare --executor ray failed; see {ray_run / 'log.txt'}")
    same = {m: _result(local, m)["R"] == _result(ray_run, m)["R"] and _result(local, m)["r0"] == _result(ray_run, m)["r0"]
            for m in ("static", "ctxopt")}
    return {"in_process": {m: _result(local, m) for m in ("static", "ctxopt")}, "command_wall_s_in_process":
            round(wall_local, 1), "ray": {m: _result(ray_run, m) for m in ("static", "ctxopt")},
            "command_wall_s_ray": round(wall_ray, 1), "killed_worker_pids": killed, "identical_matrices": same}


def _pids(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def part_fleet() -> dict:
    folder = BASE / "fleet"
    folder.mkdir(parents=True, exist_ok=True)
    tasks = ["antonyms", "singular_to_plural", "first_word_letter"]
    agents = "\n".join(f"  - name: agent-{t}\n    stream: ii:{t}" for t in tasks)
    path = folder / "fleet.yaml"
    path.write_text(f"fleet_dir: {folder}\ndefaults:\n  budget: light\n  sizes: [16, 12, 16]\nagents:\n{agents}\n")
    wall = _ctxopt(["fleet", str(path), "--executor", "ray"], 1, folder / "log.txt")
    summary = json.loads((folder / "fleet.json").read_text())["agents"]
    for s in summary:
        store = Path(s["run_dir"]) / "store"
        s["fsck_ok"] = subprocess.run(["git", "-C", str(store), "fsck", "--strict"], capture_output=True).returncode == 0
    return {"command_wall_s": round(wall, 1), "agents": summary}


def _ask_tell_loop(url: str, name: str, n: int, seed: int) -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=url)
    space = {f"use:p{i}": CategoricalDistribution([False, True]) for i in range(10)}
    for k in range(n):
        study.sampler = optuna.samplers.TPESampler(seed=seed * 1000 + k, n_startup_trials=3, constant_liar=True)
        trial = study.ask(space)
        trial.set_user_attr("context_hash", f"{seed}-{k}")
        study.tell(trial, sum(bool(v) for v in trial.params.values()) / 10)


def _rows(url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    tables = ("trials", "trial_params", "trial_values", "trial_user_attributes", "trial_system_attributes")
    with engine.connect() as conn:
        return sum(conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar() for t in tables)


def part_storage(n: int = 40) -> dict:
    import multiprocessing

    import optuna

    from tests.pg import temporary_postgres

    out = {}
    with temporary_postgres(port=5443) as pg:
        sqlite = f"sqlite:///{BASE / 'storage.db'}"
        (BASE / "storage.db").unlink(missing_ok=True)
        for backend, url in (("sqlite", sqlite), ("postgresql", pg)):
            for workers in (1, 2):
                name = f"{backend}-{workers}"
                optuna.create_study(study_name=name, storage=url, direction="maximize")
                procs = [multiprocessing.get_context("spawn").Process(target=_ask_tell_loop, args=(url, name, n, w))
                         for w in range(workers)]
                start = time.perf_counter()
                for proc in procs:
                    proc.start()
                for proc in procs:
                    proc.join()
                wall = time.perf_counter() - start
                trials = len(optuna.load_study(study_name=name, storage=url).trials)
                out[name] = {"trials": trials, "wall_s": round(wall, 2),
                             "s_per_trial_per_worker": round(wall / n, 4)}
            out[f"{backend}_rows_per_trial"] = round(_rows(url) / sum(out[f"{backend}-{w}"]["trials"] for w in (1, 2)), 1)
    return out


def main(argv: list[str]) -> int:
    parts = argv or ["search", "ray", "fleet", "storage"]
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for part in parts:
        results[part] = {"search": part_search, "ray": part_ray, "fleet": part_fleet, "storage": part_storage}[part]()
        write_json(OUT, results)
        print(json.dumps(results[part], indent=1)[:4000], flush=True)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
