"""Load task streams: built-in benchmarks and user-defined YAML streams.

:func:`load_stream` takes a spec:

* ``ii-8``: the default Instruction Induction stream (Honovich et al., 2023),
  in this order: first_word_letter, singular_to_plural, antonyms, sentiment,
  diff, letters_list, negation, translation_en-es.
* ``ii``: all 24 Instruction Induction tasks (alphabetical), ``ii:antonyms,sum``:
  any subset, in the order given.
* ``babi-10``: bAbI tasks 1, 4, 6, 9, 10, 11, 12, 13, 15, 20 (Weston et al., 2015);
  ``babi``: all 20; ``babi:1,4`` (numbers or file names like
  ``qa1_single-supporting-fact``): any subset, in the order given.
* ``assistant-8``: eight self-describing reasoning-gym tasks (chain_sum,
  letter_counting, word_sorting, number_format, spell_backward, leg_counting,
  word_sequence_reversal, number_sorting), **task-agnostic** by default: the
  "assistant" case, where requests carry no task label but each says what it
  wants; ``assistant:letter_counting,number_format``: any of them, in order,
  configured and task-agnostic the same way. ``rg:letter_counting,spell_backward``: any reasoning-gym datasets, in
  order, with the package's default configurations. Both need the optional
  extra ``ctxopt[rg]`` (reasoning-gym 0.1.25, Apache-2.0, generated offline from
  seeds; :mod:`ctxopt.rg`).
* ``tools-8``: eight tool-use tasks written for ctxopt (:mod:`ctxopt.tools`), whose program is
  ``dspy.ReAct`` with a calculator and a lookup tool; task-agnostic by default (each question says
  what it needs). ``tools:shop_total,town_mayor``: any subset, in order.
* a path to a ``.yaml``/``.yml`` file (see below).

Built-in streams other than ``assistant-8`` are task-aware unless
``scenario="task-agnostic"`` is passed. Default sizes are 40 train, 30 val and
50 test examples per task (``sizes=(train, val, test)`` changes them).

**Recurrence.** A task may come back with fresh examples. A built-in spec with
the suffix ``xN`` runs its tasks N times over (``ii-8x2``: the 8 ii-8 tasks, then
the same 8 again), and a name repeated in ``ii:``, ``babi:`` or ``rg:``
(``ii:antonyms,sum,antonyms``) is a revisit. Visit k ≥ 2 is its own task,
``antonyms@2``, with its own train/val/test, disjoint from earlier visits' while
the data allows, deterministic by seed; the program is told the family
(``antonyms``) and sees what was learned for it (:attr:`ctxopt.tasks.Task.family`).

Instruction Induction and bAbI are built in :mod:`ctxopt.benchmarks` (splits, metrics),
reasoning-gym streams in :mod:`ctxopt.rg`.

**YAML streams**::

    name: my-stream
    scenario: task-aware          # or task-agnostic
    inputs: [input]
    output: output
    metric: exact_match           # built-in name or "package.module:function"
    sizes: [40, 30, 50]           # optional caps on train/val/test
    tasks:
      - name: antonyms
        train: data/antonyms.train.jsonl
        val: data/antonyms.val.jsonl
        test: data/antonyms.test.jsonl
        metric: f1                # optional per-task override
      - name: sentiment
        data: data/sentiment.csv  # one file, split by seed (split: [0.5, 0.2, 0.3])
      - name: sst2
        train: hf:stanfordnlp/sst2:train          # hf:ID:SPLIT or hf:ID:CONFIG:SPLIT
        val: {hf: stanfordnlp/sst2, split: validation}
        test: hf:stanfordnlp/sst2:validation[:200]
        fields: {input: sentence, output: label}  # our field <- source column
      - repeat: antonyms          # a revisit: antonyms@2, same definition, fresh examples

Relative paths resolve against the YAML file's folder. Task files may be JSONL,
JSON (a list of records, or ``{"examples": …}``), CSV/TSV, or anything
``datasets`` loads from a local file (Parquet, Arrow). An output given as a list
counts every element as an acceptable answer. When ``val`` is missing, a quarter
of ``train`` (seeded) becomes val. A ``repeat`` entry's examples are the next
block of each shuffled split, so they are fresh only where ``sizes`` leaves
examples unused (without ``sizes`` a revisit reuses the first visit's examples).

Example:
    >>> s = load_stream("ii:antonyms,sum", sizes=(4, 3, 5))
    >>> s.names, len(s["antonyms"].train), s["sum"].test_size
    (('antonyms', 'sum'), 4, 5)
    >>> load_stream("ii:antonyms,sumx2", sizes=(4, 3, 5)).names
    ('antonyms', 'sum', 'antonyms@2', 'sum@2')
"""

