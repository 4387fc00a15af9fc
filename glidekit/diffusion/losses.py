"""Training losses and timestep samplers for GLIDE's eps + learned-range-variance models.

Papers: DDPM (Ho et al. 2020), improved DDPM (Nichol & Dhariwal 2021, "iDDPM" below).

Pieces, each small and free-standing:

* Gaussian helpers: `normal_kl`, `approx_standard_normal_cdf`, `discretized_gaussian_log_likelihood`.
* `vb_terms_bpd`: one term L_k of the variational bound (iDDPM eq. 4-5) in bits per dimension.
* `hybrid_loss`: L_hybrid = L_simple + lambda L_vb (iDDPM s.3.1), stop-gradient on the mean in L_vb.
* `prior_bpd`: L_T = KL(q(x_T | x_0) || N(0, I)) in bits per dimension (for NLL evaluation).
* Timestep samplers: `UniformSampler`, `LossSecondMomentSampler` (iDDPM s.3.3 importance sampling).

All posterior / model maths is reused from `gaussian.py` (`q_posterior_mean`,
`learned_range_log_variance`, `p_mean_variance`) and the schedule's float64 arrays; steps are the
schedule's (possibly respaced) step indices k, per row, exactly as in `gaussian.py`. Training uses
the full (unrespaced) schedule, where k is the original timestep t.

Precision: half / bfloat16 inputs are promoted to float32 before any loss maths (the log / exp /
tanh of the likelihood and KL are not safe in 8 mantissa bits); float32 and float64 are kept.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ConfigError
from .gaussian import eps_from_v, extract, p_mean_variance, q_posterior_mean, v_from_eps
from .schedule import Schedule

__all__ = [
    "normal_kl",
    "approx_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "mean_flat",
    "vb_terms_bpd",
    "hybrid_loss",
    "prior_bpd",
    "DEFAULT_VB_LAMBDA",
    "ScheduleSampler",
    "UniformSampler",
    "LossSecondMomentSampler",
    "create_schedule_sampler",
]

LN2 = math.log(2.0)

# iDDPM s.3.1: "we set lambda = 0.001 to prevent L_vb from overwhelming L_simple".
DEFAULT_VB_LAMBDA = 0.001


def _promote(x: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 -> float32; float32 and float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all non-batch dimensions -> (B,)."""
    return x.mean(dim=tuple(range(1, x.dim())))


