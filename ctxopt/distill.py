"""Token → weight distillation data: the SFT set that would move a learned context C into weights.

:func:`distill` builds, for every task seen up to a store revision:

* **labeled rows**: the teacher (program + C on the teacher LM, greedy) answers
  the task's *train* inputs; a row is kept only where the task's metric passes
  (score ≥ ``min_score``);
* **synthesized rows** (``synthesize=N``): the reflection LM writes N new inputs
  in the style of a few train inputs (seeded); the teacher answers each
  ``samples`` times at ``temperature`` > 0 with distinct seeds, and a row is kept
  when a majority of at least ``agree`` of the samples give the same normalized
  answer (self-consistency). Inputs equal to a train or val input are dropped, and
  so are answers that only echo the task's name or an input (a teacher that
  echoes consistently agrees with itself; this also drops the rare identity answer
  that is right, e.g. "sheep" → "sheep").

**Row format.** Each row is one chat in the format the program itself uses
(DSPy's ``ChatAdapter``), so a student fine-tuned on it runs in the *same
program without C*: ``messages`` = the system prompt of the target predictor
rendered **without C** (the program's own instruction, field descriptions and
structure), the user turn with the inputs, the assistant turn with the teacher's
output fields. Demos are not rendered. Other columns: ``task``, ``origin``
(``train``/``synthetic``), ``filter`` (``metric``/``self-consistency``),
``score`` (metric score, or the majority share), ``split`` (``train``/``heldout``),
``example_id``, ``inputs`` (JSON text), ``output``, ``source_rev``.

**Outputs** in ``out``: ``distill.jsonl`` (written atomically), ``dataset/``
(the same rows, ``datasets.Dataset.save_to_disk``; load with
``datasets.load_from_disk``), ``README.md`` (a dataset card naming the source
version, the task mix and the filters) and ``summary.json``.

**Headroom.** A seeded ``holdout`` share of each task's kept rows is marked
``split="heldout"``; the student (the program *without* C on ``student_lm``,
default the teacher LM) answers those inputs, and the share it already agrees
with (by the task's metric, the row's output as gold) is reported. One minus
it is the measurable headroom of distillation.

Test splits are never read.

Example:
    >>> res = distill("runs/ii8/store", "runs/ii8/distill", synthesize=20)   # doctest: +SKIP
    >>> res.rows, res.student_agreement                                       # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dspy

from ctxopt._atomic import write_json, write_text
from ctxopt.context import LearnedContext
from ctxopt.errors import ConfigError, EndpointError
from ctxopt.evaluator import Evaluator, ExampleResult
from ctxopt.lm import DEFAULT_REFLECTION_LM, get_lm, lm_name
from ctxopt.metrics import Score, normalize
from ctxopt.optimizer import target_predictor
from ctxopt.portability import resolve_stream, source_lms
from ctxopt.store import Store
from ctxopt.tasks import TASK_FIELD, Task, TaskStream, example_id, make_example

__all__ = ["distill", "DistillResult", "TaskStats", "synthesize_inputs", "chat_messages", "SYNTH_PROMPT"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
JSONL = "distill.jsonl"
DATASET_DIR = "dataset"

SYNTH_PROMPT = """You write new inputs for the task "{task}".{description}

Here are example inputs of this task:
{examples}

Write {n} new inputs in exactly the same style and format. Make them different from the
examples and from each other. Do not write the answers.

{form}"""

_FORM_LINE = 'Reply ONLY with {n} lines, each starting with "INPUT: ".'
_FORM_JSON = "Reply ONLY with {n} lines, each one JSON object with the keys {keys} (string values)."
_INPUT_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])?\s*(?:\*\*)?\s*INPUT\s*(?:\*\*)?\s*[:\-–]\s*(?:\*\*)?\s*(.+?)\s*$",
                         re.IGNORECASE)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class TaskStats:
    """Counts of one task's rows and its held-out agreement."""

    task: str
    train_total: int
    train_kept: int
    synth_requested: int = 0
    synth_total: int = 0
    synth_kept: int = 0
    heldout: int = 0
    student_agreement: float | None = None

    @property
    def train_pass_rate(self) -> float | None:
        return round(self.train_kept / self.train_total, 6) if self.train_total else None

    @property
    def synth_agree_rate(self) -> float | None:
        return round(self.synth_kept / self.synth_total, 6) if self.synth_total else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "train_pass_rate": self.train_pass_rate, "synth_agree_rate": self.synth_agree_rate}


