"""reasoning-gym tasks: seeded, self-describing questions generated offline.

`reasoning-gym <https://github.com/open-thought/reasoning-gym>`_ (Apache-2.0;
the optional extra ``ctxopt[rg]`` pins 0.1.25) generates procedural datasets
whose questions say what to do ("How many times does the letter "h" appear
in …?"). Generation is local and seeded; nothing is downloaded at run time.
:func:`ctxopt.streams.load_stream` builds two kinds of stream from it:

* ``rg:NAME1,NAME2``: one task per reasoning-gym dataset, with the package's
  default configuration (task-aware unless ``scenario`` says otherwise);
* ``assistant-8``: :data:`ASSISTANT8`, eight short-answer datasets configured so
  a 0.5B–1.5B model can partly solve them, task-agnostic by default (the
  "assistant" case: requests carry no label, but each says what it wants).

Every example has the input ``question`` and the output ``answer``; the
dataset's entry (answer and metadata) rides along in the non-input field
``_rg_entry``. The metric (:class:`RgMetric`) is the dataset's own
``score_answer`` (partial credit where the dataset gives it), with feedback.

**Splits.** Test examples are generated first from a fixed seed (not the run's),
then train and val from the run's seed, dropping any question that is also a
test question. A family visited again (``rg:a,b,a``, ``assistant-8x2``) draws
each visit from its own seed and prefers questions no earlier visit used, so
revisits see fresh examples while the dataset's question space allows.

Example:
    >>> sorted(ASSISTANT8)[:3]
    ['chain_sum', 'leg_counting', 'letter_counting']
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any, ClassVar

import dspy

from ctxopt._text import shorten
from ctxopt.benchmarks import TEST_SEED, seeded_rng
from ctxopt.errors import ConfigError, DataError
from ctxopt.metrics import Score, exact_match, field_value
from ctxopt.tasks import Task, TaskStream, make_example, visit_name, visits

__all__ = ["ASSISTANT8", "ENTRY_FIELD", "RG_PIN", "RgMetric", "rg_datasets", "rg_stream", "rg_version"]

RG_PIN = "0.1.25"
"""The reasoning-gym release the ``rg`` extra installs and the built-in configurations were checked with."""
ENTRY_FIELD = "_rg_entry"
INPUT, OUTPUT = "question", "answer"

ASSISTANT8: dict[str, dict[str, Any]] = {
    "chain_sum": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
    "letter_counting": {"min_words": 3, "max_words": 6},
    "word_sorting": {"min_words": 3, "max_words": 5, "min_word_length": 3, "max_word_length": 8},
    "number_format": {"min_num_candidates": 2, "max_num_candidates": 3, "min_n": 10, "max_n": 10000},
    "spell_backward": {"min_word_len": 3, "max_word_len": 6},
    "leg_counting": {"min_animals": 1, "max_animals": 3, "min_instances": 1, "max_instances": 4},
    "word_sequence_reversal": {"min_words": 3, "max_words": 5},
    "number_sorting": {"min_numbers": 3, "max_numbers": 5, "min_decimals": 0, "max_decimals": 0,
                       "min_value": -50.0, "max_value": 50.0},
}
"""The ``assistant-8`` stream, in order: dataset name -> its configuration (short answers).

``chain_sum`` stands for arithmetic: reasoning-gym 0.1.25's ``basic_arithmetic``
without parentheses states wrong answers for about a third of its questions."""

_MISSING = "the rg: source and assistant-8 need reasoning-gym: pip install 'ctxopt[rg]'"


def _rg() -> Any:
    try:
        return importlib.import_module("reasoning_gym")
    except ImportError:
        raise ConfigError(_MISSING) from None


def rg_version() -> str:
    """The installed reasoning-gym version (ConfigError when it is not installed)."""
    _rg()
    return metadata.version("reasoning-gym")


def rg_datasets() -> tuple[str, ...]:
    """The names of reasoning-gym's datasets, sorted (ConfigError when it is not installed)."""
    _rg()
    return tuple(sorted(importlib.import_module("reasoning_gym.factory").DATASETS))