# ---------------------------------------------------------------------------------------------
# Gaussian helpers
# ---------------------------------------------------------------------------------------------


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats (broadcasting).

    KL = 1/2 [ log(s2^2 / s1^2) + (s1^2 + (m1 - m2)^2) / s2^2 - 1 ]
       = 1/2 [ -1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (m1 - m2)^2 exp(-logvar2) ].
    Any argument may be a Python number as long as one is a tensor.
    """
    ref = next((a for a in (mean1, logvar1, mean2, logvar2) if isinstance(a, torch.Tensor)), None)
    if ref is None:
        raise TypeError("normal_kl needs at least one tensor argument")
    m1, lv1, m2, lv2 = (
        a if isinstance(a, torch.Tensor) else torch.tensor(a, dtype=ref.dtype, device=ref.device)
        for a in (mean1, logvar1, mean2, logvar2)
    )
    # (lv2 - lv1) grouped so that identical Gaussians give exactly 0
    return 0.5 * (-1.0 + (lv2 - lv1) + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Phi(x) ~= 1/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as improved DDPM's code (and
    PixelCNN++ / GELU's tanh form). Monotone; max abs error about 2e-4."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """Elementwise log-probability (nats) of 8-bit data x in [-1, 1] under N(means, exp(log_scales)^2)
    integrated over x's bin (DDPM s.3.3 eq. 13; iDDPM's decoder L_0).

    Pixel values are i / 127.5 - 1, i = 0..255, so bins are x +- 1/255 (width 2/255); the edge
    bins are open: (-inf, -1 + 1/255] for x < -0.999 and [1 - 1/255, inf) for x > 0.999. The 256
    bin probabilities telescope to exactly 1. Probabilities are floored at 1e-12 before the log.
    """
    x, means, log_scales = _promote(x), _promote(means), _promote(log_scales)
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))  # bin 0: P(X <= -1 + 1/255)
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))  # bin 255: P(X >= 1 - 1/255)
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


# ---------------------------------------------------------------------------------------------
# Variational bound terms
# ---------------------------------------------------------------------------------------------


def vb_terms_bpd(
    schedule: Schedule,
    model_output: torch.Tensor,
    x_start: torch.Tensor,
    x_t: torch.Tensor,
    k: torch.Tensor,
) -> torch.Tensor:
    """One variational-bound term per row, in bits per dimension -> (B,).

    iDDPM eq. 4-5 (DDPM eq. 5):
        L_{k-1} = KL(q(x_{k-1} | x_k, x_0) || p(x_{k-1} | x_k))   for k >= 1,
        L_0     = -log p(x_0 | x_1)  (discretised Gaussian decoder)   for k == 0,
    averaged over the non-batch dimensions and divided by ln 2. q's mean is DDPM eq. 7
    (`gaussian.q_posterior_mean`), its variance the schedule's clipped posterior log-variance;
    p's mean and variance come from GLIDE's raw [eps | v] output via `gaussian.p_mean_variance`
    (learned range, iDDPM eq. 15) with no clamp of the predicted x_0, as in training.
    k indexes the schedule's (possibly respaced) steps; rows may have different k.
    """
    model_output, x_start, x_t = _promote(model_output), _promote(x_start), _promote(x_t)
    k = k.to(device=x_t.device, dtype=torch.long)
    true_mean = q_posterior_mean(schedule, x_start, x_t, k)
    true_log_var = extract(schedule.posterior_log_variance_clipped, k, x_t)
    out = p_mean_variance(schedule, model_output, x_t, k, clip_denoised=False)
    kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / LN2
    decoder_nll = -mean_flat(
        discretized_gaussian_log_likelihood(x_start, means=out["mean"], log_scales=0.5 * out["log_variance"])
    ) / LN2
    return torch.where(k == 0, decoder_nll, kl)


def prior_bpd(schedule: Schedule, x_start: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)) in bits per dimension -> (B,) (DDPM eq. 5's first term).

    Has no parameters; it only measures how close the schedule's last step is to pure noise.
    """
    x_start = _promote(x_start)
    k = torch.full((x_start.shape[0],), schedule.num_steps - 1, dtype=torch.long, device=x_start.device)
    mean = extract(schedule.sqrt_alphas_cumprod, k, x_start) * x_start
    log_var = torch.log(extract(1.0 - schedule.alphas_cumprod, k, x_start))
    return mean_flat(normal_kl(mean, log_var, 0.0, 0.0)) / LN2


# ---------------------------------------------------------------------------------------------
# Hybrid loss
# ---------------------------------------------------------------------------------------------


