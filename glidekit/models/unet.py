"""GLIDE's text-conditional UNet (glide-text2im `unet.py` + `text2im_model.py`).

One class covers the four official variants: base, super-resolution, inpainting and
super-resolution inpainting differ only in extra input channels (`UNetConfig.super_res`,
`UNetConfig.inpaint`). Parameter names and shapes equal OpenAI's, so official state dicts load
with `strict=True`. The model returns its raw output (eps and variance values, 2x3 channels);
turning that into a denoiser is the diffusion code's job.

Class conditioning (guided-diffusion's `label_emb`, Dhariwal & Nichol 2021) is one more option,
`UNetConfig.num_classes`; it adds no parameter when unset, so the official models are unchanged.
The encoder half is built by `build_encoder` / `build_middle`, which the noisy classifier
(`models/classifier.py`) shares.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import UNetConfig
from .layers import GroupNorm32, LayerNorm32, qk_attention, timestep_embedding, zero_module
from .minilm import MINILM_WIDTH, pretrained_text_encoder
from .text import Transformer


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W): each pixel's centre x (channel 0, left to right) and y (channel 1, top to
    bottom) in [-1, 1], in x's dtype (CoordConv, Liu et al. 2018)."""
    n, _, h, w = x.shape
    ys = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) * (2 / h) - 1
    xs = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) * (2 / w) - 1
    grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)])
    return grid.to(x.dtype)[None].expand(n, 2, h, w)


class Downsample(nn.Module):
    """Strided-conv downsampling (used only when `resblock_updown` is False)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb=None, xf_out=None) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2 then conv (used only when `resblock_updown` is False)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor, emb=None, xf_out=None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep(+text) embedding (ADM, Dhariwal & Nichol 2021).

    With `scale_shift` the embedding modulates the second norm as GN(h)*(1+scale)+shift (AdaGN).
    `resample` = "up"/"down" resamples inside the block (nearest x2 / 2x2 average pool).
    The `nn.Identity` placeholders keep OpenAI's sub-module indices (`in_layers.2`, `out_layers.3`).
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int,
        dropout: float,
        scale_shift: bool,
        resample: str | None = None,
    ):
        super().__init__()
        self.scale_shift = scale_shift
        self.resample = resample
        self.in_layers = nn.Sequential(GroupNorm32(channels, swish=True), nn.Identity(), conv3x3(channels, out_channels))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if scale_shift else out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels, swish=not scale_shift),
            nn.SiLU() if scale_shift else nn.Identity(),
            nn.Dropout(p=dropout),
            zero_module(conv3x3(out_channels, out_channels)),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor, xf_out=None) -> torch.Tensor:
        h = self.in_layers[0](x)
        h = self.in_layers[2](self._resample(h))
        x = self._resample(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.scale_shift:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention whose keys/values also include the text tokens (GLIDE).

    Text keys/values (`encoder_kv` of the transformer output) come before the image ones; the
    fused qkv is laid out per head as [q_h | k_h | v_h] (guided-diffusion's legacy order).
    """

    def __init__(self, channels: int, heads: int, encoder_channels: int | None):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention channels {channels} not divisible by {heads} heads")
        self.heads = heads
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.encoder_kv = nn.Conv1d(encoder_channels, channels * 2, 1) if encoder_channels else None
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb=None, xf_out: torch.Tensor | None = None) -> torch.Tensor:
        b, c, *spatial = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, -1))
        ch = c // self.heads
        q, k, v = qkv.reshape(b * self.heads, 3 * ch, -1).split(ch, dim=1)
        if self.encoder_kv is not None and xf_out is not None:
            ekv = self.encoder_kv(xf_out).to(qkv.dtype)
            ek, ev = ekv.reshape(b * self.heads, 2 * ch, -1).split(ch, dim=1)
            k = torch.cat([ek, k], dim=-1)
            v = torch.cat([ev, v], dim=-1)
        a = qk_attention(q, k, v).reshape(b, c, -1)
        return x + self.proj_out(a).reshape(b, c, *spatial)


class TimestepEmbedSequential(nn.Sequential):
    """Passes the embedding to ResBlocks and the text tokens to attention blocks."""

    grad_checkpointing = False

    def _run(self, h: torch.Tensor, emb: torch.Tensor, xf_out: torch.Tensor | None) -> torch.Tensor:
        for layer in self:
            h = layer(h) if isinstance(layer, nn.Conv2d) else layer(h, emb, xf_out)
        return h

    def forward(self, h: torch.Tensor, emb: torch.Tensor, xf_out: torch.Tensor | None = None) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(self._run, h, emb, xf_out, use_reentrant=False)
        return self._run(h, emb, xf_out)