from __future__ import annotations

import csv
import json
import logging
import random
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dspy

from ctxopt.benchmarks import (
    BABI10,
    BABI_TASKS,
    DEFAULT_SIZES,
    II8,
    II_METRICS,
    II_TASKS,
    TEST_SEED,
    babi_stream,
    data_dir,
    ii_stream,
    seeded_rng,
    visit_block,
)
from ctxopt.errors import ConfigError, DataError
from ctxopt.metrics import get_metric
from ctxopt.rg import ASSISTANT8, rg_stream
from ctxopt.tasks import SCENARIOS, Task, TaskStream, make_example, visit_name
from ctxopt.tools import TOOL_TASKS, tools_stream

__all__ = [
    "load_stream",
    "builtin_streams",
    "II_TASKS",
    "II_METRICS",
    "II8",
    "BABI_TASKS",
    "BABI10",
    "DEFAULT_SIZES",
    "data_dir",
]

logger = logging.getLogger(__name__)

_BUILTINS: dict[str, str] = {
    "ii-8": "Instruction Induction, 8 tasks: " + ", ".join(II8),
    "ii": "Instruction Induction, all 24 tasks (alphabetical); ii:a,b,… picks tasks in order",
    "babi-10": "bAbI QA tasks " + ", ".join(map(str, BABI10)),
    "babi": "bAbI QA, all 20 tasks; babi:1,4,… picks tasks in order",
    "assistant-8": "reasoning-gym, 8 self-describing tasks, task-agnostic: " + ", ".join(ASSISTANT8),
    "assistant": "assistant:a,b,… picks assistant-8 tasks in order (their configurations, task-agnostic)",
    "rg": "rg:a,b,… picks reasoning-gym datasets in order (needs ctxopt[rg])",
    "tools-8": "tool use with dspy.ReAct (calculator, lookup), task-agnostic: " + ", ".join(TOOL_TASKS),
    "tools": "tools:a,b,… picks tool-use tasks in order",
}
_REPEAT = re.compile(r"^(?P<base>.+)x(?P<times>[1-9][0-9]*)$")


def builtin_streams() -> dict[str, str]:
    """Names of the built-in streams and a one-line description of each.

    Example:
        >>> sorted(builtin_streams())
        ['assistant', 'assistant-8', 'babi', 'babi-10', 'ii', 'ii-8', 'rg', 'tools', 'tools-8']
    """
    return dict(_BUILTINS)


# =========================================================================== entry


