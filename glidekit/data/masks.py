"""Random inpainting masks for training the inpainting models.

Masks follow GLIDE's tensor convention: 1 = keep (known pixel), 0 = generate. GLIDE's paper says
its inpainting models were fine-tuned on "random erased regions"; the kinds here cover what
people then ask of them: rectangles (object replacement), free-form brush strokes (what a user
paints in an editor) and image borders (outpainting and panoramas, one or more sides).

Every random number comes from the `torch.Generator` passed in, so a mask is a function of the
generator's state: the same seed gives the same mask on any machine.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..errors import GlidekitError

MASK_KINDS = ("rect", "stroke", "border")
_MAX_TRIES = 16


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 2 or w < 2:
        raise GlidekitError(f"mask size must be at least 2x2, got {h}x{w}")
    return h, w


def _randint(lo: int, hi: int, g: torch.Generator) -> int:
    """Uniform integer in [lo, hi] (inclusive)."""
    if hi <= lo:
        return lo
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _rand(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g))


def rect_mask(h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """1 to 3 rectangles, each 1/8 to 3/4 of the image's height and width."""
    keep = torch.ones(h, w)
    for _ in range(_randint(1, 3, g)):
        rh = _randint(max(1, h // 8), max(1, 3 * h // 4), g)
        rw = _randint(max(1, w // 8), max(1, 3 * w // 4), g)
        top, left = _randint(0, h - rh, g), _randint(0, w - rw, g)
        keep[top : top + rh, left : left + rw] = 0
    return keep


def stroke_mask(h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """1 to 4 brush strokes: random walks of 4 to 10 segments drawn with round-jointed lines
    of width 1/16 to 1/5 of the image side (PIL ImageDraw)."""
    s = min(h, w)
    canvas = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(canvas)
    for _ in range(_randint(1, 4, g)):
        width = _randint(max(1, s // 16), max(2, s // 5), g)
        x, y = _rand(g) * (w - 1), _rand(g) * (h - 1)
        angle = _rand(g) * 2 * math.pi
        points = [(x, y)]
        for _ in range(_randint(4, 10, g)):
            angle += (_rand(g) - 0.5) * math.pi  # turn by up to +-90 degrees
            step = s * (0.05 + 0.2 * _rand(g))
            x = min(max(x + step * math.cos(angle), 0.0), w - 1.0)
            y = min(max(y + step * math.sin(angle), 0.0), h - 1.0)
            points.append((x, y))
        draw.line(points, fill=0, width=width, joint="curve")
        r = width / 2
        for px, py in (points[0], points[-1]):  # round caps
            draw.ellipse((px - r, py - r, px + r, py + r), fill=0)
    return torch.from_numpy((np.asarray(canvas) > 127).astype(np.float32))


def border_mask(h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """1 to 4 sides of the image masked, each to a depth of 1/8 to just under 1/2 of the side
    (outpainting: the model extends the kept centre outwards)."""
    keep = torch.ones(h, w)
    sides = torch.randperm(4, generator=g)[: _randint(1, 4, g)].tolist()
    for side in sides:
        n = h if side in (0, 1) else w
        depth = _randint(max(1, n // 8), max(1, n // 2 - 1), g)
        if side == 0:
            keep[:depth] = 0
        elif side == 1:
            keep[h - depth :] = 0
        elif side == 2:
            keep[:, :depth] = 0
        else:
            keep[:, w - depth :] = 0
    return keep


_MAKERS = {"rect": rect_mask, "stroke": stroke_mask, "border": border_mask}


def random_mask(
    size: int | tuple[int, int],
    generator: torch.Generator,
    kinds: Sequence[str] = MASK_KINDS,
) -> torch.Tensor:
    """A (1, H, W) float keep-mask (1 = keep, 0 = generate) of a kind drawn uniformly from `kinds`.

    At least one pixel is kept and at least one is generated (a draw that covers all or nothing
    is redrawn from the same generator)."""
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in _MAKERS]
    if not kinds or bad:
        raise GlidekitError(f"unknown mask kind(s) {bad or '(none)'}; use some of {', '.join(MASK_KINDS)}")
    h, w = _size(size)
    for _ in range(_MAX_TRIES):
        kind = kinds[_randint(0, len(kinds) - 1, generator)]
        keep = _MAKERS[kind](h, w, generator)
        frac = float(keep.mean())
        if 0.0 < frac < 1.0:
            return keep[None]
    keep = torch.ones(h, w)  # practically unreachable: fall back to generating the right half
    keep[:, w // 2 :] = 0
    return keep[None]


def random_masks(
    n: int,
    size: int | tuple[int, int],
    generator: torch.Generator,
    kinds: Sequence[str] = MASK_KINDS,
) -> torch.Tensor:
    """(n, 1, H, W) keep-masks, drawn one after another from `generator`."""
    return torch.stack([random_mask(size, generator, kinds) for _ in range(n)])
