"""The ContextSelector seam: what of C the model sees is chosen per input, and the prompt shows the choice."""

from __future__ import annotations

from ctxopt.budget import get_budget
from ctxopt.context import Item, LearnedContext, PredictorContext
from ctxopt.evaluator import Evaluator
from ctxopt.optimizer import ContinualOptimizer
from ctxopt.program import program_for
from ctxopt.proposer import ReflectionProposer
from ctxopt.selector import ContextSelector, KeepItems, ScopeSelector
from tests.fakes import scripted_lm
from tests.toy import RULES, reflection_lm, task_answer, task_lm, toy_stream

SUFFIX, REVERSE = RULES["suffix"][0], RULES["reverse"][0]


def test_a_custom_selectors_choice_is_what_the_prompt_shows():
    stream = toy_stream("task-agnostic", names=("suffix",))
    task = stream.tasks[0]
    prompts: dict[str, str] = {}

    def respond(system: str, user: str) -> str:
        word = user.rsplit("[[ ## input ## ]]", 1)[-1].split("\n")[1].strip()
        prompts[word] = system
        return task_answer(system, user)

    base = LearnedContext.from_program(program_for(stream))
    pc = base.predictor("predict")
    ctx = base.with_predictor("predict", PredictorContext(pc.instruction, items=(
        Item(id="r-suffix01", text=SUFFIX), Item(id="r-revers01", text=REVERSE))))
    # Words before "m" see only the suffix rule, the others only the reverse rule.
    selector = KeepItems(lambda item, inputs: (item.text == SUFFIX) == (inputs["input"] < "m"))
    assert isinstance(selector, ContextSelector)
    res = Evaluator(scripted_lm(respond, name="scripted/sel"), num_threads=1, selector=selector).evaluate(
        program_for(stream), ctx, task, task.val, scenario="task-agnostic")
    for ex, r in zip(task.val, res.results):
        word = ex.input
        shown, hidden = (SUFFIX, REVERSE) if word < "m" else (REVERSE, SUFFIX)
        assert shown in prompts[word] and hidden not in prompts[word]
        assert (r.score == 1.0) == (word < "m")  # the suffix task is solved exactly where its rule was selected


def test_the_default_selector_renders_everything_in_scope():
    ctx = LearnedContext({"p": PredictorContext("Answer.", items=(Item(id="r-1", text="Be brief."),))})
    assert ScopeSelector().select(ctx, "t", {"input": "x"}) is ctx


def test_the_optimizer_learns_through_its_selector(tmp_path):
    stream = toy_stream(names=("suffix",))
    budget = get_budget("light", n_trials=4, train_minibatch=6, val_minibatch=5, replay_per_task=3,
                        gate_replay_per_task=5)

    def fit(selector, name):
        opt = ContinualOptimizer(task_lm(), reflection_lm(), budget=budget, seed=0, num_threads=2,
                                 proposers=[ReflectionProposer(reflection_lm(), samples=1)], selector=selector)
        return opt.fit(program_for(stream), stream, run_dir=tmp_path / name)

    assert fit(None, "default").steps[0].accepted is True
    # A selector that never shows an item makes every learned rule invisible: nothing can pass the gate.
    blind = fit(KeepItems(lambda item, inputs: False), "blind")
    assert blind.steps[0].accepted is False and blind.R[0][0] == 0.0


def test_a_custom_proposers_calls_appear_in_the_budget_ledger(tmp_path):
    from ctxopt.proposer import Proposal

    class Costly:
        """A proposer that pays for two reflection calls, then proposes nothing."""

        def propose(self, pc):
            assert pc.charge(2)
            return list[Proposal]()

    stream = toy_stream(names=("suffix",))
    opt = ContinualOptimizer(task_lm(), reflection_lm(), budget=get_budget("light", n_trials=2), seed=0,
                             num_threads=2, extra_proposers=[Costly()])
    result = opt.fit(program_for(stream), stream, run_dir=tmp_path / "run")
    by_source = result.steps[0].extra["charged_by_source"]
    assert by_source["reflection:proposer:Costly"] == 2
    assert by_source["task:observe"] > 0 and result.steps[0].extra["charged_reflection_calls"] >= 2


def test_a_custom_search_decides_what_reaches_the_gate(tmp_path):
    from ctxopt.search import Search, SearchResult

    class KeepBase:
        """Scores only the unedited context, so nothing can be better."""

        def run(self, study_name, base, proposals, objective, *, step, task, on_trial=None, on_resumed=None):
            value = objective(base)
            return SearchResult(base, value, [])

    search: Search = KeepBase()  # a Protocol: structural, no registration
    stream = toy_stream(names=("suffix",))
    opt = ContinualOptimizer(task_lm(), reflection_lm(), budget=get_budget("light", n_trials=2), seed=0,
                             num_threads=2, search=search)
    result = opt.fit(program_for(stream), stream, run_dir=tmp_path / "run")
    assert result.steps[0].accepted is False
    assert result.steps[0].extra["reason"] == "search found no combination better than the current context"


def test_a_custom_consolidation_proposer_runs_in_the_sleep_pass_and_its_candidates_are_gated(tmp_path):
    from ctxopt.consolidate import Consolidation, ConsolidationProposer
    from ctxopt.edits import AddItem

    class Signs:
        """Proposes one harmless note per pass (no LM calls)."""

        lm_calls_per_pass = 0

        def __init__(self):
            self.passes = 0

        def propose(self, context, *, max_tokens=None, protect=(), step=0, memory=None):
            self.passes += 1
            return [Consolidation("compress", "predict", (AddItem("predict", f"Note {step}.", scope="elsewhere"),),
                                  "a note in an unused scope")]

        def compress(self, context, max_tokens, *, protect=(), memory=None):
            return []

    custom: ConsolidationProposer = Signs()
    stream = toy_stream(names=("suffix", "reverse"))
    opt = ContinualOptimizer(task_lm(), reflection_lm(), budget=get_budget("light", n_trials=2), seed=0,
                             num_threads=2, consolidate=True, consolidator=custom)
    result = opt.fit(program_for(stream), stream, run_dir=tmp_path / "run")
    assert custom.passes == 2 and all(s.extra["consolidations_accepted"] == 1 for s in result.steps)
    assert [it.text for it in opt.context.predictor("predict").items if it.scope == "elsewhere"] == ["Note 1.", "Note 2."]


def test_a_given_evaluator_and_store_are_the_ones_used(tmp_path):
    from ctxopt.store import Store

    stream = toy_stream(names=("suffix",))
    evaluator = Evaluator(task_lm(), num_threads=2)  # in memory: nothing cached in the run directory
    store = Store.init(tmp_path / "elsewhere")
    opt = ContinualOptimizer(task_lm(), reflection_lm(), budget=get_budget("light", n_trials=2), seed=0,
                             num_threads=2, evaluator=evaluator, store=store)
    result = opt.fit(program_for(stream), stream, run_dir=tmp_path / "run")
    assert evaluator.lm.usage.snapshot().calls > 0 and not (tmp_path / "run" / "eval_cache").exists()
    assert opt.task_lm.usage.snapshot().calls == 0  # the optimizer's own task LM was never asked
    assert store.current().hash == result.meta["final_context_hash"] and not (tmp_path / "run" / "store").exists()
