"""Task-agnostic learning: one memory for every input, retrieved per input, kept clean by default."""

from __future__ import annotations

from ctxopt.budget import get_budget
from ctxopt.context import Item, LearnedContext, PredictorContext
from ctxopt.edits import AddItem
from ctxopt.optimizer import ContinualOptimizer
from ctxopt.program import program_for
from ctxopt.retrieval import RetrievalSelector
from ctxopt.selector import ScopeSelector
from ctxopt.stages import StepSetup
from ctxopt.store import Store
from ctxopt.tasks import make_example
from tests.toy import reflection_lm, task_lm, toy_stream

SMALL = dict(n_trials=4, train_minibatch=6, val_minibatch=5, replay_per_task=3, gate_replay_per_task=5)


def _fit(tmp_path, stream, **kw):
    opt = ContinualOptimizer(task_lm(), reflection_lm(), budget=get_budget("light", **SMALL), seed=0, num_threads=2,
                             consolidator="lexical", **kw)
    return opt, opt.fit(program_for(stream), stream, run_dir=tmp_path / "run")


def test_a_task_agnostic_run_retrieves_keys_its_items_keeps_its_instruction_and_consolidates(tmp_path):
    stream = toy_stream("task-agnostic", names=("suffix", "reverse"))
    opt, result = _fit(tmp_path, stream)
    assert isinstance(opt.selector_for("task-agnostic"), RetrievalSelector)
    assert isinstance(opt.selector_for("task-aware"), ScopeSelector)
    c0 = LearnedContext.from_program(program_for(stream))
    final = Store.open(tmp_path / "run" / "store").current()
    pc = final.predictor("predict")
    assert pc.instruction == c0.predictor("predict").instruction  # no task took over the core instruction
    assert pc.items and all(it.keys for it in pc.items)  # every learned item is keyed by the inputs behind it
    train_inputs = {ex.input for t in stream.tasks for ex in t.train}
    assert all(set(it.keys) <= train_inputs for it in pc.items)  # keys come from train, never val or test
    # consolidation runs by default in a task-agnostic stream, and every run reports its redundancy
    assert all("consolidations_proposed" in s.extra for s in result.steps)
    assert result.meta["redundancy"]["near_duplicates"] == 0
    assert result.steps[0].accepted and result.R[0][0] == 1.0


def test_the_gate_replays_only_tasks_whose_retrieved_prompts_change():
    stream = toy_stream("task-agnostic", names=("suffix", "reverse"))
    suffix, reverse = stream.tasks
    selector = RetrievalSelector("lexical", k_items=1, min_score=0.3)
    base = LearnedContext({"predict": PredictorContext("Answer.")}).apply_edits(
        [AddItem("predict", "Append zz.", keys=tuple(ex.input for ex in suffix.train))])
    setup = StepSetup(step=2, task=reverse, base=base, earlier=(suffix,), scenario="task-agnostic", scope="global",
                      predictor="predict", n_pred=1, selector=selector)
    unrelated = base.apply_edits([AddItem("predict", "Never shown.", keys=("zzzz qqqq xxxx",))])
    related = base.apply_edits([AddItem("predict", "Shown for suffix inputs.",
                                        keys=tuple(ex.input for ex in suffix.val))])
    val = list(suffix.val)
    assert not setup.differs(base, unrelated, suffix, val)  # retrieved for no suffix input: not replayed
    assert setup.differs(base, related, suffix, val)
    scope = StepSetup(step=2, task=reverse, base=base, earlier=(suffix,), scenario="task-agnostic", scope="global",
                      predictor="predict", n_pred=1)
    assert scope.differs(base, unrelated, suffix, val)  # without retrieval every global change shows everywhere


