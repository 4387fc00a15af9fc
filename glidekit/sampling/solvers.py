"""Fast few-step samplers over GLIDE's discrete-time diffusion, as free functions of one signature.

Every solver here has the shape of a k-diffusion sampler (design.md, "Shape of the code"):

    solver(model_fn, schedule, x_T, *, steps, model_kwargs=None, clip_denoised=True,
           denoised_fn=None, cond_fn=None, noise_fn=global_rng, callback=None, progress=False,
           spacing="linspace", thresholding=False, percentile=0.995, **solver_specific) -> x_0

and the same contract as the reference loops in `reference.py`: `model_fn(x, t, **model_kwargs)`
returns GLIDE's raw output [eps (C) | variance values (C)] at original integer timesteps `t` (a
long tensor, one per row); `cond_fn(x, t)` returns the gradient of log p(y | x_t) w.r.t. x_t and
enables grad itself (it is called under `torch.no_grad()`, as in the reference);
`denoised_fn(x0)` post-processes each x0 prediction (inpainting re-paste); `callback(j, t, x, x0)`
sees step j, the original timestep t the model was evaluated at, the sample after the step and
the x0 prediction of the step. `schedule` is the model's full (unrespaced) `Schedule`; the solver
picks its own `steps` timesteps with `solver_timesteps` (a respaced schedule also works: the
solver then picks among its steps and the model sees `timestep_map`).

Notation (Lu et al. 2022, DPM-Solver++, s.2): x_t = alpha_t x_0 + sigma_t eps with
alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t / sigma_t). In the
EDM parametrisation (Karras et al. 2022, Table 1, VP row) the same process is
x_hat = x / alpha_t with noise level sigma_hat_t = sigma_t / alpha_t = exp(-lambda_t), and the
probability-flow ODE reads dx_hat / dsigma_hat = (x_hat - D(x_hat; sigma_hat)) / sigma_hat
(EDM eqs. 1 and 3, with D the x0 prediction). The model is only ever called at integer timesteps (GLIDE
models are trained on integers); nothing is interpolated.

Solvers (`SOLVERS`):
- "dpm++2m": DPM-Solver++(2M), Lu et al. 2022 Alg. 2, data prediction, multistep 2nd order.
  One model call per step; the step into the last timestep is 1st order by default
  (`lower_order_final`, see `dpm_solver_pp_2m`).
- "heun": EDM Alg. 1 (S_churn = 0), 2nd order; two model calls per step except the first and the
  last (2 * steps - 2 calls in all, see `heun`), so compare it with the others at equal calls.
- "euler": EDM Euler in sigma_hat; identical to DDIM (eta = 0) on the same timesteps. 1st order.
- "euler_a": Euler ancestral (k-diffusion), eta = 1 is exactly DDIM with eta = 1; the one
  stochastic solver: exactly one `noise_fn` call per step that adds noise.

Common options: `spacing` (see `solver_timesteps`), `thresholding` / `percentile` (dynamic
thresholding of every x0, see `x0_from_output`). Classifier/CLIP guidance through `cond_fn` is
supported by every solver (score conditioning, `x0_from_output`); classifier-free guidance is a
`model_fn` wrapper (`guidance.classifier_free`) and needs nothing from the solver.

The last step of every solver goes from the last timestep (t = 0 with the default spacing) to
the clean image (sigma = 0, lambda = +inf). There every one of these schemes reduces to the x0
prediction itself (exponential integrator: x = alpha D with alpha = 1; Euler in sigma_hat:
x_hat + (0 - sigma_hat) d = D), which is also what the reference samplers return after their
k = 0 step, so the output is a processed (clamped, re-pasted) x0 exactly as theirs.

Timesteps: the default spacing "linspace" is GLIDE's own respacing "N" (evenly spaced integers
from T-1 down to 0, rounded as OpenAI rounds). It starts at T-1, where x_T ~ N(0, I) was drawn
(abar_{T-1} ~ 2e-9 for the cosine schedule), and ends at t = 0, whose noise level
(sigma_hat_0 ~ 0.006 cosine, 0.01 linear) is far below one 8-bit level, so the final x0 is a
true t = 0 denoise; and a solver's first-order steps coincide with the reference DDIM over
`Schedule.create(..., str(steps))`. Time-uniform spacing is also what Lu et al. recommend for
guided sampling with pixel-space models. "trailing" (Lin et al. 2023 / diffusers) and "logsnr"
(lambda-uniform, DPM-Solver's choice for small unguided images) are offered: "trailing" ends at
t = T/steps - 1 and jumps from there to x0 (a 1st-order step at a large noise level); "logsnr"
snapped to integers spends its first steps on t = 999, 998, 997, 994 (10 steps, cosine), where
that schedule's lambda falls fastest. On the Gaussian test problem (tests/test_solvers.py,
cosine schedule, max |error| of DPM-Solver++(2M) at 10 / 20 / 50 steps): linspace
9.6e-2 / 5.0e-3 / 3.5e-3, trailing 7.7e-2 / 4.6e-3 / 2.3e-3, logsnr 1.1e-1 / 4.4e-2 / 8.8e-3;
for the linear schedule logsnr does best at 10-20 steps (2.3e-2 / 2.3e-2 vs linspace
3.4e-1 / 7.4e-2). Real images, not this toy, should settle the spacing per model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..diffusion.schedule import Schedule, space_timesteps
from ..errors import ConfigError
from .noise import NoiseFn, global_rng
from .reference import CondFn, ModelFn, StepCallback

SPACINGS = ("linspace", "trailing", "logsnr")
DenoisedFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------
# Timesteps


def solver_timesteps(
    num_timesteps: int, steps: int, spacing: str = "linspace", alphas_cumprod: np.ndarray | None = None
) -> np.ndarray:
    """`steps` distinct integer timesteps in [0, num_timesteps), descending from num_timesteps - 1.

    - "linspace": GLIDE's respacing "N" (`space_timesteps(T, [steps])`, evenly spaced from T-1 to
      0 with OpenAI's rounding); `steps = 1` gives [T-1]. The default (module docstring).
    - "trailing": round(T - i T / steps) - 1 (Lin et al. 2023, "Common diffusion noise schedules
      and sample steps are flawed"; diffusers' "trailing"): starts at T-1, ends at T/steps - 1.
    - "logsnr": evenly spaced in lambda = log(alpha/sigma) between lambda_{T-1} and lambda_0
      (Lu et al. 2022a, DPM-Solver s.3.3), each snapped to the integer t of nearest lambda and
      pushed down where snapping collides; needs `alphas_cumprod`.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise ConfigError(f"steps must be an integer, got {steps!r}")
    steps = int(steps)
    if not 1 <= steps <= num_timesteps:
        raise ConfigError(f"steps must be between 1 and the schedule's {num_timesteps} timesteps, got {steps}")
    T = num_timesteps
    if spacing == "linspace":
        ts = [T - 1] if steps == 1 else space_timesteps(T, [steps])[::-1]
        return np.asarray(ts, dtype=np.int64)
    if spacing == "trailing":
        return (np.round(np.arange(T, 0, -T / steps)) - 1).astype(np.int64)[:steps]
    if spacing == "logsnr":
        if alphas_cumprod is None or len(alphas_cumprod) != T:
            raise ConfigError("spacing 'logsnr' needs the schedule's alphas_cumprod")
        lam = _lambda(np.asarray(alphas_cumprod, dtype=np.float64))  # increasing as t decreases
        targets = np.linspace(lam[T - 1], lam[0], steps)
        ts = []
        for i, target in enumerate(targets):
            t = int(np.argmin(np.abs(lam - target)))
            if ts:
                t = min(t, ts[-1] - 1)  # strictly descending
            ts.append(max(t, steps - 1 - i))  # leave room for the remaining steps
        return np.asarray(ts, dtype=np.int64)
    raise ConfigError(f"unknown timestep spacing {spacing!r}; use one of {', '.join(SPACINGS)}")


def _lambda(abar: np.ndarray) -> np.ndarray:
    """lambda = log(alpha / sigma) = (log abar - log(1 - abar)) / 2 (the half-log-SNR, DPM-Solver s.3.1)."""
    return 0.5 * (np.log(abar) - np.log1p(-abar))


# --------------------------------------------------------------------------------------------
# The adapter: GLIDE's raw output -> processed x0


def dynamic_threshold(x0: torch.Tensor, percentile: float = 0.995) -> torch.Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, s.2.3), DPM-Solver++'s "thresholding":
    s = max(1, p-th percentile of |x0| per sample); x0 <- clamp(x0, -s, s) / s."""
    flat = x0.reshape(x0.shape[0], -1).abs()
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # torch.quantile needs float32/64
    s = torch.quantile(flat, percentile, dim=1).clamp(min=1.0).to(x0.dtype)
    s = s.view(-1, *([1] * (x0.dim() - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def _abar_at(schedule: Schedule, t_original: int) -> float:
    """abar at an original timestep, for a full or a respaced schedule."""
    tm = schedule.timestep_map
    k = t_original if len(tm) == schedule.num_original_timesteps else int(np.searchsorted(tm, t_original))
    if not (0 <= k < len(tm) and tm[k] == t_original):
        raise ConfigError(f"timestep {t_original} is not one of the schedule's timesteps")
    return float(schedule.alphas_cumprod[k])


def x0_from_output(
    schedule: Schedule,
    x: torch.Tensor,
    t_original: int,
    out: torch.Tensor,
    clip_denoised: bool = True,
    denoised_fn: DenoisedFn | None = None,
    *,
    guidance_grad: torch.Tensor | None = None,
    thresholding: bool = False,
    percentile: float = 0.995,
) -> torch.Tensor:
    """The x0 prediction from GLIDE's raw output [eps | v] at original timestep `t_original`.

    The variance channels v are ignored (ODE solvers need no variance). In order:
    1. score conditioning, if `guidance_grad` (= cond_fn(x, t)) is given:
       eps <- eps - sqrt(1 - abar) grad (Dhariwal & Nichol 2021, eq. 14; `gaussian.condition_score`);
    2. x0 = sqrt(1/abar) x - sqrt(1/abar - 1) eps (DDPM eq. 4 solved for x0; `xstart_from_eps`);
    3. dynamic thresholding if `thresholding` (before the re-paste, so known pixels stay exact);
    4. `denoised_fn` (inpainting re-paste), then 5. the static clamp to [-1, 1] if `clip_denoised`
       -- 4 and 5 as in the reference samplers (`gaussian.p_mean_variance`).
    The reference DDIM applies the score conditioning after the clamp and does not clamp again;
    here it comes first so that clamp/thresholding bound the guided x0 (the two orders agree
    whenever the clamp and denoised_fn are inactive).
    """
    c = x.shape[1]
    if out.shape[0] != x.shape[0] or out.shape[1] < c or out.shape[2:] != x.shape[2:]:
        raise ValueError(
            f"model output of shape {tuple(out.shape)} does not start with eps shaped like x {tuple(x.shape)}"
        )
    eps = out[:, :c].to(x.dtype)
    abar = _abar_at(schedule, int(t_original))
    if guidance_grad is not None:
        eps = eps - math.sqrt(1.0 - abar) * guidance_grad.to(x.dtype)
    x0 = math.sqrt(1.0 / abar) * x - math.sqrt(1.0 / abar - 1.0) * eps
    if thresholding:
        x0 = dynamic_threshold(x0, percentile)
    if denoised_fn is not None:
        x0 = denoised_fn(x0)
    if clip_denoised:
        x0 = x0.clamp(-1, 1)
    return x0


# --------------------------------------------------------------------------------------------
# Shared set-up: the grid and the denoiser D(x; t_i) every solver steps with


@dataclass
class _Grid:
    k: np.ndarray  # indices into the schedule, descending (int64)
    t: np.ndarray  # original timesteps the model sees (timestep_map[k])
    alpha: np.ndarray  # sqrt(abar), float64
    sigma: np.ndarray  # sqrt(1 - abar)
    lam: np.ndarray  # log(alpha / sigma)

    @property
    def sigma_hat(self) -> np.ndarray:  # EDM noise level sigma / alpha = exp(-lambda)
        return self.sigma / self.alpha


def _setup(
    model_fn: ModelFn, schedule: Schedule, x_T: torch.Tensor, steps: int, spacing: str, *,
    model_kwargs, clip_denoised, denoised_fn, cond_fn, thresholding, percentile,
):
    if not isinstance(x_T, torch.Tensor) or x_T.dim() < 2:
        raise ValueError("x_T must be a tensor shaped (batch, channels, ...)")
    if not 0.0 < percentile <= 1.0:
        raise ConfigError(f"percentile must be in (0, 1], got {percentile}")
    ks = solver_timesteps(schedule.num_steps, steps, spacing, schedule.alphas_cumprod)
    abar = schedule.alphas_cumprod[ks]
    grid = _Grid(
        k=ks,
        t=schedule.timestep_map[ks].astype(np.int64),
        alpha=np.sqrt(abar),
        sigma=np.sqrt(1.0 - abar),
        lam=_lambda(abar),
    )
    kwargs = model_kwargs or {}

    def denoise(x: torch.Tensor, i: int) -> torch.Tensor:
        """D(x; t_i): the processed x0 prediction at grid point i."""
        t = int(grid.t[i])
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        out = model_fn(x, tt, **kwargs)
        grad = cond_fn(x, tt) if cond_fn is not None else None
        return x0_from_output(
            schedule, x, t, out, clip_denoised, denoised_fn,
            guidance_grad=grad, thresholding=thresholding, percentile=percentile,
        )

    return grid, denoise


def _steps(n: int, progress: bool, name: str):
    return tqdm(range(n), disable=not progress, desc=name, leave=False)


# --------------------------------------------------------------------------------------------
# Solvers


@torch.no_grad()
def dpm_solver_pp_2m(
    model_fn: ModelFn,
    schedule: Schedule,
    x_T: torch.Tensor,
    *,
    steps: int,
    model_kwargs: dict | None = None,
    clip_denoised: bool = True,
    denoised_fn: DenoisedFn | None = None,
    cond_fn: CondFn | None = None,
    noise_fn: NoiseFn = global_rng,
    callback: StepCallback | None = None,
    progress: bool = False,
    spacing: str = "linspace",
    thresholding: bool = False,
    percentile: float = 0.995,
    lower_order_final: bool = True,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Alg. 2): `steps` model calls.

    With h_i = lambda_{t_i} - lambda_{t_{i-1}} and M_i the x0 prediction at t_i:
        x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D_i   (Alg. 2)
    with D_1 = M_0 (the first step is DPM-Solver++(1) = DDIM) and, for i >= 2,
        r_i = h_{i-1} / h_i,   D_i = (1 + 1/(2 r_i)) M_{i-1} - 1/(2 r_i) M_{i-2}.
    The final step to sigma = 0 (h = +inf, r -> 0) is first order and returns M at the last
    timestep. `thresholding` = dynamic thresholding of every M (Imagen's, which Lu et al. pair
    with DPM-Solver++ for guided pixel-space sampling); the static clamp `clip_denoised` is
    GLIDE's default. `noise_fn` is never called.

    `lower_order_final` (default on; Lu et al.'s released solver and diffusers use the same trick
    for few steps) makes the step into t = 0 first order too (no effect on a grid that does not
    reach t = 0, such as "trailing", whose last step is already the 1st-order jump to x0).
    On GLIDE's integer grid that step is long in lambda (t = 111 -> 0 is h = 3.4 for the cosine
    schedule at 10 steps, after h ~ 0.7 steps) while M saturates there (dM/dlambda =
    O(sigma_hat^2)), so the linear extrapolation of 2M overshoots. On Gaussian data
    (tests/test_solvers.py) switching it off costs 2-30x in error at 10-30 steps, while the
    1st-order step leaves an error floor of ~1e-3 rms at 20-50 steps (a seventh of an 8-bit
    level, 2/255). Turn it off for the textbook 2nd-order convergence as steps -> inf.
    """
    grid, denoise = _setup(
        model_fn, schedule, x_T, steps, spacing, model_kwargs=model_kwargs, clip_denoised=clip_denoised,
        denoised_fn=denoised_fn, cond_fn=cond_fn, thresholding=thresholding, percentile=percentile,
    )
    n = len(grid.t)
    x, m_prev, h_prev = x_T, None, None
    for i in _steps(n, progress, "dpm++2m"):
        m = denoise(x, i)
        if i == n - 1:
            x_next = m  # to sigma = 0: (0 / sigma) x - 1 * (0 - 1) M
        else:
            h = float(grid.lam[i + 1] - grid.lam[i])
            if m_prev is None or (lower_order_final and i == n - 2 and grid.k[n - 1] == 0):
                d = m  # DPM-Solver++(1), i.e. DDIM
            else:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * m - (1 / (2 * r)) * m_prev
            # -(e^{-h} - 1) = -expm1(-h), computed without cancellation for small h
            ratio, coef = float(grid.sigma[i + 1] / grid.sigma[i]), float(grid.alpha[i + 1] * math.expm1(-h))
            x_next = ratio * x - coef * d
            h_prev = h
        m_prev = m
        if callback is not None:
            callback(i, int(grid.t[i]), x_next, m)
        x = x_next
    return x


