"""How well an upsampler restores detail: the measures of the report's upsampling section.

The benchmark takes images whose full-resolution truth is known (Twemoji drawn from its SVGs at
256 px), makes the upsampler's input from them as training does (`data.make_low_res`: area
downsampling to 64 px, 8-bit quantised) and compares what comes back with the truth and with
plain bicubic interpolation of the same input:

- `psnr`: closeness to the truth (dB, on [0, 1] pixels). Sampling is stochastic and any sharp
  edge a pixel off costs more than a blurred one, so PSNR favours blur (SR3, Saharia et al. 2021,
  found a regression model ahead of their diffusion upsampler on PSNR and behind it for people):
  a proxy, not the goal.
- `edge_energy`: the mean squared step between neighbouring pixels, per image. A blurred edge
  spreads its step over several pixels and loses most of it (an edge of height h over w pixels
  gives w (h/w)^2 = h^2 / w), so the ratio to the truth's says how sharp the result is: about 1
  as sharp as the drawing, well under 1 for interpolation.
- KID against the truths in Inception features (`metrics.kid`): whether the results look like
  the 256 px drawings to the FID network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(images: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per image, the PSNR (dB) of `images` against `truth`, both in [-1, 1], compared on [0, 1]: the
    inpainting measure with the whole image as the hole."""
    from .inpainting import hole_psnr

    return hole_psnr(images, truth, torch.zeros_like(truth[:, :1]))


def edge_energy(images: torch.Tensor) -> torch.Tensor:
    """Per image of (N, C, H, W), the mean squared difference between horizontal and between
    vertical neighbours (channel mean, [-1, 1] scale)."""
    x = images.float()
    dx = (x[..., :, 1:] - x[..., :, :-1]).square().mean(dim=(1, 2, 3))
    dy = (x[..., 1:, :] - x[..., :-1, :]).square().mean(dim=(1, 2, 3))
    return dx + dy


def bicubic(low_res: torch.Tensor, size: int) -> torch.Tensor:
    """The baseline: bicubic interpolation of (N, 3, h, w) to `size`, clamped to [-1, 1]."""
    return F.interpolate(low_res.float(), size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
