"""Issue 16's acceptance figures for a task-agnostic ``ctxopt compare`` run, read from its results.

Reads ``RUN_DIR/results.json`` (no LM calls) and prints, for the ``ctxopt`` method:

* ACC, BWT, FWT and how many steps were accepted, with the gate's first decisions;
* ACC against ``static`` and against the best continual peer run in the same directory
  (append, summarize, gepa-seq, mipro-seq), where they were run;
* ACC against the same method's *task-aware* ACC, from ``--aware`` (a compare results
  JSON such as ``experiments/results/compare-babi-10-light-s0.json``);
* **damage before arrival**: every cell ``R[i][j]`` with ``i < j`` (task ``j`` not yet met)
  where ctxopt scores below static's ``R[i][j]``;
* the redundancy figure of the final C (near-duplicate pairs and contradictions);
* **recurrence**, for a stream whose tasks come back (``ii-8x2``, ``name@2``): each revisit's score
  on arrival ``R[j][j]`` against its first visit's ``R[f][f]``, and the revisit step's charged
  task-LM calls against the first visit's (issue 16 asks for ≥ the first visit's score at ≤ 25%
  of its calls). A revisit brings fresh test examples, so ``R[f][f]`` and ``R[j][j]`` are scored
  on different samples; the script also gives ``R[f][j]``, the first visit's C on the revisit's
  own test split (the same examples), and the charged calls without the sleep pass that ran
  after each step (``learn_charged``: observe, propose, search and gate).

Every figure comes from the test rows the compare wrote; the script only does arithmetic.
It writes ``experiments/results/agnostic_<name>.json``.

Usage:
    python experiments/agnostic_targets.py RUN_DIR [--aware RESULTS_JSON] [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctxopt._atomic import write_json  # noqa: E402
from ctxopt.matrix import RunResult, acc, load_results  # noqa: E402
from ctxopt.tasks import split_visit  # noqa: E402

PEERS = ("append", "summarize", "gepa-seq", "mipro-seq")


def _runs(path: Path) -> dict[str, RunResult]:
    if path.is_dir():
        return {r.method: r for r in load_results(path)}
    data = json.loads(path.read_text())
    return {d["method"]: RunResult.from_dict(d) for d in data["runs"]}


def targets(runs: dict[str, RunResult], aware: dict[str, RunResult] | None = None, method: str = "ctxopt") -> dict:
    """The figures, from finished runs (a method still running is reported as such and skipped)."""
    if method not in runs or not runs[method].complete:
        done = len(runs[method].R) if method in runs else 0
        raise SystemExit(f"agnostic_targets: {method} has {done} of {len(next(iter(runs.values())).tasks)} "
                         "steps; rerun the compare to finish it")
    run = runs[method]
    s = run.summary()
    out: dict = {"method": method, "tasks": run.tasks, "acc": s["acc"], "bwt": s["bwt"], "fwt": s["fwt"],
                 "accepted_steps": sum(bool(st.accepted) for st in run.steps), "steps": len(run.steps),
                 "gate_counts": s.get("gate_counts"), "redundancy": run.meta.get("redundancy"),
                 "final_context_tokens": run.meta.get("final_context_tokens")}
    if "static" in runs and runs["static"].complete:
        static = runs["static"]
        out["static_acc"] = acc(static.R)
        out["over_static"] = round(out["acc"] - out["static_acc"], 4)
        n = len(run.tasks)
        out["damage_before_arrival"] = [
            {"after_step": i + 1, "task": run.tasks[j], "ctxopt": run.R[i][j], "static": static.R[i][j]}
            for i in range(n) for j in range(i + 1, n) if run.R[i][j] < static.R[i][j] - 1e-9]
    peers = {m: acc(r.R) for m, r in runs.items() if m in PEERS and r.complete}
    if peers:
        best = max(peers, key=peers.__getitem__)
        out["peers"] = peers
        out["over_best_peer"] = {"peer": best, "delta": round(out["acc"] - peers[best], 4)}
    if revisits := recurrence(run):
        out["recurrence"] = revisits
    if aware and method in aware and aware[method].complete:
        out["task_aware_acc"] = acc(aware[method].R)
        out["vs_task_aware"] = round(out["acc"] - out["task_aware_acc"], 4)
    return out


def recurrence(run: RunResult) -> list[dict]:
    """Each revisit against its family's first visit: score on arrival and charged task-LM calls."""
    first = {split_visit(name)[0]: j for j, name in enumerate(run.tasks) if split_visit(name)[1] == 1}
    out = []
    for j, name in enumerate(run.tasks):
        family, visit = split_visit(name)
        if visit < 2 or family not in first:
            continue
        f = first[family]
        calls = [run.steps[k].extra.get("charged_task_calls") for k in (f, j)]
        learn = [_learn_charged(run.steps[k].extra) for k in (f, j)]
        out.append({"task": name, "arrival": run.R[j][j], "first_arrival": run.R[f][f],
                    "first_on_same_test": run.R[f][j],
                    "charged": calls[1], "first_charged": calls[0],
                    "calls_ratio": round(calls[1] / calls[0], 3) if calls[0] else None,
                    "learn_charged": learn[1], "first_learn_charged": learn[0],
                    "learn_ratio": round(learn[1] / learn[0], 3) if learn[0] else None,
                    "reason": run.steps[j].extra.get("reason", "")})
    return out


