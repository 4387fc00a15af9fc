"""OpenAI's ancestral (p_sample) and DDIM samplers, reproduced operation for operation.

These are the reference-parity path: same arithmetic order, same float32 casts and the same
order of random draws as glide-text2im's `gaussian_diffusion.py`, so recorded GLIDE
trajectories replay within float rounding. Faster solvers live beside them, never replace them.

`model_fn(x, t, **model_kwargs)` returns GLIDE's raw output [eps | v] and receives the original
timestep `schedule.timestep_map[k]` (no rescaling). `cond_fn(x, t)` returns a guidance gradient
w.r.t. the noisy sample x (CLIP or classifier guidance), also at the original timestep.
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from ..diffusion import gaussian as G
from ..diffusion.schedule import Schedule
from .noise import NoiseFn, global_rng

ModelFn = Callable[..., torch.Tensor]
CondFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def _model_step(model_fn, s: Schedule, x, k, model_kwargs, clip_denoised, denoised_fn):
    t = torch.as_tensor(s.timestep_map, device=x.device)[k.to(x.device)]
    out = model_fn(x, t, **(model_kwargs or {}))
    return t, G.p_mean_variance(s, out, x, k, clip_denoised=clip_denoised, denoised_fn=denoised_fn)


def p_sample(
    model_fn: ModelFn,
    s: Schedule,
    x: torch.Tensor,
    k: torch.Tensor,
    *,
    model_kwargs: dict | None = None,
    clip_denoised: bool = True,
    denoised_fn: G.DenoisedFn | None = None,
    cond_fn: CondFn | None = None,
    noise_fn: NoiseFn = global_rng,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ancestral step x_k -> x_{k-1} with the learned variance. Returns (sample, pred_xstart)."""
    t, out = _model_step(model_fn, s, x, k, model_kwargs, clip_denoised, denoised_fn)
    z = noise_fn(x)  # drawn before the guidance gradient, as the reference
    mean = out["mean"]
    if cond_fn is not None:
        mean = G.condition_mean(out, cond_fn(x, t))
    nonzero = (k != 0).float().to(x.device).view(-1, *([1] * (x.dim() - 1)))
    return mean + nonzero * torch.exp(0.5 * out["log_variance"]) * z, out["pred_xstart"]


def ddim_sample(
    model_fn: ModelFn,
    s: Schedule,
    x: torch.Tensor,
    k: torch.Tensor,
    *,
    eta: float = 0.0,
    model_kwargs: dict | None = None,
    clip_denoised: bool = True,
    denoised_fn: G.DenoisedFn | None = None,
    cond_fn: CondFn | None = None,
    noise_fn: NoiseFn = global_rng,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step (Song et al. 2020, eq. 12) with eta; eps re-derived from the processed x0."""
    t, out = _model_step(model_fn, s, x, k, model_kwargs, clip_denoised, denoised_fn)
    if cond_fn is not None:
        out = G.condition_score(s, out, x, k, cond_fn(x, t))
    eps = G.eps_from_xstart(s, x, k, out["pred_xstart"])
    abar = G.extract(s.alphas_cumprod, k, x)
    abar_prev = G.extract(s.alphas_cumprod_prev, k, x)
    sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
    z = noise_fn(x)  # drawn even when eta == 0, keeping the reference's RNG order
    mean_pred = out["pred_xstart"] * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma**2) * eps
    nonzero = (k != 0).float().to(x.device).view(-1, *([1] * (x.dim() - 1)))
    return mean_pred + nonzero * sigma * z, out["pred_xstart"]


def _loop(step, model_fn, s, x_T, callback, progress, **kw) -> torch.Tensor:
    x = x_T
    indices = range(s.num_steps - 1, -1, -1)
    for j, k in enumerate(tqdm(indices, disable=not progress, desc="sampling", leave=False)):
        kt = torch.full((x.shape[0],), k, dtype=torch.long)
        with torch.no_grad():
            x, x0 = step(model_fn, s, x, kt, **kw)
        if callback is not None:
            callback(j, k, x, x0)
    return x


def p_sample_loop(
    model_fn: ModelFn,
    s: Schedule,
    x_T: torch.Tensor,
    *,
    model_kwargs: dict | None = None,
    clip_denoised: bool = True,
    denoised_fn: G.DenoisedFn | None = None,
    cond_fn: CondFn | None = None,
    noise_fn: NoiseFn = global_rng,
    callback: StepCallback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Ancestral sampling over every step of `s`, from x_T. `callback(j, k, sample, pred_xstart)`."""
    return _loop(
        p_sample, model_fn, s, x_T, callback, progress, model_kwargs=model_kwargs,
        clip_denoised=clip_denoised, denoised_fn=denoised_fn, cond_fn=cond_fn, noise_fn=noise_fn,
    )


def ddim_sample_loop(
    model_fn: ModelFn,
    s: Schedule,
    x_T: torch.Tensor,
    *,
    eta: float = 0.0,
    model_kwargs: dict | None = None,
    clip_denoised: bool = True,
    denoised_fn: G.DenoisedFn | None = None,
    cond_fn: CondFn | None = None,
    noise_fn: NoiseFn = global_rng,
    callback: StepCallback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM sampling over every step of `s`, from x_T. `callback(j, k, sample, pred_xstart)`."""
    return _loop(
        ddim_sample, model_fn, s, x_T, callback, progress, eta=eta, model_kwargs=model_kwargs,
        clip_denoised=clip_denoised, denoised_fn=denoised_fn, cond_fn=cond_fn, noise_fn=noise_fn,
    )
