"""Streams: YAML loading, every bad-input error, built-ins, split hygiene, sealed test."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import textwrap
from pathlib import Path

import dspy
import pytest

from ctxopt.errors import ConfigError, DataError
from ctxopt.program import program_for
from ctxopt.streams import BABI10, II8, II_TASKS, builtin_streams, load_stream
from ctxopt.tasks import Task, TaskStream, example_id, sealed_test_split

DATA = Path(__file__).parent / "data"
SMALL = (6, 4, 5)


def ids(examples) -> set[str]:
    return {example_id(e) for e in examples}


# --------------------------------------------------------------------------- YAML


def test_yaml_stream_loads_all_file_kinds_relative_to_the_yaml_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # relative paths must not depend on the working directory
    s = load_stream(str(DATA / "stream_ok" / "stream.yaml"))
    assert s.name == "toy-stream" and s.scenario == "task-aware"
    assert s.names == ("antonyms", "plurals", "capitals")
    assert s.program_inputs == ("task", "input") and s.output == "output"

    ant = s["antonyms"]
    assert (len(ant.train), len(ant.val), ant.test_size) == (4, 2, 3)  # blank JSONL line skipped
    happy = next(e for e in ant.train if e.input == "happy")
    assert happy.output == "sad" and happy["_answers"] == ("sad", "unhappy")  # list output = answers
    assert happy.task == "antonyms" and set(happy.inputs().keys()) == {"task", "input"}
    assert ant.metric(happy, {"output": "Unhappy."}).score == 1.0

    plurals = s["plurals"]  # no val given: a quarter of train is carved out
    assert (len(plurals.train), len(plurals.val), plurals.test_size) == (4, 1, 3)
    assert plurals.metric_name == "contains"
    assert {e.input for e in sealed_test_split(plurals)} == {"child", "ox", "bus"}  # CSV, quoted fields

    caps = s["capitals"]  # one file split 0.5/0.2/0.3 by seed
    assert (len(caps.train), len(caps.val), caps.test_size) == (5, 2, 3)
    assert caps.metric_name == "f1"


def test_yaml_task_agnostic_override_and_sizes():
    s = load_stream(DATA / "stream_ok" / "stream.yaml", scenario="task-agnostic", sizes=(2, 1, 1))
    assert s.program_inputs == ("input",)
    t = s["antonyms"]
    assert (len(t.train), len(t.val), t.test_size) == (2, 1, 1)
    assert all("task" not in e for e in t.train)


def test_parquet_task_file(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [{"q": f"{i}+1", "a": str(i + 1)} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "sum.parquet")
    _write(
        tmp_path / "s.yaml",
        """
        name: p
        inputs: [q]
        output: a
        tasks:
          - {name: sum, train: sum.parquet, val: sum.parquet, test: sum.parquet}
        """,
    )
    t = load_stream(tmp_path / "s.yaml")["sum"]
    assert len(t.train) == 6 and {e.a for e in t.train} == {str(i + 1) for i in range(6)}


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def broken(tmp_path):
    """A folder with good task files; each test writes its own stream.yaml."""
    (tmp_path / "good.jsonl").write_text('{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}\n')
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "nofield.jsonl").write_text('{"input": "a", "output": "b"}\n{"input": "c"}\n')
    return tmp_path


def _stream_yaml(folder: Path, tasks: str, metric: str = "exact_match") -> Path:
    header = f"name: bad\ninputs: [input]\noutput: output\nmetric: {metric}\ntasks:\n"
    body = textwrap.indent(textwrap.dedent(tasks).strip(), "  ") + "\n"
    path = folder / "stream.yaml"
    path.write_text(header + body, encoding="utf-8")
    return path


def _one_line_error(exc_info, *fragments: str) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


def test_error_missing_file(broken):
    y = _stream_yaml(broken, "- {name: t, train: nope.jsonl, val: good.jsonl, test: good.jsonl}")
    with pytest.raises(DataError) as e:
        load_stream(y)
    _one_line_error(e, str(y), "task 't'", "file not found", "nope.jsonl")


def test_error_missing_field_names_field_file_and_line(broken):
    y = _stream_yaml(broken, "- {name: t, train: good.jsonl, val: good.jsonl, test: nofield.jsonl}")
    with pytest.raises(DataError) as e:
        load_stream(y)
    _one_line_error(e, "nofield.jsonl:2", "missing field 'output'")


def test_error_empty_split(broken):
    y = _stream_yaml(broken, "- {name: t, train: good.jsonl, val: empty.jsonl, test: good.jsonl}")
    with pytest.raises(DataError) as e:
        load_stream(y)
    _one_line_error(e, str(y), "task 't'", "val split is empty")


def test_error_unknown_metric_lists_valid_names(broken):
    y = _stream_yaml(broken, "- {name: t, train: good.jsonl, val: good.jsonl, test: good.jsonl}", metric="bleu")
    with pytest.raises(ConfigError) as e:
        load_stream(y)
    _one_line_error(e, str(y), "unknown metric 'bleu'", "exact_match", "set_equal")


def test_error_duplicate_task_name(broken):
    y = _stream_yaml(
        broken,
        """
        - {name: t, train: good.jsonl, val: good.jsonl, test: good.jsonl}
        - {name: t, train: good.jsonl, val: good.jsonl, test: good.jsonl}
        """,
    )
    with pytest.raises(ConfigError) as e:
        load_stream(y)
    _one_line_error(e, str(y), "duplicate task name 't'")


def test_error_invalid_yaml_and_bad_scenario(tmp_path):
    y = _write(tmp_path / "s.yaml", "name: x\ntasks: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_stream(y)
    _one_line_error(e, str(y), "invalid YAML")
    y = _write(tmp_path / "s2.yaml", "name: x\nscenario: psychic\ninputs: [input]\noutput: output\ntasks: []\n")
    with pytest.raises(ConfigError) as e:
        load_stream(y)
    _one_line_error(e, "unknown scenario 'psychic'")


def test_error_missing_stream_file_and_unknown_spec(tmp_path):
    with pytest.raises(DataError, match="stream file not found"):
        load_stream(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="unknown stream 'ii-99'"):
        load_stream("ii-99")
    with pytest.raises(ConfigError, match="unknown ii task 'nope'"):
        load_stream("ii:antonyms,nope")
    with pytest.raises(ConfigError, match="unknown bAbI task '21'"):
        load_stream("babi:1,21")


def test_hugging_face_split_source_reports_load_failures(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    seen = []

    def offline(dataset_id, config=None, split=None, **kwargs):
        seen.append((dataset_id, config, split))
        raise ConnectionError(f"Couldn't reach '{dataset_id}' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    y = _stream_yaml(
        tmp_path,
        """
        - name: t
          train: hf:stanfordnlp/sst2:train[:40]
          val: {hf: glue, config: sst2, split: validation}
          test: hf:glue:sst2:validation
        """,
    )
    with pytest.raises(DataError) as e:
        load_stream(y)
    _one_line_error(e, str(y), "task 't', train", "Hugging Face dataset 'stanfordnlp/sst2'", "are you online?")
    assert seen == [("stanfordnlp/sst2", None, "train[:40]")]


def test_user_metric_path_in_yaml(broken, monkeypatch):
    (broken / "my_metrics_mod.py").write_text(
        "def first_letter(example, pred):\n"
        "    ok = str(pred['output'])[:1] == example.output[:1]\n"
        "    return (1.0 if ok else 0.0, 'compare first letters')\n"
    )
    monkeypatch.syspath_prepend(str(broken))
    y = _stream_yaml(broken, "- {name: t, train: good.jsonl, val: good.jsonl, test: good.jsonl}", "my_metrics_mod:first_letter")
    t = load_stream(y)["t"]
    ex = t.train[0]
    s = t.metric(ex, {"output": ex.output + "ee"})
    assert (s.score, s.feedback) == (1.0, "compare first letters")
    assert t.metric(ex, {"output": "zz"}).score == 0.0


# --------------------------------------------------------------------------- built-ins


def test_builtin_streams_listed():
    names = builtin_streams()
    assert {"ii-8", "ii", "babi-10", "babi"} <= set(names)


def test_ii8_order_sizes_metrics_and_program():
    s = load_stream("ii-8")
    assert s.names == II8 and s.scenario == "task-aware"
    for t in s:
        assert (len(t.train), len(t.val), t.test_size) == (40, 30, 50)
    assert s["translation_en-es"].metric_name == "exact_match"
    assert len(s["translation_en-es"].train[0]["_answers"]) >= 1
    prog = program_for(s)
    assert list(prog.predict.signature.input_fields) == ["task", "input"]


def test_ii_subsets_all_tasks_and_small_pools():
    assert load_stream("ii:sum,antonyms", sizes=SMALL).names == ("sum", "antonyms")
    full = load_stream("ii", sizes=SMALL)
    assert full.names == II_TASKS and len(full) == 24
    assert full["common_concept"].metric_name == "f1"
    assert full["taxonomy_animal"].metric_name == "set_equal"
    assert full["synonyms"].metric_name == "contains"
    small = load_stream("ii:informal_to_formal")  # 15 induce examples: split 4:3
    t = small["informal_to_formal"]
    assert len(t.train) + len(t.val) == 15 and len(t.train) > len(t.val) > 0 and t.test_size == 15


def test_babi_streams():
    s = load_stream("babi-10", sizes=SMALL)
    assert [n.split("_")[0] for n in s.names] == [f"qa{i}" for i in BABI10]
    ex = s[0].train[0]
    assert "\nQuestion: " in ex.input and ex.output
    picked = load_stream("babi:8,qa19_path-finding", sizes=SMALL)
    assert picked[0].metric_name == "set_equal"
    path = picked[1].train[0]
    assert picked[1].metric(path, {"output": ", ".join(path.output.split(","))}).score == 1.0


def test_splits_disjoint_and_deterministic():
    a = load_stream("ii-8", seed=1)
    b = load_stream("ii-8", seed=1)
    c = load_stream("ii-8", seed=2)
    for ta, tb, tc in zip(a, b, c, strict=True):
        tr, va, te = ids(ta.train), ids(ta.val), ids(sealed_test_split(ta))
        assert not (tr & va) and not (tr & te) and not (va & te)
        inputs = lambda xs: {e.input.strip().lower() for e in xs}  # noqa: E731
        assert not (inputs(ta.train) | inputs(ta.val)) & inputs(sealed_test_split(ta))  # no test input leaks
        assert [example_id(e) for e in ta.train] == [example_id(e) for e in tb.train]
        assert ids(ta.train) != ids(tc.train)  # the seed changes the draw
        assert te == ids(sealed_test_split(tc))  # the test subset does not depend on the seed
    s = load_stream("babi:1", seed=3)[0]
    assert not ids(s.train) & ids(s.val)


# --------------------------------------------------------------------------- sealing


def _reachable(obj, depth: int = 0, seen: set[int] | None = None):
    """Every object reachable through public attributes, items and dataclass fields."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return
    seen.add(id(obj))
    yield obj
    if isinstance(obj, str | bytes | int | float | bool | type(None)):
        return
    if isinstance(obj, dspy.Example):
        return
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, list | tuple | set | frozenset):
        children = list(obj)
    else:
        children = []
        for name in dir(obj):
            if name.startswith("_"):
                continue
            try:
                value = getattr(obj, name)
            except Exception:  # noqa: BLE001
                continue
            if callable(value) and not dataclasses.is_dataclass(value):
                continue
            children.append(value)
    for child in children:
        yield from _reachable(child, depth + 1, seen)