def load_stream(
    spec: str | Path,
    *,
    seed: int = 0,
    sizes: tuple[int, int, int] | None = None,
    scenario: str | None = None,
) -> TaskStream:
    """Load a built-in stream by name or a user stream from a YAML file.

    Args:
        spec: ``ii-8``, ``ii``, ``ii:a,b``, ``babi-10``, ``babi``, ``babi:1,4``,
            ``assistant-8``, ``assistant:a,b``, ``rg:a,b``, ``tools-8``, ``tools:a,b``, any of those with a repeat suffix
            (``ii-8x2``), or a path to a YAML stream file.
        seed: Seeds the train/val draw (the test subset is fixed).
        sizes: ``(train, val, test)`` examples per task; built-ins default to
            (40, 30, 50), YAML streams to the file's ``sizes`` or everything.
        scenario: Overrides the stream's scenario (``task-aware`` or
            ``task-agnostic``).

    Returns:
        The :class:`TaskStream`.

    Raises:
        ConfigError: Unknown stream name or task, or an invalid stream file.
        DataError: A data file is missing, empty or lacks a field.
    """
    if scenario is not None and scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario '{scenario}'; use one of {', '.join(SCENARIOS)}")
    if sizes is not None:
        sizes = _check_sizes(sizes, "sizes")
    text = str(spec).strip()
    path = Path(text).expanduser()
    repeat = None if path_exists(path) else _REPEAT.match(text)  # no task or stream name ends in x<digits>
    base, times = (repeat["base"], int(repeat["times"])) if repeat else (text, 1)
    stream = _builtin(base, text, times, seed=seed, sizes=sizes, scenario=scenario)
    if stream is not None:
        return stream
    if path.suffix.lower() in (".yaml", ".yml") or path_exists(path):
        return _yaml_stream(path, seed=seed, sizes=sizes, scenario=scenario)
    raise ConfigError(
        f"unknown stream '{text}': use a built-in ({', '.join(_BUILTINS)}, ii:a,b, babi:1,4, assistant:a,b, rg:a,b, "
        "tools:a,b), "
        "optionally repeated (ii-8x2), or the path of a .yaml stream file"
    )


def _builtin(
    base: str,
    name: str,
    times: int,
    *,
    seed: int,
    sizes: tuple[int, int, int] | None,
    scenario: str | None,
) -> TaskStream | None:
    """The built-in stream ``base`` with its tasks run ``times`` over, named ``name``; None if not a built-in."""
    head, _, rest = base.partition(":")
    sizes = sizes or DEFAULT_SIZES
    if base in ("ii-8", "ii") or (head == "ii" and rest):
        names = II8 if base == "ii-8" else II_TASKS if base == "ii" else _pick(rest, II_TASKS, "ii")
        return ii_stream(name, names * times, seed=seed, sizes=sizes, scenario=scenario or "task-aware")
    if base in ("babi-10", "babi") or (head == "babi" and rest):
        numbers = BABI10 if base == "babi-10" else tuple(BABI_TASKS) if base == "babi" else _pick_babi(rest)
        return babi_stream(name, numbers * times, seed=seed, sizes=sizes, scenario=scenario or "task-aware")
    if base == "assistant-8" or (head == "assistant" and rest):
        names = tuple(ASSISTANT8) if base == "assistant-8" else _pick(rest, tuple(ASSISTANT8), "assistant")
        return rg_stream(name, names * times, seed=seed, sizes=sizes,
                         scenario=scenario or "task-agnostic", configs=ASSISTANT8)
    if head == "rg" and rest:
        return rg_stream(name, _names(rest) * times, seed=seed, sizes=sizes, scenario=scenario or "task-aware")
    if base == "tools-8" or (head == "tools" and rest):
        names = tuple(TOOL_TASKS) if base == "tools-8" else _pick(rest, tuple(TOOL_TASKS), "tools")
        return tools_stream(name, names * times, seed=seed, sizes=sizes, scenario=scenario or "task-agnostic")
    return None


def path_exists(path: Path) -> bool:
    """``path.exists()``, but False where the text cannot name a file (a long ``ii:a,b,...`` spec is too long)."""
    try:
        return path.exists()
    except OSError:
        return False


def _check_sizes(sizes: Any, where: str) -> tuple[int, int, int]:
    try:
        out = tuple(int(s) for s in sizes)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be three integers (train, val, test), got {sizes!r}") from None
    if len(out) != 3 or any(s < 1 for s in out):
        raise ConfigError(f"{where} must be three positive integers (train, val, test), got {list(sizes)}")
    return out  # type: ignore[return-value]


def _names(rest: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in rest.split(",") if n.strip())


def _pick(rest: str, valid: Sequence[str], prefix: str) -> tuple[str, ...]:
    names = _names(rest)
    for n in names:
        if n not in valid:
            raise ConfigError(f"unknown {prefix} task '{n}'; valid tasks: {', '.join(valid)}")
    return names