@torch.no_grad()
def heun(
    model_fn: ModelFn,
    schedule: Schedule,
    x_T: torch.Tensor,
    *,
    steps: int,
    model_kwargs: dict | None = None,
    clip_denoised: bool = True,
    denoised_fn: DenoisedFn | None = None,
    cond_fn: CondFn | None = None,
    noise_fn: NoiseFn = global_rng,
    callback: StepCallback | None = None,
    progress: bool = False,
    spacing: str = "linspace",
    thresholding: bool = False,
    percentile: float = 0.995,
) -> torch.Tensor:
    """Heun's 2nd-order method in the EDM parametrisation (Karras et al. 2022, Alg. 1, S_churn = 0).

    In x_hat = x / alpha, sigma_hat = sigma / alpha (Table 1, VP):
        d_i = (x_hat_i - D(x_hat_i; sigma_hat_i)) / sigma_hat_i                 (Alg. 1 line 4)
        x'  = x_hat_i + (sigma_hat_{i+1} - sigma_hat_i) d_i                     (line 5, Euler)
        d'  = (x' - D(x'; sigma_hat_{i+1})) / sigma_hat_{i+1}                   (line 7)
        x_hat_{i+1} = x_hat_i + (sigma_hat_{i+1} - sigma_hat_i) (d_i + d') / 2  (line 8, trapezoid)
    and, as in Alg. 1, the step to sigma_hat = 0 is Euler (it returns D). Everything is computed in
    GLIDE's scale x = alpha x_hat through the identity x_hat_i = D_i + sigma_hat_i d_i
    (d_i = (x - alpha D) / sigma is the eps implied by the processed x0), so the huge
    x_hat at t = T-1 (sigma_hat ~ 2e4 for the cosine schedule) is never formed.

    Deviation from Alg. 1: the first step, leaving t = T-1, is Euler too. The trapezoid rule's
    error on [sigma_hat_1, sigma_hat_0] grows like sigma_hat_0 (d_0 - d_1), and with
    sigma_hat_0 / sigma_hat_1 ~ 1e3 - 1e4 on GLIDE's integer grid it dominates (EDM avoids it
    with sigma_max = 80 and rho = 7 spacing over continuous sigma); the Euler step from there is
    the sigma_hat_0 -> inf limit (DDIM) and, for Gaussian data, its error contracts to
    O(1 / sigma_hat_1^2) at x0, i.e. 2nd order in the step count, like DPM-Solver++(2M)'s own
    1st-order start. Measured (tests/test_solvers.py problem, cosine, max |error| at 5/10/20
    steps): Heun on the first step 93 / 6.9 / 0.72, Euler on it 0.17 / 0.042 / 0.010; for the
    linear schedule (sigma_hat_{T-1} = 157) the two agree to 2 digits.
    Model calls: 2 * steps - 2 (steps >= 2). `noise_fn` is never called.
    """
    grid, denoise = _setup(
        model_fn, schedule, x_T, steps, spacing, model_kwargs=model_kwargs, clip_denoised=clip_denoised,
        denoised_fn=denoised_fn, cond_fn=cond_fn, thresholding=thresholding, percentile=percentile,
    )
    n, sh = len(grid.t), grid.sigma_hat
    x = x_T
    for i in _steps(n, progress, "heun"):
        d0 = denoise(x, i)
        if i == n - 1:
            x_next = d0  # Euler to sigma_hat = 0
        else:
            a, s = float(grid.alpha[i]), float(grid.sigma[i])
            a1, s1 = float(grid.alpha[i + 1]), float(grid.sigma[i + 1])
            d = (x - a * d0) / s
            x_euler = a1 * d0 + s1 * d  # alpha_{i+1} (D_i + sigma_hat_{i+1} d_i)
            if i == 0:
                x_next = x_euler
            else:
                d1 = denoise(x_euler, i + 1)
                d_p = (x_euler - a1 * d1) / s1
                # x_hat_i + dsig (d + d')/2 = D_i + (sh_i + sh_{i+1})/2 d + (sh_{i+1} - sh_i)/2 d'
                x_hat = d0 + float((sh[i] + sh[i + 1]) / 2) * d + float((sh[i + 1] - sh[i]) / 2) * d_p
                x_next = a1 * x_hat
        if callback is not None:
            callback(i, int(grid.t[i]), x_next, d0)
        x = x_next
    return x


