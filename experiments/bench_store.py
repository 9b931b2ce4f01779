"""Benchmark the context store: commit, checkout, show and diff latency.

A context with 1,000 items (one predictor, plus a small second one) gets a
history of 1,000 versions, each made by the public ``Store.commit`` after one
item update and, every tenth version, an add + delete. Then random versions
are checked out and shown, and random pairs diffed. Medians (ms) are printed
and written to ``experiments/results/bench_store.json``.

Usage:
    python experiments/bench_store.py [--items 1000] [--versions 1000] [--samples 50] [--out PATH]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ctxopt._atomic import write_json
from ctxopt.context import Item, LearnedContext, PredictorContext
from ctxopt.edits import AddItem, DeleteItem, UpdateItem
from ctxopt.store import Store


def _ms(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "median_ms": round(statistics.median(s) * 1000, 2),
        "p90_ms": round(s[int(0.9 * (len(s) - 1))] * 1000, 2),
        "min_ms": round(s[0] * 1000, 2),
        "n": len(s),
    }


def _fsync_cost(ctx: LearnedContext, n: int) -> dict[str, dict[str, float]]:
    """Median commit time with the store's ``core.fsync=committed`` and with it switched off, alternating."""
    import ctxopt._git as git

    on = git._BASE
    off = tuple("core.fsync=none" if a == "core.fsync=committed" else a for a in on)
    times: dict[str, list[float]] = {"on": [], "off": []}
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        stores = {"on": Store.init(Path(tmp) / "on"), "off": Store.init(Path(tmp) / "off")}
        try:
            for step in range(n):
                ids = [it.id for it in ctx.items("qa")]
                ctx = ctx.apply_edits([UpdateItem("qa", rng.choice(ids), f"fsync bench {step}")], step=step, task="bench")
                for mode in ("on", "off") if step % 2 else ("off", "on"):
                    git._BASE = on if mode == "on" else off
                    t0 = time.perf_counter()
                    stores[mode].commit(ctx, f"step {step}", {"step": step})
                    times[mode].append(time.perf_counter() - t0)
        finally:
            git._BASE = on
    return {mode: _ms(t) for mode, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--versions", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--fsync-commits", type=int, default=100, help="commits timed with and without core.fsync")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_store.json"))
    args = ap.parse_args(argv)
    rng = random.Random(0)

    items = tuple(
        Item(id=f"r-{i:08x}",
             text=f"Rule {i}: when the input mentions topic {i % 37}, " + "check the details carefully. " * (1 + i % 3),
             scope="global" if i % 4 else f"task{i % 5}", created_step=0)
        for i in range(args.items)
    )  # fmt: skip
    ctx = LearnedContext({"qa": PredictorContext("Answer the question.", items), "cls": PredictorContext("Label it.")})

    with tempfile.TemporaryDirectory() as tmp:
        store = Store.init(Path(tmp) / "store")
        commit_t: list[float] = []
        revs: list[str] = []
        t_build = time.perf_counter()
        for step in range(args.versions):
            ids = [it.id for it in ctx.items("qa")]
            edits = [UpdateItem("qa", rng.choice(ids), f"Updated rule at step {step}: be precise ({rng.random():.6f}).")]
            if step % 10 == 9:
                edits += [AddItem("qa", f"New rule at step {step}."), DeleteItem("qa", rng.choice(ids))]
            ctx = ctx.apply_edits(edits, step=step, task="bench")
            t0 = time.perf_counter()
            v = store.commit(ctx, f"step {step}", {"step": step, "task": "bench", "edits": edits, "scores": {"val": 0.5}})
            commit_t.append(time.perf_counter() - t0)
            revs.append(v.rev)
            if (step + 1) % 100 == 0:
                print(f"  {step + 1} versions, last commit {commit_t[-1] * 1000:.1f} ms", file=sys.stderr)
        build_s = time.perf_counter() - t_build
        assert len(store.log()) == args.versions

        checkout_t, show_t, diff_t, log_t = [], [], [], []
        for _ in range(args.samples):
            rev = rng.choice(revs)
            t0 = time.perf_counter()
            store.checkout(rev)
            checkout_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            got = store.show(rev)
            show_t.append(time.perf_counter() - t0)
            assert len(got.items("qa")) == args.items
        store.checkout("main")
        for _ in range(args.samples):
            a, b = rng.sample(revs, 2)
            t0 = time.perf_counter()
            d = store.diff(a, b)
            diff_t.append(time.perf_counter() - t0)
            assert d.textual
        for _ in range(5):
            t0 = time.perf_counter()
            store.log()
            log_t.append(time.perf_counter() - t0)
        repo_kb = sum(f.stat().st_size for f in (store.path / ".git").rglob("*") if f.is_file()) // 1024

    fsync_cost = _fsync_cost(ctx, args.fsync_commits)

    result = {
        "config": {"items": args.items, "versions": args.versions, "samples": args.samples},
        "fsync": fsync_cost,
        "commit": _ms(commit_t),
        "checkout": _ms(checkout_t),
        "show": _ms(show_t),
        "checkout_plus_show": {"median_ms": round(statistics.median(c + s for c, s in zip(checkout_t, show_t)) * 1000, 2)},
        "diff": _ms(diff_t),
        "log_full_history": _ms(log_t),
        "build_history_s": round(build_s, 1),
        "repo_size_kb": repo_kb,
        "context_tokens": ctx.token_count(),
        "machine": {
            "python": platform.python_version(),
            "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
            "platform": platform.platform(),
        },
    }
    out = Path(args.out)
    write_json(out, result)
    print(f"context: {args.items} items, {result['context_tokens']} tokens; "
          f"history: {args.versions} versions (built in {build_s:.0f} s)")
    for key in ("commit", "checkout", "show", "diff", "log_full_history"):
        r = result[key]
        print(f"{key:>18}: median {r['median_ms']:8.1f} ms   p90 {r['p90_ms']:8.1f} ms   (n={r['n']})")
    f = result["fsync"]
    print(f"commit with core.fsync=committed: median {f['on']['median_ms']:.1f} ms vs {f['off']['median_ms']:.1f} ms "
          f"without (n={f['on']['n']} each)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
