"""The HTML report: content, Markdown table, CLI, and a real render in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ctxopt.cli import main as cli_main
from ctxopt.errors import DataError
from ctxopt.matrix import RunResult, StepRecord
from ctxopt.report import METHODS_PNG, markdown_table, methods_figure, write_report

TASKS = ["antonyms", "sum", "diff"]
R = [[0.8, 0.1, 0.2], [0.6, 0.9, 0.3], [0.5, 0.7, 1.0]]


def _run(method: str, scale: int) -> RunResult:
    steps = [
        StepRecord(i, t, context_tokens=40 * (i + 1) * scale, task_calls=70, task_tokens=9000,
                   reflection_calls=3 * scale, reflection_tokens=2000 * scale, wall_s=2.0, accepted=bool(i % 2))
        for i, t in enumerate(TASKS)
    ]
    return RunResult(method, TASKS, [0.1, 0.2, 0.1], [list(r) for r in R], steps, {"stream": "ii:antonyms,sum,diff"})


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    _run("static", 0).save(tmp_path)
    _run("ctxopt <b>", 1).save(tmp_path)  # a name that must be escaped in HTML
    return tmp_path


def test_markdown_table(run_dir):
    from ctxopt.matrix import load_results

    md = markdown_table(load_results(run_dir))
    lines = md.strip().splitlines()
    assert lines[0] == "| method | ACC | BWT | FWT | cum. loss | LM calls | LM tokens | wall s |"
    assert lines[2] == "| static | 0.733 | -0.250 | 0.050 | 0.717 | 210 | 27000 | 6.0 |"
    assert lines[3].startswith("| ctxopt <b> | 0.733 |") and "| 219 | 33000 |" in lines[3]


def test_write_report_is_self_contained(run_dir):
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text()
    imgs = re.findall(r"<img [^>]*src=\"([^\"]+)\"", page)
    # methods side by side + two overview plots + (heatmap, curves) per method
    assert len(imgs) == 3 + 2 * 2
    assert all(src.startswith("data:image/png;base64,iVBOR") for src in imgs)
    assert "ctxopt &lt;b&gt;" in page and "<b>" not in page.replace("<body>", "")
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "-0.250" in page and "after sum" in page
    summary = (run_dir / "summary.md").read_text()
    assert summary.startswith("# ctxopt report:") and "| static | 0.733 |" in summary


def test_methods_side_by_side_show_learned_then_final_scores(run_dir):
    from ctxopt.matrix import load_results

    results = load_results(run_dir)
    learned, final = methods_figure(results).axes[:2]
    assert [t.get_text() for t in learned.texts[:3]] == ["0.80", "0.90", "1.00"]  # the diagonal R[i][i]
    assert [t.get_text() for t in final.texts[:3]] == ["0.50", "0.70", "1.00"]  # the last row: task 1 forgot 0.3
    assert [t.get_text() for t in learned.get_yticklabels()] == ["static (0.90)", "ctxopt <b> (0.90)"]
    write_report(run_dir)
    assert (run_dir / METHODS_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_method_gets_no_side_by_side_figure(tmp_path):
    _run("ctxopt", 1).save(tmp_path)
    write_report(tmp_path)
    assert not (tmp_path / METHODS_PNG).exists()


def test_report_of_a_run_in_progress_without_steps(tmp_path):
    RunResult("early", TASKS, [0.1, 0.2, 0.1], [list(R[0])]).save(tmp_path)
    page = write_report(tmp_path).read_text()
    assert "In progress: 1 of 3 tasks learned." in page
    assert page.count("data:image/png;base64,") == 4
    assert "| early | 0.800 | 0.000 | 0.000 | 0.200 | 0 | 0 | 0.0 |" in (tmp_path / "summary.md").read_text()


def test_cli_report_and_errors(run_dir, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "r.html"
    assert cli_main(["report", str(run_dir), "-o", str(out)]) == 0
    assert out.is_file() and (out.parent / "summary.md").is_file()
    assert capsys.readouterr().out.strip() == str(out)
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    with pytest.raises(DataError):
        write_report(tmp_path / "elsewhere")


def test_cli_streams_lists_builtins(capsys):
    assert cli_main(["streams"]) == 0
    out = capsys.readouterr().out
    assert "ii-8" in out and "babi-10" in out
    assert cli_main(["streams", "ii:antonyms,sum", "--sizes", "3,2,4"]) == 0
    out = capsys.readouterr().out
    assert "antonyms" in out and "exact_match" in out and "    3    2     4" in out


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    browser = _chromium()
    if browser is None:
        reason = "chromium is not installed (apt-get install -y chromium); report render check skipped"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    path = write_report(run_dir)
    flags = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run([*flags, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    imgs = re.findall(r"<img [^>]*>", html)
    assert len(imgs) == 7  # methods side by side, two overview plots, two per method
    assert all('src="data:image/png;base64,' in tag for tag in imgs)
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<img [^>]*>", "", html))
    assert "Error" not in text and "Traceback" not in text
    assert "Methods" in text and "Accuracy matrix" in text

    shot = tmp_path / "shot.png"
    res = subprocess.run(
        [*flags, "--window-size=1200,1800", f"--screenshot={shot}", path.as_uri()],
        capture_output=True, text=True, timeout=90,
    )
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(str(shot))
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert float(pixels[..., :3].std()) > 0.05  # not a blank page: text, tables and plots
    dark = (pixels[..., :3].mean(axis=-1) < 0.5).mean()
    assert 0.005 < dark < 0.6
