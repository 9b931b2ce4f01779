"""The token measure: one packaged cl100k_base, the same on every install, no fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctxopt import tokens
from ctxopt.context import Demo, Item, LearnedContext, PredictorContext
from ctxopt.errors import ConfigError
from ctxopt.tokens import TOKENIZER, count_tokens, over_budget, rendered_tokens

# Counts checked against tiktoken.get_encoding("cl100k_base") on litellm's copy of the rank file.
KNOWN = {
    "hello world": 2,
    "The quick brown fox jumps over the lazy dog.": 10,
    "Rules:\n- Give units.\n- Don't round 3.14159 to 3.": 19,
    "naïve café — 東京 🚀": 11,
    "   \n\n\t x  ": 4,
    "<|endoftext|>": 7,  # special tokens are counted as the plain text they are
    "": 0,
}

_COUNT_SCRIPT = """
import json, socket, sys
def _no_network(*args, **kwargs):
    raise OSError("network access in a token count")
socket.socket.connect = _no_network
socket.create_connection = _no_network
from ctxopt.tokens import TOKENIZER, count_tokens
print(json.dumps([TOKENIZER, [count_tokens(t) for t in json.loads(sys.argv[1])]]))
"""


@pytest.fixture
def fresh_encoding():
    """Drop the cached encoding before and after the test, so changes made by the test do not leak."""
    tokens.encoding.cache_clear()
    yield
    tokens.encoding.cache_clear()


def _counts_in_subprocess(env: dict[str, str]) -> list:
    texts = json.dumps(list(KNOWN))
    out = subprocess.run([sys.executable, "-c", _COUNT_SCRIPT, texts], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_tokenizer_name_and_known_counts():
    assert TOKENIZER == "cl100k_base@ctxopt-data"
    assert {text: count_tokens(text) for text in KNOWN} == KNOWN


def test_counts_do_not_depend_on_litellm_or_tiktoken_caches(tmp_path):
    """Before the packaged file, hiding litellm's copy turned counts into len(text) // 4."""
    fake = tmp_path / "shadow"
    (fake / "litellm").mkdir(parents=True)
    (fake / "litellm" / "__init__.py").write_text("")  # a litellm without its tokenizer files
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    base = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR", "PYTHONPATH")}
    root = str(Path(tokens.__file__).resolve().parents[1])
    plain = _counts_in_subprocess({**base, "PYTHONPATH": root})
    bare = _counts_in_subprocess(
        {
            **base,
            "PYTHONPATH": os.pathsep.join([str(fake), root]),
            "TIKTOKEN_CACHE_DIR": str(empty),
            "DATA_GYM_CACHE_DIR": str(empty),
        }
    )
    assert plain == bare == [TOKENIZER, list(KNOWN.values())]
    assert list(empty.iterdir()) == []  # nothing was downloaded or cached


def test_the_packaged_encoding_is_tiktokens_cl100k_base(monkeypatch):
    """Same regex, special tokens and ids as tiktoken's own definition (its rank loader stubbed: no network)."""
    import tiktoken
    from tiktoken_ext import openai_public

    enc = tokens.encoding()
    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *a, **k: enc._mergeable_ranks)
    ref = tiktoken.Encoding(**openai_public.cl100k_base())
    assert (enc._pat_str, enc._special_tokens, enc.n_vocab) == (ref._pat_str, ref._special_tokens, ref.n_vocab)
    for text in KNOWN:
        assert enc.encode_ordinary(text) == ref.encode(text, disallowed_special=())


def test_missing_tiktoken_is_a_one_line_config_error(monkeypatch, fresh_encoding):
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    with pytest.raises(ConfigError, match="needs the tiktoken package") as info:
        count_tokens("hello")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content", [None, b"IQ== 0\n"], ids=["missing", "damaged"])
def test_missing_or_damaged_rank_file_is_a_config_error(monkeypatch, fresh_encoding, tmp_path, content):
    path = tmp_path / "cl100k_base.tiktoken"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setattr(tokens, "BPE_FILE", path)
    with pytest.raises(ConfigError, match="reinstall ctxopt"):
        count_tokens("hello")


def test_the_rank_file_ships_with_its_licence():
    folder = tokens.BPE_FILE.parent
    assert tokens.BPE_FILE.is_file() and "MIT License" in (folder / "LICENSE").read_text()
    assert "cl100k_base" in (folder.parent / "README.md").read_text()


def _ctx() -> LearnedContext:
    items = (Item("r-1", "Be exact."), Item("r-2", "Give units in SI, always, for every quantity.", scope="physics"))
    demos = (Demo(inputs={"q": "v?"}, outputs={"a": "3 m/s"}, scope="algebra"),)
    return LearnedContext({"qa": PredictorContext("Answer the question.", items, demos), "cls": PredictorContext("Label it.")})


def test_token_count_of_a_context_uses_the_packaged_measure():
    ctx = _ctx()
    assert ctx.token_count("cls") == count_tokens("Label it.") == 3
    assert ctx.token_count("qa", "physics") == count_tokens(ctx.render("qa", "physics"))


def test_rendered_tokens_is_the_largest_scope_and_over_budget_lists_only_the_large():
    ctx = _ctx()
    per_scope = [ctx.token_count("qa", s) for s in (None, "physics", "algebra")]
    assert ctx.predictor("qa").task_scopes() == ("algebra", "physics")
    assert rendered_tokens(ctx, "qa") == max(per_scope)
    qa, cls = rendered_tokens(ctx, "qa"), rendered_tokens(ctx, "cls")
    assert cls < qa
    assert over_budget(ctx, None) == {} and over_budget(ctx, qa) == {}
    assert over_budget(ctx, cls) == {"qa": qa} and over_budget(ctx, cls - 1) == {"qa": qa, "cls": cls}