def _euler_like(name, model_fn, schedule, x_T, *, steps, eta, noise_fn, callback, progress, spacing, **setup):
    if not eta >= 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    grid, denoise = _setup(model_fn, schedule, x_T, steps, spacing, **setup)
    n, sh = len(grid.t), grid.sigma_hat
    x = x_T
    for i in _steps(n, progress, name):
        d0 = denoise(x, i)
        if i == n - 1:
            x_next = d0  # to sigma_hat = 0
        else:
            s_cur, s_next = float(sh[i]), float(sh[i + 1])
            # k-diffusion's ancestral split (eta = 1 is DDPM/DDIM-eta-1's posterior variance):
            # sigma_up^2 = eta^2 s'^2 (s^2 - s'^2) / s^2, sigma_down^2 = s'^2 - sigma_up^2
            s_up = min(s_next, eta * math.sqrt(s_next**2 * (s_cur**2 - s_next**2) / s_cur**2))
            s_down = math.sqrt(s_next**2 - s_up**2)
            d = (x - float(grid.alpha[i]) * d0) / float(grid.sigma[i])
            a1 = float(grid.alpha[i + 1])
            # Euler to sigma_down: x_hat + (s_down - s) d = D + s_down d; then add s_up z; x = alpha x_hat
            x_next = a1 * d0 + (a1 * s_down) * d
            if s_up > 0:
                x_next = x_next + (a1 * s_up) * noise_fn(x)
        if callback is not None:
            callback(i, int(grid.t[i]), x_next, d0)
        x = x_next
    return x