def _learn_charged(extra: dict) -> int | None:
    """A step's charged task-LM calls without those of the sleep pass after it."""
    by = extra.get("charged_by_source")
    if by is None:
        return None
    return sum(n for src, n in by.items() if src.startswith("task:") and not src.startswith("task:consolidation"))


def _print(name: str, t: dict) -> None:
    print(f"{name}: {t['method']} ACC {t['acc']:.3f}  BWT {t['bwt']:+.3f}  FWT {t['fwt']:+.3f}  "
          f"accepted {t['accepted_steps']}/{t['steps']}  final C {t['final_context_tokens']} tokens")
    if t.get("gate_counts"):
        g = t["gate_counts"]
        print(f"  gate (first decision): {g['accepted']} accepted, {g['rejected']} rejected, {g['undecided']} undecided"
              + (f"; {g['fallbacks']} fallback(s) after harm, {g['landed']} landed" if g.get("fallbacks") else ""))
    if "static_acc" in t:
        print(f"  static ACC {t['static_acc']:.3f}  (ctxopt {t['over_static']:+.3f})")
        bad = t["damage_before_arrival"]
        print(f"  unseen-task cells below static before arrival: {len(bad)}"
              + "".join(f"\n    after step {d['after_step']}: {d['task']} {d['ctxopt']:.2f} < {d['static']:.2f}"
                        for d in bad[:10]))
    if "over_best_peer" in t:
        b = t["over_best_peer"]
        print(f"  best continual peer {b['peer']} ACC {t['peers'][b['peer']]:.3f}  (ctxopt {b['delta']:+.3f})")
    if "task_aware_acc" in t:
        print(f"  task-aware ctxopt ACC {t['task_aware_acc']:.3f}  (task-agnostic {t['vs_task_aware']:+.3f})")
    for v in t.get("recurrence", []):
        print(f"  revisit {v['task']}: on arrival {v['arrival']:.2f} (first visit {v['first_arrival']:.2f}; "
              f"the first visit's C on this test split {v['first_on_same_test']:.2f}), "
              f"charged {v['charged']} task calls (first visit {v['first_charged']}, ratio {v['calls_ratio']}; "
              f"without sleep {v['learn_charged']} vs {v['first_learn_charged']}, ratio {v['learn_ratio']})")
    r = t.get("redundancy") or {}
    if r:
        para = f", {r['paraphrases']} paraphrase pairs (≥ {r['merge_threshold']})" if "paraphrases" in r else ""
        print(f"  final C: {r['items']} items, {r['near_duplicates']} near-duplicate pairs "
              f"(similarity ≥ {r['threshold']}){para}, {r['contradictions']} contradictions")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--aware", type=Path, help="task-aware compare results (JSON or run dir) to compare ACC with")
    ap.add_argument("--name", help="name of the JSON written (default: the run dir's name)")
    args = ap.parse_args(argv)
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", args.name):
        ap.error(f"--name {args.name!r}: use letters, digits, '.', '_' or '-' (it names a file in experiments/results)")
    if not (args.run_dir / "results.json").is_file():
        ap.error(f"{args.run_dir}: no results.json (not a compare run directory)")
    t = targets(_runs(args.run_dir), _runs(args.aware) if args.aware else None)
    name = args.name or args.run_dir.name
    _print(name, t)
    out = ROOT / "experiments" / "results" / f"agnostic_{name}.json"
    write_json(out, t)
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
