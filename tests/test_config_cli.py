"""`ctxopt run CONFIG.yaml`: config validation errors and a full run on scripted LMs."""

from __future__ import annotations

import json

import pytest

import ctxopt.lm
from ctxopt.cli import main
from ctxopt.config import load_config
from ctxopt.errors import ConfigError
from tests.toy import RULES, WORDS, reflection_lm, task_lm


def _write(path, text):
    path.write_text(text)
    return path


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("body, key", [
    ("stream: ii-8\nrun_dir: r\nbogus: 1\n", "bogus"),
    ("stream: ii-8\nrun_dir: r\nseed: many\n", "seed"),
    ("stream: ii-8\nrun_dir: r\nbudget: {preset: light, n_trails: 3}\n", "n_trails"),
    ("stream: ii-8\nrun_dir: r\nbudget: enormous\n", "enormous"),
    ("stream: ii-8\nrun_dir: r\ngate: lenient\n", "gate"),
    ("run_dir: r\n", "stream"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path, body, key):
    path = _write(tmp_path / "c.yaml", body)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert key in message and str(path) in message and "\n" not in message


def test_long_builtin_stream_spec_is_not_mistaken_for_a_file(tmp_path):
    from ctxopt.streams import II_TASKS, load_stream

    spec = "ii:" + ",".join(II_TASKS[:20])  # longer than a file name may be
    config = load_config(_write(tmp_path / "c.yaml", f"stream: {spec}\nrun_dir: r\n"))
    assert config.stream == spec
    assert [t.name for t in load_stream(spec, sizes=(1, 1, 1))] == list(II_TASKS[:20])
    with pytest.raises(ConfigError, match="unknown stream"):
        load_stream("x" * 300)


def test_cli_reports_bad_config_without_traceback(tmp_path, capsys):
    path = _write(tmp_path / "c.yaml", "stream: ii-8\nrun_dir: r\nepsilon: 3\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ctxopt: error:") and "epsilon" in err and "Traceback" not in err


def _toy_stream_yaml(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    tasks = []
    for k, name in enumerate(("suffix", "reverse")):
        fn = RULES[name][1]
        rows = [{"input": f"{w}{k}", "output": fn(f"{w}{k}")} for w in WORDS]
        for split, part in (("train", rows[:12]), ("val", rows[12:22]), ("test", rows[22:30])):
            (data / f"{name}.{split}.jsonl").write_text("\n".join(json.dumps(r) for r in part))
        tasks.append(f"  - name: {name}\n    train: data/{name}.train.jsonl\n"
                     f"    val: data/{name}.val.jsonl\n    test: data/{name}.test.jsonl\n")
    return _write(tmp_path / "stream.yaml", "name: toy\nscenario: task-aware\ninputs: [input]\noutput: output\n"
                                             "metric: exact_match\ntasks:\n" + "".join(tasks))


def test_run_command_end_to_end_and_rerun_is_cached(tmp_path, monkeypatch, capsys):
    lms = {"task": task_lm(cache=True), "reflect": reflection_lm(cache=True)}
    monkeypatch.setattr(ctxopt.lm, "get_lm", lambda spec, **kw: lms[spec])
    stream = _toy_stream_yaml(tmp_path)
    config = _write(tmp_path / "run.yaml", f"stream: {stream.name}\nrun_dir: {tmp_path / 'run'}\n"
                                          "task_lm: task\nreflection_lm: reflect\n"
                                          "budget: {preset: light, n_trials: 4, val_minibatch: 5}\n")
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    assert "accuracy matrix" in out and "ACC 100.0" in out and "report:" in out
    assert (tmp_path / "run" / "report.html").exists()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["runs"][0]["R"] == [[1.0, 0.0], [1.0, 1.0]]
    model_calls = lms["task"].usage.snapshot().model_calls
    assert main(["run", str(config)]) == 0  # a rerun resumes a finished run: no new model calls
    assert lms["task"].usage.snapshot().model_calls == model_calls


def test_run_progress_in_a_log_says_the_phase_at_most_once_a_minute():
    import io

    from rich.console import Console

    from ctxopt.cli._progress import Heartbeat, RunProgress
    from ctxopt.optimizer import Event
    from tests.toy import reflection_lm, task_lm

    now = [0.0]
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with RunProgress(3, task_lm(), reflection_lm(), console) as progress:
        progress.heartbeat = Heartbeat(console, 60, clock=lambda: now[0])
        for t, kind, data in [(5, "phase", {"phase": "search"}), (70, "trial", {"number": 0}),
                              (80, "trial", {"number": 1}), (200, "phase", {"phase": "measure", "done": 2, "total": 3})]:
            now[0] = t
            progress.on_event(Event(kind, 2, "plural" if kind != "phase" or t < 200 else "", data))
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("    … ")]
    assert lines == ["    … plural: search, trial 1  [70 s]", "    … all tasks: measure 2/3  [200 s]"]
