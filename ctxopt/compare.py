"""Run several methods side by side over one stream: one engine, one measurement, one table.

:func:`compare` runs each method (:mod:`ctxopt.baselines`) through the run
engine (:class:`ctxopt.engine.Engine`), the same loop ``ctxopt run`` uses; only
the method's ``learn`` differs. Each method gets its own run directory
``RUN_DIR/<method>/`` (:class:`~ctxopt.rundir.RunDir`: ``state.json``, a
git-backed store whose first version is C₀, the step clock), the same task LM,
reflection LM, seed and per-task budget, and the same cost columns
(:class:`~ctxopt.engine.StepCosts`). Every method's result is added to
``RUN_DIR/results.json`` after every step.

**One failure is one bad step.** A method that raises while learning (a DSPy
optimizer choking on a small model's replies, say) keeps its context for that
step; the error is logged and recorded in the step record (``extra["error"]``)
and the run goes on.

**Resume and cache.** A finished method is skipped on rerun; a killed one
restarts from its last finished task. Test rows are cached in
``RUN_DIR/eval_cache`` (shared by all methods, so equal contexts are measured
once), a method's own evaluations in ``RUN_DIR/<method>/eval_cache`` (so its
call count does not depend on which methods ran before it), and LM requests in
DSPy's request cache (the CLI points it at ``RUN_DIR/dspy_cache``), so a rerun
costs next to nothing. A step cut off mid-learning starts again from its
beginning, its cached requests answered at once; its ``wall_s`` adds the
seconds the killed attempts spent and ``extra["learn_attempts"]`` says how
many attempts it took. The comparable cost, ``task_model_calls`` (requests
that reached the model), holds for a cold run only.

Example:
    >>> from ctxopt.matrix import RunResult
    >>> print(comparison_table([RunResult("static", ["a"], [0.5], [[0.5]])]).splitlines()[2])
    | static | 0.500 | 0.000 | 0.000 | 0 | 0 | 0 | 0 | 0 | 0 | – | 0.0 s |
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dspy

from ctxopt._atomic import write_text
from ctxopt.baselines import DEFAULT_CONTEXT_TOKENS, Method, get_methods
from ctxopt.budget import Budget, get_budget
from ctxopt.engine import Engine, RunEvent
from ctxopt.evaluator import Evaluator
from ctxopt.matrix import RunResult
from ctxopt.rundir import RunDir
from ctxopt.tasks import TaskStream

__all__ = ["TABLE_FILE", "CompareEvent", "compare", "compare_specs", "comparison_table", "write_comparison"]

log = logging.getLogger(__name__)

TABLE_FILE = "comparison.md"

CompareEvent = RunEvent
"""Progress of a comparison (the engine's :class:`~ctxopt.engine.RunEvent`)."""

Callback = Callable[[RunEvent], None]


def compare(
    program: dspy.Module,
    stream: TaskStream,
    methods: str | Sequence[str | Method],
    *,
    task_lm: Any,
    reflection_lm: Any,
    run_dir: str | Path,
    budget: str | Budget | dict | None = "light",
    seed: int = 0,
    num_threads: int = 2,
    max_context_tokens: int | None = None,
    callbacks: Sequence[Callback] = (),
    report: bool = True,
) -> list[RunResult]:
    """Run ``methods`` side by side over ``stream``; resumable, cached.

    Args:
        program: The ``dspy.Module`` every method starts from (its context is C₀).
        stream: The tasks, in order.
        methods: Names (``"static,append"`` or a list) or :class:`~ctxopt.baselines.Method` objects.
        task_lm: The LM that runs the program (shared by all methods).
        reflection_lm: The LM that reflects/summarizes/proposes (shared by all methods).
        run_dir: Holds ``results.json``, the table, the report, the caches and one folder per method.
        budget: Preset name, dict or :class:`Budget`; every method gets its per-task limits.
        seed: Seeds every method.
        num_threads: Evaluation threads.
        max_context_tokens: Context budget of ``append``/``summarize`` (default: the budget's
            ``max_context_tokens``, else :data:`~ctxopt.baselines.DEFAULT_CONTEXT_TOKENS`).
        callbacks: Receive :class:`~ctxopt.engine.RunEvent` s.
        report: Write ``comparison.md`` and the HTML report at the end.

    Returns:
        One :class:`RunResult` per method, in the order given.

    Raises:
        ConfigError: Unknown or duplicate method, a method that does not fit the stream,
            or a run directory that holds a different run.
    """
    chosen = get_methods(methods if isinstance(methods, str) else list(methods))
    for m in chosen:
        check = getattr(m, "check", None)
        if callable(check):
            check(stream.names)
    if getattr(task_lm, "usage", None) is not None and task_lm is reflection_lm:
        log.warning("the task LM and the reflection LM are one object; their call counts cannot be told apart")
    budget_obj = get_budget(budget)
    tokens = max_context_tokens or budget_obj.max_context_tokens or DEFAULT_CONTEXT_TOKENS
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    # Test rows: one cache for all methods (equal contexts are measured once). Learning: one cache
    # per method, so no method's call count depends on which methods ran before it.
    measure = Evaluator(task_lm, num_threads=num_threads, cache_dir=folder / "eval_cache")
    engine = Engine(program, stream, task_lm, reflection_lm, budget_obj, seed, measure, num_threads=num_threads,
                    max_context_tokens=tokens, callbacks=callbacks)
    results = []
    try:
        for m in chosen:
            learn = Evaluator(task_lm, num_threads=num_threads, cache_dir=folder / m.name / "eval_cache")
            try:
                results.append(engine.run(m, RunDir(folder / m.name), learn, results_dir=folder))
            finally:
                learn.close()
    finally:
        measure.close()
    if report:
        write_comparison(folder, results)
    return results


def compare_specs(
    *,
    stream: str,
    methods: str,
    run_dir: str,
    task_lm: str = "local",
    reflection_lm: str = "local:qwen2.5-coder-1.5b",
    budget: str = "light",
    seed: int = 0,
    sizes: Sequence[int] | None = None,
    scenario: str | None = None,
    context_tokens: int | None = None,
    num_threads: int = 2,
    gate: str = "paired",
    storage: str | None = None,
    search_workers: int = 1,
    program: str = "builtin",
    callbacks: Sequence[Callback] = (),
    report: bool = True,
) -> list[dict[str, Any]]:
    """:func:`compare` from plain data, as ``ctxopt compare`` runs it; also one job of ``--executor ray``.

    Builds the stream, the program (``program``: :func:`~ctxopt.program.build_program`) and both LMs from their specs,
    points DSPy's request cache at ``RUN_DIR/dspy_cache`` and runs ``methods`` (comma-separated names;
    ``ctxopt`` and ``ctxopt-<stage policy>``, e.g. ``ctxopt-output``, get ``gate``, ``storage`` and
    ``search_workers``).

    Returns:
        Each method's :class:`RunResult` as a dict (plain data, so it crosses processes).
    """
    from ctxopt.baselines.continual import CtxoptMethod
    from ctxopt.lm import get_lm
    from ctxopt.program import build_program
    from ctxopt.streams import load_stream

    the_stream = load_stream(stream, seed=seed, sizes=tuple(sizes) if sizes else None, scenario=scenario)
    chosen: list[str | Method] = [
        CtxoptMethod(gate=gate, storage=storage, search_workers=search_workers,
                     stages=m.strip().removeprefix("ctxopt-") if m.strip() != "ctxopt" else "credit")
        if m.strip() == "ctxopt" or m.strip().startswith("ctxopt-") else m.strip()
        for m in methods.split(",") if m.strip()]
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    dspy.configure_cache(disk_cache_dir=str(folder / "dspy_cache"))  # the request cache lives with the run
    results = compare(build_program(program, the_stream), the_stream, chosen, task_lm=get_lm(task_lm),
                      reflection_lm=get_lm(reflection_lm, max_tokens=768), run_dir=folder, budget=budget, seed=seed,
                      num_threads=num_threads, max_context_tokens=context_tokens, callbacks=callbacks, report=report)
    return [r.to_dict() for r in results]


def _fmt(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _total(r: RunResult, key: str) -> int:
    return sum(int(s.extra.get(key, 0) or 0) for s in r.steps)


def _redundancy(r: RunResult) -> str:
    red = r.meta.get("redundancy")
    return f"{red['near_duplicates']} / {red.get('paraphrases', 0)} / {red['contradictions']}" if red else "–"


def comparison_table(results: Sequence[RunResult]) -> str:
    """The comparison as Markdown, with the same cost columns for every method (learning only).

    Columns: method | ACC | BWT | FWT | task-model calls (requests that reached the task model; a cold
    run's cost) | charged calls (what the budget counted) | task prompt tokens | task completion tokens |
    reflection calls | final context tokens | near-duplicate / paraphrase / contradicting item pairs in the
    final context | wall time.
    """
    header = ["method", "ACC", "BWT", "FWT", "task-model calls", "charged calls", "task prompt tokens",
              "task completion tokens", "reflection calls", "final context tokens",
              "near-dup / paraphrase / contra pairs", "wall time"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r in results:
        s = r.summary()
        cells = [r.method, _fmt(s["acc"]), _fmt(s["bwt"]), _fmt(s["fwt"]), str(_total(r, "task_model_calls")),
                 str(_total(r, "charged_task_calls")), str(_total(r, "task_prompt_tokens")),
                 str(_total(r, "task_completion_tokens")), str(s["reflection_calls"]),
                 str(r.meta.get("final_context_tokens", s["context_tokens"])), _redundancy(r), f"{s['wall_s']:.1f} s"]
        if not r.complete:
            cells[0] += f" ({len(r.R)}/{len(r.tasks)} tasks)"
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(run_dir: str | Path, results: Sequence[RunResult]) -> tuple[Path, Path]:
    """Write ``comparison.md`` (table + per-method budget notes) and the HTML report; return both paths."""
    from ctxopt.report import gate_summary, write_report

    folder = Path(run_dir)
    budget = results[0].meta.get("budget", {}) if results else {}
    meta = results[0].meta if results else {}
    intro = (f"Stream {meta.get('stream', '?')}, seed {meta.get('seed', '?')}, per-task budget "
             f"{budget.get('task_calls_per_task')} task-LM program calls. Costs are those of learning; measuring "
             "the test rows is not counted. Task-model calls are requests that reached the task model (the cost "
             "of a cold run: a resumed or rerun method reads its caches); charged calls are what the budget "
             "counted. Wall time is learning time.")
    lines = [f"# Comparison: {folder.resolve().name}", "", intro, "", comparison_table(results)]
    gates = [f"- {r.method}: {gate_summary(r)}" for r in results if gate_summary(r)]
    if gates:
        lines += ["Gate decisions per step (the first decision, before any replay sample grew):", "", *gates]
    errors = [(r.method, s.step, s.task, s.extra["error"]) for r in results for s in r.steps if s.extra.get("error")]
    if errors:
        lines += ["", "Failed steps (context kept):", ""]
        lines += [f"- {m} step {st} ({t}): {e}" for m, st, t, e in errors]
    table = folder / TABLE_FILE
    write_text(table, "\n".join(lines) + "\n")
    return table, write_report(folder)
