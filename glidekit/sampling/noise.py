"""Where a sampler's per-step Gaussian noise comes from.

A noise source is a callable `x -> z` returning standard-normal noise shaped like x. Samplers
call it exactly once per step (as OpenAI's loops do), so a recorded sequence can be replayed to
compare runs step by step, and per-sample generators make sample i independent of the batch.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch

NoiseFn = Callable[[torch.Tensor], torch.Tensor]


def global_rng(x: torch.Tensor) -> torch.Tensor:
    """`torch.randn_like(x)` from the global RNG: OpenAI's draw order after `torch.manual_seed`."""
    return torch.randn_like(x)


def replay(noises: Iterable[torch.Tensor]) -> NoiseFn:
    """Return recorded noise tensors in order, one per call; running out is an error."""
    it = iter(noises)

    def fn(x: torch.Tensor) -> torch.Tensor:
        try:
            z = next(it)
        except StopIteration:
            raise RuntimeError("recorded noise exhausted: the sampler asked for more steps than recorded") from None
        if z.shape != x.shape:
            raise ValueError(f"recorded noise has shape {tuple(z.shape)}, sample has {tuple(x.shape)}")
        return z.to(device=x.device, dtype=x.dtype)

    return fn


def per_sample(generators: Sequence[torch.Generator]) -> NoiseFn:
    """Row i drawn from its own generator: the same seed gives the same image in any batch."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        if len(generators) != x.shape[0]:
            raise ValueError(f"{len(generators)} generators for a batch of {x.shape[0]}")
        return torch.stack(
            [torch.randn(x.shape[1:], generator=g, device=g.device, dtype=torch.float32) for g in generators]
        ).to(device=x.device, dtype=x.dtype)

    return fn


def seeded_generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One `torch.Generator` per seed."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
