"""Bounded prompts: what one fixed set of inputs is shown as C grows over a stream.

Reads a finished (or running) ctxopt run directory, with no LM calls:

* the **probe set** is the val inputs of the stream's first task, fixed for the whole run;
* after each step, the version the run had committed is read back from its git store;
* **prompt tokens** = the mean over the probe set of the tokens of the exact messages the
  model would get for that input (``ctxopt.prompt.prompt_messages`` with the run's selector:
  retrieval in a task-agnostic stream, with C's learned retrieval settings);
* **memory tokens** = everything C holds (``LearnedContext.token_count``), which is what a
  prompt would cost if everything were rendered.

Prints the table and the ratio of prompt tokens after the last step to those after step 1
(issue 16 asks for ≤ 1.3 on a 20-task task-agnostic stream while memory grows), and writes
``experiments/results/prompt_growth_<name>.json`` and ``.png``.

Usage:
    python experiments/prompt_growth.py RUN_DIR [--sizes 40,30,50] [--name NAME]

``RUN_DIR`` is a ``ctxopt run`` run directory or a method folder of ``ctxopt compare``
(``runs/compare-…/ctxopt``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctxopt._atomic import write_json  # noqa: E402
from ctxopt.errors import DataError  # noqa: E402
from ctxopt.program import program_for  # noqa: E402
from ctxopt.prompt import format_messages, prompt_messages  # noqa: E402
from ctxopt.rundir import RunDir  # noqa: E402
from ctxopt.selector import default_selector  # noqa: E402
from ctxopt.store import Store  # noqa: E402
from ctxopt.streams import load_stream  # noqa: E402
from ctxopt.tokens import count_tokens  # noqa: E402


def growth(run_dir: Path, sizes: tuple[int, int, int] | None = None) -> dict:
    """Per step: mean prompt tokens of the probe set and memory tokens, from the run's own store."""
    store = Store.open(run_dir / "store")
    identity = RunDir(run_dir, store).identity()
    if not identity.get("stream"):
        raise DataError(f"{run_dir} has no run state naming its stream")
    scenario = identity.get("scenario", "task-aware")
    stream = load_stream(identity["stream"], seed=int(identity.get("seed", 0)), sizes=sizes, scenario=scenario)
    program = program_for(stream)
    selector = default_selector(scenario)
    first = stream.tasks[0]
    probe = [dict(ex.inputs().items()) for ex in first.val]
    label = first.family if scenario == "task-aware" else None
    versions = list(reversed(store.log()))  # oldest first
    steps = sorted({int(v.metadata["step"]) for v in versions if isinstance(v.metadata.get("step"), int)})
    rows = []
    for step in steps:
        version = [v for v in versions if isinstance(v.metadata.get("step"), int) and v.metadata["step"] <= step][-1]
        ctx = store.show(version.rev)
        tokens = [count_tokens(format_messages(prompt_messages(program, ctx, inputs, task=label, selector=selector)))
                  for inputs in probe]
        rows.append({"step": step, "task": version.metadata.get("task"), "rev": version.rev[:10],
                     "prompt_tokens": round(statistics.mean(tokens), 1), "memory_tokens": ctx.token_count()})
    after_first = next((r for r in rows if r["step"] == 1), None)  # step 0 is C₀, before any learning
    ratio = round(rows[-1]["prompt_tokens"] / after_first["prompt_tokens"], 3) if after_first else None
    return {"run_dir": str(run_dir), "stream": identity["stream"], "scenario": scenario, "probe_task": first.name,
            "probe_inputs": len(probe), "selector": repr(selector), "rows": rows, "ratio_last_to_first": ratio}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(steps, [r["memory_tokens"] for r in result["rows"]], "o-", label="memory: all of C (tokens)")
    ax.plot(steps, [r["prompt_tokens"] for r in result["rows"]], "s-",
            label=f"prompt: mean over {result['probe_task']} val inputs (tokens)")
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("tokens")
    ax.set_title(f"{result['stream']} ({result['scenario']}): memory grows, prompts stay bounded")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--sizes", default=None, help="train,val,test the run used, if not the stream's default")
    ap.add_argument("--name", default=None, help="name of the output files (default: the run folder's name)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "experiments" / "results")
    args = ap.parse_args(argv)
    sizes = tuple(int(x) for x in args.sizes.split(",")) if args.sizes else None
    result = growth(args.run_dir, sizes)  # type: ignore[arg-type]
    name = args.name or args.run_dir.resolve().name
    write_json(args.out_dir / f"prompt_growth_{name}.json", result)
    plot(result, args.out_dir / f"prompt_growth_{name}.png")
    print(f"{'step':>4}  {'task':<28}{'prompt tokens':>14}{'memory tokens':>15}")
    for r in result["rows"]:
        print(f"{r['step']:>4}  {str(r['task']):<28}{r['prompt_tokens']:>14}{r['memory_tokens']:>15}")
    print(f"prompt tokens after the last step / after step 1: {result['ratio_last_to_first']}")
    print(f"wrote {args.out_dir / f'prompt_growth_{name}.json'} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
