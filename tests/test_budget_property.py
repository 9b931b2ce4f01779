"""The hard context budget, checked with hypothesis over random edit sequences.

Property: with ``max_context_tokens`` set, no version the optimizer commits
has a predictor whose rendered context exceeds it, whatever the proposers
propose; and the consolidation pass never accepts a candidate over budget.
"""

from __future__ import annotations

import random
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctxopt.budget import get_budget
from ctxopt.consolidate import Consolidator, over_budget, rendered_tokens, run_pass
from ctxopt.context import GLOBAL, Demo, LearnedContext, PredictorContext
from ctxopt.edits import AddDemo, AddItem, DeleteItem, UpdateItem
from ctxopt.errors import EditError
from ctxopt.gate import Decision
from ctxopt.optimizer import ContinualOptimizer
from ctxopt.program import program_for
from ctxopt.proposer import Proposal, ProposalContext
from ctxopt.store import Store
from tests.toy import RULES, task_lm, toy_stream

WORDS = ("alpha beta gamma delta omega sigma kappa theta lambda zeta answer word letter output input rule "
         "always never lowercase uppercase short long first last number digits reverse append").split()


def random_edits(rng: random.Random, ctx: LearnedContext, scope: str, n: int) -> list:
    """``n`` random edits that apply to ``ctx`` in order: adds, updates, deletes, demos."""
    edits: list = []
    current = ctx
    for _ in range(n):
        items = current.items("predict")
        roll = rng.random()
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 30))).capitalize() + "."
        if roll < 0.15 and items:
            edit = DeleteItem("predict", rng.choice(items).id)
        elif roll < 0.3 and items:
            edit = UpdateItem("predict", rng.choice(items).id, text)
        elif roll < 0.5:
            edit = AddDemo("predict", Demo(inputs={"input": text}, outputs={"output": rng.choice(WORDS)},
                                           scope=scope))
        else:
            edit = AddItem("predict", text, scope=rng.choice([scope, GLOBAL]),
                           kind=rng.choice(["rule", "note", "strategy"]))
        try:
            current = current.apply_edits([edit])
        except EditError:
            continue
        edits.append(edit)
    return edits


# --------------------------------------------------------------------------- the pass alone


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 25), budget=st.integers(20, 300),
       verdicts=st.lists(st.booleans(), min_size=1, max_size=12))
def test_pass_never_accepts_over_budget_and_fits_means_within(seed, n, budget, verdicts):
    rng = random.Random(seed)
    base = LearnedContext({"predict": PredictorContext("Given the input, produce the output.")})
    ctx = base.apply_edits(random_edits(rng, base, "t1", n), step=1, task="t1")
    answers = iter(verdicts * 10)

    def check(before, after):
        return Decision(next(answers, True), "scripted verdict", 0.0)

    result = run_pass(ctx, Consolidator(similarity="lexical"), check, max_tokens=budget)
    # Replay the accepted candidates: each intermediate context is within budget, or (if the pass
    # started over budget) no larger than the one before it.
    current = ctx
    for t in result.tried:
        if t.outcome != "accepted":
            continue
        after = t.consolidation.apply(current, step=0)
        if over_budget(ctx, budget):
            shrinks = rendered_tokens(after, "predict") < rendered_tokens(current, "predict")
            assert shrinks or not over_budget(after, budget)
        else:
            assert not over_budget(after, budget)
        current = after
    assert current == result.context
    assert result.fits == (not over_budget(result.context, budget))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 25), budget=st.integers(10, 200))
def test_compression_candidates_always_fit_and_keep_protected(seed, n, budget):
    rng = random.Random(seed)
    base = LearnedContext({"predict": PredictorContext("Answer.")})
    ctx = base.apply_edits(random_edits(rng, base, "t1", n), step=1, task="t1")
    pc = ctx.predictor("predict")
    protect = {x.id for x in (*pc.items, *pc.demos) if rng.random() < 0.3}
    for cand in Consolidator(similarity="lexical").compress(ctx, budget, protect=protect):
        after = cand.apply(ctx)
        assert rendered_tokens(after, "predict") <= budget
        apc = after.predictor("predict")
        assert protect <= {x.id for x in (*apc.items, *apc.demos)}


# --------------------------------------------------------------------------- the optimizer


class RandomProposer:
    """The task's rule plus a random edit sequence, as one proposal and as a few smaller ones."""

    def __init__(self, seed: int, size: int) -> None:
        self.seed, self.size = seed, size

    def propose(self, pc: ProposalContext) -> list[Proposal]:
        rng = random.Random(f"{self.seed}:{pc.task}")
        rule = AddItem(pc.predictor, RULES[pc.task][0], scope=pc.scope)
        extra = random_edits(rng, pc.context, pc.scope, self.size)
        out = [Proposal("rule+all", (rule, *extra), "random")]
        out += [Proposal(f"rule+{i}", (rule, e), "random") for i, e in enumerate(extra[:3])]
        return out


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1000), size=st.integers(0, 12), budget=st.integers(30, 260),
       sleep=st.booleans())
def test_optimizer_never_commits_a_version_over_budget(seed, size, budget, sleep):
    stream = toy_stream(names=("suffix", "reverse"))
    limits = get_budget("light", n_trials=3, train_minibatch=4, val_minibatch=4, replay_per_task=2,
                        gate_replay_per_task=4, max_context_tokens=budget)
    with tempfile.TemporaryDirectory() as tmp:
        opt = ContinualOptimizer(task_lm(), None, budget=limits, seed=seed, num_threads=2, measure_test=False,
                                 proposers=[RandomProposer(seed, size)], consolidate=sleep,
                                 consolidator=Consolidator(similarity="lexical"))
        result = opt.fit(program_for(stream), stream, run_dir=tmp)
        store = Store.open(f"{tmp}/store")
        for v in store.log():
            assert not over_budget(store.show(v.rev), budget), v.subject
        for s in result.steps:
            assert s.extra["predictor_tokens"]["predict"] <= budget
            if not s.accepted:
                assert s.extra["reason"]
