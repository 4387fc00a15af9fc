"""Tensor transforms for training: random crops and the upsampler's low-resolution input.

Tensors are float in [-1, 1], (C, H, W) or (B, C, H, W).

`make_low_res` is how the 64 px conditioning image is made from a 256 px training target.
GLIDE trains its upsampler on downsampled targets; its code lineage (improved-diffusion /
guided-diffusion `super_res_train.py`) downsamples with ``F.interpolate(x, small, mode="area")``,
and so does this by default: for an integer factor (256 -> 64) area resampling is the exact mean
of each 4x4 block, an antialiased box filter with no overshoot and no ringing, independent of
any image library. ``mode="bicubic"`` uses torch's antialiased bicubic instead, which matches
Pillow's BICUBIC resize (slightly sharper, may overshoot before clamping). After the optional
augmentations (blur, then noise, so the noise is not blurred away) the result is clamped and
quantised to 8-bit levels exactly as at sampling time, where the base model's output is rounded
(``round((x + 1) * 127.5) / 127.5 - 1``) before it conditions the upsampler.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import GlidekitError
from ..images import quantize

LOW_RES_MODES = ("area", "bicubic")


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def random_crop(image: torch.Tensor, size: int | Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
    """A random `size` crop of (C, H, W), or of each image of (B, C, H, W) independently."""
    h, w = _pair(size)
    H, W = image.shape[-2:]
    if h > H or w > W:
        raise GlidekitError(f"cannot crop {h}x{w} from a {H}x{W} image")
    if image.dim() == 3:
        top = int(torch.randint(0, H - h + 1, (1,), generator=generator))
        left = int(torch.randint(0, W - w + 1, (1,), generator=generator))
        return image[:, top : top + h, left : left + w]
    if image.dim() != 4:
        raise GlidekitError(f"random_crop expects (C, H, W) or (B, C, H, W), got shape {tuple(image.shape)}")
    tops = torch.randint(0, H - h + 1, (image.shape[0],), generator=generator).tolist()
    lefts = torch.randint(0, W - w + 1, (image.shape[0],), generator=generator).tolist()
    return torch.stack([im[:, t : t + h, l : l + w] for im, t, l in zip(image, tops, lefts)])


def paired_crop(hr: torch.Tensor, lr: torch.Tensor, size: int, generator: torch.Generator | None = None):
    """The same random region of a (C, H, W) target and its (C, H/f, W/f) low-res image: a `size`
    crop of `hr` on the low-res pixel grid and the `size/f` crop of `lr` under it (`size` a
    multiple of f)."""
    f = hr.shape[-1] // lr.shape[-1]
    if size % f or hr.shape[-2:] != (lr.shape[-2] * f, lr.shape[-1] * f):
        raise GlidekitError(f"cannot crop {size} px from {tuple(hr.shape[-2:])} on the grid of {tuple(lr.shape[-2:])}")
    s = size // f
    top = int(torch.randint(0, lr.shape[-2] - s + 1, (1,), generator=generator))
    left = int(torch.randint(0, lr.shape[-1] - s + 1, (1,), generator=generator))
    return (hr[:, top * f : (top + s) * f, left * f : (left + s) * f], lr[:, top : top + s, left : left + s])


def gaussian_kernel1d(sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with standard deviation `sigma` pixels (kernel
    radius ceil(3 sigma)); reflected borders (replicated where the image is too small)."""
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, x.dtype).to(x.device)
    r = (k.numel() - 1) // 2
    c = x.shape[1]
    mode = "reflect" if r < min(x.shape[-2:]) else "replicate"
    y = F.pad(x, (r, r, 0, 0), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode=mode)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _levels(value: float | Sequence[float], n: int, generator: torch.Generator | None, what: str) -> list[float]:
    """A value per image: a constant, or uniform in a (low, high) range."""
    if isinstance(value, (int, float)):
        lo = hi = float(value)
    else:
        lo, hi = (float(v) for v in value)
    if lo < 0 or hi < lo:
        raise GlidekitError(f"{what} must be >= 0 or a (low, high) range with 0 <= low <= high, got {value!r}")
    if lo == hi:
        return [lo] * n
    return (lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)).tolist()


def make_low_res(
    hr: torch.Tensor,
    low_size: int | Sequence[int],
    *,
    generator: torch.Generator | None = None,
    noise_std: float | Sequence[float] = 0.0,
    blur_sigma: float | Sequence[float] = 0.0,
    mode: str = "area",
) -> torch.Tensor:
    """The upsampler's conditioning image from high-resolution targets (see the module docstring).

    hr: (3, H, W) or (B, 3, H, W) in [-1, 1]; returns the same rank at `low_size`.
    blur_sigma: Gaussian blur in low-res pixels; noise_std: Gaussian noise in [-1, 1] units.
    Each is a number or a (low, high) range sampled per image from `generator` (the noise too).
    """
    if mode not in LOW_RES_MODES:
        raise GlidekitError(f"unknown low-res mode {mode!r}; use {' or '.join(LOW_RES_MODES)}")
    single = hr.dim() == 3
    x = hr[None] if single else hr
    if x.dim() != 4:
        raise GlidekitError(f"make_low_res expects (3, H, W) or (B, 3, H, W), got shape {tuple(hr.shape)}")
    x = x.float()
    size = _pair(low_size)
    if mode == "area":
        low = F.interpolate(x, size=size, mode="area")
    else:
        low = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    n = low.shape[0]
    sigmas = _levels(blur_sigma, n, generator, "blur_sigma")
    if any(s > 0 for s in sigmas):
        low = torch.cat([gaussian_blur(low[i : i + 1], s) for i, s in enumerate(sigmas)])
    stds = _levels(noise_std, n, generator, "noise_std")
    if any(s > 0 for s in stds):
        dev = generator.device if generator is not None else low.device
        noise = torch.randn(low.shape, generator=generator, dtype=low.dtype, device=dev).to(low.device)
        low = low + noise * torch.tensor(stds, dtype=low.dtype, device=low.device).view(-1, 1, 1, 1)
    low = quantize(low.clamp(-1, 1))
    return low[0] if single else low
