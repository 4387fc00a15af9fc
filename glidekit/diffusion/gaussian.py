"""Gaussian diffusion maths over a `Schedule` (DDPM, Ho et al. 2020; improved DDPM 2021).

Free functions, indexed by respaced step k (per row). Each coefficient is indexed in float64 and
cast to float32, then all tensor arithmetic is float32, exactly as OpenAI's code does; this is
what makes glidekit's reference samplers match recorded GLIDE trajectories.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .schedule import Schedule

DenoisedFn = Callable[[torch.Tensor], torch.Tensor]


def extract(arr: np.ndarray, k: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """arr[k] per row, as float32 on x's device, broadcastable against x."""
    vals = torch.from_numpy(arr)[k.detach().cpu().long()].float().to(x.device)
    return vals.view(-1, *([1] * (x.dim() - 1)))


def q_sample(s: Schedule, x_start: torch.Tensor, k: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Sample x_k ~ q(x_k | x_0) = N(sqrt(abar) x_0, (1 - abar) I)  (DDPM eq. 4)."""
    return extract(s.sqrt_alphas_cumprod, k, x_start) * x_start + extract(s.sqrt_one_minus_alphas_cumprod, k, x_start) * noise


def q_posterior_mean(s: Schedule, x_start: torch.Tensor, x_t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Mean of q(x_{k-1} | x_k, x_0)  (DDPM eq. 7)."""
    return extract(s.posterior_mean_coef1, k, x_t) * x_start + extract(s.posterior_mean_coef2, k, x_t) * x_t


def xstart_from_eps(s: Schedule, x_t: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_0 = sqrt(1/abar) x_t - sqrt(1/abar - 1) eps."""
    return extract(s.sqrt_recip_alphas_cumprod, k, x_t) * x_t - extract(s.sqrt_recipm1_alphas_cumprod, k, x_t) * eps


def eps_from_xstart(s: Schedule, x_t: torch.Tensor, k: torch.Tensor, x_start: torch.Tensor) -> torch.Tensor:
    """eps = (sqrt(1/abar) x_t - x_0) / sqrt(1/abar - 1)."""
    return (extract(s.sqrt_recip_alphas_cumprod, k, x_t) * x_t - x_start) / extract(s.sqrt_recipm1_alphas_cumprod, k, x_t)


def v_from_eps(s: Schedule, x_start: torch.Tensor, k: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The v-prediction target v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho 2022, s.4)."""
    return extract(s.sqrt_alphas_cumprod, k, x_start) * noise - extract(s.sqrt_one_minus_alphas_cumprod, k, x_start) * x_start


def eps_from_v(s: Schedule, x_t: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """eps = sqrt(abar) v + sqrt(1 - abar) x_t, the inverse of `v_from_eps` given x_t = q_sample(...)."""
    return extract(s.sqrt_alphas_cumprod, k, x_t) * v + extract(s.sqrt_one_minus_alphas_cumprod, k, x_t) * x_t


def learned_range_log_variance(s: Schedule, v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """log sigma^2 interpolated between the posterior variance and beta (improved DDPM eq. 15).

    The network outputs v in [-1, 1] (not clamped); frac = (v + 1) / 2.
    """
    min_log = extract(s.posterior_log_variance_clipped, k, v)
    max_log = extract(s.log_betas, k, v)
    frac = (v + 1) / 2
    return frac * max_log + (1 - frac) * min_log


def p_mean_variance(
    s: Schedule,
    model_output: torch.Tensor,
    x: torch.Tensor,
    k: torch.Tensor,
    *,
    clip_denoised: bool = True,
    denoised_fn: DenoisedFn | None = None,
) -> dict[str, torch.Tensor]:
    """p(x_{k-1} | x_k) from GLIDE's raw output [eps | v] (eps prediction, learned-range variance).

    Returns mean, variance, log_variance, pred_xstart and the model's eps.
    """
    c = x.shape[1]
    eps, v = model_output[:, :c], model_output[:, c:]
    log_var = learned_range_log_variance(s, v, k)
    pred_xstart = xstart_from_eps(s, x, k, eps)
    if denoised_fn is not None:
        pred_xstart = denoised_fn(pred_xstart)
    if clip_denoised:
        pred_xstart = pred_xstart.clamp(-1, 1)
    mean = q_posterior_mean(s, pred_xstart, x, k)
    return {"mean": mean, "variance": torch.exp(log_var), "log_variance": log_var, "pred_xstart": pred_xstart, "eps": eps}


def condition_mean(out: dict[str, torch.Tensor], grad: torch.Tensor) -> torch.Tensor:
    """Shift the mean by the guidance gradient: mu + Sigma * grad  (Sohl-Dickstein 2015;
    classifier guidance, Dhariwal & Nichol 2021 Alg. 1)."""
    return out["mean"].float() + out["variance"] * grad.float()


def condition_score(
    s: Schedule, out: dict[str, torch.Tensor], x: torch.Tensor, k: torch.Tensor, grad: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Score-based conditioning for deterministic samplers: eps <- eps - sqrt(1-abar) grad
    (Dhariwal & Nichol 2021, Alg. 2 / eq. 14); x0 and mean recomputed, no clamp afterwards."""
    abar = extract(s.alphas_cumprod, k, x)
    eps = eps_from_xstart(s, x, k, out["pred_xstart"])
    eps = eps - (1 - abar).sqrt() * grad
    new = dict(out)
    new["pred_xstart"] = xstart_from_eps(s, x, k, eps)
    new["mean"] = q_posterior_mean(s, new["pred_xstart"], x, k)
    return new
