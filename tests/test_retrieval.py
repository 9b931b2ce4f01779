"""Per-input retrieval (RetrievalSelector): core memory always, archival memory by similarity; `show --for-input`."""

from __future__ import annotations

import copy

import pytest

from ctxopt.cli import main
from ctxopt.context import Demo, Item, LearnedContext, PredictorContext
from ctxopt.edits import MergeItems
from ctxopt.errors import ConfigError
from ctxopt.evaluator import Evaluator
from ctxopt.lm import TrackedLM
from ctxopt.program import program_for
from ctxopt.prompt import format_messages
from ctxopt.retrieval import RetrievalSelector, input_text
from ctxopt.selector import ContextSelector
from ctxopt.similarity import LexicalSimilarity
from ctxopt.store import Store
from ctxopt.streams import load_stream
from ctxopt.tasks import TASK_FIELD
from tests.fakes import ScriptedEngine, chat_fields, scripted_lm
from tests.toy import RULES, task_answer, toy_stream

SUFFIX, REVERSE = RULES["suffix"][0], RULES["reverse"][0]

MEMORY = LearnedContext({"p": PredictorContext(
    "Solve the request.",
    items=(
        Item(id="r-fmt", text="Answer with one word.", pinned=True),
        Item(id="r-plural", text="Add s or es to form the plural.", keys=("plural of a noun",)),
        Item(id="r-antonym", text="Give the word with the opposite meaning.", keys=("antonym of an adjective",)),
    ),
    demos=(
        Demo(inputs={"input": "plural of cat"}, outputs={"output": "cats"}),
        Demo(inputs={"input": "antonym of hot"}, outputs={"output": "cold"}),
        Demo(inputs={"input": "antonym of big"}, outputs={"output": "small"}),
    ),
)})


def shown(ctx: LearnedContext) -> tuple[list[str], list[str]]:
    pc = ctx.predictor("p")
    return [it.text for it in pc.items], [str(d.inputs["input"]) for d in pc.demos]


def test_retrieval_picks_the_relevant_item_and_demos_for_each_input():
    sel = RetrievalSelector(LexicalSimilarity(), k_items=1, k_demos=2, margin=1.0)
    assert isinstance(sel, ContextSelector)
    items, demos = shown(sel.select(MEMORY, None, {"input": "plural of mouse"}))
    assert items == ["Answer with one word.", "Add s or es to form the plural."]
    assert demos[0] == "plural of cat" and len(demos) == 2
    items, demos = shown(sel.select(MEMORY, None, {"input": "antonym of tall"}))
    assert items == ["Answer with one word.", "Give the word with the opposite meaning."]
    assert demos == ["antonym of hot", "antonym of big"]  # C's order, not the score order
    why = sel.explain(MEMORY, None, {"input": "antonym of tall"})["p"]
    assert why.query == "antonym of tall" and why.pinned == ("r-fmt",)
    assert [h.id for h in why.items] == ["r-antonym"] and why.items[0].key == "antonym of an adjective"
    assert all(0.0 < h.score <= 1.0 for h in why.items + why.demos)


def test_pinned_items_are_always_shown_and_min_score_filters_the_rest():
    sel = RetrievalSelector("lexical", k_items=0, k_demos=0)
    assert shown(sel.select(MEMORY, None, {"input": "plural of mouse"})) == (["Answer with one word."], [])
    strict = RetrievalSelector("lexical", min_score=1.0)
    assert shown(strict.select(MEMORY, None, {"input": "something else entirely"})) == (["Answer with one word."], [])
    assert shown(strict.select(MEMORY, None, {"input": "antonym of hot"}))[1] == ["antonym of hot"]


def test_ties_go_to_the_smaller_id_and_the_chosen_keep_cs_order():
    items = tuple(Item(id=f"r-{c}", text=f"Rule {c}.", keys=("same key",)) for c in "dbca")
    ctx = LearnedContext({"p": PredictorContext("I.", items=items)})
    out = RetrievalSelector("lexical", k_items=2).select(ctx, None, {"input": "same key"})
    assert [it.id for it in out.items("p")] == ["r-b", "r-a"]