@torch.no_grad()
def euler(
    model_fn: ModelFn,
    schedule: Schedule,
    x_T: torch.Tensor,
    *,
    steps: int,
    model_kwargs: dict | None = None,
    clip_denoised: bool = True,
    denoised_fn: DenoisedFn | None = None,
    cond_fn: CondFn | None = None,
    noise_fn: NoiseFn = global_rng,
    callback: StepCallback | None = None,
    progress: bool = False,
    spacing: str = "linspace",
    thresholding: bool = False,
    percentile: float = 0.995,
) -> torch.Tensor:
    """Euler's method in sigma_hat (EDM Alg. 1 without line 6-8): x_hat_{i+1} = D_i + sigma_hat_{i+1} d_i.

    In GLIDE's scale this is exactly DDIM with eta = 0 (Song et al. 2020, eq. 12) on the solver's
    timesteps: 1st order, `steps` model calls, `noise_fn` never called.
    """
    return _euler_like(
        "euler", model_fn, schedule, x_T, steps=steps, eta=0.0, noise_fn=noise_fn, callback=callback,
        progress=progress, spacing=spacing, model_kwargs=model_kwargs, clip_denoised=clip_denoised,
        denoised_fn=denoised_fn, cond_fn=cond_fn, thresholding=thresholding, percentile=percentile,
    )


