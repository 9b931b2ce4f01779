"""Faults change nothing: the first tasks of ii-8 through an HTTP server, once clean and once through a fault proxy.

The task LM is the embedded 0.5B behind ``ctxopt model-server`` (llama-cpp-python's
OpenAI-compatible server), reached as ``openai/qwen2.5-coder-0.5b@http://…/v1``. The
faulty run goes through ``tests/fault_proxy.py``, which answers about 10% of requests with a
429, a 500, a reset connection or no answer at all (a timeout). The reflection LM is the
1.5B in-process in both runs: its calls are few, long, and not what this measures.

Both runs are ``compare(..., "ctxopt")`` from empty run directories, with the same seed
and budget. Prints and writes (``experiments/results/bench_faults.json``) the accuracy
matrices, final context hashes, faults injected, retries and wall times, and exits 1 if
the two runs differ. Rerunning resumes an unfinished run; a finished one is read back.

Usage:
    python experiments/bench_faults.py [--sizes 20,15,20] [--rate 0.1] [--out PATH]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from ctxopt._atomic import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fault_proxy

TASKS = "first_word_letter,singular_to_plural,antonyms"  # ii-8's first three


def _start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "ctxopt", "model-server", "--port", str(port)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    ready = threading.Event()

    def read() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            print(f"  [server] {line.rstrip()}", file=sys.stderr)
            if line.startswith("serving "):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(300):
        proc.kill()
        raise SystemExit("bench_faults: the model server did not start within 300 s")
    return proc


def _run(mode: str, base: str, run_dir: Path, sizes: tuple[int, int, int], timeout_s: float) -> dict:
    import dspy

    from ctxopt.compare import compare
    from ctxopt.lm import get_lm
    from ctxopt.program import program_for
    from ctxopt.store import Store
    from ctxopt.streams import load_stream

    dspy.configure_cache(disk_cache_dir=str(run_dir / "dspy_cache"))
    stream = load_stream(f"ii:{TASKS}", seed=0, sizes=sizes)
    task_lm = get_lm(f"openai/qwen2.5-coder-0.5b@{base}/v1", timeout=timeout_s)
    reflection_lm = get_lm("local:qwen2.5-coder-1.5b", max_tokens=768)
    t0 = time.perf_counter()
    (result,) = compare(program_for(stream), stream, "ctxopt", task_lm=task_lm, reflection_lm=reflection_lm,
                        run_dir=run_dir, budget="light", seed=0, report=False)
    wall = time.perf_counter() - t0
    used = task_lm.usage.snapshot()
    final = Store.open(run_dir / "ctxopt" / "store").current()
    out = {
        "mode": mode, "R": result.R, "r0": result.r0,
        "acc": result.summary().get("acc"), "final_context_hash": str(final.hash),
        "task_lm": {"calls": used.calls, "model_calls": used.model_calls, "cache_hits": used.cache_hits,
                    "retries": used.retries, "errors": used.errors},
        "wall_s": round(wall, 1),
    }
    print(f"{mode}: ACC {out['acc']}, final context {out['final_context_hash'][:12]}, task LM "
          f"{used.model_calls} model calls, {used.retries} retries, {wall:.0f} s", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    from tests.fault_proxy import FaultProxy

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="20,15,20", help="train,val,test examples per task")
    ap.add_argument("--rate", type=float, default=0.10, help="share of requests answered with a fault")
    ap.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, seconds")
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "bench-faults"))
    ap.add_argument("--port", type=int, default=18631,
                    help="the server's port; the proxy takes the next one (fixed, because a run resumes only "
                         "with the same LM spec, URL included)")
    ap.add_argument("--fresh", action="store_true", help="delete earlier runs first (a cold measurement)")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_faults.json"))
    args = ap.parse_args(argv)
    sizes = tuple(int(x) for x in args.sizes.split(","))
    root = Path(args.run_dir)
    if args.fresh and root.exists():
        shutil.rmtree(root)
    port = args.port
    server = _start_server(port)
    base = f"http://127.0.0.1:{port}"
    share = {"429": 0.3, "500": 0.3, "drop": 0.3, "timeout": 0.1}
    rates = {k: args.rate * v for k, v in share.items()}
    try:
        clean = _run("clean", base, root / "clean", sizes, args.timeout)
        with FaultProxy(base, rates=rates, seed=0, hang_s=args.timeout + 5, port=port + 1) as proxy:
            faulty = _run("faults", proxy.url, root / "faults", sizes, args.timeout)
        faulty["faults_injected"] = dict(proxy.counts)
    finally:
        server.terminate()
        server.wait(60)
    same = clean["R"] == faulty["R"] and clean["final_context_hash"] == faulty["final_context_hash"]
    result = {"stream": f"ii:{TASKS}", "sizes": sizes, "fault_rates": rates, "client_timeout_s": args.timeout,
              "clean": clean, "faults": faulty, "identical": same}
    out = Path(args.out)
    write_json(out, result)
    injected = sum(v for k, v in proxy.counts.items() if k != "forwarded")
    print(f"faults injected: {injected} of {sum(proxy.counts.values())} requests {dict(proxy.counts)}; "
          f"retries: {faulty['task_lm']['retries']}")
    print(f"accuracy matrix and final context hash identical: {same}")
    print(f"wrote {out}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
