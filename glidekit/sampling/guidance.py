"""Guidance as wrappers around a model function (GLIDE, Nichol et al. 2021, s.2.3-2.4).

Each wrapper takes and returns a `model_fn(x, t, **kwargs)` or builds a `denoised_fn` /
`cond_fn` for the samplers, so guidance types compose without touching any sampler.

Gradient guidance (`cond_fn(x, t) -> grad_x log p(y | x_t)`, used by every sampler through
condition_mean / condition_score): the noised CLIP's `NoisedCLIP.cond_fn`, a noisy classifier's
`classifier_cond_fn` (Dhariwal & Nichol 2021), and `combine_cond_fns` to sum several.
Classifier-free guidance (`classifier_free`) works for text and for class-conditional models
alike; it can be used together with gradient guidance.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .reference import CondFn, ModelFn


def classifier_free(model_fn: ModelFn, scale: float) -> ModelFn:
    """Classifier-free guidance exactly as GLIDE's notebooks (Ho & Salimans 2021; GLIDE eq. 2).

    The batch holds 2B rows: B conditional, then B unconditional (empty-prompt) kwargs. Only the
    first half of x is read; the model runs on [x_B, x_B]; the eps channels are mixed
    eps_u + s (eps_c - eps_u) and copied to both halves, while each row keeps its own variance
    channels.

    Every kwarg is passed through whole, so any conditioning works whose first B rows are the
    conditional and last B rows the unconditional inputs: text (`tokens`/`mask` of the prompts,
    then of the empty prompt) or, for a class-conditional UNet (`UNetConfig.num_classes`),
    `y = [labels..., null...]` with the null class `num_classes` (see `class_cfg_labels`).
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


def class_cfg_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The `y` kwarg of `classifier_free` for a class-conditional UNet: `labels` (B,) followed
    by B null-class labels (`num_classes`, the UNet's `null_class`)."""
    labels = torch.as_tensor(labels).long()
    if labels.dim() != 1:
        raise ValueError(f"labels must be one class per sample, got shape {tuple(labels.shape)}")
    return torch.cat([labels, torch.full_like(labels, num_classes)])


def classifier_cond_fn(classifier: Callable[..., torch.Tensor], y: torch.Tensor | int, scale: float) -> CondFn:
    """Classifier guidance (Dhariwal & Nichol 2021, Alg. 1 / eq. 11 with s = `scale`).

    `classifier(x_t, t) -> logits` (a `NoisyClassifier` or any such callable, at original
    timesteps t, the ones samplers pass). Returns `cond_fn(x, t)` =

        scale * grad_x log softmax(classifier(x, t))[row, y[row]]

    summed over rows (each row's gradient only depends on its own log-probability), as
    guided-diffusion's `classifier_sample.py`. `y` holds one label per row of x, or one label (an
    int or a 1-element tensor) for all rows. The gradient is taken on a detached copy of x with
    grad enabled, so samplers may call it under `torch.no_grad()`; it is returned in x's dtype
    and never flows back into x. The classifier's mode (eval for sampling) is left as it is.
    `scale == 0` returns zeros without running the classifier. Extra keyword arguments (such as
    a sampler's model_kwargs) are accepted and ignored. Combined with `classifier_free`, whose
    batch is 2B rows (conditional, then unconditional copies), pass the labels twice
    (`y.repeat(2)`): only the first B rows are read by the guided model anyway.
    """
    labels = torch.as_tensor(y).long().reshape(-1)

    def cond_fn(x: torch.Tensor, t: torch.Tensor, **_ignored) -> torch.Tensor:
        if len(labels) not in (1, x.shape[0]):
            raise ValueError(f"{len(labels)} class labels for a batch of {x.shape[0]} samples")
        if scale == 0:
            return torch.zeros_like(x)
        rows = labels.to(x.device).expand(x.shape[0])
        with torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)
            param = next(iter(classifier.parameters()), None) if isinstance(classifier, torch.nn.Module) else None
            logits = classifier(x_in if param is None else x_in.to(param.dtype), t)
            log_probs = F.log_softmax(logits.float(), dim=-1)
            selected = log_probs[torch.arange(len(rows), device=x.device), rows]
            (grad,) = torch.autograd.grad(selected.sum(), x_in)
        return (grad * scale).to(x.dtype).detach()

    return cond_fn


def combine_cond_fns(*fns: CondFn | None) -> CondFn | None:
    """One `cond_fn` whose gradient is the sum of the given ones (None entries are skipped),
    e.g. CLIP guidance plus classifier guidance: the log-likelihoods add, so their gradients do.
    Returns the only function when there is one and None when there are none."""
    live = [f for f in fns if f is not None]
    if len(live) <= 1:
        return live[0] if live else None

    def cond_fn(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        total = live[0](x, t, **kwargs)
        for f in live[1:]:
            total = total + f(x, t, **kwargs)
        return total

    return cond_fn
