"""A self-contained HTML report of a run folder, plus the summary as Markdown.

:func:`write_report` reads every method's :class:`~ctxopt.matrix.RunResult` in
a run folder and writes ``report.html`` (plots embedded as base64 PNG; no
external files, scripts or fonts) and ``summary.md`` next to it. The page has:

* a table of methods with ACC, BWT, FWT, cumulative loss and LM calls/tokens;
* per method: the accuracy-matrix heatmap (with the "before" row r0), the
  per-task score curves over steps, and the matrix and step records as tables;
* context tokens over steps and LM calls over steps (task vs reflection), one
  line per method;
* with several methods, the methods side by side (:func:`methods_figure`): each
  task's test score right after learning it and at the end, so forgetting shows
  as a cell that darkens from the left panel to the right (also written to
  ``methods.png``);
* where steps record them: item count over steps, and consolidations proposed,
  accepted and rolled back per step (:mod:`ctxopt.consolidate`);
* per method whose steps record gate outcomes, a line saying how often the gate
  accepted, rejected or was undecided, and the rounds of sample growth it took
  (:func:`gate_summary`).

Plots use matplotlib's object API (``Figure``), never ``pyplot``, so no global
backend state changes and no window opens.

Example:
    >>> from ctxopt.matrix import RunResult
    >>> print(markdown_table([RunResult("static", ["a"], [0.5], [[0.5]])]).splitlines()[2])
    | static | 0.500 | 0.000 | 0.000 | 0.500 | 0 | 0 | 0.0 |
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ctxopt._atomic import write_bytes, write_text
from ctxopt.matrix import RunResult, load_results

__all__ = ["write_report", "markdown_table", "methods_figure", "gate_summary", "REPORT_FILE", "SUMMARY_FILE",
           "METHODS_PNG"]

REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.md"
METHODS_PNG = "methods.png"


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _rows(results: Sequence[RunResult]) -> list[list[str]]:
    rows = []
    for r in results:
        s = r.summary()
        rows.append(
            [
                r.method,
                _fmt(s["acc"]),
                _fmt(s["bwt"]),
                _fmt(s["fwt"]),
                _fmt(s["cumulative_loss"]),
                str(s["calls"]),
                str(s["tokens"]),
                _fmt(float(s["wall_s"]), 1),
            ]
        )
    return rows


_HEADER = ["method", "ACC", "BWT", "FWT", "cum. loss", "LM calls", "LM tokens", "wall s"]


def markdown_table(results: Sequence[RunResult]) -> str:
    """The methods table (ACC/BWT/FWT/cumulative loss/calls/tokens/wall time) as Markdown.

    Example:
        >>> from ctxopt.matrix import RunResult
        >>> markdown_table([RunResult("m", ["a", "b"], [0, 0], [[1, 0], [1, 1]])]).splitlines()[0]
        '| method | ACC | BWT | FWT | cum. loss | LM calls | LM tokens | wall s |'
    """
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "|".join(["---"] + ["---:"] * (len(_HEADER) - 1)) + "|"]
    for row in _rows(results):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plots


def _png_bytes(fig: Any) -> bytes:
    with io.BytesIO() as buf:
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        return buf.getvalue()


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def _png(fig: Any) -> str:
    return _b64(_png_bytes(fig))


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _heatmap(run: RunResult) -> str:
    n = len(run.tasks)
    rows = [list(run.r0)] + [list(r) for r in run.R]
    labels = ["before"] + [f"after {t}" for t in run.tasks[: len(run.R)]]
    fig = _figure(1.6 + 0.7 * n, 1.2 + 0.45 * len(rows))
    ax = fig.add_subplot()
    im = ax.imshow(rows, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(n), run.tasks, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_xlabel("evaluated task")
    ax.set_title(f"{run.method}: test score R[i][j]", fontsize=10)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _png(fig)


def methods_figure(results: Sequence[RunResult]) -> Any:
    """Methods (rows) by tasks (columns), two panels: each task's test score right after
    learning it (the diagonal R[i][i]) and at the end (the last row), plus their means.

    A method that forgets has cells that are lower on the right than on the left; for a joint
    method, which learns once before the first step, the two panels agree.
    """
    runs = [r for r in results if r.R]
    tasks = list(runs[0].tasks) if runs else []
    n = len(tasks)
    fig = _figure(3.0 + 1.1 * n, 1.4 + 0.38 * max(1, len(runs)))
    panels = [("right after learning the task", lambda r: [r.R[i][i] if i < len(r.R) else float("nan")
                                                           for i in range(n)]),
              ("at the end of the stream", lambda r: list(r.R[-1]) if len(r.R) == n else [float("nan")] * n)]
    for k, (title, values) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        rows = [values(r) for r in runs]
        ax.imshow(rows or [[0.0] * max(1, n)], vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(n), [t[:18] for t in tasks], rotation=40, ha="right", fontsize=7)
        ax.set_yticks(range(len(runs)), [f"{r.method} ({_mean(v):.2f})" for r, v in zip(runs, rows)], fontsize=8)
        ax.set_title(f"test score {title} (mean)", fontsize=9)
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                if v == v:  # not NaN
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if v < 0.6 else "black")
    return fig


def _mean(values: Sequence[float]) -> float:
    real = [v for v in values if v == v]
    return sum(real) / len(real) if real else float("nan")


def _curves(run: RunResult) -> str:
    fig = _figure(7.5, 3.6)
    ax = fig.add_subplot()
    steps = list(range(len(run.R) + 1))
    for j, task in enumerate(run.tasks):
        ax.plot(steps, [run.r0[j]] + [row[j] for row in run.R], marker="o", ms=3, label=task)
    ax.set_xticks(steps, ["before"] + [str(i + 1) for i in range(len(run.R))])
    ax.set_xlabel("after learning task #")
    ax.set_ylabel("test score")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{run.method}: per-task test score over steps", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(alpha=0.3)
    return _png(fig)


def _over_steps(results: Sequence[RunResult], title: str, ylabel: str, series: Any) -> str:
    fig = _figure(7.5, 3.4)
    ax = fig.add_subplot()
    for r in results:
        for label, style, values in series(r):
            if values:
                ax.plot([s.step for s in r.steps], values, style, marker="o", ms=3, label=label)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step (task #)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    else:
        ax.text(0.5, 0.5, "no step records", ha="center", va="center", transform=ax.transAxes)
    return _png(fig)


def _context_plot(results: Sequence[RunResult]) -> str:
    return _over_steps(
        results,
        "learned context size over steps",
        "context tokens",
        lambda r: [(r.method, "-", [s.context_tokens for s in r.steps])],
    )


def _calls_plot(results: Sequence[RunResult]) -> str:
    return _over_steps(
        results,
        "LM calls per step (solid: task LM, dashed: reflection LM)",
        "LM calls",
        lambda r: [
            (f"{r.method} task", "-", [s.task_calls for s in r.steps]),
            (f"{r.method} reflection", "--", [s.reflection_calls for s in r.steps]),
        ],
    )


def gate_summary(run: RunResult) -> str:
    """One line on the run's gate decisions (:meth:`RunResult.gate_counts`); empty if no step records one.

    Example:
        >>> from ctxopt.matrix import StepRecord
        >>> steps = [StepRecord(1, "a", extra={"gate_outcome": "undecided", "gate_rounds": 2})]
        >>> gate_summary(RunResult("m", ["a"], [0.0], steps=steps))
        'gate: 0 accepted, 0 rejected, 1 undecided at first (2 rounds of growing replay samples)'
    """
    if not any("gate_outcome" in s.extra for s in run.steps):
        return ""
    c = run.gate_counts()
    fell = f"; {c['fallbacks']} fallback(s) after harm, {c['landed']} landed" if c["fallbacks"] else ""
    return (f"gate: {c['accepted']} accepted, {c['rejected']} rejected, {c['undecided']} undecided at first "
            f"({c['rounds']} rounds of growing replay samples){fell}")


def _has(results: Sequence[RunResult], key: str) -> bool:
    return any(key in s.extra for r in results for s in r.steps)


def _items_plot(results: Sequence[RunResult]) -> str:
    return _over_steps(
        results,
        "learned items over steps",
        "items",
        lambda r: [(r.method, "-", [int(s.extra.get("items", 0)) for s in r.steps])],
    )


def consolidation_section(results: Sequence[RunResult]) -> str:
    """Items over steps and a per-step table of consolidations; empty when no step records them."""
    if not _has(results, "items"):
        return ""
    parts = ["<h2>Items and consolidation</h2>", _img(_items_plot(results), "learned items over steps")]
    for r in results:
        if not any("consolidations_proposed" in s.extra for s in r.steps):
            continue
        rows = [[str(s.step), s.task, str(s.context_tokens), _fmt(s.extra.get("max_context_tokens")),
                 str(s.extra.get("items", "–")), str(s.extra.get("consolidations_proposed", 0)),
                 str(s.extra.get("consolidations_accepted", 0)), str(s.extra.get("consolidations_rolled_back", 0)),
                 ", ".join(s.extra.get("consolidation_kinds", [])) or "–"] for s in r.steps]
        header = ["step", "task", "context tok", "budget", "items", "proposed", "accepted", "rolled back", "kinds"]
        parts.append(f"<h3>{html.escape(r.method)}</h3>" + _table(header, rows))
    return "\n".join(parts)


# --------------------------------------------------------------------------- html

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;display:block;margin:8px 0}.meta{color:#666;font-size:12px}
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(data: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _method_section(run: RunResult) -> str:
    s = run.summary()
    parts = [f"<h2>{html.escape(run.method)}</h2>"]
    if run.meta:
        meta = ", ".join(f"{k}: {v}" for k, v in sorted(run.meta.items()) if not isinstance(v, dict | list))
        if meta:
            parts.append(f'<p class="meta">{html.escape(meta)}</p>')
    if not run.complete:
        parts.append(f"<p>In progress: {len(run.R)} of {len(run.tasks)} tasks learned.</p>")
    if gate_summary(run):
        parts.append(f"<p>{html.escape(gate_summary(run).capitalize())}.</p>")
    red = run.meta.get("redundancy")
    if red:
        para = (f", {red['paraphrases']} paraphrase pair(s) (similarity ≥ {red['merge_threshold']})"
                if "paraphrases" in red else "")
        parts.append(f"<p>Redundancy of the final context: {red['near_duplicates']} near-duplicate and "
                     f"{red['contradictions']} contradicting pair(s) among {red['pairs']} item pairs in overlapping "
                     f"scopes ({red['items']} items; {html.escape(str(red['similarity']))} similarity ≥ "
                     f"{red['threshold']}){para}.</p>")
    hits = [(st.step, st.task, st.extra["retrieval_hits"]) for st in run.steps if st.extra.get("retrieval_hits")]
    if hits:
        rows = [[f"after {task} (step {step})", *(_fmt(h.get(t)) for t in run.tasks)] for step, task, h in hits]
        parts.append("<h3>Retrieval hit rate</h3><p>Share of the items retrieved for each task's val inputs that "
                     "were learned on that task (– : nothing retrieved or not seen yet).</p>"
                     + _table(["", *run.tasks], rows))
    parts.append(_img(_heatmap(run), f"accuracy matrix heatmap of {run.method}"))
    parts.append(_img(_curves(run), f"per-task score curves of {run.method}"))
    matrix_rows = [["before", *(_fmt(v) for v in run.r0)]]
    matrix_rows += [[f"after {run.tasks[i]}", *(_fmt(v) for v in row)] for i, row in enumerate(run.R)]
    parts.append("<h3>Accuracy matrix</h3>" + _table(["", *run.tasks], matrix_rows))
    if s["forgetting"]:
        parts.append(
            "<h3>Forgetting per task</h3>"
            + _table(run.tasks[: len(s["forgetting"])], [[_fmt(v) for v in s["forgetting"]]])
        )
    if run.steps:
        step_rows = [
            [
                str(st.step),
                st.task,
                str(st.context_tokens),
                str(st.task_calls),
                str(st.task_tokens),
                str(st.reflection_calls),
                str(st.reflection_tokens),
                _fmt(st.wall_s, 1),
                "–" if st.accepted is None else ("yes" if st.accepted else "no"),
            ]
            for st in run.steps
        ]
        header = ["step", "task", "context tok", "task calls", "task tok", "refl. calls", "refl. tok", "wall s", "accepted"]
        parts.append("<h3>Steps</h3>" + _table(header, step_rows))
    return "\n".join(parts)


def render_html(results: Sequence[RunResult], title: str, side_by_side: bytes | None = None) -> str:
    """The report page for some run results (used by :func:`write_report`).

    ``side_by_side`` is the PNG of :func:`methods_figure`, shown below the methods table when given.
    """
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{len(results)} method(s); generated {now} by ctxopt</p>',
        "<h2>Methods</h2>",
        _table(_HEADER, _rows(results)),
        "<p class=\"meta\">ACC: mean final test score. BWT: mean change on earlier tasks since learning them "
        "(negative = forgetting). FWT: mean gain on a task before meeting it, relative to before any learning. "
        "cum. loss: sum over steps of the mean loss on tasks seen so far.</p>",
        _img(_context_plot(results), "context tokens over steps"),
        _img(_calls_plot(results), "LM calls over steps"),
    ]
    if side_by_side is not None:
        body.insert(4, _img(_b64(side_by_side), "methods side by side: learned vs final test scores"))
    body.append(consolidation_section(results))
    body += [_method_section(r) for r in results]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` and ``summary.md`` for a run folder.

    Args:
        run_dir: A folder with ``results.json`` (or method subfolders holding one).
        out: Where to write the HTML (default ``run_dir/report.html``); the
            Markdown summary goes next to it as ``summary.md``.

    Returns:
        The path of the HTML report.

    Raises:
        DataError: The folder holds no readable results.
    """
    results = load_results(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    title = f"ctxopt report: {Path(run_dir).resolve().name}"
    side_by_side = _png_bytes(methods_figure(results)) if len(results) > 1 else None  # rendered once, used twice
    write_text(path, render_html(results, title, side_by_side))
    if side_by_side is not None:
        write_bytes(path.parent / METHODS_PNG, side_by_side)
    write_text(path.parent / SUMMARY_FILE, f"# {title}\n\n" + markdown_table(results))
    return path