def test_test_split_unreachable_from_the_public_api():
    s = load_stream("ii:antonyms,sum", sizes=SMALL)
    for task in s:
        test_ids = ids(sealed_test_split(task))
        assert len(test_ids) == SMALL[2]
        assert not hasattr(task, "test")
        public_fields = [f.name for f in dataclasses.fields(Task) if not f.name.startswith("_")]
        assert "test" not in " ".join(public_fields)
        reached = {example_id(o) for o in _reachable(s) if isinstance(o, dspy.Example)}
        assert reached and not (reached & test_ids)
        assert "_test" not in json.dumps(task.describe())
        assert repr(task._test) == f"<sealed test split: {SMALL[2]} examples>"
        assert not hasattr(task._test, "__iter__") and not hasattr(task._test, "__getitem__")
    assert "test" not in {n for n in dir(TaskStream) if not n.startswith("_")}


def test_streams_never_read_annotations(monkeypatch):
    opened: list[str] = []
    real_read_text = pathlib.Path.read_text

    def spy(self, *args, **kwargs):
        opened.append(str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", spy)
    from ctxopt import benchmarks

    benchmarks._ii_rows.cache_clear()
    load_stream("ii", sizes=SMALL)
    assert opened and all("instruction_induction" in p for p in opened)
    assert not [p for p in opened if "annotations" in p]
