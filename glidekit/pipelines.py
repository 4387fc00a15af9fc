"""Pipelines: text -> 64 px -> 256 px, inpainting, outpainting, re-noise editing.

Composition only: each pipeline picks models, builds a `model_fn` (guidance wrappers, cached
text embeddings), a noise source (one generator per sample) and calls a sampler. The maths lives
in `glidekit.diffusion` and `glidekit.sampling`.

Reproducibility: sample i of a call uses seed `seed + i` for everything random in its row
(initial noise and every step), so an image depends on its seed and prompt, not on the batch.

Progress: every pipeline takes `progress` (a tqdm bar) and `on_step(done, total)`, told after each
sampler step of a stage (an upsampling stage and each outpainting window count from 0 again).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .config import GlideConfig
from .diffusion import gaussian as G
from .diffusion.schedule import Schedule, get_betas, space_timesteps
from .errors import ConfigError, GlidekitError
from .images import back_project, quantize, resize_mask
from .models.unet import GlideUNet
from .sampling import noise as N
from .sampling import reference, solvers
from .sampling.guidance import class_cfg_labels, inpaint_repaste
from .tokenizers import text_tokenizer

REFERENCE_SAMPLERS = ("ancestral", "ddim")
COMPOSE = re.compile(r"\s+AND\s+")  # "a AND b": both concepts (Composable Diffusion, Liu et al. 2022)
SAMPLERS = REFERENCE_SAMPLERS + tuple(solvers.SOLVERS)


@dataclass(frozen=True)
class SamplerSpec:
    """Which sampler, how many model evaluations, and its options.

    `respacing` (reference samplers only) overrides `steps` with an OpenAI respacing string
    such as "fast27"; `spacing` (solvers only) is how a solver places its steps
    (`solvers.solver_timesteps`: "linspace", GLIDE's respacing "N", by default; "logsnr";
    "trailing"); `eta` is DDIM's / Euler ancestral's noise level.
    """

    name: str = "dpm++2m"
    steps: int = 20
    respacing: str | None = None
    eta: float | None = None
    thresholding: bool = False
    spacing: str | None = None

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.name!r}; choose from {', '.join(SAMPLERS)}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps <= 0:
            raise ConfigError(f"steps must be a positive integer, got {self.steps!r}")
        if self.respacing is not None and self.name not in REFERENCE_SAMPLERS:
            raise ConfigError(f"respacing {self.respacing!r} applies to the ancestral and ddim samplers only")
        if self.eta is not None and self.name not in ("ddim", "euler_a"):
            raise ConfigError(f"eta applies to the ddim and euler_a samplers, not {self.name}")
        if self.eta is not None and self.eta < 0:
            raise ConfigError(f"eta must be >= 0, got {self.eta}")
        if self.thresholding and self.name in REFERENCE_SAMPLERS:
            raise ConfigError("dynamic thresholding is a solver option; the reference samplers clamp to [-1, 1] as GLIDE")
        if self.name in REFERENCE_SAMPLERS:
            if self.spacing is not None:
                raise ConfigError(f"spacing applies to the solvers; {self.name} takes an OpenAI respacing (e.g. fast27)")
        else:
            if self.spacing not in (None, *solvers.SPACINGS):
                raise ConfigError(f"unknown spacing {self.spacing!r}; use one of {', '.join(solvers.SPACINGS)}")
            object.__setattr__(self, "spacing", self.spacing or "linspace")  # explicit in every record

    def describe(self) -> str:
        if self.name in REFERENCE_SAMPLERS:
            return f"{self.name}:{self.respacing or self.steps}"
        return f"{self.name}:{self.steps}" + ("" if self.spacing == "linspace" else f":{self.spacing}")


# GLIDE's notebook recipes, exactly (spec s.5), and glidekit's fast defaults. The upsampler's
# linear schedule wants its steps evenly spaced in log-SNR: on the analytic Gaussian problem
# (tests/test_solvers.py, linear schedule) DPM-Solver++(2M) with 10 logsnr steps ends 2.3e-2 from
# the exact ODE solution, with 15 linspace steps 1.5e-1 and OpenAI's fast27 DDIM 1.05e-1
# (BENCHMARKS.md); the base's cosine schedule is best with linspace (5.0e-3 at 20 steps).
OPENAI_BASE = SamplerSpec("ancestral", 100)
OPENAI_UPSAMPLE = SamplerSpec("ddim", 27, respacing="fast27")
FAST_BASE = SamplerSpec("dpm++2m", 20)
FAST_UPSAMPLE = SamplerSpec("dpm++2m", 10, spacing="logsnr")
UPSAMPLE_TEMP = 0.997  # GLIDE's scale of the upsampler's initial noise (its notebook's upsample_temp)


def run_sampler(
    spec: SamplerSpec,
    model_fn: Callable,
    diffusion: GlideConfig | object,
    x_T: torch.Tensor,
    *,
    t_start: int | None = None,
    model_kwargs: dict | None = None,
    denoised_fn=None,
    cond_fn=None,
    noise_fn=N.global_rng,
    callback=None,
    progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run one diffusion stage from x_T (at original timestep `t_start`, default T-1) to x_0.

    `callback(j, t, x, x0)` is the sampler's step callback; `on_step(done, total)` is told after
    every sampler step how many of the stage's steps are done (live progress in the web page)."""
    dcfg = diffusion.diffusion if isinstance(diffusion, GlideConfig) else diffusion
    T = dcfg.steps
    betas = get_betas(dcfg.noise_schedule, T)
    top = T - 1 if t_start is None else int(t_start)
    common = dict(model_kwargs=model_kwargs, denoised_fn=denoised_fn, cond_fn=cond_fn, noise_fn=noise_fn,
                  progress=progress)
    if spec.name in REFERENCE_SAMPLERS:
        kept = [t for t in space_timesteps(T, spec.respacing or str(min(spec.steps, T))) if t <= top]
        if not kept:
            raise ConfigError(f"no sampling step at or below timestep {top}; raise the strength or the steps")
        s = Schedule(betas, kept)
        common["callback"] = _reporting(callback, on_step, len(kept))
        if spec.name == "ancestral":
            return reference.p_sample_loop(model_fn, s, x_T, **common)
        return reference.ddim_sample_loop(model_fn, s, x_T, eta=spec.eta or 0.0, **common)
    s = Schedule(betas, list(range(top + 1)))
    steps = min(spec.steps, top + 1)
    common["callback"] = _reporting(callback, on_step, steps)  # a solver takes `steps` distinct timesteps
    extra = {"eta": spec.eta} if spec.eta is not None else {}
    return solvers.get_solver(spec.name)(model_fn, s, x_T, steps=steps, thresholding=spec.thresholding,
                                         spacing=spec.spacing, **common, **extra)


