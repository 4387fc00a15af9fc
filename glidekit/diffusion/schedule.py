"""Noise schedules and timestep respacing, as float64 arrays (improved DDPM, Nichol & Dhariwal 2021).

Respacing keeps a subset of the T original timesteps and rebuilds betas from the kept
alphas_cumprod (improved DDPM s.4), which is how GLIDE samples in 100 or 27 steps. Arrays stay
in numpy float64 on the host: MPS has no float64, and the reference casts each coefficient to
float32 only after indexing.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError


def betas_for_alpha_bar(num_timesteps: int, alpha_bar, max_beta: float = 0.999) -> np.ndarray:
    """beta_i = min(1 - abar((i+1)/T) / abar(i/T), max_beta) for a continuous abar on [0, 1]."""
    return np.array(
        [min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta) for i in range(num_timesteps)],
        dtype=np.float64,
    )


def get_betas(schedule: str, num_timesteps: int) -> np.ndarray:
    """Betas of the named schedule: "linear" (DDPM, scaled to T) or "squaredcos_cap_v2" (cosine)."""
    if schedule == "linear":
        scale = 1000 / num_timesteps  # keeps the DDPM endpoints for T != 1000
        return np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)
    if schedule in ("squaredcos_cap_v2", "cosine"):
        # improved DDPM eq. 17, s = 0.008
        return betas_for_alpha_bar(num_timesteps, lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2)
    raise ConfigError(f"unknown noise schedule {schedule!r}; use 'linear' or 'squaredcos_cap_v2'")


def space_timesteps(num_timesteps: int, spec: str | list[int] | tuple[int, ...]) -> list[int]:
    """The sorted original timesteps kept by a respacing spec.

    "" keeps all; "N" or "a,b,c" are per-section counts over equal sections; "ddimN" uses a
    uniform integer stride; "fast27" is GLIDE's upsampler schedule ("10,10,3,2,2" with T-1
    replaced by T-3).
    """
    if isinstance(spec, (list, tuple)):
        counts = [int(c) for c in spec]
    elif spec in ("", None):
        return list(range(num_timesteps))
    elif spec == "fast27":
        steps = set(space_timesteps(num_timesteps, "10,10,3,2,2"))
        steps.discard(num_timesteps - 1)
        steps.add(num_timesteps - 3)
        return sorted(steps)
    elif spec.startswith("ddim"):
        try:
            desired = int(spec[len("ddim"):])
        except ValueError:
            raise ConfigError(f"bad respacing {spec!r}: expected 'ddimN' with an integer N") from None
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == desired:
                return list(range(0, num_timesteps, stride))
        raise ConfigError(f"cannot make exactly {desired} DDIM steps with an integer stride over {num_timesteps}")
    else:
        try:
            counts = [int(c) for c in spec.split(",")]
        except ValueError:
            raise ConfigError(
                f"bad respacing {spec!r}: use 'N', 'a,b,c', 'ddimN' or 'fast27'"
            ) from None
    if any(c < 0 for c in counts):
        raise ConfigError(f"respacing counts must be >= 0, got {counts}")
    size_per, extra = divmod(num_timesteps, len(counts))
    kept: set[int] = set()
    start = 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ConfigError(f"cannot take {count} steps from a section of {size} timesteps")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        pos = 0.0
        for _ in range(count):
            kept.add(start + round(pos))  # Python round: half to even, as the reference
            pos += stride
        start += size
    return sorted(kept)


class Schedule:
    """A (possibly respaced) diffusion process as float64 arrays indexed by step k = 0..K-1.

    `timestep_map[k]` is the original timestep the model sees at step k.
    """

    def __init__(self, base_betas: np.ndarray, timestep_map: list[int]):
        abar_full = np.cumprod(1.0 - base_betas)
        self.num_original_timesteps = len(base_betas)
        self.timestep_map = np.asarray(timestep_map, dtype=np.int64)
        last = 1.0
        betas = []
        for tau in timestep_map:
            betas.append(1 - abar_full[tau] / last)
            last = abar_full[tau]
        b = np.asarray(betas, dtype=np.float64)
        self.betas = b
        self.alphas_cumprod = np.cumprod(1.0 - b)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.log_betas = np.log(b)
        # DDPM eq. 7: q(x_{t-1} | x_t, x_0)
        self.posterior_variance = b * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The posterior variance is 0 at k = 0; the reference clips the log with element 1.
        pv = self.posterior_variance
        self.posterior_log_variance_clipped = np.log(np.append(pv[1], pv[1:]) if len(pv) > 1 else pv)
        self.posterior_mean_coef1 = b * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(1.0 - b) / (1.0 - self.alphas_cumprod)

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @classmethod
    def create(cls, noise_schedule: str, num_timesteps: int, respacing: str = "") -> "Schedule":
        """Build from a schedule name, the original length T and a respacing spec."""
        if num_timesteps <= 0:
            raise ConfigError(f"number of diffusion steps must be positive, got {num_timesteps}")
        return cls(get_betas(noise_schedule, num_timesteps), space_timesteps(num_timesteps, respacing))
