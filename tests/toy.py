"""A 3-task toy stream and scripted task/reflection LMs whose behaviour depends on the learned rules."""

from __future__ import annotations

import re

from ctxopt.metrics import get_metric
from ctxopt.tasks import Task, TaskStream, make_example
from tests.fakes import chat_fields, scripted_lm

# task name -> (rule text that teaches it, transformation)
RULES = {
    "suffix": ("Append the letters zz to the input word.", lambda w: w + "zz"),
    "reverse": ("Reverse the letters of the input word.", lambda w: w[::-1]),
    "double": ("Repeat the input word twice with no space.", lambda w: w * 2),
}
WORDS = ["apple", "bread", "chair", "delta", "eagle", "flame", "grape", "house", "igloo", "joker",
         "kite", "lemon", "mango", "night", "ocean", "piano", "queen", "river", "stone", "tiger",
         "umbra", "vivid", "water", "xenon", "yacht", "zebra", "amber", "birch", "cedar", "dunes"]


def toy_stream(scenario: str = "task-aware", names=("suffix", "reverse", "double")) -> TaskStream:
    metric = get_metric("exact_match", "output")
    tasks = []
    aware = scenario == "task-aware"
    for k, name in enumerate(names):
        fn = RULES[name][1]
        words = [f"{w}{k}" for w in WORDS]
        ex = [make_example({"input": w, "output": fn(w)}, ["input"], task=name if aware else None) for w in words]
        tasks.append(Task.from_splits(name, ("input",), "output", metric, ex[:12], ex[12:22], ex[22:30]))
    return TaskStream("toy", scenario, tuple(tasks))


def _field(user: str, name: str) -> str:
    m = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?:\n\n|\Z)", user, re.S)
    return m.group(1).strip() if m else ""


def task_answer(system: str, user: str) -> str:
    """Apply the taught rule that appears last in the prompt to the input word.

    A task-scoped rule appears only in its task's prompt, a global one in every
    prompt, so in a task-agnostic stream a newer global rule overrides an older one.
    """
    word = _field("[[ ## input ## ]]" + user.rsplit("[[ ## input ## ]]", 1)[-1], "input")
    taught = [(system.rfind(rule), fn) for rule, fn in RULES.values() if rule in system]
    out = max(taught, key=lambda t: t[0])[1](word) if taught else word
    # Extra fields serve ChainOfThought (reasoning) and ReAct (next_*); ChatAdapter ignores the rest.
    return chat_fields(reasoning="the rule says so", notes="none", next_thought="done", next_tool_name="finish",
                       next_tool_args="{}", output=out)


def task_lm(**kw):
    return scripted_lm(task_answer, name="scripted/task", **kw)


def reflection_lm(extra: str = "", **kw):
    """Reflects 'ADD: <the rule of the task named in the prompt>' (+ an extra line)."""

    def respond(system: str, user: str) -> str:
        m = re.search(r'on the task "([^"]+)"', user)
        name = m.group(1) if m else ""
        lines = [f"ADD: {RULES[name][0]}"] if name in RULES else []
        if extra:
            lines.append(extra)
        return "\n".join(lines)

    return scripted_lm(respond, name="scripted/reflect", **kw)


def slow_task_lm(**kw):
    """The toy task LM, 20 ms a call: slow enough for a test to kill a worker mid-run."""
    import time

    def respond(system: str, user: str) -> str:
        time.sleep(0.02)
        return task_answer(system, user)

    return scripted_lm(respond, name="scripted/task", **kw)


def write_toy_stream(folder, scenario: str = "task-aware", names=("suffix", "reverse", "double")):
    """The toy stream as a stream YAML with JSONL splits (for jobs in other processes); returns its path."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["name: toy", f"scenario: {scenario}", "inputs: [input]", "output: output", "metric: exact_match",
             "tasks:"]
    for k, name in enumerate(names):
        fn = RULES[name][1]
        rows = [{"input": f"{w}{k}", "output": fn(f"{w}{k}")} for w in WORDS]
        for split, part in (("train", rows[:12]), ("val", rows[12:22]), ("test", rows[22:30])):
            (folder / f"{name}.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
        lines += [f"  - name: {name}", f"    train: {name}.train.jsonl", f"    val: {name}.val.jsonl",
                  f"    test: {name}.test.jsonl"]
    path = folder / "stream.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path