def _reporting(callback, on_step, total: int):
    """The sampler's step callback, also telling `on_step(done, total)` after every step."""
    if on_step is None:
        return callback

    def report(j: int, t: int, x: torch.Tensor, x0: torch.Tensor) -> None:
        if callback is not None:
            callback(j, t, x, x0)
        on_step(j + 1, total)

    return report


@dataclass
class GlideModel:
    """A loaded diffusion model: the network, its config (UNet + diffusion), where it came from,
    and the precision the pipelines compute in (`dtype`: None = float32; bf16/fp16 = autocast,
    float32 weights)."""

    net: GlideUNet
    config: GlideConfig
    source: str = ""
    dtype: torch.dtype | None = None

    @property
    def unet(self):
        return self.config.unet

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def autocast(self):
        """The precision context the pipelines sample in (`runtime.autocast_context`)."""
        from . import runtime

        return runtime.autocast_context(self.device, self.dtype)

    @classmethod
    def load(cls, name_or_path: str, *, device="auto", dtype="auto", prepare: bool = True) -> "GlideModel":
        """Load a diffusion model by name or path (see `glidekit.io.load_model`), ready to sample fast.

        `device` / `dtype` as in `runtime.choose_device` / `choose_dtype` ("auto": CUDA with bf16 or
        fp16, MPS float32, CPU bf16 autocast where the CPU has bf16 instructions, else float32);
        `prepare` applies `runtime.prepare_for_inference` (eval, channels_last, fused attention, ...).
        """
        from . import runtime
        from .io import load_model

        dev = runtime.choose_device(device)
        compute = runtime.choose_dtype(dev, dtype) if isinstance(dtype, str) else dtype
        net, kind, config = load_model(name_or_path, device=dev)
        if not isinstance(config, GlideConfig):
            raise GlidekitError(f"{name_or_path} is a {kind} model, not a diffusion model")
        if prepare:
            net = runtime.prepare_for_inference(net, dev, compute)
        return cls(net, config, str(name_or_path), None if compute == torch.float32 else compute)