@dataclass(frozen=True)
class DistillResult:
    """What :func:`distill` wrote, with per-task counts and the headroom check."""

    out: str
    source_rev: str
    context_hash: str
    teacher_lm: str
    student_lm: str
    stream: str
    rows: int
    heldout: int
    tasks: tuple[TaskStats, ...]
    student_agreement: float | None
    filters: dict[str, Any] = field(default_factory=dict)

    @property
    def headroom(self) -> float | None:
        """Share of held-out rows the student without C does not yet reproduce."""
        return None if self.student_agreement is None else round(1.0 - self.student_agreement, 6)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "out": self.out, "source_rev": self.source_rev,
                "context_hash": self.context_hash, "teacher_lm": self.teacher_lm, "student_lm": self.student_lm,
                "stream": self.stream, "rows": self.rows, "heldout": self.heldout,
                "tasks": [t.to_dict() for t in self.tasks], "student_agreement": self.student_agreement,
                "headroom": self.headroom, "filters": self.filters}


@dataclass
class _Row:
    task: str
    origin: str
    filter: str
    score: float
    example_id: str
    inputs: dict[str, Any]  # data inputs (without the task field)
    call_inputs: dict[str, Any]  # what the target predictor received
    outputs: dict[str, Any]
    output: str
    split: str = "train"


class _Sampled:
    """The 'metric' of unlabeled inputs: every answer passes; agreement is decided afterwards."""

    name = "distill-sample"

    def __call__(self, example: Any, prediction: Any) -> Score:
        return Score(1.0, "unlabeled input: sampled")


# --------------------------------------------------------------------------- formatting


def chat_messages(signature: type[dspy.Signature], inputs: dict[str, Any], outputs: dict[str, Any],
                  adapter: Any = None) -> list[dict[str, str]]:
    """One SFT chat: system and user turns as the program sends them, then the assistant turn.

    Example:
        >>> sig = dspy.Signature("question -> answer", "Answer briefly.")
        >>> [m["role"] for m in chat_messages(sig, {"question": "2+2?"}, {"answer": "4"})]
        ['system', 'user', 'assistant']
    """
    adapter = adapter or dspy.ChatAdapter()
    messages = adapter.format(signature, demos=[], inputs=dict(inputs))
    wanted = {k: v for k, v in outputs.items() if k in signature.output_fields}
    assistant = adapter.format_assistant_message_content(signature, wanted)
    return [{"role": m["role"], "content": str(m["content"])} for m in messages] + \
        [{"role": "assistant", "content": assistant}]


def _field_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# --------------------------------------------------------------------------- synthesis


def _parse_inputs(text: str, fields: Sequence[str], as_lines: bool) -> list[dict[str, str]]:
    out = []
    for raw in text.splitlines():
        if as_lines:
            m = _INPUT_LINE.match(raw)
            if m:
                value = m.group(1).strip().strip("\"'`").strip()
                if value:
                    out.append({fields[0]: value})
                continue
        m = re.search(r"\{.*\}", raw)
        if not m:
            continue
        try:
            obj = json.loads(m.group(0))
        except ValueError:
            continue
        if isinstance(obj, dict) and all(isinstance(obj.get(f), str) and obj[f].strip() for f in fields):
            out.append({f: obj[f].strip() for f in fields})
    return out