def _pick_babi(rest: str) -> tuple[int, ...]:
    by_name = {v: k for k, v in BABI_TASKS.items()}
    out: list[int] = []
    for part in _names(rest):
        number = int(part) if part.isdigit() else by_name.get(part)
        if number not in BABI_TASKS:
            raise ConfigError(f"unknown bAbI task '{part}'; use 1-20 or names like {BABI_TASKS[1]}")
        out.append(number)
    return tuple(out)


# =========================================================================== files

Record = tuple[str, dict[str, Any]]  # (location "file:line", record)


def _read_jsonl(path: Path) -> list[Record]:
    out: list[Record] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            out.append((f"{path}:{lineno}", rec))
    return out


def _read_json(path: Path) -> list[Record]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if isinstance(data, dict):
        data = data.get("examples", data.get("data", data.get("rows")))
        if isinstance(data, dict):
            data = list(data.values())
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of records or {{\"examples\": [...]}}")
    out: list[Record] = []
    for i, rec in enumerate(data, 1):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {i}: expected an object, got {type(rec).__name__}")
        out.append((f"{path}: record {i}", rec))
    return out


def _read_csv(path: Path) -> list[Record]:
    out: list[Record] = []
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        for rec in reader:
            clean = {k: v for k, v in rec.items() if k is not None and v not in (None, "")}
            out.append((f"{path}:{reader.line_num}", clean))
    return out


def _read_parquet(path: Path) -> list[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - datasets brings pyarrow; fall back anyway
        return _read_with_datasets(path)
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 - any reader failure is a data problem
        raise DataError(f"{path}: cannot read Parquet ({type(exc).__name__}: {exc})") from None
    return [(f"{path}: row {i}", dict(rec)) for i, rec in enumerate(rows, 1)]


def _read_with_datasets(path: Path) -> list[Record]:
    builders = {".parquet": "parquet", ".arrow": "arrow", ".txt": "text"}
    builder = builders.get(path.suffix.lower())
    if builder is None:
        raise DataError(f"{path}: unsupported file type '{path.suffix}'; use .jsonl, .json, .csv, .tsv or .parquet")
    try:
        import datasets

        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as exc:  # noqa: BLE001 - any reader failure is a data problem
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    return [(f"{path}: row {i}", dict(rec)) for i, rec in enumerate(ds, 1)]


_READERS: dict[str, Callable[[Path], list[Record]]] = {
    ".jsonl": _read_jsonl,
    ".ndjson": _read_jsonl,
    ".json": _read_json,
    ".csv": _read_csv,
    ".tsv": _read_csv,
    ".parquet": _read_parquet,
}


def _read_hf(dataset_id: str, split: str, config: str | None, where: str) -> list[Record]:
    try:
        import datasets

        ds = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as exc:  # noqa: BLE001
        raise DataError(
            f"{where}: cannot load Hugging Face dataset '{dataset_id}' split '{split}' "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); are you online?"
        ) from None
    label = f"hf:{dataset_id}:{split}"
    return [(f"{label} row {i}", dict(rec)) for i, rec in enumerate(ds, 1)]


def read_records(source: Any, *, base_dir: Path, where: str) -> tuple[str, list[Record]]:
    """Read one split's records from a path, ``hf:ID[:CONFIG]:SPLIT`` or ``{hf: …, split: …}``.

    Returns:
        ``(label, records)`` where label names the source in messages.
    """
    if isinstance(source, Mapping):
        if "hf" in source:
            split = str(source.get("split") or "train")
            return f"hf:{source['hf']}:{split}", _read_hf(str(source["hf"]), split, source.get("config"), where)
        if "path" in source:
            source = source["path"]
        else:
            raise ConfigError(f"{where}: a split must be a path, 'hf:ID:SPLIT', or a mapping with 'path' or 'hf'")
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"{where}: a split must be a path, 'hf:ID:SPLIT', or a mapping with 'path' or 'hf'")
    if source.startswith("hf:"):
        body, bracket, sliced = source[3:].partition("[")  # a split may be sliced: train[:40]
        parts = body.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise ConfigError(f"{where}: '{source}' must be hf:ID:SPLIT or hf:ID:CONFIG:SPLIT")
        dataset_id, config = parts[0], (parts[1] if len(parts) == 3 else None)
        split = parts[-1] + bracket + sliced
        return source, _read_hf(dataset_id, split, config, where)
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise DataError(f"{where}: file not found: {source} (looked for {path})")
    reader = _READERS.get(path.suffix.lower(), _read_with_datasets)
    return str(path), reader(path)


