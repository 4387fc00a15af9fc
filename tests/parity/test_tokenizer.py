"""Parity of glidekit's tokenizers with glide-text2im, on every `tokenizer` vector file.

Format: tests/vectors/README.md section 2. Every item must match exactly; sizes and special
tokens are read from the file.
"""

from __future__ import annotations

import os
import warnings

import pytest

from glidekit.tokenizers import CLIPTokenizer, GlideTokenizer, clip_tokenizer, glide_tokenizer
from tests.parity.vectors import files, ids, load, vector_dir

PATHS = files("tokenizer")

TOP_KEYS = {"glide", "clip", "meta"}
GLIDE_KEYS = {"n_vocab", "end_token", "text_ctx", "items"}
GLIDE_ITEM_KEYS = {"prompt", "raw", "tokens", "mask", "decoded"}
CLIP_KEYS = {"n_vocab", "start_token", "end_token", "max_text_len", "items"}
CLIP_ITEM_KEYS = {"prompt", "raw", "tokens", "text_len", "decoded"}


def test_tokenizer_vectors_present():
    """No tokenizer file is a failure on the default set, a skip for a user-chosen directory."""
    if PATHS:
        return
    msg = f"no tokenizer vector file in {vector_dir()}"
    if os.environ.get("GLIDEKIT_PARITY_DIR"):
        pytest.skip(msg)
    pytest.fail(msg)


def _key_problems(where: str, got: dict, expected: set[str]) -> list[str]:
    if not isinstance(got, dict):
        return [f"{where}: expected a dict, got {type(got).__name__}"]
    out = []
    if missing := expected - set(got):
        out.append(f"{where}: missing keys {sorted(missing)}")
    if unknown := set(got) - expected:
        out.append(f"{where}: unknown keys {sorted(unknown)}")
    return out


@pytest.mark.parametrize("path", PATHS, ids=ids(PATHS))
def test_keys(path):
    v = load(path)
    problems = _key_problems("top level", v, TOP_KEYS)
    for name, keys, item_keys in (("glide", GLIDE_KEYS, GLIDE_ITEM_KEYS),
                                  ("clip", CLIP_KEYS, CLIP_ITEM_KEYS)):
        section = v.get(name)
        problems += _key_problems(name, section, keys)
        if isinstance(section, dict):
            items = section.get("items", [])
            if not items:
                problems.append(f"{name}: no items")
            for i, item in enumerate(items):
                problems += _key_problems(f"{name}.items[{i}]", item, item_keys)
    assert not problems, "\n".join(problems)


def _plain(value):
    """Lists as lists (a tuple or tensor in a file compares equal to the same values)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return list(value) if isinstance(value, (list, tuple)) else value


def _padded_glide(tok: GlideTokenizer, raw: list[int], text_ctx: int):
    """padded_tokens_and_mask, checking it warns exactly when tokens are dropped."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = tok.padded_tokens_and_mask(raw, text_ctx)
    truncation = [w for w in caught if "truncated" in str(w.message)]
    assert bool(truncation) == (len(raw) > text_ctx), (len(raw), text_ctx, caught)
    return out


@pytest.mark.parametrize("path", PATHS, ids=ids(PATHS))
def test_glide_tokenizer(path):
    ref = load(path)["glide"]
    tok = glide_tokenizer()
    assert tok.n_vocab == ref["n_vocab"]
    assert tok.end_token == ref["end_token"]
    text_ctx = ref["text_ctx"]
    bad = []
    for i, item in enumerate(ref["items"]):
        raw = tok.encode(item["prompt"])
        tokens, mask = _padded_glide(tok, raw, text_ctx)
        got = {"raw": raw, "tokens": tokens, "mask": mask, "decoded": tok.decode(item["raw"])}
        for key, value in got.items():
            expected = _plain(item[key])
            if value != expected:
                bad.append(f"glide item {i} ({item['prompt'][:40]!r}) {key}: "
                           f"got {value!r:.200} expected {expected!r:.200}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", PATHS, ids=ids(PATHS))
def test_glide_encode_batch(path):
    ref = load(path)["glide"]
    items, text_ctx = ref["items"], ref["text_ctx"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokens, mask = glide_tokenizer().encode_batch([it["prompt"] for it in items], text_ctx)
    assert tokens.shape == mask.shape == (len(items), text_ctx)
    assert tokens.tolist() == [list(it["tokens"]) for it in items]
    assert mask.tolist() == [list(it["mask"]) for it in items]


@pytest.mark.parametrize("path", PATHS, ids=ids(PATHS))
def test_clip_tokenizer(path):
    ref = load(path)["clip"]
    tok = clip_tokenizer()
    assert tok.n_vocab == ref["n_vocab"]
    assert tok.start_token == ref["start_token"]
    assert tok.end_token == ref["end_token"]
    max_text_len = ref["max_text_len"]
    bad = []
    for i, item in enumerate(ref["items"]):
        raw = tok.encode(item["prompt"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokens, text_len = tok.padded_tokens_and_len(raw, max_text_len)
        got = {"raw": raw, "tokens": tokens, "text_len": text_len,
               "decoded": tok.decode(item["raw"])}
        for key, value in got.items():
            expected = _plain(item[key])
            if value != expected:
                bad.append(f"clip item {i} ({item['prompt'][:40]!r}) {key}: "
                           f"got {value!r:.200} expected {expected!r:.200}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", PATHS, ids=ids(PATHS))
def test_clip_encode_batch(path):
    ref = load(path)["clip"]
    items, max_text_len = ref["items"], ref["max_text_len"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokens, text_len = clip_tokenizer().encode_batch([it["prompt"] for it in items],
                                                         max_text_len)
    assert tokens.shape == (len(items), max_text_len)
    assert tokens.tolist() == [list(it["tokens"]) for it in items]
    assert text_len.tolist() == [it["text_len"] for it in items]


def test_classes_exported():
    assert isinstance(glide_tokenizer(), GlideTokenizer)
    assert isinstance(clip_tokenizer(), CLIPTokenizer)
