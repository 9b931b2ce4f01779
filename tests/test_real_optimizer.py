"""Integration points of the optimizer on the real embedded models (marked real_lm)."""

from __future__ import annotations

import pytest

from ctxopt.context import LearnedContext
from ctxopt.evaluator import Evaluator
from ctxopt.program import program_for
from ctxopt.proposer import Observation, ProposalContext, ReflectionProposer
from ctxopt.streams import load_stream
from ctxopt.tasks import example_id
from tests.conftest import _real_lm_or_skip


@pytest.mark.real_lm
def test_real_reflection_on_real_failures_gives_parseable_edits(real_lm):
    reflector = _real_lm_or_skip("local:qwen2.5-coder-1.5b")
    stream = load_stream("ii:first_word_letter", sizes=(6, 2, 2))
    task, program = stream[0], program_for(stream)
    ctx = LearnedContext.from_program(program)
    observed = Evaluator(real_lm, num_threads=1).evaluate(program, ctx, task, task.train)
    by_id = {example_id(e): e for e in task.train}
    observations = tuple(Observation(by_id[r.example_id], r.score, r.feedback, dict(r.prediction), list(r.trace))
                         for r in observed.results)
    assert any(o.score < 1 for o in observations), "the 0.5B model should fail some first_word_letter examples"
    pctx = ProposalContext(ctx, task.name, task.name, "predict", ("task", "input"), "output", observations,
                           tuple(task.train))
    proposals = ReflectionProposer(reflector, samples=1).propose(pctx)
    assert proposals, "the 1.5B reflector produced no parseable edit"
    for p in proposals:
        ctx.apply_edits(p.edits, step=1, task=task.name)  # every parsed edit applies cleanly
        assert all(e.predictor == "predict" for e in p.edits)