# =========================================================================== YAML


def _yaml_stream(
    path: Path, *, seed: int, sizes: tuple[int, int, int] | None, scenario: str | None
) -> TaskStream:
    import yaml

    if not path.is_file():
        raise DataError(f"{path}: stream file not found")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise ConfigError(f"{path}:{line}: invalid YAML ({exc.problem})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a stream file must be a mapping with 'name', 'inputs', 'output' and 'tasks'")

    name = str(doc.get("name") or path.stem)
    scen = scenario or str(doc.get("scenario", "task-aware"))
    if scen not in SCENARIOS:
        raise ConfigError(f"{path}: unknown scenario '{scen}'; use one of {', '.join(SCENARIOS)}")
    inputs = doc.get("inputs")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not inputs or not isinstance(inputs, list) or not all(isinstance(i, str) and i for i in inputs):
        raise ConfigError(f"{path}: 'inputs' must be a non-empty list of field names")
    if "task" in inputs and scen == "task-aware":
        raise ConfigError(f"{path}: input field 'task' is reserved: task-aware streams add it")
    output = doc.get("output")
    if not isinstance(output, str) or not output:
        raise ConfigError(f"{path}: 'output' must be a field name")
    if output in inputs:
        raise ConfigError(f"{path}: field '{output}' cannot be both an input and the output")
    tasks_doc = doc.get("tasks")
    if not isinstance(tasks_doc, list) or not tasks_doc:
        raise ConfigError(f"{path}: 'tasks' must be a non-empty list")
    if sizes is None and doc.get("sizes") is not None:
        sizes = _check_sizes(doc["sizes"], f"{path}: 'sizes'")
    default_metric = str(doc.get("metric", "exact_match"))
    split_fracs = doc.get("split", [0.5, 0.2, 0.3])

    tasks: list[Task] = []
    docs: dict[str, Mapping[str, Any]] = {}  # family -> its definition
    n_visits: dict[str, int] = {}
    for i, tdoc in enumerate(tasks_doc, 1):
        if isinstance(tdoc, dict) and "repeat" in tdoc:
            tname = str(tdoc["repeat"])
            if tname not in docs or set(tdoc) != {"repeat"}:
                raise ConfigError(f"{path}: task {i}: 'repeat: {tname}' must name an earlier task and take nothing else")
            tdoc = docs[tname]
        elif not isinstance(tdoc, dict) or not tdoc.get("name"):
            raise ConfigError(f"{path}: task {i} must be a mapping with a 'name' (or 'repeat' an earlier one)")
        else:
            tname = str(tdoc["name"])
            if tname in docs:
                raise ConfigError(f"{path}: duplicate task name '{tname}'; use '- repeat: {tname}' for a revisit")
            docs[tname] = tdoc
        n_visits[tname] = n_visits.get(tname, 0) + 1
        where = f"{path}: task '{visit_name(tname, n_visits[tname])}'"
        metric_name = str(tdoc.get("metric", default_metric))
        try:
            metric = get_metric(metric_name, output)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        tasks.append(
            _yaml_task(
                tdoc,
                tname,
                metric=metric,
                inputs=inputs,
                output=output,
                base_dir=path.parent,
                where=where,
                seed=seed,
                sizes=sizes,
                split_fracs=split_fracs,
                aware=scen == "task-aware",
                visit=n_visits[tname],
            )
        )
    meta = {"source": str(path), "seed": seed, **({"sizes": list(sizes)} if sizes else {})}
    return TaskStream(name, scen, tuple(tasks), meta)  # type: ignore[arg-type]


