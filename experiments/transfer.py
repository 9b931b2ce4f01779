"""Issue 8 acceptance: portability of a learned context across task models, and distillation data.

Three subcommands; each prints a table and writes JSON under ``experiments/results/``.

``config``   writes the run config of a source run with another task LM (for 1.5B → 0.5B)::

    python experiments/transfer.py config --task-lm local:qwen2.5-coder-1.5b \\
        --run-dir runs/ii-8-light-1.5b > experiments/configs/ii-8-1.5b.yaml   # then: ctxopt run that file

``measure``  transfers C of a finished run to another task LM with ``--adapt`` and reports, for the
             target LM, val means and test ACC of: the static program (no C), the program with C, and
             with C after the gated adapt pass (and the version kept). Decisions use val only; the test
             split is measured afterwards with ``ctxopt.optimizer.measure_row``::

    python experiments/transfer.py measure --run-dir runs/ii-8-light --to-lm local:qwen2.5-coder-1.5b

``distill``  builds the distillation set of a run's C and reports its size, pass rates and headroom::

    python experiments/transfer.py distill --run-dir runs/ii-8-light --synthesize 20
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctxopt._atomic import write_json  # noqa: E402
from ctxopt.distill import distill  # noqa: E402
from ctxopt.portability import branch_for, measure_test, resolve_stream, transfer  # noqa: E402
from ctxopt.store import Store  # noqa: E402

RESULTS = ROOT / "experiments" / "results"


def _short(spec: str) -> str:
    return branch_for(spec).split("/", 1)[1]


def _write(name: str, data: dict) -> Path:
    path = RESULTS / name
    write_json(path, data)
    return path


def cmd_config(args: argparse.Namespace) -> int:
    print(f"# Source run for the issue 8 transfer ({args.task_lm} → another task LM); same settings as ii-8.yaml.\n"
          f"stream: {args.stream}\nprogram: builtin\ntask_lm: {args.task_lm}\n"
          f"reflection_lm: {args.reflection_lm}\nbudget: {args.budget}\ngate: strict\nepsilon: 0.02\n"
          f"seed: {args.seed}\nnum_threads: 2\nrun_dir: {args.run_dir}")
    return 0


def _progress(started: float):
    """One line per phase and per adapted task, with elapsed time (the run is long and logs to files)."""

    def on_event(event) -> None:
        stamp = f"[{time.perf_counter() - started:7.0f} s]"
        if event.kind == "phase" and event.data.get("phase") in ("validate", "adapt", "commit"):
            print(f"{stamp} {event.data['phase']}", flush=True)
        elif event.kind == "task_end":
            verdict = "accepted" if event.data.get("accepted") else "kept as is"
            print(f"{stamp} adapt {event.task}: {verdict} ({event.data.get('reason', '')})", flush=True)

    return on_event


def cmd_measure(args: argparse.Namespace) -> int:
    store = Store.open(Path(args.run_dir) / "store")
    started = time.perf_counter()
    res = transfer(store, args.to_lm, adapt=not args.no_adapt, reflection_lm=args.reflection_lm, budget=args.budget,
                   num_threads=args.num_threads, callbacks=[_progress(started)])
    stream, _, _ = resolve_stream(store, res.source_rev, seed=res.seed, tasks=list(res.tasks))
    val_s = time.perf_counter() - started
    print(f"[{val_s:7.0f} s] test split: {len(res.contexts)} contexts × {len(res.tasks)} tasks", flush=True)
    test = measure_test(res, args.to_lm, stream, num_threads=args.num_threads)
    out = {
        "command": "python experiments/transfer.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": args.run_dir, "transfer": res.to_dict(),
        "acc": {name: m["acc"] for name, m in test.items()}, "test_rows": test,
        "wall_s": {"transfer": round(val_s, 1), "measure": round(time.perf_counter() - started - val_s, 1)},
    }
    path = _write(f"transfer_{_short(res.from_lm)}_to_{_short(res.to_lm)}.json", out)
    print(f"{res.from_lm} → {res.to_lm} on {res.stream} (tasks: {', '.join(res.tasks)})")
    print(f"{'version':<12} {'val mean':>9} {'test ACC':>9}")
    val = {"none": res.mean("without"), "transferred": res.mean("with_c"), "adapted": res.mean("adapted"),
           "final": res.mean("final")}
    for name, m in test.items():
        v = val.get(name)
        print(f"{name:<12} {'—' if v is None else f'{v:.3f}':>9} {m['acc']:>9.3f}")
    print(f"kept: {res.kept} — {res.reason}\nbranch: {res.branch} @ {res.final_rev[:10]}\nwrote {path}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    store = Store.open(Path(args.run_dir) / "store")
    out_dir = Path(args.out or Path(args.run_dir) / "distill")
    started = time.perf_counter()
    res = distill(store, out_dir, synthesize=args.synthesize, samples=args.samples,
                  reflection_lm=args.reflection_lm, num_threads=args.num_threads)
    train_total = sum(t.train_total for t in res.tasks)
    train_kept = sum(t.train_kept for t in res.tasks)
    synth_total = sum(t.synth_total for t in res.tasks)
    synth_kept = sum(t.synth_kept for t in res.tasks)
    summary = {
        "command": "python experiments/transfer.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "run_dir": args.run_dir,
        "rows": res.rows, "train_pass_rate": round(train_kept / train_total, 4) if train_total else None,
        "synth_agree_rate": round(synth_kept / synth_total, 4) if synth_total else None,
        "student_agreement": res.student_agreement, "headroom": res.headroom,
        "wall_s": round(time.perf_counter() - started, 1), "distill": res.to_dict(),
    }
    path = _write(f"distill_{Path(args.run_dir).name}.json", summary)
    print(f"{res.rows} rows ({res.heldout} held out) in {out_dir}")
    print(f"train rows kept {train_kept}/{train_total} (pass rate {summary['train_pass_rate']}); "
          f"synthesized kept {synth_kept}/{synth_total} (agree rate {summary['synth_agree_rate']})")
    print(f"student without C agrees on {res.student_agreement} of held-out rows (headroom {res.headroom})")
    for t in res.tasks:
        print(f"  {t.task:<22} train {t.train_kept:>3}/{t.train_total:<3} synth {t.synth_kept:>3}/{t.synth_total:<3} "
              f"held out {t.heldout:>3}  student agrees {t.student_agreement}")
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("config", help="print the config of a source run with another task LM")
    p.add_argument("--task-lm", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--stream", default="ii-8")
    p.add_argument("--reflection-lm", default="local:qwen2.5-coder-1.5b")
    p.add_argument("--budget", default="light")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_config)
    p = sub.add_parser("measure", help="transfer C to another task LM (with --adapt) and report val and test ACC")
    p.add_argument("--run-dir", required=True, help="a finished ctxopt run (holds store/ and state.json)")
    p.add_argument("--to-lm", required=True)
    p.add_argument("--reflection-lm", default=None)
    p.add_argument("--budget", default="light")
    p.add_argument("--no-adapt", action="store_true")
    p.add_argument("--num-threads", type=int, default=2)
    p.set_defaults(func=cmd_measure)
    p = sub.add_parser("distill", help="build the distillation set of a run's C; report size and pass rate")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--out", default=None)
    p.add_argument("--synthesize", type=int, default=20)
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--reflection-lm", default=None)
    p.add_argument("--num-threads", type=int, default=2)
    p.set_defaults(func=cmd_distill)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