class BlockFactory:
    """Makes the UNet's ResBlocks and attention blocks with one model's shared settings.

    Used by `GlideUNet` and by the noisy classifier (`models/classifier.py`), whose encoder is
    the UNet's encoder half. Heads: `head_channels` per head if not -1, else `num_heads` (and
    `num_heads_upsample`, -1 = `num_heads`, in the decoder).
    """

    def __init__(
        self,
        emb_channels: int,
        dropout: float,
        scale_shift: bool,
        head_channels: int,
        *,
        num_heads: int = 1,
        num_heads_upsample: int = -1,
        encoder_channels: int | None = None,
    ):
        self.emb_channels = emb_channels
        self.dropout = dropout
        self.scale_shift = scale_shift
        self.head_channels = head_channels
        self.num_heads = num_heads
        self.num_heads_upsample = num_heads_upsample
        self.encoder_channels = encoder_channels

    def heads(self, ch: int, decoder: bool = False) -> int:
        if self.head_channels != -1:
            return ch // self.head_channels
        if decoder and self.num_heads_upsample != -1:
            return self.num_heads_upsample
        return self.num_heads

    def res(self, cin: int, cout: int, resample: str | None = None) -> ResBlock:
        return ResBlock(cin, self.emb_channels, cout, self.dropout, self.scale_shift, resample)

    def attn(self, ch: int, decoder: bool = False) -> AttentionBlock:
        return AttentionBlock(ch, self.heads(ch, decoder), self.encoder_channels)


def build_encoder(
    blocks: BlockFactory,
    *,
    in_channels: int,
    model_channels: int,
    channel_mult: tuple[int, ...],
    num_res_blocks: int,
    attention_ds: set[int],
    resblock_updown: bool,
) -> tuple[nn.ModuleList, list[int], int, int]:
    """The UNet's input (encoder) blocks, as in ADM / GLIDE.

    A 3x3 conv, then per level `num_res_blocks` ResBlocks (each followed by attention when the
    downsample factor is in `attention_ds`) and a downsampling block except after the last
    level. Returns `(input_blocks, skip_channels, channels, downsample_factor)`: the channels of
    every block's output (what the decoder concatenates) and the final channels and factor.
    """
    ch = channel_mult[0] * model_channels
    input_blocks = nn.ModuleList([TimestepEmbedSequential(conv3x3(in_channels, ch))])
    skip_chans = [ch]
    ds = 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            layers: list[nn.Module] = [blocks.res(ch, mult * model_channels)]
            ch = mult * model_channels
            if ds in attention_ds:
                layers.append(blocks.attn(ch))
            input_blocks.append(TimestepEmbedSequential(*layers))
            skip_chans.append(ch)
        if level != len(channel_mult) - 1:
            down = blocks.res(ch, ch, "down") if resblock_updown else Downsample(ch)
            input_blocks.append(TimestepEmbedSequential(down))
            skip_chans.append(ch)
            ds *= 2
    return input_blocks, skip_chans, ch, ds


def build_middle(blocks: BlockFactory, ch: int) -> TimestepEmbedSequential:
    """The middle block: ResBlock, attention, ResBlock at the lowest resolution."""
    return TimestepEmbedSequential(blocks.res(ch, ch), blocks.attn(ch), blocks.res(ch, ch))


TEXT_TOWER = ("token_embedding.", "text_in.", "positional_embedding", "padding_embedding", "transformer.", "final_ln.")
"""State-dict key prefixes of GlideUNet's text transformer and its embeddings (not
`transformer_proj` or the attention layers' `encoder_kv`, which belong to the UNet)."""