def test_a_task_aware_call_retrieves_only_within_the_tasks_scope():
    ctx = LearnedContext({"p": PredictorContext("I.", items=(
        Item(id="r-other", text="Other.", scope="other", keys=("plural of mouse",)),
        Item(id="r-mine", text="Mine.", scope="mine", keys=("unrelated words",)),
    ), demos=(Demo(inputs={TASK_FIELD: "other", "input": "plural of mouse"}, outputs={"output": "mice"}, scope="other"),))})
    sel = RetrievalSelector("lexical", k_items=1)
    aware = sel.select(ctx, "mine", {TASK_FIELD: "mine", "input": "plural of mouse"})
    assert [it.id for it in aware.items("p")] == ["r-mine"] and aware.predictor("p").demos == ()
    agnostic = sel.select(ctx, None, {"input": "plural of mouse"})
    assert [it.id for it in agnostic.items("p")] == ["r-other"] and len(agnostic.predictor("p").demos) == 1


def test_the_task_label_is_not_part_of_the_query():
    assert input_text({TASK_FIELD: "antonyms", "input": "hot", "n": 2}) == "hot\n2"


def test_bad_settings_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="unknown similarity"):
        RetrievalSelector("cosine")
    with pytest.raises(ConfigError, match="k_items"):
        RetrievalSelector("lexical", k_items=-1)
    with pytest.raises(ConfigError, match="min_score"):
        RetrievalSelector("lexical", min_score=2)


def test_lexical_scores_agree_with_the_matrix():
    sim = LexicalSimilarity()
    texts = ["plural of mouse", "plural of a noun", "antonym of hot", ""]
    assert sim.scores(texts[0], texts[1:]) == sim.matrix(texts)[0][1:]
    assert sim.scores("x", []) == []


# -- serialization ------------------------------------------------------------------------------------------------

OLD_KEYS = {"id", "kind", "scope", "text", "source_task", "source_step", "rationale", "created_step", "updated_step",
            "helpful", "harmful"}
OLD = LearnedContext({"qa": PredictorContext("Answer.", items=(
    Item(id="r-00000001", text="Show units.", scope="physics", helpful=2),), demos=(
    Demo(inputs={"q": "2+2?"}, outputs={"a": "4"}),))})
OLD_HASH = "88a637197296e5955cce620027ec2f8170ed9b6804ec538ad8106c9f1757e35f"


def test_a_context_without_pins_or_keys_keeps_its_serialization_and_hash():
    assert set(OLD.predictor("qa").items[0].to_dict()) == OLD_KEYS
    assert OLD.hash == OLD_HASH  # the hash this context had before items could be pinned or keyed
    assert LearnedContext.from_dict(OLD.to_dict()).hash == OLD_HASH


def test_pins_and_keys_round_trip_through_dicts_and_the_store(tmp_path):
    item = Item(id="r-1", text="Show units.", pinned=True, keys=["applies when a quantity is asked", "speed of light"])
    assert item.keys == ("applies when a quantity is asked", "speed of light")
    assert hash(item) == hash(Item.from_dict(item.to_dict()))
    assert Item.from_dict(item.to_dict()) == item and item.to_dict()["pinned"] is True
    ctx = LearnedContext({"qa": PredictorContext("Answer.", items=(item,))})
    assert ctx.hash != LearnedContext({"qa": PredictorContext("Answer.", items=(Item(id="r-1", text="Show units."),))}).hash
    store = Store.init(tmp_path / "store")
    store.commit(LearnedContext({"qa": PredictorContext("Answer.", items=(Item(id="r-1", text="Show units."),))}), "plain")
    store.commit(ctx, "pinned and keyed")
    assert store.current() == ctx
    assert store.diff("HEAD~1", "HEAD").predictors[0].items_changed[0].fields == ("pinned", "keys")
    for bad in ({"pinned": "yes"}, {"keys": "one string"}, {"keys": [""]}):
        with pytest.raises(Exception, match="item r-1"):
            Item(id="r-1", text="x", **bad)


