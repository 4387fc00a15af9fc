"""Small building blocks shared by glidekit's networks (no diffusion knowledge here)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back, with GLIDE's optional fused SiLU (`swish`)."""

    def __init__(self, num_channels: int, swish: bool = False, num_groups: int = 32, eps: float = 1e-5):
        super().__init__(num_groups, num_channels, eps=eps)
        self.swish = swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            if x.dtype == torch.bfloat16 and x.device.type == "cpu" and not torch.is_grad_enabled():
                # bf16 inference on CPU: PyTorch's mixed-type kernel reads bf16 and accumulates the
                # statistics in float32, so this is the float32 path rounded to bf16 (GLIDE also
                # casts back before its SiLU) without float32 copies of the activation: 1.07x on
                # an upsampler step (BENCHMARKS.md). Not for training: its backward measured slower.
                y = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
                return F.silu(y, inplace=True) if self.swish else y
            y = super().forward(x.float())
            if self.swish:
                y = F.silu(y)
        return y.to(x.dtype)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back to the input dtype (GLIDE `xf.LayerNorm`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            y = super().forward(x.float())
        return y.to(x.dtype)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, cos half first (DDPM / ADM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters: residual branches then start as the identity (ADM)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


# Fused attention switch. Off by default so the reference path keeps guided-diffusion's exact order
# of operations; `glidekit.runtime.prepare_for_inference` turns it on (see there for timings).
_FUSED_ATTENTION = False


def set_fused_attention(enabled: bool) -> bool:
    """Use `F.scaled_dot_product_attention` in `qk_attention`; returns the previous setting."""
    global _FUSED_ATTENTION
    previous, _FUSED_ATTENTION = _FUSED_ATTENTION, bool(enabled)
    return previous


def fused_attention_enabled() -> bool:
    return _FUSED_ATTENTION


def qk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over (batch, channels, length) tensors, softmax in float32.

    As in guided-diffusion's QKVAttentionLegacy, q and k are each scaled by d**-1/4 before the
    product, which keeps float16 products in range; the numbers match GLIDE to float rounding.
    With `set_fused_attention(True)` the same function is computed by PyTorch's fused kernel
    (one 1/sqrt(d) scale, online softmax): equal up to float rounding, never materialising the
    (length x length) weights.
    """
    if _FUSED_ATTENTION:
        # The fused CPU kernel needs 4-D inputs whose last (channel) dimension has stride 1;
        # without the copies PyTorch silently falls back to the unfused maths.
        q, k, v = (a.transpose(1, 2).contiguous()[None] for a in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v)[0].transpose(1, 2)
    scale = 1.0 / math.sqrt(math.sqrt(q.shape[1]))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
    return torch.einsum("bts,bcs->bct", weight, v)


# ---------------------------------------------------------------------------------------------
# Winograd 3x3 convolution for the float32 CPU inference path
#
# Lavin & Gray 2016 ("Fast Algorithms for Convolutional Neural Networks"): F(m x m, 3 x 3)
# computes each m x m output tile from an (m+2) x (m+2) input tile with (m+2)^2 multiplications
# per channel pair instead of 9 m^2: 2.25x fewer for F(2x2, 3x3), 4x fewer for F(4x4, 3x3).
# Written as (m+2)^2 batched GEMMs over tiles, with the weights transformed once and cached. On
# an AVX2 CPU without fast bf16 the direct oneDNN convolution already runs near the GEMM rate,
# so fewer multiplications is what is left to gain (timings in `glidekit.runtime`).

# (B^T, G, A^T) (Lavin & Gray s.4; Toom-Cook with the point at infinity). F2: points 0, +-1.
# F4: points 0, +-1, 1/2, -2 instead of Lavin & Gray's 0, +-1, +-2: the same cost and 2.5x less
# float32 error (max 3.8e-6 instead of 9.6e-6 of the output's max on a 192-channel layer, where
# the direct convolution has ~2e-6); the point choice of Barabasz et al. 2020, "Error analysis
# and improving the accuracy of Winograd convolution for deep neural networks".
_WINOGRAD = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    4: (
        [
            [1, -1.5, -2, 1.5, 1, 0],
            [0, -1, 0.5, 2.5, 1, 0],
            [0, 1, -2.5, 0.5, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 0.5, -1, -0.5, 1, 0],
            [0, 1, -1.5, -2, 1.5, 1],
        ],
        [
            [1, 0, 0],
            [1 / 3, 1 / 3, 1 / 3],
            [-1 / 3, 1 / 3, -1 / 3],
            [-16 / 15, -8 / 15, -4 / 15],
            [1 / 15, -2 / 15, 4 / 15],
            [0, 0, 1],
        ],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 0.5, -2, 0], [0, 1, 1, 0.25, 4, 0], [0, 1, -1, 0.125, -8, 1]],
    ),
}
# Target number of tiles (times batch) per chunk: the chunk's transformed tiles then stay in cache
# and the batched GEMMs are still large enough to run at full rate.
_WINOGRAD_CHUNK_TILES = 512
# Below this many input or output channels the transforms cost more than the products save
# (GLIDE's 3 -> 192 input conv: 13 ms direct, 73 ms Winograd; 192 -> 6 output conv: 43 vs 157
# ms at 256 px; 64 -> 64 at 256 px: a draw).
_WINOGRAD_MIN_CHANNELS = 128


def _nonzero_terms(matrix) -> list[list[tuple[int, float]]]:
    return [[(j, float(c)) for j, c in enumerate(row) if c != 0] for row in matrix]


_WINOGRAD_TERMS = {m: (_nonzero_terms(bt), _nonzero_terms(at)) for m, (bt, _, at) in _WINOGRAD.items()}
_WINOGRAD_G_TERMS = {m: _nonzero_terms(g) for m, (_, g, _) in _WINOGRAD.items()}


def _lincomb(out: torch.Tensor, terms: list[tuple[int, float]], src) -> None:
    """out = sum_j c_j src(j) over the nonzero terms, written in place (one pass per term)."""
    (j0, c0), rest = terms[0], terms[1:]
    if rest and c0 == 1.0:
        (j1, c1), rest = rest[0], rest[1:]
        torch.add(src(j0), src(j1), alpha=c1, out=out)
    elif rest and c0 == -1.0 and rest[0][1] == 1.0:
        (j1, _), rest = rest[0], rest[1:]
        torch.sub(src(j1), src(j0), out=out)
    else:
        torch.mul(src(j0), c0, out=out)
    for j, c in rest:
        out.add_(src(j), alpha=c)


def winograd_weight(weight: torch.Tensor, tile: int) -> torch.Tensor:
    """G g G^T of a (O, I, 3, 3) kernel: ((tile+2)^2, I, O), the layout `winograd_conv3x3` takes.

    Separable, in place over contiguous (I, O) planes; G's entries make each output a sum of at
    most 9 terms (float32 rounding ~1e-7 relative).
    """
    g = _WINOGRAD_G_TERMS[tile]
    a = tile + 2
    o, i = weight.shape[:2]
    w = weight.detach().permute(2, 3, 1, 0).contiguous()  # (3, 3, I, O)
    r = weight.new_empty(a, 3, i, o)
    for p in range(a):  # G g over the kernel rows
        for l in range(3):
            _lincomb(r[p, l], g[p], lambda k: w[k, l])
    u = weight.new_empty(a, a, i, o)
    for p in range(a):  # (G g) G^T over the kernel columns
        for q in range(a):
            _lincomb(u[p, q], g[q], lambda l: r[p, l])
    return u.view(a * a, i, o)


def winograd_conv3x3(
    x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None, tile: int = 2
) -> torch.Tensor:
    """3x3 convolution, stride 1, zero padding 1, with F(tile x tile, 3x3) Winograd.

    `x` is (B, C, H, W) with H and W multiples of `tile` (any memory format; channels_last is
    read without a copy); `u` comes from `winograd_weight`. Returns a channels_last tensor.
    Works through the image a few tile rows at a time so that the transformed tiles stay in
    cache, writing each output row block in place; each transform stage is one strided
    elementwise op per nonzero coefficient, over all tiles of the chunk at once.
    """
    m, a = tile, tile + 2
    bt, at = _WINOGRAD_TERMS[m]
    B, C, H, W = x.shape
    O = u.shape[2]
    th, tw = H // m, W // m
    xh = x.permute(0, 2, 3, 1)  # NHWC view (contiguous when x is channels_last)
    out = x.new_empty(B, H, W, O)
    R = max(1, min(th, _WINOGRAD_CHUNK_TILES // (B * tw)))
    # Chunk of padded input rows: R tile rows need m R + 2 rows; columns 0 and W+1 stay zero.
    xp = x.new_empty(B, m * R + 2, W + 2, C)
    xp[:, :, 0].zero_()
    xp[:, :, W + 1].zero_()
    # Flat buffers, viewed per chunk so a shorter last chunk still gets contiguous tensors.
    t_buf = x.new_empty(a * B * R * (W + 2) * C)
    v_buf = x.new_empty(a * a * B * R * tw * C)
    m_buf = x.new_empty(a * a * B * R * tw * O)
    p_buf = x.new_empty(m * a * B * R * tw * O)
    bias = bias.to(out.dtype) if bias is not None else None
    for i0 in range(0, th, R):
        r = min(R, th - i0)
        n = B * r * tw
        lo, hi = m * i0 - 1, m * (i0 + r) + 1  # image rows of the padded chunk, [lo, hi)
        src_lo, src_hi = max(lo, 0), min(hi, H)
        rows = xp[:, : hi - lo]
        if lo < 0:
            rows[:, 0].zero_()
        if hi > H:
            rows[:, -1].zero_()
        rows[:, src_lo - lo : src_hi - lo, 1 : W + 1].copy_(xh[:, src_lo:src_hi])
        t = t_buf[: a * B * r * (W + 2) * C].view(a, B, r, W + 2, C)
        for p in range(a):  # B^T d over the tile rows
            _lincomb(t[p], bt[p], lambda j: rows[:, j : j + m * (r - 1) + 1 : m])
        v = v_buf[: a * a * n * C].view(a, a, B, r, tw, C)
        for q in range(a):  # (B^T d) B over the tile columns
            _lincomb(v[:, q], bt[q], lambda s: t[:, :, :, s : s + m * (tw - 1) + 1 : m])
        mm = m_buf[: a * a * n * O].view(a * a, n, O)
        torch.bmm(v.view(a * a, n, C), u, out=mm)  # the (tile+2)^2 products, the bulk of the work
        mv = mm.view(a, a, B, r, tw, O)
        p_ = p_buf[: m * a * n * O].view(m, a, B, r, tw, O)
        for i in range(m):  # A^T M over the tile rows
            _lincomb(p_[i], at[i], lambda k: mv[k])
        # (A^T M) A over the tile columns, straight into the output rows of this chunk
        dst = out[:, m * i0 : m * (i0 + r)].view(B, r, m, tw, m, O)
        for j in range(m):
            _lincomb(dst[:, :, :, :, j].permute(2, 0, 1, 3, 4), at[j], lambda q: p_[:, q])
        if bias is not None:
            dst.add_(bias)
    return out.permute(0, 3, 1, 2)


def winograd_tile_for(height: int, width: int) -> int:
    """The faster tile for an image size: F(4x4, 3x3) from 16 px up, F(2x2, 3x3) below.

    Measured per layer (benchmarks/bench_conv.py, 1 thread, AVX2): F4 is 1.2-1.5x faster than
    F2 at 16-256 px, while at 8 px (2 x 2 tiles of 6 x 6 per image) its transforms cost more
    than its products save (15.1 vs 11.8 ms for 768 channels, batch 2).
    """
    if height % 4 == 0 and width % 4 == 0 and min(height, width) >= 16:
        return 4
    if height % 2 == 0 and width % 2 == 0:
        return 2
    return 0


class WinogradConv2d(nn.Conv2d):
    """An `nn.Conv2d` that runs 3x3 stride-1 float32 CPU inference with Winograd.

    Same parameters and state dict as `nn.Conv2d`; `glidekit.runtime.prepare_for_inference`
    switches a model's convolutions to it in place (`__class__`). Everything it does not cover
    (other kernels, strides or devices, autocast, gradients, odd sizes) goes to `nn.Conv2d`.
    The transformed weights are cached and recomputed when the weight tensor changes.
    """

    # 2 or 4: F(2x2, 3x3) or F(4x4, 3x3) everywhere; "auto": `winograd_tile_for`; 0: off.
    winograd_tile: int | str = "auto"

    def _tile(self, x: torch.Tensor) -> int:
        m = self.winograd_tile
        return winograd_tile_for(x.shape[-2], x.shape[-1]) if m == "auto" else m

    def _winograd_applies(self, x: torch.Tensor, m: int) -> bool:
        return (
            m in _WINOGRAD
            and self.kernel_size == (3, 3)
            and self.stride == (1, 1)
            and self.padding == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
            and min(self.in_channels, self.out_channels) >= _WINOGRAD_MIN_CHANNELS
            and self.padding_mode == "zeros"
            and x.dim() == 4
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and x.shape[-2] % m == 0
            and x.shape[-1] % m == 0
            and not torch.is_autocast_enabled("cpu")
            and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
        )

    def _winograd_weight(self, tile: int) -> torch.Tensor:
        w = self.weight
        key = (w.data_ptr(), w._version, w.device)
        cache = self.__dict__.setdefault("_winograd_cache", {})  # tile -> (key, weights)
        if tile not in cache or cache[tile][0] != key:
            cache[tile] = (key, winograd_weight(w, tile))
        return cache[tile][1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self._tile(x) if x.dim() == 4 else 0
        if self._winograd_applies(x, m):
            return winograd_conv3x3(x, self._winograd_weight(m), self.bias, m)
        return super().forward(x)
