"""Guidance as wrappers around a model function (GLIDE, Nichol et al. 2021, s.2.3-2.4).

Each wrapper takes and returns a `model_fn(x, t, **kwargs)` or builds a `denoised_fn` /
`cond_fn` for the samplers, so guidance types compose without touching any sampler.
"""

from __future__ import annotations

import torch

from .reference import ModelFn


def classifier_free(model_fn: ModelFn, scale: float) -> ModelFn:
    """Classifier-free guidance exactly as GLIDE's notebooks (Ho & Salimans 2021; GLIDE eq. 2).

    The batch holds 2B rows: B conditional, then B unconditional (empty-prompt) kwargs. Only the
    first half of x is read; the model runs on [x_B, x_B]; the eps channels are mixed
    eps_u + s (eps_c - eps_u) and copied to both halves, while each row keeps its own variance
    channels.
    """

    def guided(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        half = x[: len(x) // 2]
        out = model_fn(torch.cat([half, half], dim=0), t, **kwargs)
        c = x.shape[1]
        eps, rest = out[:, :c], out[:, c:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + scale * (cond_eps - uncond_eps)
        return torch.cat([torch.cat([half_eps, half_eps], dim=0), rest], dim=1)

    return guided


def inpaint_repaste(image: torch.Tensor, mask: torch.Tensor):
    """`denoised_fn` that pastes the known pixels into every x0 prediction (GLIDE inpaint notebook).

    `mask` is 1 where the pixel is known (GLIDE's internal convention), `image` the source.
    """

    def denoised_fn(x0: torch.Tensor) -> torch.Tensor:
        return x0 * (1 - mask) + image * mask

    return denoised_fn