@torch.no_grad()
def euler_ancestral(
    model_fn: ModelFn,
    schedule: Schedule,
    x_T: torch.Tensor,
    *,
    steps: int,
    model_kwargs: dict | None = None,
    clip_denoised: bool = True,
    denoised_fn: DenoisedFn | None = None,
    cond_fn: CondFn | None = None,
    noise_fn: NoiseFn = global_rng,
    callback: StepCallback | None = None,
    progress: bool = False,
    spacing: str = "linspace",
    thresholding: bool = False,
    percentile: float = 0.995,
    eta: float = 1.0,
) -> torch.Tensor:
    """Euler ancestral (k-diffusion's `sample_euler_ancestral`, in EDM's sigma_hat): each step takes
    an Euler step to sigma_down and adds sigma_up noise, sigma_up^2 + sigma_down^2 = sigma_hat_{i+1}^2.

    With eta = 1 the step is the DDPM posterior q(x_{t'} | x_t, x0) (DDIM eta = 1), so on the default
    spacing it equals `reference.ddim_sample_loop(..., eta=1)` over `Schedule.create(..., str(steps))`
    fed the same noise; eta = 0 is `euler`. `noise_fn(x)` is called exactly once per step that adds
    noise: every step but the last (to sigma = 0) when eta > 0, so `steps - 1` calls.
    """
    return _euler_like(
        "euler_a", model_fn, schedule, x_T, steps=steps, eta=eta, noise_fn=noise_fn, callback=callback,
        progress=progress, spacing=spacing, model_kwargs=model_kwargs, clip_denoised=clip_denoised,
        denoised_fn=denoised_fn, cond_fn=cond_fn, thresholding=thresholding, percentile=percentile,
    )


Solver = Callable[..., torch.Tensor]

SOLVERS: dict[str, Solver] = {
    "dpm++2m": dpm_solver_pp_2m,
    "heun": heun,
    "euler": euler,
    "euler_a": euler_ancestral,
}


def get_solver(name: str) -> Solver:
    """The solver registered under `name` (see `SOLVERS`)."""
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown solver {name!r}; available: {', '.join(SOLVERS)}") from None