# --------------------------------------------------------------------------------------------
# conditioning


def model_fn(model: GlideModel) -> Callable:
    """The network as the samplers' model function, returning GLIDE's [eps | variance] output.

    For a v-prediction model (`DiffusionConfig.prediction == "v"`) the v channels become
    eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t in float32, at the original timestep t the
    samplers pass; every sampler then recovers x_0 = sqrt(abar) x_t - sqrt(1 - abar) v, which
    unlike the eps route stays exact where abar ~ 0 (t = T - 1 of the cosine schedule)."""
    net, d = model.net, model.config.diffusion
    if d.prediction == "eps":
        return net
    full = Schedule.create(d.noise_schedule, d.steps)

    def fn(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        out = net(x, t, **kwargs).float()
        c = x.shape[1]
        return torch.cat([G.eps_from_v(full, x.float(), t, out[:, :c]), out[:, c:]], dim=1)

    return fn


def guided_model_fn(model: GlideModel, guidance_scale: float, parts: torch.Tensor | None = None) -> Callable:
    """The denoiser for B rows: classifier-free guided when the scale is not 1 or `parts` is given.

    For B rows of x the model runs once on [x, x] with kwargs whose first B rows are
    conditional and last B unconditional, and returns eps_u + s (eps_c - eps_u) with the
    conditional rows' variance channels. For every conditional row this is exactly GLIDE's
    notebook wrapper (which carries a never-read second half through the sampler).

    `parts` (K, B), 1 where prompt b has a k-th concept and 0 where it has fewer, composes K
    conditions (Composable Diffusion, Liu et al. 2022, eq. 10, the conjunction "AND"): the model
    runs on K + 1 copies of x with kwargs rows [concept 1 of every prompt, ..., concept K, then
    B unconditional], and eps = eps_u + s sum_k parts[k] (eps_k - eps_u). K = 1 with all ones
    is the classifier-free guidance above.
    """
    net = model_fn(model)
    if guidance_scale == 1.0 and parts is None:
        return net
    k = 1 if parts is None else parts.shape[0]
    weights = None if parts is None else (guidance_scale * parts)[:, :, None, None, None].to(model.device)

    def fn(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        out = net(torch.cat([x] * (k + 1)), torch.cat([t] * (k + 1)), **kwargs)
        c, b = x.shape[1], len(x)
        cond, uncond = out[: k * b].unflatten(0, (k, b)), out[k * b:]
        delta = cond[:, :, :c] - uncond[:, :c]
        guided = guidance_scale * delta[0] if weights is None else (weights * delta).sum(0)
        return torch.cat([uncond[:, :c] + guided, cond[0, :, c:]], dim=1)

    return fn


def prompt_parts(prompt: str) -> list[str]:
    """The concepts of a composed prompt: "a red circle at the top AND a blue square at the
    bottom" -> its two one-object prompts (`guided_model_fn(parts=...)`); a plain prompt is one part."""
    parts = [p.strip() for p in COMPOSE.split(prompt)]
    if len(parts) > 1 and not all(parts):
        raise ConfigError(f"prompt {prompt!r}: every side of AND needs words (\"a red circle AND a blue square\")")
    return parts


def plain_prompt(prompt: str) -> str:
    """A composed prompt as one sentence ("a AND b" -> "a, b"), for models that cannot compose
    (the upsampler, a CLIP's text side)."""
    return ", ".join(prompt_parts(prompt))


def clip_cond_fn(clip, prompts: Sequence[str], scale: float):
    """CLIP guidance towards `prompts` (GLIDE s.2.4): the noised CLIP's `cond_fn` at `scale`, its text
    side reading a composed prompt as one sentence (`plain_prompt`)."""
    from .tokenizers import clip_tokenizer

    tokens, text_len = clip_tokenizer().encode_batch([plain_prompt(p) for p in prompts], clip.config.max_text_len)
    device = next(clip.parameters()).device
    return clip.cond_fn(tokens.to(device), text_len.to(device), scale)


def _encode_text(model: GlideModel, rows: Sequence[str]) -> dict:
    tokens, mask = text_tokenizer(model.unet.text).encode_batch(list(rows), model.unet.text.text_ctx)
    with torch.no_grad(), model.autocast():
        return {"text_emb": model.net.encode_text(tokens.to(model.device), mask.to(model.device))}


def text_kwargs(model: GlideModel, prompts: Sequence[str], guidance_scale: float) -> dict:
    """Cached text conditioning: the transformer runs once per prompt, not once per step.

    Rows: the prompts, then (for guidance != 1) as many empty prompts (GLIDE's unconditional
    input: all end tokens, all-false mask)."""
    if model.unet.text is None:
        return {}
    composed = [p for p in prompts if len(prompt_parts(p)) > 1]
    if composed:
        raise ConfigError(f"prompt {composed[0]!r}: AND composes only the prompts of text-to-image sampling, "
                          "not inpainting, editing, upsampling or a switch prompt")
    return _encode_text(model, list(prompts) + ([""] * len(prompts) if guidance_scale != 1.0 else []))


def composed_kwargs(model: GlideModel, prompts: Sequence[str]) -> tuple[dict, torch.Tensor | None]:
    """Text rows and the `parts` mask of `guided_model_fn` for prompts with AND; ({}, None) if
    none has one. A prompt with fewer concepts than the most repeats its first (weight 0)."""
    split = [prompt_parts(p) for p in prompts]
    k = max(len(s) for s in split)
    if k == 1:
        return {}, None
    if model.unet.text is None:
        raise ConfigError(f"{model.source or 'this model'} has no text input: it cannot compose prompts with AND")
    parts = torch.tensor([[float(j < len(s)) for s in split] for j in range(k)])
    rows = [s[j] if j < len(s) else s[0] for j in range(k) for s in split]
    return _encode_text(model, rows + [""] * len(prompts)), parts


def cond_kwargs(model: GlideModel, prompts: Sequence[str], labels: Sequence[int] | None, guidance_scale: float) -> dict:
    """Text and class conditioning rows for B samples: [conditional] or [conditional, unconditional]
    (empty prompts, null class) when classifier-free guidance is on."""
    kw = text_kwargs(model, prompts, guidance_scale)
    n_classes = model.unet.num_classes
    if n_classes:
        if labels is None:
            raise ConfigError(f"{model.source or 'this model'} is class-conditional: give class labels (0..{n_classes - 1})")
        y = torch.as_tensor(list(labels), dtype=torch.long)
        if y.numel() and (y.min() < 0 or y.max() >= n_classes):
            raise ConfigError(f"class labels must be in 0..{n_classes - 1}, got {list(labels)}")
        kw["y"] = (class_cfg_labels(y, n_classes) if guidance_scale != 1.0 else y).to(model.device)
    elif labels is not None:
        raise ConfigError(f"{model.source or 'this model'} has no class labels; drop the labels")
    return kw


def prompt_schedule(model_fn: Callable, kwargs_before: dict, kwargs_after: dict, switch_t: int) -> Callable:
    """Condition on one prompt while t >= switch_t and on another below it (a prompt switch:
    composition first, details from the second prompt)."""

    def fn(x: torch.Tensor, t: torch.Tensor, **_ignored) -> torch.Tensor:
        kw = kwargs_before if int(t.max()) >= switch_t else kwargs_after
        return model_fn(x, t, **kw)

    return fn


def _rows(value: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Repeat per-sample kwargs for the unconditional half of a guided batch."""
    return torch.cat([value, value]) if guidance_scale != 1.0 else value


# --------------------------------------------------------------------------------------------
# results


@dataclass
class Result:
    """Final images (N, 3, H, W) in [-1, 1], every stage's output, and per-image records."""

    images: torch.Tensor
    stages: dict[str, torch.Tensor] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)


def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
    # CPU generators on every device: the same seed gives the same noise on CPU, CUDA and MPS.
    return N.seeded_generators(seeds, "cpu")


def _initial_noise(gens: Sequence[torch.Generator], shape: tuple[int, ...], device, scale: float = 1.0) -> torch.Tensor:
    x = torch.stack([torch.randn(shape, generator=g) for g in gens])
    return (x * scale).to(device)


def _check_model(model: GlideModel, *, super_res: bool, inpaint: bool | None, what: str) -> None:
    """`inpaint=None` accepts both a plain and an inpainting model."""
    cfg = model.unet
    if cfg.super_res != super_res or (inpaint is not None and cfg.inpaint != inpaint):
        have = ("upsample" if cfg.super_res else "base") + ("-inpaint" if cfg.inpaint else "")
        need = ("upsample" if super_res else "base") + ("-inpaint" if inpaint else "")
        raise GlidekitError(f"{what} needs a {need} model, but the model given is a {have} model")


def _check_back_projection(iterations: int, upsampler) -> None:
    if iterations < 0:
        raise ConfigError(f"back_projection must be >= 0 (iterations), got {iterations}")
    if iterations and upsampler is None:
        raise ConfigError("back_projection corrects an upsampler's output; there is no upsampler")


def _check_scale(name: str, value: float) -> None:
    if not np.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value}")


# --------------------------------------------------------------------------------------------
# pipelines


def upsample(
    model: GlideModel,
    low_res: torch.Tensor,
    prompts: Sequence[str],
    *,
    seeds: Sequence[int],
    sampler: SamplerSpec = FAST_UPSAMPLE,
    upsample_temp: float = UPSAMPLE_TEMP,
    inpaint: tuple[torch.Tensor, torch.Tensor] | None = None,
    generators: Sequence[torch.Generator] | None = None,
    progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    back_projection: int = 0,
) -> torch.Tensor:
    """64 -> 256 px text-conditional super-resolution of `low_res` (quantised to 8 bits first).

    No guidance, x_T scaled by `upsample_temp` (GLIDE's 0.997). With `inpaint=(image, keep)` at
    the output size, an inpainting upsampler keeps the known pixels (re-pasted into every x0).
    `back_projection` > 0: that many iterations of `images.back_project` on the result, so that it
    averages back to the input (GLIDE has none: 0 keeps its output exactly)."""
    _check_model(model, super_res=True, inpaint=inpaint is not None, what="upsampling" + (" an inpaint" if inpaint else ""))
    _check_back_projection(back_projection, model)
    device = model.device
    size = model.unet.image_size
    gens = list(generators) if generators is not None else _generators(seeds)
    x_T = _initial_noise(gens, (3, size, size), device, upsample_temp)
    kwargs = {**text_kwargs(model, prompts, 1.0), "low_res": quantize(low_res).to(device)}
    denoised_fn = None
    if inpaint is not None:
        image, keep = (v.to(device) for v in inpaint)
        kwargs.update(inpaint_image=image * keep, inpaint_mask=keep)
        denoised_fn = inpaint_repaste(image * keep, keep)
    with model.autocast():
        out = run_sampler(sampler, model_fn(model), model.config, x_T, model_kwargs=kwargs,
                          denoised_fn=denoised_fn, noise_fn=N.per_sample(gens), progress=progress, on_step=on_step)
    if back_projection:
        out = back_project(out, kwargs["low_res"], back_projection).to(out.dtype)
    if inpaint is not None:
        out = out * (1 - keep) + image * keep
    return out


def text_to_image(
    base: GlideModel,
    prompts: Sequence[str],
    *,
    labels: Sequence[int] | None = None,
    seed: int = 0,
    guidance_scale: float = 3.0,
    sampler: SamplerSpec = FAST_BASE,
    upsampler: GlideModel | None = None,
    upsample_sampler: SamplerSpec = FAST_UPSAMPLE,
    upsample_temp: float = UPSAMPLE_TEMP,
    back_projection: int = 0,
    cond_fn=None,
    switch_prompts: Sequence[str] | None = None,
    switch_at: float = 0.5,
    progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> Result:
    """Prompts -> base samples -> (optionally) upsampled samples, one seed per image.

    `labels` condition class-conditional models (one per prompt; for a class-only model the
    prompts are ignored). `cond_fn(x, t)` adds gradient guidance (CLIP, classifier; combine them
    with `guidance.combine_cond_fns`). `switch_prompts` switches each prompt to another one for
    the last `switch_at` fraction of the process (a prompt schedule). A prompt "A AND B" composes
    concepts A and B (`guided_model_fn`, Composable Diffusion) at the guidance scale each.
    `back_projection`: as `upsample`'s, for the upsampled stage.
    """
    _check_model(base, super_res=False, inpaint=False, what="text-to-image")
    _check_scale("guidance scale", guidance_scale)
    _check_back_projection(back_projection, upsampler)
    if labels is not None and not prompts:
        prompts = [""] * len(labels)
    if not prompts:
        raise ConfigError("give at least one prompt")
    if labels is not None and len(labels) != len(prompts):
        raise ConfigError(f"give one label per prompt ({len(prompts)} prompts, {len(labels)} labels)")
    seeds = [seed + i for i in range(len(prompts))]
    device = base.device
    gens = _generators(seeds)
    size = base.unet.image_size
    x_T = _initial_noise(gens, (3, size, size), device)
    kwargs, parts = composed_kwargs(base, prompts)
    if parts is None:
        kwargs = cond_kwargs(base, prompts, labels, guidance_scale)
    elif labels is not None or switch_prompts is not None:
        raise ConfigError("prompts composed with AND cannot be combined with class labels or a prompt switch")
    model_fn = guided_model_fn(base, guidance_scale, parts)
    if switch_prompts is not None:
        if len(switch_prompts) != len(prompts):
            raise ConfigError("give one switch prompt per prompt")
        if not 0.0 < switch_at < 1.0:
            raise ConfigError(f"switch_at must be in (0, 1), got {switch_at}")
        T = base.config.diffusion.steps
        model_fn = prompt_schedule(model_fn, kwargs, cond_kwargs(base, switch_prompts, labels, guidance_scale), round(switch_at * T))
    with base.autocast():
        samples = run_sampler(sampler, model_fn, base.config, x_T, model_kwargs=kwargs, cond_fn=cond_fn,
                              noise_fn=N.per_sample(gens), progress=progress, on_step=on_step)
    stages = {"base": samples}
    if upsampler is not None:
        stages["upsample"] = upsample(upsampler, samples, [plain_prompt(p) for p in prompts], seeds=seeds, sampler=upsample_sampler,
                                      upsample_temp=upsample_temp, generators=gens, progress=progress, on_step=on_step,
                                      back_projection=back_projection)
    records = [{"prompt": p, "seed": s} for p, s in zip(prompts, seeds)]
    if labels is not None:
        for rec, label in zip(records, labels):
            rec["label"] = int(label)
    return Result(images=stages.get("upsample", samples), stages=stages, records=records)


def inpaint(
    base: GlideModel,
    image: torch.Tensor,
    keep: torch.Tensor,
    prompts: Sequence[str],
    *,
    seed: int = 0,
    guidance_scale: float = 5.0,
    sampler: SamplerSpec = FAST_BASE,
    upsampler: GlideModel | None = None,
    image_hr: torch.Tensor | None = None,
    upsample_sampler: SamplerSpec = FAST_UPSAMPLE,
    upsample_temp: float = UPSAMPLE_TEMP,
    progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> Result:
    """Regenerate the region where `keep` is 0, guided by the prompt (GLIDE inpainting).

    `image` (1 or N, 3, H, W) and `keep` (1 or N, 1, H, W) are at the base model's size; the
    known pixels are re-pasted into every x0 prediction and into the final image, so they are
    unchanged. With an inpainting `upsampler`, `image_hr` is the source at its size.

    `base` is best an inpainting model (GLIDE s.4.1: the masked image and the mask are extra
    inputs). A plain base model also works: then the known pixels reach it only through the
    re-pasting into each x0 prediction (the "replacement" method, Song et al. 2021 app. I), which
    matches colours and content less well at the mask's border than a model trained for it.
    """
    _check_model(base, super_res=False, inpaint=None, what="inpainting")
    _check_scale("guidance scale", guidance_scale)
    device = base.device
    size = base.unet.image_size
    n = len(prompts)
    if image.shape[-2:] != (size, size) or keep.shape[-2:] != (size, size):
        raise ConfigError(f"image and mask must be {size}x{size} for this model")
    image = image.expand(n, -1, -1, -1).to(device)
    keep = keep.expand(n, -1, -1, -1).to(device)
    seeds = [seed + i for i in range(n)]
    gens = _generators(seeds)
    x_T = _initial_noise(gens, (3, size, size), device)
    known = image * keep
    kwargs = text_kwargs(base, prompts, guidance_scale)
    if base.unet.inpaint:
        kwargs.update(inpaint_image=_rows(known, guidance_scale), inpaint_mask=_rows(keep, guidance_scale))
    with base.autocast():
        samples = run_sampler(sampler, guided_model_fn(base, guidance_scale), base.config, x_T,
                              model_kwargs=kwargs, denoised_fn=inpaint_repaste(known, keep),
                              noise_fn=N.per_sample(gens), progress=progress, on_step=on_step)
    samples = samples * (1 - keep) + known
    stages = {"base": samples}
    if upsampler is not None:
        if image_hr is None:
            raise ConfigError("inpainting with an upsampler needs the source image at the upsampler's size")
        hr = upsampler.unet.image_size
        keep_hr = resize_mask(keep[:1].cpu(), hr).expand(n, -1, -1, -1)
        stages["upsample"] = upsample(upsampler, samples, prompts, seeds=seeds, sampler=upsample_sampler,
                                      upsample_temp=upsample_temp, generators=gens,
                                      inpaint=(image_hr.expand(n, -1, -1, -1), keep_hr), progress=progress,
                                      on_step=on_step)
    records = [{"prompt": p, "seed": s} for p, s in zip(prompts, seeds)]
    return Result(images=stages.get("upsample", samples), stages=stages, records=records)


def edit(
    base: GlideModel,
    image: torch.Tensor,
    prompts: Sequence[str],
    *,
    strength: float = 0.6,
    seed: int = 0,
    guidance_scale: float = 3.0,
    sampler: SamplerSpec = FAST_BASE,
    progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> Result:
    """Re-noise-and-redo editing (SDEdit, Meng et al. 2021): noise the image to timestep
    strength*(T-1) with q(x_t | x_0) and denoise it with the new prompt. Strength 1 ignores
    the image; small strengths keep its layout and colours."""
    _check_model(base, super_res=False, inpaint=False, what="re-noise editing")
    _check_scale("guidance scale", guidance_scale)
    if not 0.0 < strength <= 1.0:
        raise ConfigError(f"strength must be in (0, 1], got {strength}")
    device = base.device
    size = base.unet.image_size
    if image.shape[-2:] != (size, size):
        raise ConfigError(f"image must be {size}x{size} for this model")
    n = len(prompts)
    seeds = [seed + i for i in range(n)]
    gens = _generators(seeds)
    diffusion = base.config.diffusion
    t_start = max(0, round(strength * (diffusion.steps - 1)))
    s = Schedule(get_betas(diffusion.noise_schedule, diffusion.steps), list(range(t_start + 1)))
    z = _initial_noise(gens, (3, size, size), device)
    k = torch.full((n,), t_start, dtype=torch.long)
    x_t = G.q_sample(s, image.expand(n, -1, -1, -1).to(device), k, z)
    spec = dataclasses.replace(sampler, steps=max(1, round(sampler.steps * strength)))
    kwargs = text_kwargs(base, prompts, guidance_scale)
    with base.autocast():
        samples = run_sampler(spec, guided_model_fn(base, guidance_scale), diffusion, x_t, t_start=t_start,
                              model_kwargs=kwargs, noise_fn=N.per_sample(gens), progress=progress, on_step=on_step)
    records = [{"prompt": p, "seed": s_, "strength": strength} for p, s_ in zip(prompts, seeds)]
    return Result(images=samples, stages={"base": samples}, records=records)


def outpaint(
    base: GlideModel,
    image: torch.Tensor,
    prompt: str,
    *,
    left: int = 0,
    right: int = 0,
    top: int = 0,
    bottom: int = 0,
    seed: int = 0,
    guidance_scale: float = 5.0,
    sampler: SamplerSpec = FAST_BASE,
    progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> Result:
    """Extend the canvas by the given pixels (at the base model's resolution) by inpainting
    model-sized windows that slide from the original image outwards; wide extensions become
    panoramas. Each window keeps everything already on the canvas and fills the rest."""
    _check_model(base, super_res=False, inpaint=None, what="outpainting")
    size = base.unet.image_size
    if min(left, right, top, bottom) < 0 or left + right + top + bottom == 0:
        raise ConfigError("give a positive number of pixels to extend in at least one direction")
    _, _, h, w = image.shape
    H, W = h + top + bottom, w + left + right
    canvas = torch.zeros(1, 3, H, W)
    known = torch.zeros(1, 1, H, W)
    canvas[..., top:top + h, left:left + w] = image.cpu()
    known[..., top:top + h, left:left + w] = 1

    def starts(total: int, orig_start: int, orig_len: int) -> list[int]:
        # windows of `size` stepping by half a window away from the original, clamped to the canvas
        stride = max(1, size // 2)
        first = min(max(orig_start + orig_len // 2 - size // 2, 0), max(total - size, 0))
        out = {first}
        p = first
        while p > 0:
            p = max(0, p - stride)
            out.add(p)
        p = first
        while p + size < total:
            p = min(total - size, p + stride)
            out.add(p)
        return sorted(out, key=lambda q: abs(q - first))

    if H < size or W < size:
        raise ConfigError(f"the extended canvas ({W}x{H}) must be at least the model size {size}x{size}")
    windows = [(y, x) for y in starts(H, top, h) for x in starts(W, left, w)]
    step = 0
    for y, x in windows:
        win_keep = known[..., y:y + size, x:x + size]
        if win_keep.min() == 1:
            continue
        res = inpaint(base, canvas[..., y:y + size, x:x + size], win_keep, [prompt], seed=seed + step,
                      guidance_scale=guidance_scale, sampler=sampler, progress=progress, on_step=on_step)
        canvas[..., y:y + size, x:x + size] = res.images.cpu()
        known[..., y:y + size, x:x + size] = 1
        step += 1
    return Result(images=canvas, stages={"base": canvas},
                  records=[{"prompt": prompt, "seed": seed, "windows": step,
                            "extend": {"left": left, "right": right, "top": top, "bottom": bottom}}])


def iterative_edit(
    base: GlideModel,
    image: torch.Tensor,
    edits: Sequence[tuple[torch.Tensor, str]],
    *,
    seed: int = 0,
    guidance_scale: float = 5.0,
    sampler: SamplerSpec = FAST_BASE,
    progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> Result:
    """A sequence of masked edits [(keep_mask, prompt), ...], each applied to the last result."""
    current = image
    stages = {}
    for i, (keep, prompt) in enumerate(edits):
        current = inpaint(base, current, keep, [prompt], seed=seed + i, guidance_scale=guidance_scale,
                          sampler=sampler, progress=progress, on_step=on_step).images
        stages[f"edit{i}"] = current
    return Result(images=current, stages=stages, records=[{"edits": [p for _, p in edits], "seed": seed}])