def test_demos_accumulate_as_archival_memory_and_are_retrieved_per_input(tmp_path):
    stream = toy_stream("task-agnostic", names=("suffix", "reverse"))
    opt, _ = _fit(tmp_path, stream, selector=RetrievalSelector("lexical", k_items=3, k_demos=2))
    log = Store.open(tmp_path / "run" / "store").log()
    for version in log:  # no accepted step removed a demo an earlier step added
        for e in version.metadata.get("edits") or []:
            assert all(x["op"] != "remove_demo" for x in e["edits"])
    ctx = Store.open(tmp_path / "run" / "store").current()
    ex = make_example({"input": "apple0", "output": "apple0zz"}, ["input"])
    shown = opt.selector.select(ctx, None, dict(ex.inputs().items()))
    k_demos = opt.selector.settings(ctx.predictor("predict"))[1]  # the selector's 2, or what the search chose
    assert len(shown.predictor("predict").demos) <= k_demos


def test_retrieval_hit_rates_say_whose_items_each_task_retrieves_and_reach_the_report(tmp_path):
    from ctxopt.report import write_report
    from ctxopt.retrieval import hit_rates

    stream = toy_stream("task-agnostic", names=("suffix", "reverse"))
    suffix, reverse = stream.tasks
    ctx = LearnedContext({"predict": PredictorContext("Answer.")}).apply_edits(
        [AddItem("predict", "Append zz.", keys=tuple(ex.input for ex in suffix.val))], step=1, task="suffix")
    selector = RetrievalSelector("lexical", k_items=1)
    assert hit_rates(selector, ctx, [suffix, reverse]) == {"suffix": 1.0, "reverse": 0.0}
    _, result = _fit(tmp_path, stream, selector=selector)
    assert set(result.steps[-1].extra["retrieval_hits"]) == {"suffix", "reverse"}
    assert "Retrieval hit rate" in write_report(tmp_path / "run").read_text()


def test_reflection_in_a_shared_memory_writes_rules_with_their_applies_when_key(tmp_path):
    import re

    from tests.fakes import scripted_lm
    from tests.toy import RULES

    prompts: list[str] = []

    def reflect(system: str, user: str) -> str:
        prompts.append(user)
        name = re.search(r'on the task "([^"]+)"', user).group(1)
        return f"ADD: {RULES[name][0]} WHEN: a single word to transform"

    stream = toy_stream("task-agnostic", names=("suffix",))
    opt = ContinualOptimizer(task_lm(), scripted_lm(reflect, name="scripted/when"), budget=get_budget("light", **SMALL),
                             seed=0, num_threads=2, consolidator="lexical")
    opt.fit(program_for(stream), stream, run_dir=tmp_path / "run")
    assert prompts and all(" WHEN: <the kind of input" in p for p in prompts)
    [item] = [it for it in Store.open(tmp_path / "run" / "store").current().predictor("predict").items]
    assert item.text == RULES["suffix"][0]  # the condition is a key, not part of the rule
    assert item.keys[0] == "a single word to transform" and len(item.keys) > 1  # then the inputs behind it


def test_learned_retrieval_settings_change_what_the_selector_shows():
    from ctxopt.context import Demo
    from ctxopt.edits import AddDemo, SetRetrieval

    demos = [AddDemo("predict", Demo(inputs={"input": f"word{i}"}, outputs={"output": f"w{i}"})) for i in range(6)]
    base = LearnedContext({"predict": PredictorContext("Answer.")}).apply_edits(demos)
    selector = RetrievalSelector("lexical", k_demos=2, margin=1.0)
    assert len(selector.select(base, None, {"input": "word3"}).predictor("predict").demos) == 2
    more = base.apply_edits([SetRetrieval("predict", "k_demos", 4)])
    assert len(selector.select(more, None, {"input": "word3"}).predictor("predict").demos) == 4
    assert selector.settings(more.predictor("predict")) == (3, 4, 0.0)