class GlideUNet(nn.Module):
    """Text-conditional UNet. `forward(x, t, tokens, mask, ...) -> (N, out_channels, H, W)`.

    `t` holds original (unrespaced) integer timesteps. Conditioning inputs by variant:
    text (`tokens`, `mask` or a precomputed `text_emb` from `encode_text`), super-res
    (`low_res`, any size, resized bilinearly), inpaint (`inpaint_image`, `inpaint_mask` with
    1 = known pixel; zeros when omitted, as GLIDE), class (`y`, long labels in
    [0, num_classes], when `cfg.num_classes` is set: `label_emb(y)` is added to the time
    embedding; index `num_classes` is the null class and `y=None` means the null class for every
    row). Text and class conditioning combine when both are configured.
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        mc = cfg.model_channels
        emb_dim = mc * 4
        xf = cfg.text
        enc_ch = xf.width if xf is not None else None
        attn_ds = {cfg.image_size // r for r in cfg.attention_resolutions}

        blocks = BlockFactory(
            emb_dim, cfg.dropout, cfg.use_scale_shift_norm, cfg.num_head_channels,
            num_heads=cfg.num_heads, num_heads_upsample=cfg.num_heads_upsample, encoder_channels=enc_ch,
        )

        if xf is not None and xf.padding:
            # Raw parameters first, as in OpenAI's state_dict order.
            self.positional_embedding = nn.Parameter(torch.empty(xf.text_ctx, xf.width))
            self.padding_embedding = nn.Parameter(torch.empty(xf.text_ctx, xf.width))
        elif xf is not None:
            self.positional_embedding = nn.Parameter(torch.empty(xf.text_ctx, xf.width))
            self.padding_embedding = None

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if cfg.num_classes is not None:
            # guided-diffusion's class embedding (same place in the state dict), plus one row for
            # the null class (index num_classes) that classifier-free guidance conditions on.
            self.label_emb = nn.Embedding(cfg.num_classes + 1, emb_dim)

        self.input_blocks, skip_chans, ch, ds = build_encoder(
            blocks,
            in_channels=cfg.in_channels,
            model_channels=mc,
            channel_mult=cfg.channel_mult,
            num_res_blocks=cfg.num_res_blocks,
            attention_ds=attn_ds,
            resblock_updown=cfg.resblock_updown,
        )
        self.middle_block = build_middle(blocks, ch)

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [blocks.res(ch + skip_chans.pop(), mult * mc)]
                ch = mult * mc
                if ds in attn_ds:
                    layers.append(blocks.attn(ch, decoder=True))
                if level and i == cfg.num_res_blocks:
                    layers.append(blocks.res(ch, ch, "up") if cfg.resblock_updown else Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch, swish=True), nn.Identity(), zero_module(conv3x3(ch, cfg.out_channels))
        )

        if xf is not None:
            self.transformer = Transformer(xf.width, xf.layers, xf.heads)
            self.final_ln = LayerNorm32(xf.width) if xf.final_ln else None
            if xf.pretrained:
                # A frozen pretrained encoder replaces the token embedding; its weights are not
                # this module's (models/minilm.py).
                self.text_in = nn.Linear(MINILM_WIDTH, xf.width)
            else:
                self.token_embedding = nn.Embedding(xf.n_vocab, xf.width)
            self.transformer_proj = nn.Linear(xf.width, emb_dim)
            # OpenAI ships no training code and leaves the position embeddings uninitialised
            # (torch.empty). Initialise as CLIP and GPT-2 do: tokens N(0, 0.02), positions
            # N(0, 0.01). With nn.Embedding's N(0, 1) tokens the positions start 100x weaker and
            # the trained transformer stays a bag of words ("a red circle above a blue square"
            # and "... below ..." encode alike: docs/architecture.md, Training).
            if not xf.pretrained:
                nn.init.normal_(self.token_embedding.weight, std=0.02)
            nn.init.normal_(self.positional_embedding, std=0.01)
            if self.padding_embedding is not None:
                nn.init.normal_(self.padding_embedding, std=0.01)

    @property
    def null_class(self) -> int | None:
        """The label of the null class (the unconditional row of classifier-free guidance), or
        None for a model without class conditioning."""
        return self.cfg.num_classes

    # -----------------------------------------------------------------------------------------

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory during training."""
        for m in self.modules():
            if isinstance(m, TimestepEmbedSequential):
                m.grad_checkpointing = enabled
        if self.cfg.text is not None:
            self.transformer.grad_checkpointing = enabled

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Run the text transformer once: {"xf_proj": (N, 4C), "xf_out": (N, width, ctx)}.

        Pass the result as `text_emb=` to `forward` to reuse it across sampling steps.
        """
        if self.cfg.text.pretrained:
            with torch.no_grad():
                feats = pretrained_text_encoder(self.cfg.text.pretrained, tokens.device)(tokens.long())
            xf_in = self.text_in(feats) + self.positional_embedding[None]
        else:
            xf_in = self.token_embedding(tokens.long()) + self.positional_embedding[None]
        if self.padding_embedding is not None:
            if mask is None:
                raise ValueError("this model uses padding embeddings: pass the text mask with the tokens")
            xf_in = torch.where(mask[..., None], xf_in, self.padding_embedding[None].to(xf_in.dtype))
        xf_out = self.transformer(xf_in)
        if self.final_ln is not None:
            xf_out = self.final_ln(xf_out)
        # GLIDE conditions the time embedding on the *last* position (usually a padding token).
        xf_proj = self.transformer_proj(xf_out[:, -1])
        return {"xf_proj": xf_proj, "xf_out": xf_out.permute(0, 2, 1)}

    def _labels(self, y: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """Class labels as a long tensor of one label per row; None -> the null class."""
        if y is None:
            return torch.full((x.shape[0],), self.cfg.num_classes, dtype=torch.long, device=x.device)
        y = torch.as_tensor(y, device=x.device)
        if y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
            raise ValueError(
                f"y must hold one integer class label per row ({x.shape[0]}), got shape "
                f"{tuple(y.shape)} of {y.dtype}"
            )
        return y.long()

    def _model_input(self, x, low_res, inpaint_image, inpaint_mask) -> torch.Tensor:
        parts = [x]
        if self.cfg.inpaint:
            if inpaint_image is None:
                inpaint_image = torch.zeros_like(x)
            if inpaint_mask is None:
                inpaint_mask = torch.zeros_like(x[:, :1])
            parts += [inpaint_image * inpaint_mask, inpaint_mask]
        if self.cfg.super_res:
            if low_res is None:
                raise ValueError("super-resolution model needs low_res")
            parts.append(F.interpolate(low_res, x.shape[-2:], mode="bilinear", align_corners=False))
        if self.cfg.coords:
            parts.append(coordinate_channels(x))
        return torch.cat([p.to(x.dtype) for p in parts], dim=1) if len(parts) > 1 else x

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        tokens: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        text_emb: dict[str, torch.Tensor] | None = None,
        low_res: torch.Tensor | None = None,
        inpaint_image: torch.Tensor | None = None,
        inpaint_mask: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.cfg.model_channels).to(x.dtype))
        if self.cfg.num_classes is not None:
            emb = emb + self.label_emb(self._labels(y, x)).to(emb.dtype)
        elif y is not None:
            raise ValueError("this model is not class-conditional (UNetConfig.num_classes is None); do not pass y")
        xf_out = None
        if self.cfg.text is not None:
            if text_emb is None:
                if tokens is None:
                    raise ValueError("text-conditional model needs tokens (or text_emb)")
                text_emb = self.encode_text(tokens, mask)
            emb = emb + text_emb["xf_proj"].to(emb.dtype)
            xf_out = text_emb["xf_out"]
        h = self._model_input(x, low_res, inpaint_image, inpaint_mask)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb, xf_out)
            skips.append(h)
        h = self.middle_block(h, emb, xf_out)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, xf_out)
        return self.out(h)


def deepened_state_dict(sd: dict[str, torch.Tensor], model: GlideUNet, src_blocks: int) -> dict[str, torch.Tensor]:
    """`sd`, the state dict of a UNet with `src_blocks` ResBlocks per level, laid out for `model`,
    the same UNet with more (`model.cfg.num_res_blocks`), so that `model` computes exactly what the
    source did: a function-preserving start for training a deeper model from a trained shallower
    one (Net2Net's "deeper" operator, Chen et al. 2016, here with GLIDE's zero-initialised residuals).

    Encoder: level l's blocks keep their weights; the added ones (after them) keep `model`'s fresh
    initialisation, whose zeroed output conv (and zeroed attention projection) makes each an
    identity, so every skip they emit equals the last old block's. Decoder: the old first block of
    a level stays first, the added ones follow it, then the old remaining blocks (their skips line
    up again); an added decoder block gets its skip connection set to [I | 0], which passes its
    input through and ignores the concatenated skip. Tensors outside the two block lists are
    `sd`'s unchanged.
    """
    n, m = src_blocks, model.cfg.num_res_blocks
    if not 1 <= n <= m:
        raise ValueError(f"can only deepen from 1..{m} ResBlocks per level, not {n}")
    own = model.state_dict()
    levels = len(model.cfg.channel_mult)

    def encoder(i: int) -> int:  # old input-block index -> new
        if i == 0:
            return 0
        level, r = divmod(i - 1, n + 1)
        return 1 + level * (m + 1) + (r if r < n else m)

    def decoder(i: int) -> int:  # old output-block index -> new
        q, r = divmod(i, n + 1)
        return q * (m + 1) + (r if r == 0 else r + m - n)

    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        part, _, rest = key.partition(".")
        if part in ("input_blocks", "output_blocks"):
            index, _, tail = rest.partition(".")
            new = (encoder if part == "input_blocks" else decoder)(int(index))
            out[f"{part}.{new}.{tail}"] = t
        else:
            out[key] = t
    for key, t in own.items():
        if key in out:
            continue
        if key.startswith("input_blocks."):
            out[key] = t
            continue
        q, r = divmod(int(key.split(".")[1]), m + 1)
        if not (key.startswith("output_blocks.") and 1 <= r <= m - n and q < levels):
            raise ValueError(f"{key} has no counterpart in the {n}-block source")
        if key.endswith(".0.skip_connection.weight"):
            w = torch.zeros_like(t)
            w[:, : t.shape[0], 0, 0] = torch.eye(t.shape[0], dtype=t.dtype)
            out[key] = w
        elif key.endswith(".0.skip_connection.bias"):
            out[key] = torch.zeros_like(t)
        else:
            out[key] = t
    return out
