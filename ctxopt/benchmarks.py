"""Built-in benchmark streams: Instruction Induction and bAbI, from the packaged data.

:func:`ctxopt.streams.load_stream` builds them from names like ``ii-8``, ``ii:a,b``,
``babi-10`` and ``babi:1,4``; this module holds how each task becomes examples and
how it is scored.

**Instruction Induction.** Train and val are drawn without overlap from the
``induce`` pool, after removing duplicate inputs and any input that also occurs in
the ``execute`` set; test is drawn from the ``execute`` set. Train/val depend on
``seed``; the test subset uses a fixed seed, so every run scores the same test
examples. Tasks with a small pool (cause_and_effect 26, common_concept 16,
informal_to_formal 15) split what there is 4:3 into train/val and use every
``execute`` example for test. The ``annotations/`` folder (human-written
instructions, reserved for an oracle baseline) is never read here.

Each task keeps the scoring of the paper's ``evaluate.py`` (``TASK_TO_METRIC``:
F1 for common_concept and informal_to_formal, exact set for
orthography_starts_with and taxonomy_animal, contains for synonyms, exact match
for the rest, each taken as the best over the acceptable answers):

=========================  ===========  ============================================
task                       metric       input / acceptable answers
=========================  ===========  ============================================
active_to_passive          exact_match  output
antonyms                   exact_match  output
cause_and_effect           exact_match  input "Sentence 1: … Sentence 2: …" (cause
                                        and effect in seeded random order); the cause
common_concept             f1           input: the items joined by ", ";
                                        any of ``all_common_concepts``
diff                       exact_match  output
first_word_letter          exact_match  output
informal_to_formal         f1           output
larger_animal              exact_match  output
letters_list               exact_match  output ("p l a c e")
negation                   exact_match  output
num_to_verbal              exact_match  output
orthography_starts_with    set_equal    output, compared as a set of words
rhymes                     exact_match  any of ``other_rhymes`` (as in the paper)
second_word_letter         exact_match  output
sentence_similarity        exact_match  "3 - probably" or just "3" (the paper scores
                                        the leading number only)
sentiment                  exact_match  output
singular_to_plural         exact_match  output
sum                        exact_match  output
synonyms                   contains     output
taxonomy_animal            set_equal    output, a comma-separated set (order-free)
translation_en-de/-es/-fr  exact_match  any of ``possible_translations``
word_in_context            exact_match  any of ``possible_outputs``
=========================  ===========  ============================================

The paper scores translation by exact match against any possible translation,
not by "contains" (it uses contains for synonyms only), so that is kept here.

**bAbI.** An example's ``input`` is the story so far (its statements, one per
line, without line numbers) followed by ``Question: …``; ``output`` is the
answer. Train and val come from the task's ``_train.txt`` file, test from
``_test.txt``. Metric: exact match, except qa8 lists-sets (``set_equal``) and
qa19 path-finding (exact match; "n,w", "n, w" and "north, west" all accepted).

**Revisits.** A task named twice in a stream is visited twice (``antonyms``, then
``antonyms@2``; :func:`ctxopt.tasks.visits`). Visit ``k`` takes the ``k``-th block of
each shuffled pool (:func:`visit_block`), so its train, val and test are fresh,
disjoint from earlier visits' while the pool lasts (Instruction Induction: 400
train/val inputs and 100 test inputs for most tasks; bAbI: 1,000 each), and
wrap around after that. Visit 1 is exactly the task's usual splits.

"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import dspy

from ctxopt.errors import DataError
from ctxopt.metrics import get_metric
from ctxopt.tasks import Task, TaskStream, make_example, visit_name, visits

__all__ = [
    "BABI10",
    "BABI_TASKS",
    "DEFAULT_SIZES",
    "II8",
    "II_METRICS",
    "II_TASKS",
    "TEST_SEED",
    "babi_stream",
    "data_dir",
    "ii_stream",
    "seeded_rng",
    "visit_block",
]

DEFAULT_SIZES: tuple[int, int, int] = (40, 30, 50)
TEST_SEED = "ctxopt-test-v1"  # the test subset does not depend on the run's seed

II_METRICS: dict[str, str] = {
    "active_to_passive": "exact_match",
    "antonyms": "exact_match",
    "cause_and_effect": "exact_match",
    "common_concept": "f1",
    "diff": "exact_match",
    "first_word_letter": "exact_match",
    "informal_to_formal": "f1",
    "larger_animal": "exact_match",
    "letters_list": "exact_match",
    "negation": "exact_match",
    "num_to_verbal": "exact_match",
    "orthography_starts_with": "set_equal",
    "rhymes": "exact_match",
    "second_word_letter": "exact_match",
    "sentence_similarity": "exact_match",
    "sentiment": "exact_match",
    "singular_to_plural": "exact_match",
    "sum": "exact_match",
    "synonyms": "contains",
    "taxonomy_animal": "set_equal",
    "translation_en-de": "exact_match",
    "translation_en-es": "exact_match",
    "translation_en-fr": "exact_match",
    "word_in_context": "exact_match",
}
II_TASKS: tuple[str, ...] = tuple(sorted(II_METRICS))
II8: tuple[str, ...] = (
    "first_word_letter",
    "singular_to_plural",
    "antonyms",
    "sentiment",
    "diff",
    "letters_list",
    "negation",
    "translation_en-es",
)
BABI_TASKS: dict[int, str] = {
    1: "qa1_single-supporting-fact",
    2: "qa2_two-supporting-facts",
    3: "qa3_three-supporting-facts",
    4: "qa4_two-arg-relations",
    5: "qa5_three-arg-relations",
    6: "qa6_yes-no-questions",
    7: "qa7_counting",
    8: "qa8_lists-sets",
    9: "qa9_simple-negation",
    10: "qa10_indefinite-knowledge",
    11: "qa11_basic-coreference",
    12: "qa12_conjunction",
    13: "qa13_compound-coreference",
    14: "qa14_time-reasoning",
    15: "qa15_basic-deduction",
    16: "qa16_basic-induction",
    17: "qa17_positional-reasoning",
    18: "qa18_size-reasoning",
    19: "qa19_path-finding",
    20: "qa20_agents-motivations",
}
BABI10: tuple[int, ...] = (1, 4, 6, 9, 10, 11, 12, 13, 15, 20)


def data_dir() -> Path:
    """The folder of the packaged benchmark data (``ctxopt/data``)."""
    return Path(str(resources.files("ctxopt") / "data"))


T = TypeVar("T")


def seeded_rng(*parts: Any) -> random.Random:
    return random.Random(":".join(str(p) for p in parts))


def visit_block(items: Sequence[T], n: int, visit: int = 1) -> list[T]:
    """The ``visit``-th block of ``n`` items, wrapping around the end; all items when ``n`` covers them.

    Successive visits get disjoint blocks while the items last.

    Example:
        >>> [visit_block("abcde", 2, k) for k in (1, 2, 3)], visit_block("ab", 5, 2)
        ([['a', 'b'], ['c', 'd'], ['e', 'a']], ['a', 'b'])
    """
    items = list(items)
    if n >= len(items):
        return items
    start = (visit - 1) * n % len(items)
    return (items + items)[start : start + n]


def _split_pool(
    pool: list[Any], n_train: int, n_val: int, rng: random.Random, visit: int = 1
) -> tuple[list[Any], list[Any]]:
    """Shuffle and cut a pool into disjoint train and val parts (proportional when short); one block per visit."""
    pool = list(pool)
    rng.shuffle(pool)
    if len(pool) < n_train + n_val:
        n_train = max(1, round(len(pool) * n_train / (n_train + n_val)))
        n_val = len(pool) - n_train
    block = visit_block(pool, n_train + n_val, visit)
    return block[:n_train], block[n_train:]


def sample_block(pool: list[Any], n: int, rng: random.Random, visit: int = 1) -> list[Any]:
    """A seeded shuffle of ``pool``, then its ``visit``-th block of ``n`` (:func:`visit_block`)."""
    pool = list(pool)
    rng.shuffle(pool)
    return visit_block(pool, n, visit)


# =========================================================================== ii


@dataclass(frozen=True)
class _Row:
    input: str
    output: str
    answers: tuple[str, ...]


def _ii_row(task: str, rec: Mapping[str, Any], rng: random.Random) -> _Row:
    """One Instruction Induction record as input/output/acceptable answers."""
    if task == "cause_and_effect":
        cause, effect = rec["cause"], rec["effect"]
        first, second = (cause, effect) if rng.random() < 0.5 else (effect, cause)
        return _Row(f"Sentence 1: {first} Sentence 2: {second}", cause, (cause,))
    if task == "common_concept":
        concepts = tuple(rec.get("all_common_concepts") or (rec["concept"],))
        if rec["concept"] not in concepts:
            concepts = (rec["concept"], *concepts)
        return _Row(", ".join(rec["items"]), rec["concept"], concepts)
    output = str(rec["output"])
    extra: Sequence[str] = ()
    if task == "rhymes":
        extra = rec.get("other_rhymes", ())
    elif task.startswith("translation_"):
        extra = rec.get("possible_translations", ())
    elif task == "word_in_context":
        extra = rec.get("possible_outputs", ())
    elif task == "sentence_similarity":
        extra = (output.split("-")[0].strip(),)
    answers = tuple(dict.fromkeys([output, *map(str, extra)]))
    return _Row(str(rec["input"]), output, answers)


@lru_cache(maxsize=64)
def _ii_rows(task: str, part: str) -> tuple[_Row, ...]:
    path = data_dir() / "instruction_induction" / part / f"{task}.json"
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["examples"]
    except FileNotFoundError:
        raise DataError(f"{path}: missing packaged data file; reinstall ctxopt") from None
    rng = seeded_rng("ii-order", task, part)  # cause_and_effect's sentence order: fixed, not per run
    rows: dict[str, _Row] = {}
    for key in sorted(records, key=lambda k: int(k) if str(k).isdigit() else 0):
        row = _ii_row(task, records[key], rng)
        rows.setdefault(row.input.strip().lower(), row)  # drop duplicate inputs
    return tuple(rows.values())


def _ii_task(name: str, *, seed: int, sizes: tuple[int, int, int], aware: bool, visit: int = 1) -> Task:
    n_train, n_val, n_test = sizes
    execute = list(_ii_rows(name, "execute"))
    test_inputs = {r.input.strip().lower() for r in execute}
    pool = [r for r in _ii_rows(name, "induce") if r.input.strip().lower() not in test_inputs]
    train, val = _split_pool(pool, n_train, n_val, seeded_rng("ii", name, seed), visit)
    test = sample_block(execute, n_test, seeded_rng(TEST_SEED, "ii", name), visit)
    task_name = name if aware else None

    def ex(r: _Row) -> dspy.Example:
        return make_example({"input": r.input, "output": r.output}, ["input"], task=task_name, answers=r.answers)

    return Task.from_splits(
        visit_name(name, visit),
        ("input",),
        "output",
        get_metric(II_METRICS[name], "output"),
        [ex(r) for r in train],
        [ex(r) for r in val],
        [ex(r) for r in test],
        description=f"Instruction Induction task '{name}' (metric {II_METRICS[name]})",
    )


def ii_stream(
    spec: str, names: Sequence[str], *, seed: int, sizes: tuple[int, int, int], scenario: str
) -> TaskStream:
    """The Instruction Induction stream of ``names``, in order; a repeated name is a revisit."""
    aware = scenario == "task-aware"
    tasks = tuple(_ii_task(n, seed=seed, sizes=sizes, aware=aware, visit=k) for n, k in visits(names))
    meta = {"source": "instruction_induction", "seed": seed, "sizes": list(sizes)}
    return TaskStream(spec, scenario, tasks, meta)  # type: ignore[arg-type]


# =========================================================================== bAbI


def _parse_babi(path: Path) -> list[_Row]:
    """Parse a bAbI file into rows: story so far + question -> answer."""
    rows: list[_Row] = []
    story: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: missing packaged data file; reinstall ctxopt") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        number, _, text = line.partition(" ")
        if number == "1":
            story = []
        if "\t" in text:
            parts = text.split("\t")
            if len(parts) < 2:
                raise DataError(f"{path}:{lineno}: a question line needs question<TAB>answer")
            question, answer = parts[0].strip(), parts[1].strip()
            body = "\n".join(story)
            rows.append(_Row(f"{body}\nQuestion: {question}", answer, _babi_answers(path.name, answer)))
        else:
            story.append(text.strip())
    return rows


def _babi_answers(filename: str, answer: str) -> tuple[str, ...]:
    if filename.startswith("qa19_"):
        steps = answer.split(",")
        words = {"n": "north", "s": "south", "e": "east", "w": "west"}
        long = [words.get(s, s) for s in steps]
        return tuple(dict.fromkeys([answer, ", ".join(steps), " ".join(steps), ", ".join(long), " ".join(long)]))
    return (answer,)


@lru_cache(maxsize=64)
def _babi_rows(number: int, part: str) -> tuple[_Row, ...]:
    return tuple(_parse_babi(data_dir() / "babi" / "en" / f"{BABI_TASKS[number]}_{part}.txt"))


def _babi_task(number: int, *, seed: int, sizes: tuple[int, int, int], aware: bool, visit: int = 1) -> Task:
    n_train, n_val, n_test = sizes
    name = BABI_TASKS[number]
    train, val = _split_pool(list(_babi_rows(number, "train")), n_train, n_val, seeded_rng("babi", number, seed), visit)
    test = sample_block(list(_babi_rows(number, "test")), n_test, seeded_rng(TEST_SEED, "babi", number), visit)
    metric_name = "set_equal" if number == 8 else "exact_match"
    task_name = name if aware else None

    def ex(r: _Row) -> dspy.Example:
        answers = r.answers if len(r.answers) > 1 else None
        return make_example({"input": r.input, "output": r.output}, ["input"], task=task_name, answers=answers)

    return Task.from_splits(
        visit_name(name, visit),
        ("input",),
        "output",
        get_metric(metric_name, "output"),
        [ex(r) for r in train],
        [ex(r) for r in val],
        [ex(r) for r in test],
        description=f"bAbI task {number} ({name}); metric {metric_name}",
    )


def babi_stream(
    spec: str, numbers: Sequence[int], *, seed: int, sizes: tuple[int, int, int], scenario: str
) -> TaskStream:
    """The bAbI stream of task ``numbers``, in order; a repeated number is a revisit."""
    aware = scenario == "task-aware"
    tasks = tuple(_babi_task(n, seed=seed, sizes=sizes, aware=aware, visit=k) for n, k in visits(numbers))
    meta = {"source": "babi", "seed": seed, "sizes": list(sizes)}
    return TaskStream(spec, scenario, tasks, meta)  # type: ignore[arg-type]