def _dataset(name: str, config: Mapping[str, Any], *, seed: int, size: int) -> Any:
    rg = _rg()
    try:
        return rg.create_dataset(name, seed=seed, size=size, **config)
    except (TypeError, ValueError, AssertionError) as exc:
        names = rg_datasets()
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"{len(names)} datasets, e.g. {', '.join(names[:5])}"
            raise ConfigError(f"unknown reasoning-gym dataset '{name}'; {hint}") from None
        raise ConfigError(f"reasoning-gym dataset '{name}': bad configuration {dict(config)} ({exc})") from None


@lru_cache(maxsize=64)
def _scorer(name: str, config_items: tuple[tuple[str, Any], ...]) -> Any:
    return _dataset(name, dict(config_items), seed=0, size=1)


# --------------------------------------------------------------------------- metric


@dataclass(frozen=True)
class RgMetric:
    """A reasoning-gym dataset's ``score_answer`` as a ctxopt metric: ``metric(example, prediction) -> Score``.

    The prediction's output field, stripped, is scored against the example's
    ``_rg_entry``; feedback names the expected answer, and partial credit where
    the dataset gives it. A checker that raises scores 0 with the error as
    feedback; a dataset without ``score_answer`` is scored by exact match.

    Attributes:
        dataset: The reasoning-gym dataset name.
        config: Its configuration (the scorer is built from it).
        output_field: The prediction field holding the answer.
    """

    dataset: str
    config: tuple[tuple[str, Any], ...] = ()
    output_field: str = OUTPUT
    name: ClassVar[str] = "score_answer"

    def __call__(self, example: Any, prediction: Any) -> Score:
        value = field_value(prediction, self.output_field)
        if value is None:
            return Score(0.0, f"the prediction has no field '{self.output_field}'; it must produce one")
        answer = str(value).strip()
        entry = field_value(example, ENTRY_FIELD)
        if not isinstance(entry, Mapping):
            raise DataError(f"example {field_value(example, '_id')}: no reasoning-gym entry ('{ENTRY_FIELD}') to score against")
        gold = str(entry.get("answer", ""))
        check = getattr(_scorer(self.dataset, self.config), "score_answer", None)
        if check is None:  # every reasoning-gym dataset has one; exact match if a dataset ever does not
            return exact_match(answer, [gold])
        try:
            score = float(check(answer, dict(entry)))
        except Exception as exc:  # noqa: BLE001 - an unparsable answer is a wrong answer, not a broken run
            return Score(0.0, f"the checker could not read '{shorten(answer, 80)}' ({type(exc).__name__}); "
                              f"expected '{shorten(gold, 80)}'")
        return Score(min(1.0, max(0.0, score)), _feedback(score, answer, gold))


def _feedback(score: float, answer: str, gold: str) -> str:
    """Feedback for a score the dataset's checker gave.

    Example:
        >>> _feedback(0.0, "5", "4")
        "expected '4', got '5'"
        >>> _feedback(0.5, "b, a", "a, b")
        "partial credit 0.50: expected 'a, b', got 'b, a'"
    """
    if score >= 1.0:
        return f"correct: '{shorten(answer, 80)}'"
    em = exact_match(answer, [gold])
    if em.score >= 1.0:  # right up to case, spacing or punctuation, but the checker wants the exact form
        text = f"expected exactly '{shorten(gold, 80)}', got '{shorten(answer, 80)}'; write the answer in exactly that form"
    else:
        text = em.feedback
    return text if score <= 0.0 else f"partial credit {score:.2f}: {text}"


# --------------------------------------------------------------------------- splits


def _seed(*parts: Any) -> int:
    return seeded_rng(*parts).randrange(2**31)


def _draw(dataset: Any, n: int, *, forbidden: set[str], used: set[str]) -> list[dict[str, Any]]:
    """Up to ``n`` entries with distinct questions outside ``forbidden``; ones outside ``used`` first."""
    fresh: list[dict[str, Any]] = []
    again: list[dict[str, Any]] = []
    taken: set[str] = set()
    for i in range(len(dataset)):
        entry = dataset[i]
        q = str(entry["question"])
        if q in forbidden or q in taken:
            continue
        taken.add(q)
        (again if q in used else fresh).append(entry)
        if len(fresh) >= n:
            break
    return (fresh + again)[:n]


