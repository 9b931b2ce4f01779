"""The tool-use stream: eight small task types that need a tool to be answered right.

Written for ctxopt (MIT, like the project; ``ctxopt/data/tools/LICENSE``). The
facts are about 120 made-up towns (``ctxopt/data/tools/towns.json``), so no
model knows them, and the arithmetic has three- and four-digit results, so a
0.5B–1.5B model rarely gets it right in its head.

=================  ===================  =================================================
task               tools it needs       question
=================  ===================  =================================================
shop_total         calculator           price × quantity + a delivery fee
split_bill         calculator           a bill shared equally (exact division)
percent_of         calculator           p % of an amount
time_seconds       calculator           hours and minutes in seconds
town_population    lookup               the population of a town
town_mayor         lookup               the mayor of a town
older_town         lookup               which of two towns was founded earlier
population_gap     lookup, calculator   how many more people live in one town than another
=================  ===================  =================================================

The program is ``dspy.ReAct`` with the two tools (:func:`calculator`,
:func:`lookup`; :func:`ctxopt.program.react_program`). Every example has the
input ``question`` and the output ``answer``; the tools a question needs ride
along in the non-input field ``_tools``. :class:`ToolMetric` checks the final
answer (numbers by value, names by normalized text) and its feedback names tool
misuse from the agent's trajectory: no tool called, the wrong tool, bad
arguments, or a right observation the answer did not use.

The JSONL splits in ``ctxopt/data/tools/`` are what :func:`generate` writes
(``python -m ctxopt.tools``); a test checks that they still match.

Example:
    >>> calculator("37 * 48 + 125")
    '1901'
    >>> lookup("nowhere", "population").startswith("error")
    True
"""

from __future__ import annotations

import ast
import json
import operator
import random
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from ctxopt.benchmarks import sample_block, seeded_rng, visit_block
from ctxopt.errors import ConfigError, DataError
from ctxopt.metrics import Score, field_value, normalize
from ctxopt.tasks import Task, TaskStream, make_example, visit_name, visits

__all__ = ["TOOL_TASKS", "TOOLS_FIELD", "ToolMetric", "agent_tools", "calculator", "generate", "lookup", "tools_stream"]

TOOLS_FIELD = "_tools"
INPUT, OUTPUT = "question", "answer"
ATTRIBUTES = ("population", "founded", "mayor", "region")
TOOL_TASKS: dict[str, tuple[str, ...]] = {
    "shop_total": ("calculator",),
    "split_bill": ("calculator",),
    "percent_of": ("calculator",),
    "time_seconds": ("calculator",),
    "town_population": ("lookup",),
    "town_mayor": ("lookup",),
    "older_town": ("lookup",),
    "population_gap": ("lookup", "calculator"),
}
"""The ``tools-8`` stream, in order: task name -> the tools its questions need."""
TOOL_NAMES = ("calculator", "lookup")
SPLIT_SIZES = {"train": 50, "val": 30, "test": 50}
GEN_SEED = 2026


def data_dir() -> Path:
    return Path(__file__).parent / "data" / "tools"


# ----------------------------------------------------------------------------- the tools

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 12:
            raise ValueError("exponent too large")
        return _OPS[type(node.op)](left, right)
    raise ValueError(f"unsupported expression part: {type(node).__name__}")