def test_the_search_may_place_a_rule_in_core_memory_only_once_replay_can_check_it(tmp_path):
    from ctxopt.retrieval import CORE_AFTER

    stream = toy_stream("task-agnostic", names=("suffix", "reverse", "double"))
    events = []
    _fit(tmp_path, stream, callbacks=[events.append])
    by_step = {}
    for e in events:
        if e.kind == "propose":
            by_step.setdefault(e.step, []).extend(e.data["proposals"])
    # (Which retrieval settings are offered, and when, is setting_proposals' doctest.)
    settings = [p for ps in by_step.values() for p in ps if p["group"] and p["group"].startswith("retrieval:")]
    assert all(e["op"] == "set_retrieval" for p in settings for e in p["edits"])
    # A similarity threshold is offered from the first step that replays an earlier task, not before.
    thresholds = {step for step, ps in by_step.items() for p in ps if p["group"] == "retrieval:min_score"}
    assert thresholds and min(thresholds) > 1
    # A rule pinned for every input is offered only once CORE_AFTER earlier tasks can be replayed against it.
    for step, ps in by_step.items():
        cores = [p for p in ps if p["name"].endswith("+core")]
        if step <= CORE_AFTER:  # before that a memory group holds only a rule and its narrowed twin
            assert not cores and not any(e.get("pinned") for p in ps for e in p["edits"])
    late = [p for step, ps in by_step.items() if step > CORE_AFTER for p in ps]
    cores = [p for p in late if p["name"].endswith("+core")]
    assert cores and all(e.get("pinned") and not e.get("keys") for p in cores for e in p["edits"])


def test_a_rule_that_opens_with_its_condition_is_never_offered_for_core_memory():
    from ctxopt.edits import AddItem
    from ctxopt.proposer import Proposal
    from ctxopt.retrieval import core_or_archival

    general = Proposal("g", (AddItem("predict", "Answer with the number only.", keys=("a number",)),), "reflection")
    when = Proposal("w", (AddItem("predict", "When the input is a list of numbers, sort them in ascending order.",
                                  keys=("a list of numbers",)),), "reflection")
    both = Proposal("b", (*general.edits, *when.edits), "reflection")
    out = core_or_archival([general, when, both])
    assert [(p.name, p.group) for p in out] == [("g", "memory:g"), ("g+core", "memory:g"), ("w", None), ("b", None)]
    assert not any(e.pinned for p in out[2:] for e in p.edits)  # archival, retrieved by its keys


def test_a_learned_threshold_keeps_memory_from_inputs_unlike_its_keys():
    from ctxopt.edits import SetRetrieval

    rule = Item(id="r-plural", text="Add s.", keys=("plural of cat", "plural of dog"))
    base = LearnedContext({"predict": PredictorContext("Answer.", items=(rule,))})
    selector = RetrievalSelector("lexical", k_items=3, reach=1.0)
    unlike = {"input": "antonym of hot"}
    assert [it.id for it in selector.select(base, None, unlike).predictor("predict").items] == ["r-plural"]
    strict = base.apply_edits([SetRetrieval("predict", "min_score", 0.4)])
    assert selector.select(strict, None, unlike).predictor("predict").items == ()
    assert [it.id for it in selector.select(strict, None, {"input": "plural of cat"}).predictor("predict").items] == ["r-plural"]


def test_an_entry_reaches_only_inputs_about_as_like_its_keys_as_they_are_like_each_other():
    from ctxopt.context import Demo
    from ctxopt.edits import SetRetrieval

    rule = Item(id="r-plural", text="Add s.", keys=("plural of cat", "plural of dog"))
    demos = tuple(Demo(inputs={"input": f"plural of {w}"}, outputs={"output": f"{w}s"}, source_task="plural")
                  for w in ("cat", "dog"))
    lone = Demo(inputs={"input": "sum of 2 and 3"}, outputs={"output": "5"}, source_task="sum")
    base = LearnedContext({"predict": PredictorContext("Answer.", items=(rule,), demos=(*demos, lone))})
    selector = RetrievalSelector("lexical", k_items=3, k_demos=4, margin=1.0)  # reach 0.1 by default
    sim = selector.sim.matrix(["plural of cat", "plural of dog"])[0][1]
    assert sim - 0.1 > max(selector.sim.scores("antonym of hot", ["plural of cat", "plural of dog"]))

    def shown(ctx, text):
        pc = selector.select(ctx, None, {"input": text}).predictor("predict")
        return [it.id for it in pc.items], sorted(d.outputs["output"] for d in pc.demos)

    # the plural rule and demos (a set of two, judged together) reach a plural input, not an antonym one;
    # the lone sum demo has nothing to measure its keys' cohesion by, so it has no floor
    assert shown(base, "plural of cow") == (["r-plural"], ["5", "cats", "dogs"])
    assert shown(base, "antonym of hot") == ([], ["5"])
    wide = base.apply_edits([SetRetrieval("predict", "reach", 1.0)])  # C's own setting wins: no floor
    assert shown(wide, "antonym of hot") == (["r-plural"], ["5", "cats", "dogs"])


