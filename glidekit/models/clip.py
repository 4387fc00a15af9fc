"""GLIDE's noised CLIP: a timestep-aware image encoder, a causal text encoder, and the guidance
gradient built from them (spec `glide-reference.md` s.2.4, vectors README s.10 and s.5.6).

The modules are named so that OpenAI's `clip_image_enc.pt` / `clip_text_enc.pt` state dicts load
with `strict=True`::

    blocks.input.{w_t, patch_proj, w_pos, ln.g, ln.b}        (image)
    blocks.input.{w_voc, w_pos}                               (text)
    blocks.block_{k}.f_attn.{ln.g, ln.b, f_q.w, f_q.b, f_k.w, f_v.w, f_v.b, f_c.w, f_c.b}
    blocks.block_{k}.f_mlp.{ln.g, ln.b, f_1.w, f_1.b, f_2.w, f_2.b}
    blocks.output.{ln.g, ln.b, f.w}

Every weight `w` is stored (out, in) and applied as `x @ w.T + b`.

Numerics follow the reference: LayerNorm (eps 1e-5) and the attention softmax run in float32;
q and k are each scaled by `sqrt(1/sqrt(head_dim))`; masked keys get an additive -1e10.

About context padding: the reference pads the token sequence to a multiple of 32 (text 77 -> 96,
image 257 -> 288) and masks the padded keys with -1e10. Those keys add `exp(-1e10 - max)`, which
is exactly 0 in float32, to every softmax denominator, and their (zero) values are weighted by
exactly 0; padded queries are dropped afterwards. So padding changes nothing but the length of
the reductions, and this module attends over the real tokens only (tests/parity/test_clip.py
checks it against an explicitly padded implementation).

The modules know nothing about diffusion: `NoisedCLIP.cond_fn` takes the timestep the image
encoder should see (the *original* timestep, not a respaced index) and the noisy sample x_t.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import NoisedCLIPConfig

CLIP_PIXEL_MEANS = (122.77093945, 116.74601272, 104.09373519)
"""Per-channel means of [0, 255] pixels: OpenAI CLIP's (0.48145466, 0.4578275, 0.40821073) * 255
(rounded as in glide-text2im's `clip/encoders.py`)."""

CLIP_PIXEL_STDS = (68.50053285, 66.63215831, 70.32316309)
"""Per-channel stds of [0, 255] pixels: CLIP's (0.26862954, 0.26130258, 0.27577711) * 255."""

MASK_VALUE = -1e10
"""Additive attention bias for keys a query may not see (the reference's value)."""

LN_EPS = 1e-5


# ---------------------------------------------------------------------------------------------
# building blocks


class Affine(nn.Module):
    """`x @ w.T + b` with parameters named `w` (out, in) and, optionally, `b` (out,)."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True, std: float | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_out, n_in))
        self.b = nn.Parameter(torch.empty(n_out)) if bias else None
        self.std = 1.0 / math.sqrt(n_in) if std is None else std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.w, std=self.std)
        if self.b is not None:
            nn.init.zeros_(self.b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w, self.b)


class LayerNorm(nn.Module):
    """LayerNorm with parameters `g`, `b`, computed in float32 (result cast back to x's dtype)."""

    def __init__(self, n_state: int, eps: float = LN_EPS) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(n_state))
        self.b = nn.Parameter(torch.zeros(n_state))
        self.eps = eps

    def reset_parameters(self) -> None:
        nn.init.ones_(self.g)
        nn.init.zeros_(self.b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.float(), (x.shape[-1],), self.g.float(), self.b.float(), self.eps)
        return y.to(x.dtype)


class AttentionResblock(nn.Module):
    """Pre-LN multi-head self-attention with a residual: `x + f_c(attn(ln(x)))`.

    `f_k` has no bias. q and k are each multiplied by `sqrt(1/sqrt(head_dim))`, the logits get
    the additive mask and the softmax runs in float32. `causal=True` lets position i see only
    positions <= i (text encoder); otherwise every position sees every other (image encoder).
    """

    def __init__(self, n_state: int, n_head: int, causal: bool, proj_std: float) -> None:
        super().__init__()
        if n_state % n_head:
            raise ValueError(f"width {n_state} is not divisible by {n_head} heads")
        self.n_head = n_head
        self.head_dim = n_state // n_head
        self.causal = causal
        std = 1.0 / math.sqrt(n_state)
        self.ln = LayerNorm(n_state)
        self.f_q = Affine(n_state, n_state, std=std)
        self.f_k = Affine(n_state, n_state, bias=False, std=std)
        self.f_v = Affine(n_state, n_state, std=std)
        self.f_c = Affine(n_state, n_state, std=proj_std)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        n, length, _ = t.shape
        return t.view(n, length, self.n_head, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        h = self.ln(x)
        scale = math.sqrt(1.0 / math.sqrt(self.head_dim))
        q = self._heads(self.f_q(h)) * scale
        k = self._heads(self.f_k(h)) * scale
        v = self._heads(self.f_v(h))
        w = torch.matmul(q, k.transpose(-1, -2)).float()  # (n, head, query, key)
        if self.causal:
            hidden = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
            w = w + torch.zeros_like(hidden, dtype=w.dtype).masked_fill(hidden, MASK_VALUE)
        w = torch.softmax(w, dim=-1).to(v.dtype)
        a = torch.matmul(w, v).permute(0, 2, 1, 3).reshape(n, length, width)
        return x + self.f_c(a)


class FullyConnectedResblock(nn.Module):
    """Pre-LN MLP with a residual: `x + f_2(gelu(f_1(ln(x))))`, hidden width 4x, exact-erf GELU."""

    def __init__(self, n_state: int, proj_std: float) -> None:
        super().__init__()
        self.ln = LayerNorm(n_state)
        self.f_1 = Affine(n_state, 4 * n_state, std=1.0 / math.sqrt(2 * n_state))
        self.f_2 = Affine(4 * n_state, n_state, std=proj_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f_2(F.gelu(self.f_1(self.ln(x))))


class TransformerBlock(nn.Module):
    """`f_attn` (AttentionResblock) followed by `f_mlp` (FullyConnectedResblock)."""

    def __init__(self, n_state: int, n_head: int, n_blocks: int, causal: bool) -> None:
        super().__init__()
        # Residual projections are scaled down with depth (GPT-2 / CLIP practice) so a freshly
        # initialised stack keeps its residual stream at unit scale.
        proj_std = 1.0 / math.sqrt(n_state) / math.sqrt(2 * n_blocks)
        self.f_attn = AttentionResblock(n_state, n_head, causal, proj_std)
        self.f_mlp = FullyConnectedResblock(n_state, proj_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f_mlp(self.f_attn(x))


class ImageEmbedding(nn.Module):
    """Pixels -> token sequence: standardise, patchify (conv without bias), prepend the timestep
    token `w_t[t]`, add `w_pos`, LayerNorm."""

    def __init__(self, cfg: NoisedCLIPConfig) -> None:
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        width, p = cfg.image_width, cfg.patch_size
        self.image_size, self.patch_size = cfg.image_size, p
        self.n_patches = (cfg.image_size // p) ** 2
        self.w_t = nn.Parameter(torch.empty(cfg.n_timesteps, width))
        self.patch_proj = nn.Parameter(torch.empty(width, 3, p, p))
        self.w_pos = nn.Parameter(torch.empty(1 + self.n_patches, width))
        self.ln = LayerNorm(width)
        self.register_buffer("pixel_means", torch.tensor(CLIP_PIXEL_MEANS).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_stds", torch.tensor(CLIP_PIXEL_STDS).view(1, 3, 1, 1), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        width = self.w_t.shape[1]
        nn.init.normal_(self.w_t, std=1.0 / math.sqrt(width))
        nn.init.normal_(self.patch_proj, std=1.0 / math.sqrt(3 * self.patch_size**2))
        nn.init.normal_(self.w_pos, std=0.01)

    def forward(self, pixels: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """`pixels` (N,3,S,S) in [0, 255], `t` int64 (N,) -> (N, 1 + (S/p)^2, width)."""
        if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.shape[2:] != (self.image_size,) * 2:
            raise ValueError(
                f"expected images of shape (N, 3, {self.image_size}, {self.image_size}), got {tuple(pixels.shape)}"
            )
        x = (pixels - self.pixel_means) / self.pixel_stds
        x = F.conv2d(x, self.patch_proj.to(x.dtype), stride=self.patch_size)  # (N, width, S/p, S/p)
        x = x.flatten(2).transpose(1, 2)  # (N, patches, width), row-major patch order
        t = torch.as_tensor(t, device=x.device).long().reshape(-1).expand(x.shape[0])
        sot = self.w_t[t][:, None].to(x.dtype)
        x = torch.cat([sot, x], dim=1) + self.w_pos.to(x.dtype)
        return self.ln(x)


class TextEmbedding(nn.Module):
    """Token ids -> `w_voc[tokens] + w_pos` (no LayerNorm on the text side)."""

    def __init__(self, cfg: NoisedCLIPConfig) -> None:
        super().__init__()
        self.w_voc = nn.Parameter(torch.empty(cfg.n_vocab, cfg.text_width))
        self.w_pos = nn.Parameter(torch.empty(cfg.max_text_len, cfg.text_width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.w_voc, std=0.02)
        nn.init.normal_(self.w_pos, std=0.01)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.w_pos.shape[0]:
            raise ValueError(f"token sequence of length {length} exceeds max_text_len {self.w_pos.shape[0]}")
        return self.w_voc[tokens] + self.w_pos[:length]


class Output(nn.Module):
    """Final LayerNorm and projection `f` (no bias) to the joint embedding size."""

    def __init__(self, n_state: int, n_embd: int) -> None:
        super().__init__()
        self.ln = LayerNorm(n_state)
        self.f = Affine(n_state, n_embd, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.f(self.ln(h))


class _Encoder(nn.Module):
    """Shared trunk: `blocks` = {input, block_0 .. block_{n-1}, output}."""

    grad_checkpointing: bool = False  # recompute each transformer block in backward (saves memory)

    def __init__(self, embedding: nn.Module, n_state: int, n_head: int, n_blocks: int, n_embd: int, causal: bool):
        super().__init__()
        self.n_xf_blocks = n_blocks
        blocks: dict[str, nn.Module] = {"input": embedding}
        for k in range(n_blocks):
            blocks[f"block_{k}"] = TransformerBlock(n_state, n_head, n_blocks, causal)
        blocks["output"] = Output(n_state, n_embd)
        self.blocks = nn.ModuleDict(blocks)

    def _trunk(self, h: torch.Tensor) -> torch.Tensor:
        for k in range(self.n_xf_blocks):
            block = self.blocks[f"block_{k}"]
            if self.grad_checkpointing and torch.is_grad_enabled():
                h = checkpoint(block, h, use_reentrant=False)
            else:
                h = block(h)
        return h

    def reset_parameters(self) -> None:
        """Re-draw every parameter (normal weights, zero biases, LayerNorm g=1 b=0)."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()


# ---------------------------------------------------------------------------------------------
# encoders


class CLIPImageEncoder(_Encoder):
    """Noised-CLIP image tower: images in [-1, 1] at noise level t -> raw (N, n_embd) embedding.

    The first token is the timestep embedding `w_t[t]` (in place of CLIP's class token); the
    output is the projection of the final-LayerNorm'd first token.
    """

    def __init__(self, cfg: NoisedCLIPConfig) -> None:
        super().__init__(
            ImageEmbedding(cfg), cfg.image_width, cfg.n_head_image, cfg.n_xf_blocks_image, cfg.n_embd, causal=False
        )
        self.config = cfg

    def forward(self, images: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """`images` (N,3,S,S) in [-1, 1], `timesteps` int64 (N,) original timesteps."""
        h = self.blocks["input"]((images + 1) * 127.5, timesteps)
        h = self._trunk(h)
        return self.blocks["output"](h[:, 0])


class CLIPTextEncoder(_Encoder):
    """Noised-CLIP text tower: causal transformer over CLIP BPE tokens -> raw (N, n_embd),
    read at the end-of-text position `text_len - 1`."""

    def __init__(self, cfg: NoisedCLIPConfig) -> None:
        super().__init__(
            TextEmbedding(cfg), cfg.text_width, cfg.n_head_text, cfg.n_xf_blocks_text, cfg.n_embd, causal=True
        )
        self.config = cfg

    def forward(self, tokens: torch.Tensor, text_len: torch.Tensor) -> torch.Tensor:
        """`tokens` int64 (N, max_text_len) (SOT, BPE, EOT, zero padding); `text_len` (N,)
        counts SOT and EOT."""
        text_len = torch.as_tensor(text_len, device=tokens.device).long().reshape(-1)
        if text_len.shape[0] != tokens.shape[0]:
            raise ValueError(f"{tokens.shape[0]} token rows but {text_len.shape[0]} text lengths")
        if bool((text_len < 1).any()) or bool((text_len > tokens.shape[1]).any()):
            raise ValueError(f"text_len must lie in [1, {tokens.shape[1]}], got {text_len.tolist()}")
        h = self._trunk(self.blocks["input"](tokens))
        h = h[torch.arange(h.shape[0], device=h.device), text_len - 1]
        return self.blocks["output"](h)


# ---------------------------------------------------------------------------------------------
# the pair


def _normalize(z: torch.Tensor) -> torch.Tensor:
    """`z / (||z||_2 + 1e-12)` per row (the reference's normalisation, not F.normalize)."""
    return z / (z.norm(dim=-1, keepdim=True) + 1e-12)


class NoisedCLIP(nn.Module):
    """Both encoders plus the fixed `logit_scale` buffer (float32 `log(cfg.logit_scale)`).

    Official weights: `clip.image_encoder.load_state_dict(<clip_image_enc.pt>)` and
    `clip.text_encoder.load_state_dict(<clip_text_enc.pt>)`.
    """

    def __init__(self, cfg: NoisedCLIPConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or NoisedCLIPConfig()
        self.config = cfg
        self.image_encoder = CLIPImageEncoder(cfg)
        self.text_encoder = CLIPTextEncoder(cfg)
        self.register_buffer("logit_scale", torch.tensor(math.log(cfg.logit_scale), dtype=torch.float32))

    @classmethod
    def from_encoders(cls, image_encoder: "CLIPImageEncoder", text_encoder: "CLIPTextEncoder", cfg: NoisedCLIPConfig) -> "NoisedCLIP":
        """Assemble from two loaded encoders (OpenAI ships them as separate checkpoints)."""
        clip = cls.__new__(cls)
        nn.Module.__init__(clip)
        clip.config = cfg
        clip.image_encoder, clip.text_encoder = image_encoder, text_encoder
        device = next(image_encoder.parameters()).device
        clip.register_buffer("logit_scale", torch.tensor(math.log(cfg.logit_scale), dtype=torch.float32, device=device))
        return clip

    def image_embeddings(self, images: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings of `images` in [-1, 1] at original timesteps `t`."""
        return _normalize(self.image_encoder(images, t))

    def text_embeddings(self, tokens: torch.Tensor, text_len: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings of CLIP tokens."""
        return _normalize(self.text_encoder(tokens, text_len))

    def cond_fn(
        self, tokens: torch.Tensor, text_len: torch.Tensor, grad_scale: float
    ) -> Callable[..., torch.Tensor]:
        """The CLIP-guidance gradient as a function `fn(x, t) -> grad` (vectors README s.5.6).

        The text embeddings are computed once, here. `fn(x, t)` takes the noisy sample x_t in
        [-1, 1] and the original timesteps t (not respaced indices), and returns

            grad_scale * d/dx [ exp(logit_scale) * sum_rows <z_text, z_image(x, t)> ]

        with the same shape as x. Text rows must equal x's rows, or be one row shared by all.
        Extra keyword arguments (e.g. a sampler's model_kwargs) are accepted and ignored. It
        enables grad itself, so samplers may call it under `torch.no_grad()`.
        """
        with torch.no_grad():
            z_t = self.text_embeddings(tokens, text_len)

        def fn(x: torch.Tensor, t: torch.Tensor, **_ignored) -> torch.Tensor:
            if z_t.shape[0] not in (1, x.shape[0]):
                raise ValueError(f"{z_t.shape[0]} prompts for a batch of {x.shape[0]} samples")
            with torch.enable_grad():
                x_in = x.detach().clone().requires_grad_(True)
                z_i = self.image_embeddings(x_in, t)
                loss = torch.exp(self.logit_scale.float()) * (z_t * z_i).sum()
                (grad,) = torch.autograd.grad(loss, x_in)
            return grad.detach() * grad_scale

        return fn


__all__ = ["CLIPImageEncoder", "CLIPTextEncoder", "NoisedCLIP", "CLIP_PIXEL_MEANS", "CLIP_PIXEL_STDS"]