def _number(value: float) -> str:
    return str(int(round(value))) if abs(value - round(value)) < 1e-9 else f"{value:.4f}".rstrip("0").rstrip(".")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression with numbers, + - * / % and parentheses, e.g. "37 * 48 + 125"."""
    text = re.sub(r"(?<=\d),(?=\d{3})", "", str(expression)).replace("×", "*").replace("x", "*").strip()
    text = text.replace("%", "/100") if re.search(r"\d%", text) else text
    try:
        return _number(_eval(ast.parse(text, mode="eval")))
    except ZeroDivisionError:
        return "error: division by zero"
    except (SyntaxError, ValueError, TypeError) as exc:
        return f"error: cannot evaluate {expression!r} ({exc}); use digits and + - * / ( )"


def agent_tools() -> list[Any]:
    """The stream's two tools as ``dspy.ReAct`` takes them: ``calculator`` and ``lookup``.

    A failing call (bad arguments included) comes back to the agent as one short ``error: …`` line;
    ``dspy.ReAct`` would otherwise put five frames of Python traceback into the trajectory, which every
    later turn's prompt then carries.
    """
    import dspy

    class AgentTool(dspy.Tool):
        def __call__(self, **kwargs: Any) -> Any:
            try:
                return super().__call__(**kwargs)
            except Exception as exc:  # noqa: BLE001 - the agent reads it, as ReAct would
                detail = " ".join(str(exc).split())[:160]
                return f"error: {type(exc).__name__}: {detail}; arguments are {', '.join(self.args)}"

    return [AgentTool(calculator), AgentTool(lookup)]


@lru_cache(maxsize=1)
def towns() -> dict[str, dict[str, Any]]:
    """The fact table: town name -> its attributes."""
    path = data_dir() / "towns.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"the tool stream's fact table is missing: {path} ({exc.strerror})") from None


def lookup(town: str, attribute: str) -> str:
    """Look up a fact about a town; attribute is one of population, founded, mayor, region."""
    table = towns()
    key = next((t for t in table if t.lower() == str(town).strip().lower()), None)
    if key is None:
        return f"error: no town named {town!r}; give the town's name exactly as the question writes it"
    attr = str(attribute).strip().lower()
    if attr not in ATTRIBUTES:
        return f"error: unknown attribute {attribute!r}; use one of {', '.join(ATTRIBUTES)}"
    return str(table[key][attr])


# ----------------------------------------------------------------------------- the metric

def _numbers(text: Any) -> list[float]:
    plain = re.sub(r"(?<=\d),(?=\d{3})", "", str(text or ""))
    return [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", plain)]


def _correct(answer: Any, gold: str) -> bool:
    if re.fullmatch(r"-?\d+(\.\d+)?", gold):
        found = _numbers(answer)
        return bool(found) and abs(found[0] - float(gold)) < 1e-6
    said, want = normalize(answer), normalize(gold)
    return said == want or (f" {want} " in f" {said} " and len(said.split()) <= len(want.split()) + 4)


def tool_calls(prediction: Any) -> list[tuple[str, Any, str]]:
    """``(tool, args, observation)`` for each tool the agent called (``finish`` excluded), in order."""
    traj = field_value(prediction, "trajectory") or {}
    calls = []
    for i in range(len(traj)):
        name = traj.get(f"tool_name_{i}")
        if name is None:
            break
        if name != "finish":
            calls.append((str(name), traj.get(f"tool_args_{i}"), str(traj.get(f"observation_{i}", ""))))
    return calls


class ToolMetric:
    """The final answer is right (score 1) or not (0); the feedback names tool misuse."""

    name = "tool_answer"
    __name__ = "tool_answer"

    def __call__(self, example: Any, prediction: Any) -> Score:
        gold = str(field_value(example, OUTPUT))
        answer = field_value(prediction, OUTPUT)
        if _correct(answer, gold):
            return Score(1.0, "correct")
        needed = tuple(field_value(example, TOOLS_FIELD) or ())
        calls = tool_calls(prediction)
        used = [c[0] for c in calls]
        notes = []
        if not calls:
            notes.append(f"no tool was called (next_tool_name was 'finish' at once); this question needs "
                         f"the {' and '.join(needed)} tool")
        else:
            notes += [f"the {t} tool was never called (next_tool_name); this question needs it"
                      for t in needed if t not in used]
            notes += [f"next_tool_name {t!r} is not a tool; use {' or '.join(needed)}"
                      for t in dict.fromkeys(used) if t not in TOOL_NAMES]
            notes += [f"bad next_tool_args for {t}: {json.dumps(a, default=str)[:80]} gave {o[:100]!r}"
                      for t, a, o in calls if o.startswith(("error", "Execution error"))]
            if any(_correct(o, gold) for _, _, o in calls):
                notes.append("a tool returned the right value, but the final answer did not use it")
        notes.append(f"expected {gold!r}, got {str(answer or '')[:80]!r}")
        return Score(0.0, "; ".join(notes))


# ----------------------------------------------------------------------------- the data

_FIRST = ("Ada", "Bruno", "Carla", "Dmitri", "Elif", "Farid", "Greta", "Hugo", "Ilse", "Jonas", "Kaia", "Lev",
          "Mira", "Nils", "Oona", "Pavel", "Rhea", "Soren", "Tove", "Ugo")
_LAST = ("Brandt", "Castell", "Dunmore", "Ekholm", "Falk", "Grimsby", "Halloran", "Iversen", "Jessup", "Kowal",
         "Lindqvist", "Marsh", "Nyberg", "Ostrow", "Pryce", "Quist", "Rowe", "Strand", "Thorne", "Voss")
_HEAD = ("Var", "Kess", "Brun", "Tal", "Orm", "Fen", "Glas", "Hol", "Ister", "Jor", "Lun", "Mar", "Nor", "Pell",
         "Quin", "Ros", "Sel", "Thorn", "Ulm", "Wex")
_TAIL = ("holt", "moor", "wick", "dale", "stead", "ford", "mere", "by")
_REGIONS = ("North Reach", "Saltcoast", "Highfold", "Ember Vale")
TOWNS = 120


def _make_towns(rng: random.Random) -> dict[str, dict[str, Any]]:
    names = sorted({h + t for h in _HEAD for t in _TAIL})
    chosen = rng.sample(names, TOWNS)
    pops, years = rng.sample(range(1_200, 95_000), TOWNS), rng.sample(range(1150, 1890), TOWNS)
    mayors = rng.sample([f"{f} {s}" for f in _FIRST for s in _LAST], TOWNS)
    return {n: {"population": p, "founded": y, "mayor": m, "region": rng.choice(_REGIONS)}
            for n, p, y, m in zip(chosen, pops, years, mayors, strict=True)}


def _question(task: str, rng: random.Random, table: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
    names = sorted(table)
    if task == "shop_total":
        item = rng.choice(("notebooks", "lamps", "chairs", "kettles", "scarves", "tickets"))
        price, qty, fee = rng.randint(12, 89), rng.randint(13, 97), rng.randint(20, 250)
        return (f"A shop sells {item} at {price} dollars each. Mia buys {qty} {item} and pays a {fee} dollar "
                f"delivery fee. How many dollars does she pay in all?", str(price * qty + fee))
    if task == "split_bill":
        people, each = rng.randint(12, 48), rng.randint(105, 899)
        return (f"A bill of {people * each} dollars is shared equally by {people} people. "
                "How many dollars does each pay?", str(each))
    if task == "percent_of":
        pct, k = rng.choice((12, 15, 18, 24, 35, 45, 65, 85)), rng.randint(12, 97)
        return f"What is {pct}% of {k * 100}?", str(pct * k)
    if task == "time_seconds":
        h, m = rng.randint(2, 23), rng.randint(5, 55)
        return f"How many seconds are there in {h} hours and {m} minutes?", str(h * 3600 + m * 60)
    a, b = rng.sample(names, 2)
    if task == "town_population":
        ask = rng.choice(("What is the population of {}?", "How many people live in {}?"))
        return ask.format(a), str(table[a]["population"])
    if task == "town_mayor":
        ask = rng.choice(("Who is the mayor of {}?", "What is the name of the mayor of {}?"))
        return ask.format(a), str(table[a]["mayor"])
    if task == "older_town":
        return (f"Which town was founded earlier, {a} or {b}?",
                a if table[a]["founded"] < table[b]["founded"] else b)
    if task == "population_gap":
        big, small = (a, b) if table[a]["population"] > table[b]["population"] else (b, a)
        return (f"How many more people live in {big} than in {small}?",
                str(table[big]["population"] - table[small]["population"]))
    raise ConfigError(f"unknown tool task {task!r}; use one of {', '.join(TOOL_TASKS)}")


def generate(folder: Path | None = None) -> dict[str, dict[str, list[dict[str, str]]]]:
    """Write the fact table and every task's train/val/test JSONL (deterministic); return the rows."""
    folder = folder or data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(GEN_SEED)
    table = _make_towns(rng)
    (folder / "towns.json").write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    out: dict[str, dict[str, list[dict[str, str]]]] = {}
    for task in TOOL_TASKS:
        trng, seen, rows = random.Random(f"{GEN_SEED}/{task}"), set(), []
        while len(rows) < sum(SPLIT_SIZES.values()):
            q, a = _question(task, trng, table)
            if q not in seen:
                seen.add(q)
                rows.append({INPUT: q, OUTPUT: a})
        out[task], start = {}, 0
        for split, n in SPLIT_SIZES.items():
            out[task][split] = rows[start:start + n]
            start += n
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in out[task][split])
            (folder / f"{task}.{split}.jsonl").write_text(text, encoding="utf-8")
    return out


