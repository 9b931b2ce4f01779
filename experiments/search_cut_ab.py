"""A/B of the search's early cut: the same ``ctxopt compare`` command at two commits.

Give the run directory of a run with the cut (a commit from be7df71 on) and of one
without it (before be7df71). For the ``ctxopt`` method of each, from its ``results.json``
(no LM calls), it prints per step the charged task-LM calls (all, and the search's),
the task-model calls, the contexts the search scored and cut, and whether the step was
accepted, then ACC and the final context's hash. It writes
``experiments/results/search_cut_ab_<name>.json``.

Usage:
    python experiments/search_cut_ab.py RUN_WITH_CUT RUN_WITHOUT_CUT --name NAME
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctxopt._atomic import write_json  # noqa: E402
from ctxopt.matrix import acc, load_results  # noqa: E402


def summary(run_dir: Path) -> dict:
    run = next(r for r in load_results(run_dir) if r.method == "ctxopt")
    steps = []
    for s in run.steps:
        by_source = s.extra.get("charged_by_source", {})
        steps.append({
            "task": s.task, "accepted": s.accepted,
            "charged_task_calls": s.extra.get("charged_task_calls"),
            "charged_search_calls": by_source.get("task:search", 0),
            "task_model_calls": s.extra.get("task_model_calls", s.task_calls),
            "search_scored": s.extra.get("search_scored"), "search_cut": s.extra.get("search_cut"),
            "context_hash": s.extra.get("context_hash"),
        })
    return {"run_dir": str(run_dir), "acc": round(acc(run.R), 4), "steps": steps,
            "charged_task_calls": sum(st["charged_task_calls"] or 0 for st in steps),
            "charged_search_calls": sum(st["charged_search_calls"] for st in steps)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("with_cut", type=Path)
    parser.add_argument("without_cut", type=Path)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    out = {"with_cut": summary(args.with_cut), "without_cut": summary(args.without_cut)}
    for label, r in out.items():
        print(f"{label}: ACC {r['acc']:.3f}, charged task calls {r['charged_task_calls']} "
              f"(search {r['charged_search_calls']})")
        for st in r["steps"]:
            print(f"  {st['task']:<24} accepted {st['accepted']!s:<5} charged {st['charged_task_calls']:>4} "
                  f"search {st['charged_search_calls']:>4} model calls {st['task_model_calls']:>4} "
                  f"scored {st['search_scored']} cut {st['search_cut']} C {str(st['context_hash'])[:12]}")
    path = ROOT / "experiments" / "results" / f"search_cut_ab_{args.name}.json"
    write_json(path, out)
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
