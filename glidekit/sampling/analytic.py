"""An analytic denoiser with a known answer: data x0 ~ N(mu, sd^2) per pixel.

With x_t = a x0 + sigma eps (a = sqrt(abar), sigma = sqrt(1 - abar)), x_t and eps are jointly
Gaussian, so the exact eps-prediction is the regression

    E[eps | x_t] = Cov(eps, x_t) / Var(x_t) (x_t - a mu) = sigma (x_t - a mu) / (abar sd^2 + 1 - abar).

Along the probability-flow ODE every coordinate keeps its quantile:

    x_t = a mu + sqrt(abar sd^2 + 1 - abar) u,   u constant

(in EDM form x_hat = mu + sqrt(sd^2 + sigma_hat^2) u solves dx_hat/dsigma_hat = (x_hat - D)/sigma_hat
with D = mu + sd^2 (x_hat - mu)/(sd^2 + sigma_hat^2)), so from x_T at t = T-1,
u = (x_T - a_T mu) / sqrt(abar_T sd^2 + 1 - abar_T) and the clean endpoint is mu + sd u. A sampler
returns the x0 prediction at its last timestep (t = 0); applied to the exact ODE state there that
is `mu + sd^2 u / sqrt(sd^2 + sigma_hat_0^2)` (`ode_solution`'s first value), which differs from
mu + sd u by < 2e-4 for GLIDE's schedules. Solvers and samplers are checked against it
(tests/test_solvers.py, benchmarks/bench_convergence.py). Clamping breaks the analytic answer:
sample with `clip_denoised=False`.
"""

from __future__ import annotations

import math

import torch

from ..diffusion.schedule import Schedule

MU, SD = 0.3, 0.5


def gaussian_denoiser(schedule: Schedule, mu: float = MU, sd: float = SD, mu_fn=None):
    """A `model_fn` returning GLIDE's layout [E[eps | x_t] | variance channels (ignored, 0.7)] for
    data N(mu, sd^2); `mu_fn(**model_kwargs)` may give each row its own mean."""
    abar_all = torch.from_numpy(schedule.alphas_cumprod)

    def model_fn(x, t, **kw):
        assert t.dtype == torch.long and t.shape == (x.shape[0],)
        a = abar_all[t].view(-1, 1, 1, 1).to(x.dtype)
        m = mu if mu_fn is None else mu_fn(**kw).view(-1, 1, 1, 1).to(x.dtype)
        eps = (1 - a).sqrt() * (x - a.sqrt() * m) / (a * sd**2 + 1 - a)
        return torch.cat([eps, torch.full_like(eps, 0.7)], dim=1)

    return model_fn


def ode_solution(schedule: Schedule, x_T: torch.Tensor, mu: float = MU, sd: float = SD) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, endpoint): the t = 0 denoise of the exact ODE state (what a converged sampler
    returns), and the clean endpoint mu + sd u."""
    aT, a0 = schedule.alphas_cumprod[-1], schedule.alphas_cumprod[0]
    u = (x_T - math.sqrt(aT) * mu) / math.sqrt(aT * sd**2 + 1 - aT)
    sh0_sq = (1 - a0) / a0
    return mu + sd**2 * u / math.sqrt(sd**2 + sh0_sq), mu + sd * u


__all__ = ["MU", "SD", "gaussian_denoiser", "ode_solution"]