def hybrid_loss(
    schedule: Schedule,
    model_output: torch.Tensor,
    x_start: torch.Tensor,
    x_t: torch.Tensor,
    k: torch.Tensor,
    noise: torch.Tensor,
    *,
    vb_weight: float | None = None,
    mse_only: bool = False,
    prediction: str = "eps",
) -> dict[str, torch.Tensor]:
    """Per-row training losses for GLIDE's [eps | v] output -> {"loss", "mse", "vb"}, each (B,).

    x_t must be `gaussian.q_sample(schedule, x_start, k, noise)`.

    * mse = L_simple = mean_flat((noise - eps)^2)  (DDPM eq. 14, mean over dims).
    * vb  = `vb_terms_bpd` on cat([eps.detach(), v]) (iDDPM s.3.1: "we apply a stop-gradient to
      the mu_theta output for the L_vb term", so L_vb trains only the variance), bits per dim,
      *unweighted*.
    * loss = mse + vb_weight * vb.

    vb_weight (iDDPM's lambda): the paper's L_hybrid = L_simple + lambda L_vb with lambda = 0.001,
    where L_vb = L_0 + ... + L_{T-1} (+ L_T, which has no parameters) is a *sum* over the T terms.
    Training draws one k uniformly per row, so the unbiased one-sample estimate of L_vb is
    T * L_k and lambda L_vb ~= 0.001 * T * L_k. Hence the default vb_weight = 0.001 * T with
    T = schedule.num_steps, which is exactly improved-diffusion's RESCALED_MSE factor
    `num_timesteps / 1000` (`rescale_learned_sigmas=True`). With T = 1000 (GLIDE) it is 1, the
    same as guided-diffusion's plain MSE mode (mse + vb), so the three agree there. Note both
    codes (and this one) measure L_vb in bits per dim, so in nats lambda is effectively
    0.001 / ln 2.

    mse_only (or a model_output with only C channels, i.e. a fixed-variance model): loss = mse and
    vb is zeros.

    prediction="v": the first C channels are v and mse = mean_flat((v_target - v)^2) with
    v_target = sqrt(abar) noise - sqrt(1 - abar) x_0 (Salimans & Ho 2022, s.4; in eps terms the
    weight 1 / abar = 1 + 1/SNR); the vb term sees the eps these v imply.

    With a non-uniform timestep sampler, multiply "loss" by the sampler's weights before the batch
    mean (and feed the unweighted "loss" back to `sampler.update`).
    """
    model_output, x_start, x_t, noise = (_promote(a) for a in (model_output, x_start, x_t, noise))
    c = x_t.shape[1]
    if model_output.shape[1] not in (c, 2 * c):
        raise ValueError(f"model_output has {model_output.shape[1]} channels; expected {c} (eps) or {2 * c} (eps | v)")
    if prediction not in ("eps", "v"):
        raise ValueError(f"unknown prediction {prediction!r}")
    pred = model_output[:, :c]
    target = v_from_eps(schedule, x_start, k, noise) if prediction == "v" else noise
    mse = mean_flat((target - pred) ** 2)
    if mse_only or model_output.shape[1] == c:
        vb = torch.zeros_like(mse)
        return {"loss": mse, "mse": mse, "vb": vb}
    eps = eps_from_v(schedule, x_t, k, pred) if prediction == "v" else pred
    v = model_output[:, c:]
    frozen = torch.cat([eps.detach(), v], dim=1)
    vb = vb_terms_bpd(schedule, frozen, x_start, x_t, k)
    weight = DEFAULT_VB_LAMBDA * schedule.num_steps if vb_weight is None else float(vb_weight)
    return {"loss": mse + weight * vb, "mse": mse, "vb": vb}


# ---------------------------------------------------------------------------------------------
# Timestep samplers (iDDPM s.3.3)
# ---------------------------------------------------------------------------------------------