def test_a_learned_token_budget_caps_what_is_retrieved():
    from ctxopt.context import Demo
    from ctxopt.edits import AddDemo, SetRetrieval
    from ctxopt.tokens import count_tokens

    demos = [AddDemo("predict", Demo(inputs={"input": f"word{i} " * 10}, outputs={"output": f"w{i}"})) for i in range(4)]
    base = LearnedContext({"predict": PredictorContext("Answer.")}).apply_edits(demos)
    selector = RetrievalSelector("lexical", k_demos=4, margin=1.0)
    assert len(selector.select(base, None, {"input": "word1"}).predictor("predict").demos) == 4
    one = count_tokens("Answer.") + 40  # room for about one demo
    capped = base.apply_edits([SetRetrieval("predict", "max_tokens", one)])
    assert capped.predictor("predict").to_dict()["retrieval"] == {"max_tokens": one}
    assert 1 <= len(selector.select(capped, None, {"input": "word1"}).predictor("predict").demos) < 4


def test_a_learned_margin_shows_each_input_only_the_memory_it_matches_best():
    from ctxopt.context import Demo
    from ctxopt.edits import AddDemo, SetRetrieval

    # One task's inputs are single words, the other's are sentences; every similarity is weak.
    word = Item(id="r-letter", text="Answer with the first letter.", keys=("album", "budget"))
    base = LearnedContext({"predict": PredictorContext("Answer.", items=(word,))}).apply_edits(
        [AddDemo("predict", Demo(inputs={"input": "the film was a delight from start to end"},
                                 outputs={"output": "positive"}))])
    selector = RetrievalSelector("lexical", margin=1.0, reach=1.0)  # the margin alone (no floor)
    sentence = {"input": "the film was dull from start to end"}

    def shown(ctx, inputs):
        pc = selector.select(ctx, None, inputs).predictor("predict")
        return [it.id for it in pc.items], len(pc.demos)

    assert shown(base, sentence) == (["r-letter"], 1)  # no margin: the word task's rule reaches sentences
    narrow = base.apply_edits([SetRetrieval("predict", "margin", 0.1)])
    assert shown(narrow, sentence) == ([], 1)
    assert shown(narrow, {"input": "album"}) == (["r-letter"], 0)
    assert "margin=0.1" in repr(RetrievalSelector("lexical", margin=0.1))


def test_an_entry_is_not_retrieved_for_an_input_nearer_one_of_its_counter_keys():
    from ctxopt.context import Demo

    rule = Item(id="r-plural", text="Add s.", keys=("plural of cat", "plural of dog"), unless=("antonym of hot",))
    demo = Demo(inputs={"input": "plural of cow"}, outputs={"output": "cows"}, unless=("antonym of cold",))
    ctx = LearnedContext({"predict": PredictorContext("Answer.", items=(rule,), demos=(demo,))})
    selector = RetrievalSelector("lexical", k_items=3, k_demos=3, margin=1.0, reach=1.0)  # counter-keys alone
    own = selector.select(ctx, None, {"input": "plural of cat"}).predictor("predict")
    assert [it.id for it in own.items] == ["r-plural"] and [d.id for d in own.demos] == [demo.id]
    other = selector.select(ctx, None, {"input": "antonym of hot"}).predictor("predict")
    assert not other.items and not other.demos  # nearer a counter-key than any key: left out
    assert selector.explain(ctx, None, {"input": "antonym of hot"})["predict"].kept_off == ("r-plural", demo.id)
    wide = LearnedContext({"predict": PredictorContext("Answer.", items=(Item(id="r-plural", text="Add s.",
                                                                               keys=rule.keys),))})
    assert selector.select(wide, None, {"input": "antonym of hot"}).predictor("predict").items  # keys alone reach it
    assert Item.from_dict(rule.to_dict()) == rule and Demo.from_dict(demo.to_dict()) == demo
    assert "unless" not in wide.predictor("predict").items[0].to_dict()  # old contexts keep their dicts and hashes