def synthesize_inputs(lm: Any, task: Task, n: int, *, seed: int = 0, shots: int = 5,
                      max_calls: int | None = None) -> list[dict[str, str]]:
    """Ask ``lm`` for ``n`` new inputs of ``task`` in the style of a few train inputs.

    The shown inputs are a seeded sample of the train split. Inputs equal (after
    normalization) to a train or val input, or to each other, are dropped; the
    LM is asked again, with a new seed, until ``n`` are found or ``max_calls``
    calls are spent. Returns data-input dicts (no ``task`` field).
    """
    fields = [f for f in task.inputs if f != TASK_FIELD]
    if n <= 0 or not fields:
        return []
    rng = random.Random(f"{seed}:synth:{task.name}")
    pool = sorted(task.train, key=example_id)
    shown = rng.sample(pool, min(shots, len(pool)))
    as_lines = len(fields) == 1 and not any("\n" in str(ex.get(fields[0]) or "") for ex in shown)
    if as_lines:
        examples = "\n".join(f"INPUT: {ex.get(fields[0])}" for ex in shown)
    else:
        examples = "\n".join(json.dumps({f: ex.get(f) for f in fields}, ensure_ascii=False) for ex in shown)

    def key(d: dict[str, Any]) -> str:
        return "\x00".join(normalize(d.get(f)) for f in fields)

    seen = {key({f: ex.get(f) for f in fields}) for ex in (*task.train, *task.val)}
    found: list[dict[str, str]] = []
    calls = max_calls if max_calls is not None else math.ceil(n / 10) + 2
    description = f"\n{task.description}" if task.description else ""
    for call in range(calls):
        want = min(n - len(found), 20)
        if want <= 0:
            break
        form = _FORM_LINE.format(n=want) if as_lines else _FORM_JSON.format(n=want, keys=", ".join(fields))
        prompt = SYNTH_PROMPT.format(task=task.name, description=description, examples=examples, n=want, form=form)
        kwargs = {"temperature": 0.9, "seed": seed * 1000 + call, "rollout_id": seed * 1000 + call}
        try:
            text = lm(prompt, **kwargs)[0]
        except EndpointError:
            raise  # a dead endpoint stops the run (ctxopt.endpoint)
        except Exception as exc:  # noqa: BLE001 - a failed call is a lost call, never a crash
            log.warning("synthesis call %d for task %s failed: %s", call, task.name, exc)
            continue
        text = text if isinstance(text, str) else str(getattr(text, "text", text))
        for cand in _parse_inputs(text, fields, as_lines):
            k = key(cand)
            if k not in seen and len(found) < n:
                seen.add(k)
                found.append(cand)
    if len(found) < n:
        log.warning("task %s: synthesized %d of %d inputs", task.name, len(found), n)
    return found


# --------------------------------------------------------------------------- teacher and student