def test_a_merged_item_keeps_the_keys_and_the_pin_of_its_parts():
    ctx = LearnedContext({"qa": PredictorContext("A.", items=(
        Item(id="r-1", text="One.", keys=("a", "b")), Item(id="r-2", text="Two.", keys=("b", "c"), pinned=True)))})
    merged = ctx.apply_edits([MergeItems("qa", ("r-1", "r-2"), "One and two.")]).items("qa")[0]
    assert merged.keys == ("a", "b", "c") and merged.pinned


# -- the evaluator and `ctxopt show --for-input` ------------------------------------------------------------------


def test_the_evaluator_sends_only_the_pinned_and_retrieved_items_and_demos():
    stream = toy_stream("task-agnostic", names=("suffix",))
    task = stream.tasks[0]
    words = [str(ex.input) for ex in task.val]
    first = set(words[: len(words) // 2])
    demos = tuple(Demo(inputs={"input": ex.input}, outputs={"output": ex.output}) for ex in task.train[:4])
    base = LearnedContext.from_program(program_for(stream))
    ctx = base.with_predictor("predict", PredictorContext(base.predictor("predict").instruction, items=(
        Item(id="r-suffix01", text=SUFFIX, keys=tuple(w for w in words if w in first)),
        Item(id="r-revers01", text=REVERSE, keys=tuple(w for w in words if w not in first)),
        Item(id="r-pinned1", text="Answer in lowercase.", pinned=True),
    ), demos=demos))
    selector = RetrievalSelector(LexicalSimilarity(), k_items=1, k_demos=1)
    prompts: dict[str, tuple[str, str]] = {}

    def respond(system: str, user: str) -> str:
        word = user.rsplit("[[ ## input ## ]]", 1)[-1].split("\n")[1].strip()
        prompts[word] = (system, user)
        return task_answer(system, user)

    res = Evaluator(scripted_lm(respond, name="scripted/retrieval"), num_threads=1, selector=selector).evaluate(
        program_for(stream), ctx, task, task.val, scenario="task-agnostic")
    for word, r in zip(words, res.results):
        system, user = prompts[word]
        rule, other = (SUFFIX, REVERSE) if word in first else (REVERSE, SUFFIX)
        assert "Answer in lowercase." in system and rule in system and other not in system
        assert r.score == (1.0 if word in first else 0.0)
        sent = [d.id for d in demos if f"[[ ## input ## ]]\n{d.inputs['input']}\n" in user]
        assert sent == [h.id for h in selector.explain(ctx, None, {"input": word})["predict"].demos]


class RecordingLM(TrackedLM):
    """A scripted LM that records the messages of every call it receives."""

    def __init__(self, name: str) -> None:
        super().__init__(name, engine=ScriptedEngine(lambda system, user: chat_fields(output="ok")),
                         temperature=0.0, max_tokens=256, cache=False)
        self.sent: list[list[dict]] = []

    def __call__(self, *args, **kwargs):
        self.sent.append(copy.deepcopy(kwargs["messages"]))
        return super().__call__(*args, **kwargs)


def _ii_store(tmp_path, scenario: str):
    stream = load_stream("ii:antonyms", sizes=(6, 2, 2), scenario=scenario)
    task = stream.tasks[0]
    base = LearnedContext.from_program(program_for(stream))
    ctx = base.with_predictor("predict", PredictorContext(base.predictor("predict").instruction, items=(
        Item(id="r-format01", text="Answer with a single lowercase word.", pinned=True),
        Item(id="r-antony01", text="Give the opposite of the word.", keys=("a common adjective",)),
        Item(id="r-plural01", text="Add s to the noun.", keys=("a countable noun",)),
        Item(id="r-scoped01", text="Only for antonyms.", scope="antonyms"),
    ), demos=tuple(Demo(inputs=dict(ex.inputs().items()), outputs={"output": ex.output},
                        scope="antonyms" if scenario == "task-aware" else "global") for ex in task.train)))
    store = Store.init(tmp_path / "store")
    store.commit(ctx, "C", {"step": 0, "task": None, "stream": "ii:antonyms", "scenario": scenario})
    return store, stream, task, ctx


@pytest.mark.parametrize("scenario", ["task-agnostic", "task-aware"])
def test_show_for_input_prints_exactly_the_prompt_the_evaluator_sends(tmp_path, capsys, scenario):
    store, stream, task, ctx = _ii_store(tmp_path, scenario)
    ex = task.val[0]
    label = ["--task", task.name] if scenario == "task-aware" else []
    rc = main(["show", "--store", str(store.path), "--for-input", str(ex.input), "--similarity", "lexical",
               "--k-items", "1", "--k-demos", "2", *label])
    out, err = capsys.readouterr()
    assert rc == 0, err

    rec = RecordingLM(f"scripted/show-{scenario}")
    selector = RetrievalSelector("lexical", k_items=1, k_demos=2)
    Evaluator(rec, num_threads=1, selector=selector).evaluate(program_for(stream), ctx, task, [ex], scenario=scenario)
    assert len(rec.sent) == 1
    assert out.endswith("\n" + format_messages(rec.sent[0]) + "\n")
    why = selector.explain(ctx, task.name if label else None, dict(ex.inputs().items()))["predict"]
    assert "pinned      r-format01" in out and len(why.demos) == 2
    for hit in why.items + why.demos:
        assert f"{hit.score:.3f} {hit.id}" in out
    system = rec.sent[0][0]["content"]
    chosen = set(why.pinned) | {h.id for h in why.items}
    assert [it.id for it in ctx.items("predict") if it.text in system] == [it.id for it in ctx.items("predict")
                                                                           if it.id in chosen]


def test_show_for_input_with_the_scope_selector_shows_everything_in_scope(tmp_path, capsys):
    store, _, _, ctx = _ii_store(tmp_path, "task-agnostic")
    rc = main(["show", "--store", str(store.path), "--for-input", "hot", "--selector", "scope"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "all 4 items and 6 demos in scope" in out
    assert all(it.text in out for it in ctx.items("predict"))


def test_show_for_input_errors_are_one_line(tmp_path, capsys):
    store, _, _, _ = _ii_store(tmp_path, "task-aware")
    cases = [
        (["--field", "nope"], "has no input field 'nope'"),
        ([], "pass --task NAME"),
        (["--task", "antonyms", "--predictor", "nope"], "no predictor 'nope'"),
    ]
    for extra, message in cases:
        rc = main(["show", "--store", str(store.path), "--for-input", "hot", "--similarity", "lexical", *extra])
        _, err = capsys.readouterr()
        assert rc == 2 and message in err and err.count("\n") == 1
    Store.init(tmp_path / "empty")
    assert main(["show", "--store", str(tmp_path / "empty"), "--for-input", "hot"]) == 2
    assert "no versions yet" in capsys.readouterr().err
    bare = Store.init(tmp_path / "bare")
    bare.commit(LearnedContext({"qa": PredictorContext("Answer.")}), "no stream recorded")
    assert main(["show", "--store", str(bare.path), "--for-input", "hot"]) == 2
    assert "does not record its stream" in capsys.readouterr().err


def test_a_per_call_token_budget_keeps_the_best_hits_that_fit():
    from ctxopt.context import Item, LearnedContext, PredictorContext
    from ctxopt.retrieval import RetrievalSelector
    from ctxopt.tokens import count_tokens

    long_rule = "Reverse the letters of the word, then double every vowel and explain nothing. " * 3
    ctx = LearnedContext({"p": PredictorContext("Answer.", items=(
        Item(id="r-long", text=long_rule, keys=("reverse the word apple",)),
        Item(id="r-short", text="Reverse it.", keys=("reverse the word",)),
    ))})
    unbounded = RetrievalSelector("lexical", k_items=2, margin=1.0).select(ctx, None, {"input": "reverse the word apple"})
    assert [it.id for it in unbounded.items("p")] == ["r-long", "r-short"]
    budget = count_tokens("Answer.") + count_tokens("Reverse it.") + 5
    bounded = RetrievalSelector("lexical", k_items=2, max_tokens=budget, margin=1.0)
    assert [it.id for it in bounded.select(ctx, None, {"input": "reverse the word apple"}).items("p")] == ["r-short"]


def test_an_instruction_rewrite_that_restates_the_instruction_adds_no_strategy_item():
    from ctxopt.edits import AddItem, RewriteInstruction
    from ctxopt.proposer import Proposal
    from ctxopt.retrieval import archival

    same = Proposal("same", (RewriteInstruction("p", "Given the input,  produce the output."),), "instruction")
    new = Proposal("new", (RewriteInstruction("p", "Give the opposite word."), AddItem("p", "Be brief.")), "reflection")
    out = archival([same, new], ["hot"], instruction="Given the input, produce the output.")
    assert [p.name for p in out] == ["new"]
    assert [(e.kind, e.text) for e in out[0].edits] == [("strategy", "Give the opposite word."), ("rule", "Be brief.")]


def test_in_a_shared_memory_one_tasks_reflection_cannot_change_or_delete_an_item_already_there():
    from ctxopt.edits import AddItem, DeleteItem, UpdateItem
    from ctxopt.proposer import Proposal
    from ctxopt.retrieval import archival

    # what the 1.5B proposed while reading plural failures: delete sentiment's format rule, and add its own
    delete = Proposal("reflect0.2", (DeleteItem("p", "r-1244b326"),), "reflection")
    update = Proposal("reflect0.3", (UpdateItem("p", "r-1244b326", "Answer with a plural noun."),), "reflection")
    add = Proposal("reflect0.0", (AddItem("p", "Add s to make a plural."), DeleteItem("p", "r-1244b326")), "reflection")
    out = archival([delete, update, add], ["rapper"])
    assert [p.name for p in out] == ["reflect0.0"]
    assert [type(e).__name__ for e in out[0].edits] == ["AddItem"]  # its deletion dropped, its addition kept


def test_in_a_shared_memory_a_demo_set_replaces_only_the_demos_its_own_family_left():
    from ctxopt.context import Demo, LearnedContext, PredictorContext
    from ctxopt.edits import AddDemo, RemoveDemo
    from ctxopt.proposer import Proposal
    from ctxopt.retrieval import archival

    # what DemoProposer offers on plural's revisit: clear every demo in scope, then add the new set
    old_plural = Demo(inputs={"input": "cat"}, outputs={"output": "cats"}, source_task="plural")
    sentiment = Demo(inputs={"input": "I loved it"}, outputs={"output": "positive"}, source_task="sentiment")
    new = Demo(inputs={"input": "dog"}, outputs={"output": "dogs"})
    p = Proposal("demos0", (RemoveDemo("p", old_plural.id), RemoveDemo("p", sentiment.id), AddDemo("p", new)), "demos")
    [out] = archival([p], ["dog"], own={old_plural.id})
    assert out.edits == (RemoveDemo("p", old_plural.id), AddDemo("p", new))  # sentiment's demo stays
    [kept] = archival([p], ["dog"])  # nothing of its own yet: it only adds
    assert kept.edits == (AddDemo("p", new),)
    # applied during a visit, the new demo records where it came from, outside its id, and round-trips
    ctx = LearnedContext({"p": PredictorContext("Answer.", demos=(old_plural, sentiment))})
    after = ctx.apply_edits(out.edits, step=4, task="plural@2")
    assert [(d.id, d.source_task) for d in after.predictor("p").demos] == [(sentiment.id, "sentiment"),
                                                                          (new.id, "plural@2")]
    assert LearnedContext.from_dict(after.to_dict()) == after
    assert "source_task" not in new.to_dict() and Demo.from_dict(after.predictor("p").demos[1].to_dict()).source_task