class ScheduleSampler:
    """Draws training steps k with importance weights w_k = 1 / (T p_k), so that
    E_{k~p}[w_k L_k] = (1/T) sum_k L_k, the uniform-k objective, for any p.

    `sample` uses only the generator passed in (deterministic given its state); tensors are made
    on the generator's device, then moved to `device` if given. State round-trips through
    `state_dict` / `load_state_dict` (tensors and plain numbers) for exact resume.

    Multi-process training: `update(k, losses)` expects the k and unweighted per-example losses of
    *all* ranks (the caller all-gathers them, in rank order); every rank then calls `update` with
    the same data and so holds the same state, while drawing from its own generator.
    """

    def __init__(self, num_timesteps: int):
        if num_timesteps <= 0:
            raise ValueError(f"num_timesteps must be positive, got {num_timesteps}")
        self.num_timesteps = int(num_timesteps)

    def probabilities(self) -> torch.Tensor | None:
        """p over 0..T-1 as float64, or None for uniform."""
        return None

    def sample(
        self, batch_size: int, generator: torch.Generator, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(k LongTensor (B,), weights FloatTensor (B,)) with weights = 1 / (T p_k)."""
        gdev = generator.device
        p = self.probabilities()
        if p is None:
            k = torch.randint(0, self.num_timesteps, (batch_size,), generator=generator, device=gdev)
            w = torch.ones(batch_size, dtype=torch.float32, device=gdev)
        else:
            p = p.to(gdev)
            k = torch.multinomial(p, batch_size, replacement=True, generator=generator)
            w = (1.0 / (self.num_timesteps * p[k])).float()
        if device is not None:
            k, w = k.to(device), w.to(device)
        return k, w

    def update(self, k: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-example losses at steps k (already gathered across ranks). No-op here."""

    def state_dict(self) -> dict[str, Any]:
        return {"num_timesteps": self.num_timesteps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["num_timesteps"]) != self.num_timesteps:
            raise ValueError(f"sampler state is for {state['num_timesteps']} timesteps, not {self.num_timesteps}")


class UniformSampler(ScheduleSampler):
    """k ~ U{0, ..., T-1}; all weights 1 (DDPM Algorithm 1)."""


class LossSecondMomentSampler(ScheduleSampler):
    """Importance sampling p_k proportional to sqrt(E[L_k^2]) (iDDPM s.3.3 eq. 18), kept over the
    last `history` losses of each step and mixed with uniform (`uniform_prob`), as
    guided-diffusion's LossSecondMomentResampler. Until every step has `history` losses it samples
    uniformly (exactly as `UniformSampler` would, same generator draws) with weights 1.

    iDDPM uses it for the L_vb objective alone (it is what makes L_vb trainable); it does not help
    L_hybrid there.
    """

    def __init__(self, num_timesteps: int, history: int = 10, uniform_prob: float = 0.001):
        super().__init__(num_timesteps)
        if history <= 0:
            raise ValueError(f"history must be positive, got {history}")
        if not 0.0 <= uniform_prob <= 1.0:
            raise ValueError(f"uniform_prob must be in [0, 1], got {uniform_prob}")
        self.history = int(history)
        self.uniform_prob = float(uniform_prob)
        self.loss_history = torch.zeros(self.num_timesteps, self.history, dtype=torch.float64)
        self.loss_counts = torch.zeros(self.num_timesteps, dtype=torch.long)

    def warmed_up(self) -> bool:
        return bool((self.loss_counts == self.history).all())

    def probabilities(self) -> torch.Tensor | None:
        if not self.warmed_up():
            return None
        w = self.loss_history.pow(2).mean(dim=-1).sqrt()
        total = w.sum()
        if not torch.isfinite(total) or total <= 0:
            return None  # all-zero or non-finite history: nothing to prefer
        p = w / total
        return p * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def update(self, k: torch.Tensor, losses: torch.Tensor) -> None:
        """Append each (k, loss) pair in order; a full step drops its oldest loss (FIFO)."""
        ks = torch.as_tensor(k).detach().reshape(-1).cpu().long().tolist()
        ls = torch.as_tensor(losses).detach().reshape(-1).cpu().double().tolist()
        if len(ks) != len(ls):
            raise ValueError(f"{len(ks)} timesteps but {len(ls)} losses")
        for t, loss in zip(ks, ls):
            if not 0 <= t < self.num_timesteps:
                raise ValueError(f"timestep {t} outside [0, {self.num_timesteps})")
            n = int(self.loss_counts[t])
            if n == self.history:
                self.loss_history[t, :-1] = self.loss_history[t, 1:].clone()
                self.loss_history[t, -1] = loss
            else:
                self.loss_history[t, n] = loss
                self.loss_counts[t] = n + 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_timesteps": self.num_timesteps,
            "history": self.history,
            "uniform_prob": self.uniform_prob,
            "loss_history": self.loss_history.clone(),
            "loss_counts": self.loss_counts.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        hist = torch.as_tensor(state["loss_history"], dtype=torch.float64)
        counts = torch.as_tensor(state["loss_counts"], dtype=torch.long)
        if int(state["history"]) != self.history or hist.shape != (self.num_timesteps, self.history):
            raise ValueError(f"sampler state has history {tuple(hist.shape)}, expected ({self.num_timesteps}, {self.history})")
        if counts.shape != (self.num_timesteps,):
            raise ValueError(f"sampler state has loss_counts of shape {tuple(counts.shape)}")
        self.uniform_prob = float(state["uniform_prob"])
        self.loss_history = hist.clone()
        self.loss_counts = counts.clone()


def create_schedule_sampler(name: str, num_timesteps: int) -> ScheduleSampler:
    """"uniform" or "loss-second-moment" (guided-diffusion's "loss-second-moment")."""
    if name == "uniform":
        return UniformSampler(num_timesteps)
    if name == "loss-second-moment":
        return LossSecondMomentSampler(num_timesteps)
    raise ConfigError(f"unknown schedule sampler {name!r}; use 'uniform' or 'loss-second-moment'")