def test_a_merged_item_keeps_counter_keys_only_when_every_merged_item_had_some():
    from ctxopt.edits import MergeItems

    a = Item(id="r-a", text="A.", keys=("cat",), unless=("hot", "dog"))
    b = Item(id="r-b", text="B.", keys=("dog",), unless=("cold",))
    c = Item(id="r-c", text="C.", keys=("cow",))
    ctx = LearnedContext({"p": PredictorContext("Answer.", items=(a, b, c))})
    [both] = ctx.apply_edits([MergeItems("p", ("r-a", "r-b"), "A and B.")]).predictor("p").items[:1]
    assert both.keys == ("cat", "dog") and both.unless == ("hot", "cold")  # "dog" is now a key
    wide = ctx.apply_edits([MergeItems("p", ("r-a", "r-c"), "A and C.")]).predictor("p").items[0]
    assert wide.text == "A and C." and wide.unless == ()


def test_from_the_second_task_new_entries_get_a_narrowed_twin_against_the_search_replay_pool(tmp_path):
    stream = toy_stream("task-agnostic", names=("suffix", "reverse"))
    suffix = stream.tasks[0]
    events = []
    opt, _ = _fit(tmp_path, stream, callbacks=[events.append])
    by_step = {}
    for e in events:
        if e.kind == "propose":
            by_step.setdefault(e.step, []).extend(e.data["proposals"])
    assert not any(p["name"].endswith("+narrow") for p in by_step[1])  # nothing earlier to keep apart from
    twins = [p for p in by_step[2] if p["name"].endswith("+narrow")]
    assert twins
    names = {p["name"] for p in by_step[2]}
    pool = {ex.input for ex in opt._search_replay(suffix)}
    gate = {ex.input for ex in opt._gate_sets(stream.tasks[1], [suffix])[1][1]}
    for twin in twins:
        assert twin["name"].removesuffix("+narrow") in names  # the wide one stays a choice of the same group
        counters = [k for e in twin["edits"] for k in (e.get("unless") or e.get("demo", {}).get("unless") or [])]
        assert counters and set(counters) <= pool and not set(counters) & gate  # the gate judges on other inputs


