"""Noisy classifier for classifier guidance (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs").

`NoisyClassifier` is guided-diffusion's `EncoderUNetModel`: the UNet's encoder half and middle
block (built by the same `build_encoder` / `build_middle` as `GlideUNet`, so the blocks and their
state-dict names are the UNet's), then a pooling head to `num_classes` logits. It is trained with
cross-entropy on noised samples q(x_t | x_0) at random timesteps t and knows nothing about
diffusion itself; guidance with it is `glidekit.sampling.guidance.classifier_cond_fn`.

Parameter names follow guided-diffusion (`time_embed`, `input_blocks`, `middle_block`, `out.0`
norm, `out.2` AttentionPool2d with `positional_embedding`, `qkv_proj`, `c_proj`), so a
guided-diffusion classifier with integer channel multipliers and the attention or adaptive pool
has the same keys.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ClassifierConfig
from .layers import GroupNorm32, qk_attention, timestep_embedding, zero_module
from .unet import BlockFactory, TimestepEmbedSequential, build_encoder, build_middle


class AttentionPool2d(nn.Module):
    """CLIP's attention pooling (Radford et al. 2021), as guided-diffusion's `AttentionPool2d`.

    The feature map (N, C, H, W) becomes H*W tokens; their mean is prepended as a query token,
    a learned positional embedding is added, one multi-head self-attention runs (fused qkv laid
    out [Q | K | V], guided-diffusion's "new" order) and token 0 is projected to `out_channels`.
    """

    def __init__(self, spatial: int, channels: int, head_channels: int, out_channels: int):
        super().__init__()
        if channels % head_channels:
            raise ValueError(f"pool channels {channels} not divisible by head size {head_channels}")
        self.spatial = spatial
        self.heads = channels // head_channels
        self.positional_embedding = nn.Parameter(torch.randn(channels, spatial**2 + 1) / channels**0.5)
        self.qkv_proj = nn.Conv1d(channels, 3 * channels, 1)
        self.c_proj = nn.Conv1d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *size = x.shape
        if tuple(size) != (self.spatial, self.spatial):
            raise ValueError(
                f"attention pool was built for {self.spatial}x{self.spatial} features, got "
                f"{'x'.join(map(str, size))}: give the classifier images of its image_size"
            )
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None].to(x.dtype)
        q, k, v = self.qkv_proj(x).chunk(3, dim=1)
        ch = c // self.heads
        a = qk_attention(*(z.reshape(b * self.heads, ch, -1) for z in (q, k, v)))
        return self.c_proj(a.reshape(b, c, -1))[:, :, 0]


class NoisyClassifier(nn.Module):
    """`forward(x_t, t) -> logits (N, num_classes)` for noisy images at original timesteps t."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        mc = cfg.model_channels
        emb_dim = 4 * mc
        blocks = BlockFactory(emb_dim, cfg.dropout, cfg.use_scale_shift_norm, cfg.num_head_channels)
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input_blocks, _, ch, ds = build_encoder(
            blocks,
            in_channels=cfg.in_channels,
            model_channels=mc,
            channel_mult=cfg.channel_mult,
            num_res_blocks=cfg.num_res_blocks,
            attention_ds={cfg.image_size // r for r in cfg.attention_resolutions},
            resblock_updown=cfg.resblock_updown,
        )
        self.middle_block = build_middle(blocks, ch)
        if cfg.pool == "attention":
            head: nn.Module = AttentionPool2d(cfg.image_size // ds, ch, cfg.num_head_channels, cfg.num_classes)
            self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), head)
        elif cfg.pool == "adaptive":
            self.out = nn.Sequential(
                GroupNorm32(ch),
                nn.SiLU(),
                nn.AdaptiveAvgPool2d((1, 1)),
                zero_module(nn.Conv2d(ch, cfg.num_classes, 1)),
                nn.Flatten(),
            )
        else:  # ClassifierConfig validates pool; this guards hand-made configs
            raise ValueError(f"unknown classifier pool {cfg.pool!r}")

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory during training."""
        for m in self.modules():
            if isinstance(m, TimestepEmbedSequential):
                m.grad_checkpointing = enabled

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.cfg.model_channels).to(x.dtype))
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
        h = self.middle_block(h, emb)
        return self.out(h)


__all__ = ["AttentionPool2d", "NoisyClassifier"]