def _pool(n: int) -> int:
    """Entries to generate for ``n`` distinct questions: room to skip repeats."""
    return 2 * n + 16


def _questions(entries: Iterable[Mapping[str, Any]]) -> set[str]:
    return {str(e["question"]) for e in entries}


def _visit_splits(
    name: str, config: Mapping[str, Any], n_visits: int, *, seed: int, sizes: tuple[int, int, int]
) -> list[tuple[list[dict[str, Any]], ...]]:
    """``(train, val, test)`` entries for each visit of one dataset (see the module docstring)."""
    n_train, n_val, n_test = sizes
    tests: list[list[dict[str, Any]]] = []
    for v in range(1, n_visits + 1):
        ds = _dataset(name, config, seed=_seed(TEST_SEED, "rg", name, v), size=_pool(n_test))
        tests.append(_draw(ds, n_test, forbidden=set(), used=_questions(e for t in tests for e in t)))
    forbidden = _questions(e for t in tests for e in t)
    out: list[tuple[list[dict[str, Any]], ...]] = []
    used: set[str] = set()
    for v in range(1, n_visits + 1):
        ds = _dataset(name, config, seed=_seed("rg", name, seed, v), size=_pool(n_train + n_val))
        both = _draw(ds, n_train + n_val, forbidden=forbidden, used=used)
        if len(both) < 2 or not tests[v - 1]:
            raise DataError(f"reasoning-gym dataset '{name}': too few distinct questions for sizes {list(sizes)}")
        used |= _questions(both)
        cut = min(n_train, len(both) - 1)
        out.append((both[:cut], both[cut:], tests[v - 1]))
    return out


def _example(entry: Mapping[str, Any], task: str | None) -> dspy.Example:
    ex = make_example({INPUT: str(entry["question"]), OUTPUT: str(entry["answer"])}, [INPUT], task=task)
    return ex.copy(**{ENTRY_FIELD: {"answer": entry["answer"], "metadata": entry.get("metadata", {})}})


def rg_stream(
    spec: str,
    names: Sequence[str],
    *,
    seed: int,
    sizes: tuple[int, int, int],
    scenario: str,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> TaskStream:
    """A stream of reasoning-gym datasets, in order; a repeated name is a revisit with fresh examples.

    Args:
        spec: The stream's name.
        names: Dataset names (reasoning-gym's, e.g. ``letter_counting``).
        seed: Seeds train and val (test is fixed).
        sizes: ``(train, val, test)`` examples per task.
        scenario: ``task-aware`` or ``task-agnostic``.
        configs: Per-dataset configuration; the package default where absent.

    Raises:
        ConfigError: reasoning-gym is missing, or a name or configuration is invalid.
    """
    configs = configs or {}
    counts = {n: k for n, k in visits(names)}  # the last count of each name is its number of visits
    splits = {n: _visit_splits(n, configs.get(n, {}), k, seed=seed, sizes=sizes) for n, k in counts.items()}
    label = scenario == "task-aware"
    tasks = []
    for name, k in visits(names):
        train, val, test = splits[name][k - 1]
        config = dict(configs.get(name, {}))
        make = [[_example(e, name if label else None) for e in part] for part in (train, val, test)]
        tasks.append(Task.from_splits(
            visit_name(name, k), (INPUT,), OUTPUT, RgMetric(name, tuple(sorted(config.items()))), *make,
            description=f"reasoning-gym '{name}'" + (f" {config}" if config else "") + " (metric score_answer)"))
    meta = {"source": "reasoning-gym", "version": rg_version(), "seed": seed, "sizes": list(sizes),
            "configs": {n: dict(configs.get(n, {})) for n in counts}}
    return TaskStream(spec, scenario, tuple(tasks), meta)  # type: ignore[arg-type]