def _yaml_task(
    tdoc: Mapping[str, Any],
    tname: str,
    *,
    metric: Any,
    inputs: Sequence[str],
    output: str,
    base_dir: Path,
    where: str,
    seed: int,
    sizes: tuple[int, int, int] | None,
    split_fracs: Any,
    aware: bool,
    visit: int = 1,
) -> Task:
    fields = tdoc.get("fields") or {}
    if not isinstance(fields, Mapping):
        raise ConfigError(f"{where}: 'fields' must map our field names to source columns")

    def load(split: str, source: Any) -> list[dspy.Example]:
        label, records = read_records(source, base_dir=base_dir, where=f"{where}, {split}")
        if not records:
            raise DataError(f"{where}: {split} split is empty ({label})")
        return [_to_example(loc, rec, inputs, output, fields, tname if aware else None) for loc, rec in records]

    if "data" in tdoc:
        examples = load("data", tdoc["data"])
        try:
            fracs = [float(f) for f in split_fracs]
        except (TypeError, ValueError):
            fracs = []
        if len(fracs) != 3 or any(f <= 0 for f in fracs):
            raise ConfigError(f"{where}: 'split' must be three positive fractions, got {split_fracs!r}")
        rng = seeded_rng("yaml", tname, seed)
        examples = list(examples)
        rng.shuffle(examples)
        total = sum(fracs)
        n_train = int(len(examples) * fracs[0] / total)
        n_val = int(len(examples) * fracs[1] / total)
        train, val, test = examples[:n_train], examples[n_train : n_train + n_val], examples[n_train + n_val :]
        for split, part in (("train", train), ("val", val), ("test", test)):
            if not part:
                raise DataError(f"{where}: {split} split is empty after splitting {len(examples)} examples")
    else:
        for split in ("train", "test"):
            if split not in tdoc:
                raise ConfigError(f"{where}: missing '{split}' (or give 'data' to split one file)")
        train = load("train", tdoc["train"])
        test = load("test", tdoc["test"])
        if "val" in tdoc:
            val = load("val", tdoc["val"])
        else:
            if len(train) < 2:
                raise DataError(f"{where}: no 'val' given and train has {len(train)} example(s); cannot carve a val split")
            shuffled = list(train)
            seeded_rng("yaml-val", tname, seed).shuffle(shuffled)
            cut = max(1, len(shuffled) // 4)
            val, train = shuffled[:cut], shuffled[cut:]
        train = _shuffled(train, seeded_rng("yaml-train", tname, seed))
        val = _shuffled(val, seeded_rng("yaml-val2", tname, seed))
        test = _shuffled(test, seeded_rng(TEST_SEED, "yaml", tname))
    if sizes:
        train, val, test = (visit_block(part, n, visit) for part, n in zip((train, val, test), sizes))
    return Task.from_splits(
        visit_name(tname, visit), tuple(inputs), output, metric, train, val, test, description=str(tdoc.get("description", ""))
    )


def _shuffled(items: list[Any], rng: random.Random) -> list[Any]:
    out = list(items)
    rng.shuffle(out)
    return out


def _to_example(
    loc: str,
    rec: Mapping[str, Any],
    inputs: Sequence[str],
    output: str,
    fields: Mapping[str, str],
    task: str | None,
) -> dspy.Example:
    data: dict[str, Any] = {}
    answers: list[str] | None = None
    for name in (*inputs, output):
        column = str(fields.get(name, name))
        value = rec.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            have = ", ".join(sorted(map(str, rec))) or "none"
            alias = f" (column '{column}')" if column != name else ""
            raise DataError(f"{loc}: missing field '{name}'{alias}; the record has: {have}")
        if name == output and isinstance(value, list | tuple):
            if not value:
                raise DataError(f"{loc}: field '{name}' is an empty list")
            answers = [str(v) for v in value]
            value = answers[0]
        data[name] = value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict) else str(value)
    return make_example(data, inputs, task=task, answers=answers)