def test_a_later_task_may_shield_its_inputs_from_memory_an_earlier_task_left(tmp_path):
    from ctxopt.context import Demo
    from ctxopt.edits import Narrow, edit_from_dict
    from ctxopt.retrieval import shield

    letter = Item(id="r-letter", text="Answer with one letter.", keys=("cat", "dog"), source_task="first_letter")
    again = Item(id="r-again", text="Plural: add s.", keys=("cat",), source_task="plural")
    demo = Demo(inputs={"input": "dog bed"}, outputs={"output": "d"})
    ctx = LearnedContext({"predict": PredictorContext("Answer.", items=(letter, again), demos=(demo,))})
    selector = RetrievalSelector("lexical", k_items=3, k_demos=2, margin=1.0)
    [p] = shield(ctx, "predict", [{"input": "cat toy"}, {"input": "dog toy"}], selector, "plural")
    assert {e.target for e in p.edits} == {"r-letter", demo.id}  # not plural's own rule (its second visit)
    assert all(isinstance(e, Narrow) and edit_from_dict(e.to_dict()) == e for e in p.edits)
    [revisit] = shield(ctx, "predict", [{"input": "cat toy"}, {"input": "dog toy"}], selector, "plural", demos=False)
    assert {e.target for e in revisit.edits} == {"r-letter"}  # a demo without provenance: kept on a revisit
    # a demo that records its task is judged by it, on a revisit too: another family's is shielded, its own is not
    theirs = Demo(inputs={"input": "dog bed"}, outputs={"output": "d"}, source_task="first_letter")
    mine = Demo(inputs={"input": "cat toys"}, outputs={"output": "cat toyss"}, source_task="plural")
    known = LearnedContext({"predict": PredictorContext("Answer.", items=(letter, again), demos=(theirs, mine))})
    for on_revisit in (False, True):
        [q] = shield(known, "predict", [{"input": "cat toy"}, {"input": "dog toy"}], selector, "plural",
                     demos=not on_revisit)
        assert {e.target for e in q.edits} == {"r-letter", theirs.id}
    after = ctx.apply_edits(p.edits)
    shown = selector.select(after, None, {"input": "dog toy"}).predictor("predict")
    assert not shown.demos and [it.id for it in shown.items] == ["r-again"]
    before = selector.select(ctx, None, {"input": "dog toy"}).predictor("predict")
    assert before.demos and len(before.items) == 2
    # in a run, the step after the first offers the switch when the first task's memory reaches its inputs
    stream = toy_stream("task-agnostic", names=("suffix", "reverse"))
    events = []
    _fit(tmp_path, stream, callbacks=[events.append])
    shields = [p for e in events if e.kind == "propose" for p in e.data["proposals"] if p["name"] == "shield"]
    assert shields and all(e["op"] == "narrow" and e["unless"] for p in shields for e in p["edits"])
    assert all(e.step > 1 for e in events if e.kind == "propose" and any(
        p["name"] == "shield" for p in e.data["proposals"]))


def test_a_new_rule_that_restates_what_the_task_inputs_already_see_is_cut():
    from ctxopt.proposer import Proposal
    from ctxopt.retrieval import unsaid

    seen = Item(id="r-seen", text="Answer with one letter only.", keys=("cat toy",), source_task="first_letter")
    far = Item(id="r-far", text="Add the two numbers.", keys=("7 plus 8",), source_task="sum")
    ctx = LearnedContext({"predict": PredictorContext("Answer.", items=(seen, far))})
    selector = RetrievalSelector("lexical", k_items=1, margin=1.0, min_score=0.3)
    assert [h.id for h in selector.explain(ctx, None, {"input": "cat toy"})["predict"].items] == ["r-seen"]
    proposals = [Proposal("a", (AddItem("predict", "Answer with one letter only!"),), "reflection"),
                 Proposal("b", (AddItem("predict", "Add the two numbers!"), AddItem("predict", "Say plurals.")),
                          "reflection"),
                 Proposal("c", (AddItem("predict", "Say plurals!"),), "reflection")]
    kept, cut = unsaid(proposals, ctx, "predict", [{"input": "cat toy"}], selector)
    # what the inputs retrieve (r-seen) is not said again; r-far is not theirs, so its wording may come back
    assert [[e.text for e in p.edits] for p in kept] == [["Add the two numbers!", "Say plurals."]]
    assert cut == [("a", "restates r-seen"), ("c", "restates b")]
    # a pinned rule is shown to every input
    pinned = LearnedContext({"predict": PredictorContext("Answer.", items=(
        Item(id="r-core", text="Add the two numbers.", pinned=True),))})
    assert unsaid(proposals[1:2], pinned, "predict", [{"input": "cat toy"}], selector)[1] == [("b", "restates r-core")]
    # the reflector's framing does not make a restatement new
    framed = [Proposal("d", (AddItem("predict", "The model should always add the two numbers."),), "reflection")]
    assert unsaid(framed, pinned, "predict", [{"input": "cat toy"}], selector)[1] == [("d", "restates r-core")]
