"""How well a model fills a hole in a known image: the measures of the report's inpainting section.

An inpainting benchmark on the training images has the answer at hand: the image before the hole
was cut. Three measures, each comparable between a model trained for inpainting (GLIDE s.4.1:
the masked image and the mask are extra inputs) and a plain base model that sees the known pixels
only through re-pasting them into each x0 prediction (the "replacement" method, Song et al. 2021,
app. I; `sampling.guidance.inpaint_repaste`):

- `hole_psnr`: how close the filled region is to the original (dB, on [0, 1] pixels). Sampling is
  stochastic and more than one fill can be right, so this is a proxy, highest for the fill that
  continues what the known pixels show.
- `seam_ratio`: how visible the mask's edge is. The mean absolute step between the 4-neighbour
  pixel pairs that straddle the edge, over the same for the originals: about 1 when the fill
  meets the known pixels as smoothly as the original did, above 1 for a visible seam.
- identification (`eval.report.identification`): whether the completed image's nearest training
  image in Inception features is its own emoji, as for the emoji samples.
"""

from __future__ import annotations

import torch

# the benchmark's holes (1 = keep, GLIDE's convention), as fractions of the image side: a centred
# square half the side (repair an object's middle) and the right half (complete an image from one side)
EVAL_MASKS = {"centre square": (0.25, 0.75, 0.25, 0.75), "right half": (0.0, 1.0, 0.5, 1.0)}


def eval_mask(name: str, size: int) -> torch.Tensor:
    """Mask `name` of EVAL_MASKS at `size` px: a (1, 1, size, size) float tensor, 0 in the hole."""
    from ..images import rect_mask

    top, bottom, left, right = (round(f * size) for f in EVAL_MASKS[name])
    return rect_mask((size, size), (left, top, right, bottom))


def hole_psnr(images: torch.Tensor, originals: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per image, the PSNR (dB) of `images` against `originals` inside the hole (`keep` 0); both in
    [-1, 1], compared on [0, 1]."""
    hole = (1 - keep).expand_as(images)
    err = ((images.float() - originals.float()) / 2) ** 2 * hole
    mse = err.flatten(1).sum(1) / hole.flatten(1).sum(1).clamp(min=1)
    return -10 * torch.log10(mse.clamp(min=1e-10))


def seam_step(images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per image, the mean absolute difference (channel mean, [-1, 1] scale) between the horizontal
    and vertical neighbour pairs of which one pixel is known and the other in the hole."""
    k = keep.expand(images.shape[0], 1, *images.shape[-2:]).float()
    x = images.float()
    steps, counts = torch.zeros(x.shape[0]), torch.zeros(x.shape[0])
    for dim in (-1, -2):
        n = x.shape[dim] - 1
        edge = (k.narrow(dim, 1, n) != k.narrow(dim, 0, n)).float()
        step = (x.narrow(dim, 1, n) - x.narrow(dim, 0, n)).abs().mean(1, keepdim=True)
        steps += (step * edge).flatten(1).sum(1)
        counts += edge.flatten(1).sum(1)
    return steps / counts.clamp(min=1)


def seam_ratio(images: torch.Tensor, originals: torch.Tensor, keep: torch.Tensor) -> float:
    """`seam_step` of the completed images over that of the originals, each averaged over the set."""
    return float(seam_step(images, keep).mean() / seam_step(originals, keep).mean().clamp(min=1e-8))


def paired_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean of `b - a` over images measured both ways, and the half-width of its 95 % interval (normal
    approximation, 1.96 standard errors): the same images and seeds make the comparison paired."""
    d = (b - a).double()
    return float(d.mean()), float(1.96 * d.std() / d.numel() ** 0.5) if d.numel() > 1 else float("nan")