def _rows(task: str, split: str) -> list[dict[str, str]]:
    path = data_dir() / f"{task}.{split}.jsonl"
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise DataError(f"tool stream data missing: {path} ({exc.strerror})") from None


def tools_stream(spec: str, names: Sequence[str], *, seed: int, sizes: tuple[int, int, int],
                 scenario: str) -> TaskStream:
    """The tool-use stream: ``names`` from :data:`TOOL_TASKS`, in order (a repeat is a revisit).

    Train and val are drawn from the task's train and val files by ``seed``; test is a fixed block of
    ``sizes[2]`` rows of its test file, the same in every run. Visit k of a task takes the k-th block of
    each (shuffled) pool, so revisits see fresh examples while the pools last.
    """
    unknown = [n for n in names if n not in TOOL_TASKS]
    if unknown:
        raise ConfigError(f"unknown tool task(s) {', '.join(unknown)}; use any of {', '.join(TOOL_TASKS)}")
    label = scenario == "task-aware"
    metric = ToolMetric()
    tasks = []
    for name, k in visits(names):
        rng = seeded_rng(seed, "tools", name)
        parts = [sample_block(_rows(name, split), n, rng, k) for split, n in zip(("train", "val"), sizes[:2], strict=True)]
        parts.append(visit_block(_rows(name, "test"), sizes[2], k))
        made = [[make_example(r, [INPUT], task=name if label else None).copy(**{TOOLS_FIELD: list(TOOL_TASKS[name])})
                 for r in part] for part in parts]
        tasks.append(Task.from_splits(visit_name(name, k), (INPUT,), OUTPUT, metric, *made,
                                      description=f"tool use: {name} (needs {', '.join(TOOL_TASKS[name])})"))
    return TaskStream(spec, scenario, tuple(tasks), {"source": "ctxopt tools", "program": "react"})  # type: ignore[arg-type]


if __name__ == "__main__":  # python -m ctxopt.tools: rewrite the packaged data
    written = generate()
    print(f"wrote {len(written)} tasks to {data_dir()}")