def _target_call(res: ExampleResult, predictor: str, example: dspy.Example, output: str
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    calls = [t for t in res.trace if t.get("predictor") == predictor]
    if calls:
        return dict(calls[-1]["inputs"]), dict(calls[-1]["outputs"])
    return dict(example.inputs().items()), {output: res.prediction.get(output)}


def _data_inputs(example: dspy.Example, task: Task) -> dict[str, Any]:
    return {f: example.get(f) for f in task.inputs if f != TASK_FIELD}


def _sampling_program(program: dspy.Module, temperature: float, seed: int) -> dspy.Module:
    """A copy of ``program`` whose predictors sample at ``temperature`` with ``seed`` (a distinct cache entry)."""
    prog = copy.deepcopy(program)
    for _, pred in prog.named_predictors():
        pred.config = {**(pred.config or {}), "temperature": temperature, "seed": seed, "rollout_id": seed}
    return prog


def _majority(outputs: list[str | None], k: int, agree: float) -> tuple[int | None, float]:
    """Index of the first answer of the majority group, and that group's share of all k samples."""
    votes = Counter(normalize(o) for o in outputs if o is not None and normalize(o))
    if not votes:
        return None, 0.0
    answer, count = votes.most_common(1)[0]
    share = count / k
    if share + 1e-9 < agree:
        return None, round(share, 6)
    return next(i for i, o in enumerate(outputs) if o is not None and normalize(o) == answer), round(share, 6)


def _echoes(answer: str | None, task_name: str, example: Any, inputs: Sequence[str]) -> bool:
    """Whether ``answer`` only repeats the task name or one of the example's input values."""
    said = normalize(answer)
    echoes = {normalize(task_name), normalize(task_name.replace("_", " "))}
    echoes |= {normalize(example.get(k)) for k in inputs if isinstance(example.get(k), str)}
    return said in echoes


# --------------------------------------------------------------------------- writing


def _save_dataset(rows: list[dict[str, Any]], out: Path) -> None:
    import datasets

    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{DATASET_DIR}.tmp-"))
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # library code draws no progress bars
    try:
        features = datasets.Features({
            "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
            **{k: datasets.Value("float64" if k == "score" else "string")
               for k in ("task", "origin", "filter", "score", "split", "example_id", "inputs", "output", "source_rev")},
        })
        datasets.Dataset.from_list(rows, features=features).save_to_disk(str(tmp / DATASET_DIR))
        final = out / DATASET_DIR
        old = out / f".{DATASET_DIR}.old-{os.getpid()}"
        if final.exists():
            os.rename(final, old)
        os.rename(tmp / DATASET_DIR, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if bars:
            datasets.enable_progress_bars()


def _card(result: DistillResult, store: Store, stream: TaskStream) -> str:
    f = result.filters
    lines = [
        "---",
        f"pretty_name: ctxopt distillation set ({stream.name}, {result.source_rev[:10]})",
        "task_categories:\n- text-generation",
        "tags:\n- ctxopt\n- distillation\n- sft",
        "---",
        "",
        f"# Distillation set: learned context {result.context_hash[:12]} → weights",
        "",
        "Supervised fine-tuning rows that would move a ctxopt learned context C into the weights of "
        "the student: the teacher is the program **with** C, the rows' system prompt is the program "
        "**without** C.",
        "",
        "## Source",
        "",
        f"- store: `{store.path}`",
        f"- version: `{result.source_rev}` (context hash `{result.context_hash}`)",
        f"- stream: `{stream.name}` ({stream.scenario})",
        f"- teacher LM: `{result.teacher_lm}` (program + C, greedy for labeled rows)",
        f"- student LM (headroom check): `{result.student_lm}` (program without C, greedy)",
        "",
        "## Task mix",
        "",
        "| task | train rows kept / answered | pass rate | synthetic kept / written | agree rate | held out | student agrees |",
        "|---|---|---|---|---|---|---|",
    ]

    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.3f}"

    for s in result.tasks:
        lines.append(f"| {s.task} | {s.train_kept} / {s.train_total} | {fmt(s.train_pass_rate)} | "
                     f"{s.synth_kept} / {s.synth_total} (asked {s.synth_requested}) | {fmt(s.synth_agree_rate)} | "
                     f"{s.heldout} | {fmt(s.student_agreement)} |")
    lines += [
        f"| **all** | {sum(s.train_kept for s in result.tasks)} / {sum(s.train_total for s in result.tasks)} | | "
        f"{sum(s.synth_kept for s in result.tasks)} / {sum(s.synth_total for s in result.tasks)} | | "
        f"{result.heldout} | {fmt(result.student_agreement)} |",
        "",
        "## Filters",
        "",
        f"- labeled (train) inputs: kept where the task's metric scores ≥ {f['min_score']} against the label;",
        f"- synthesized inputs: {f['synthesize']} per task written by `{f['reflection_lm']}` from {f['shots']} "
        f"train inputs (seed {f['seed']}), duplicates of train/val inputs dropped; the teacher answers each "
        f"{f['samples']} times at temperature {f['temperature']} with distinct seeds; kept when at least "
        f"{f['agree']:.3f} of the samples give the same normalized answer;",
        "- no test example is ever read.",
        "",
        "## Format",
        "",
        "`messages` is a chat in DSPy's ChatAdapter format: the system prompt of the program's predictor "
        "without C (its own instruction, fields and structure), the user turn with the inputs, and the "
        "assistant turn with the output fields and the `[[ ## completed ## ]]` marker. Other columns: "
        "`task`, `origin`, `filter`, `score`, `split`, `example_id`, `inputs` (JSON), `output`, `source_rev`.",
        "",
        "## Headroom",
        "",
        f"Rows with `split == \"heldout\"` ({result.heldout}) are for evaluation only. The student without C "
        f"already agrees with {fmt(result.student_agreement)} of them; the headroom of distillation is "
        f"{fmt(result.headroom)}.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- distill


def distill(
    store: Store | str | Path,
    out: str | Path,
    *,
    rev: str = "HEAD",
    stream: TaskStream | str | None = None,
    seed: int | None = None,
    sizes: tuple[int, int, int] | None = None,
    tasks: Sequence[str] | None = None,
    program: dspy.Module | None = None,
    teacher_lm: Any = None,
    student_lm: Any = None,
    reflection_lm: Any = None,
    synthesize: int = 0,
    samples: int = 3,
    agree: float = 2 / 3,
    temperature: float = 0.7,
    min_score: float = 1.0,
    holdout: float = 0.2,
    shots: int = 5,
    num_threads: int = 2,
) -> DistillResult:
    """Generate the SFT set of the context at ``rev``; see the module docstring.

    Args:
        store: The store (or its path).
        out: Output folder (created; files in it are replaced atomically).
        rev, stream, seed, sizes, tasks: Which C and which tasks (see :func:`ctxopt.portability.resolve_stream`).
        program: The program; default the stream's built-in program.
        teacher_lm: Runs program + C; default the task LM C was learned with.
        student_lm: Runs the program without C for the headroom check; default the teacher LM.
        reflection_lm: Writes synthesized inputs; default the one C was learned with.
        synthesize: New inputs per task (0: labeled train rows only).
        samples: Teacher samples per synthesized input.
        agree: Majority share of the samples a synthesized row needs.
        temperature: Sampling temperature of those samples.
        min_score: Metric score a labeled row needs.
        holdout: Share of each task's kept rows held out for the headroom check.
        shots: Train inputs shown to the reflection LM.
        num_threads: Evaluator threads.

    Returns:
        A :class:`DistillResult`.
    """
    from ctxopt.program import program_for

    if samples < 1:
        raise ConfigError(f"samples must be at least 1, got {samples}")
    if not 0.0 < agree <= 1.0:
        raise ConfigError(f"agree must be in (0, 1], got {agree}")
    if not 0.0 <= holdout < 1.0:
        raise ConfigError(f"holdout must be in [0, 1), got {holdout}")
    if synthesize < 0:
        raise ConfigError(f"synthesize must be ≥ 0, got {synthesize}")
    st = store if isinstance(store, Store) else Store.open(store)
    out = Path(out)
    if out.resolve() == st.path or st.path in out.resolve().parents:
        raise ConfigError(f"--out {out} is inside the store {st.path}; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    version = st.version(rev)
    ctx = st.show(version.rev)
    lms = source_lms(st, version.rev)
    loaded, seen, seed = resolve_stream(st, version.rev, stream=stream, seed=seed, sizes=sizes, tasks=tasks)
    program = program if program is not None else program_for(loaded)
    baseline = LearnedContext.from_program(program)
    aware = loaded.scenario == "task-aware"

    def resolve(lm: Any, default: str | None, what: str) -> Any:
        spec = lm if lm is not None else default
        if spec is None:
            raise ConfigError(f"store {st.path} does not record the {what}; pass --{what.replace(' ', '-')}")
        return get_lm(spec) if isinstance(spec, str) else spec

    teacher = resolve(teacher_lm, lms.get("task_lm"), "teacher lm")
    student = resolve(student_lm, None, "student lm") if student_lm is not None else teacher
    refl = resolve(reflection_lm, lms.get("reflection_lm") or DEFAULT_REFLECTION_LM, "reflection lm") \
        if synthesize else None
    t_ev = Evaluator(teacher, num_threads=num_threads, cache_dir=out / ".cache" / "teacher")
    s_ev = Evaluator(student, num_threads=num_threads, cache_dir=out / ".cache" / "student")
    adapter = dspy.ChatAdapter()

    rows: list[_Row] = []
    stats: dict[str, dict[str, Any]] = {}
    for task in seen:
        predictor = target_predictor(program, task.output)
        s = stats[task.name] = {"train_total": len(task.train), "train_kept": 0, "synth_requested": synthesize,
                                "synth_total": 0, "synth_kept": 0}
        res = t_ev.evaluate(program, ctx, task, list(task.train), scenario=loaded.scenario)
        for ex, r in zip(task.train, res.results):
            if r.error is not None or r.score < min_score:
                continue
            call_inputs, outputs = _target_call(r, predictor, ex, task.output)
            rows.append(_Row(task.name, "train", "metric", round(r.score, 6), r.example_id, _data_inputs(ex, task),
                             call_inputs, outputs, _field_text(outputs.get(task.output, ""))))
            s["train_kept"] += 1
        if synthesize:
            new_inputs = synthesize_inputs(refl, task, synthesize, seed=seed, shots=shots)
            s["synth_total"] = len(new_inputs)
            unlabeled = Task.from_splits(task.name, task.inputs, task.output, _Sampled(), [], [], [])
            exs = [make_example(d, list(d), task=task.family if aware else None) for d in new_inputs]
            per_sample = [t_ev.evaluate(_sampling_program(program, temperature, seed * 100 + k), ctx, unlabeled,
                                        exs, scenario=loaded.scenario).results for k in range(samples)]
            for i, ex in enumerate(exs):
                answers = [None if rs[i].error else _field_text(rs[i].prediction.get(task.output, ""))
                           for rs in per_sample]
                pick, share = _majority(answers, samples, agree)
                if pick is None or _echoes(answers[pick], task.family, ex, task.inputs):
                    continue
                call_inputs, outputs = _target_call(per_sample[pick][i], predictor, ex, task.output)
                rows.append(_Row(task.name, "synthetic", "self-consistency", share, example_id(ex),
                                 _data_inputs(ex, task), call_inputs, outputs, answers[pick] or ""))
                s["synth_kept"] += 1

    # held-out slice per task, seeded
    agreement: dict[str, float | None] = {}
    for task in seen:
        mine = sorted((r for r in rows if r.task == task.name), key=lambda r: (r.origin, r.example_id))
        n_hold = round(len(mine) * holdout) if len(mine) >= 2 else 0
        if holdout > 0 and len(mine) >= 2:
            n_hold = max(1, n_hold)
        random.Random(f"{seed}:holdout:{task.name}").shuffle(mine)
        held = mine[:n_hold]
        for r in held:
            r.split = "heldout"
        stats[task.name]["heldout"] = len(held)
        if not held:
            agreement[task.name] = None
            continue
        gold = [make_example({**r.inputs, task.output: r.output}, list(r.inputs), task=task.family if aware else None)
                for r in held]
        check = Task.from_splits(task.name, task.inputs, task.output, task.metric, [], [], [])
        res = s_ev.evaluate(program, baseline, check, gold, scenario=loaded.scenario)
        agreement[task.name] = round(sum(x.score >= min_score for x in res.results) / len(held), 6)

    # render and write
    records = []
    for r in rows:
        prog = copy.deepcopy(program)
        baseline.apply_to(prog, task=r.task if aware else None)
        sig = dict(prog.named_predictors())[target_predictor(prog, loaded.output)].signature
        records.append({
            "messages": chat_messages(sig, r.call_inputs, r.outputs, adapter),
            "task": r.task, "origin": r.origin, "filter": r.filter, "score": float(r.score), "split": r.split,
            "example_id": r.example_id, "inputs": json.dumps(r.inputs, ensure_ascii=False, sort_keys=True),
            "output": r.output, "source_rev": version.rev,
        })
    write_text(out / JSONL, "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records))
    _save_dataset(records, out)

    held_total = sum(s["heldout"] for s in stats.values())
    agreed = sum((agreement[t] or 0.0) * stats[t]["heldout"] for t in stats)
    task_stats = tuple(TaskStats(t.name, **stats[t.name], student_agreement=agreement[t.name]) for t in seen)
    filters = {"min_score": min_score, "synthesize": synthesize, "samples": samples, "agree": agree,
               "temperature": temperature, "holdout": holdout, "shots": shots, "seed": seed,
               "reflection_lm": lm_name(refl) if refl is not None else None}
    result = DistillResult(str(out), version.rev, version.context_hash, lm_name(teacher), lm_name(student),
                           loaded.name, len(records), held_total, task_stats,
                           round(agreed / held_total, 6) if held_total else None, filters)
    write_text(out / "README.md", _card(result, st, loaded))
    write_json(out / "summary.json", result.to_dict())
    return result
