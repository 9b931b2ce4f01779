"""A custom proposer, gate and selector plugged into ContinualOptimizer (docs/architecture.md).

Run it on the embedded local models: ``python docs/examples/custom_seams.py``.
"""

from ctxopt import ContinualOptimizer
from ctxopt.edits import AddItem
from ctxopt.gate import Decision
from ctxopt.proposer import Proposal
from ctxopt.selector import KeepItems


class ShortAnswers:  # Proposer: one rule, one reflection call booked under its name
    def propose(self, pc):
        if not pc.charge(1):
            return []
        return [Proposal("short", (AddItem(pc.predictor, "Answer with the output only.", scope=pc.scope),), "mine")]


class NoLoss:  # Gate: accept any gain on the new task unless some earlier task loses anything
    def decide(self, current, replay):
        worst = min((r.delta for r in replay), default=0.0)
        ok = current.delta > 0 and worst >= 0
        return Decision(ok, f"gain {current.delta:+.2f}, worst replay {worst:+.2f}", current.delta, {})


def build(task_lm="local", reflection_lm="local:qwen2.5-coder-1.5b", **options):
    brief = KeepItems(lambda item, inputs: len(str(inputs)) < 400 or item.kind == "rule")  # Selector
    return ContinualOptimizer(task_lm, reflection_lm, gate=NoLoss(), extra_proposers=[ShortAnswers()],
                              selector=brief, **options)


if __name__ == "__main__":
    from ctxopt.program import program_for
    from ctxopt.streams import load_stream

    stream = load_stream("ii:first_word_letter,antonyms", sizes=(20, 10, 10))
    result = build(budget="light").fit(program_for(stream), stream, run_dir="runs/custom-seams")
    print(result.R, result.steps[0].extra["charged_by_source"])
