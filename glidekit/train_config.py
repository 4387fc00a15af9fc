"""Training configuration: one typed dataclass for every task, named presets, dotted overrides.

`glide train CONFIG key=value ...`: CONFIG is a preset name or a JSON file written by a
previous run (`config.json` in its output folder); overrides address fields with dots, e.g.
`lr=3e-4 max_steps=2000 model.unet.model_channels=64 data=emoji`.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import (
    ClassifierConfig,
    DiffusionConfig,
    GlideConfig,
    NoisedCLIPConfig,
    TextEncoderConfig,
    UNetConfig,
    config_from_dict,
    config_to_dict,
)
from .errors import ConfigError

TASKS = ("base", "upsample", "base-inpaint", "upsample-inpaint", "clip", "classifier")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TIMESTEP_SAMPLERS = ("uniform", "loss-aware")
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved in every checkpoint it writes."""

    task: str = "base"
    model: Any = field(default_factory=GlideConfig)  # GlideConfig | NoisedCLIPConfig | ClassifierConfig
    data: str = ""  # dataset spec, see glidekit.data.build_dataset
    out_dir: str = "runs/glide"
    seed: int = 0
    max_steps: int = 1000  # training stops by default
    batch_size: int = 8  # global batch (all ranks, all microbatches)
    microbatch: int = 0  # per-forward rows on one rank; 0 = the whole rank batch
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear learning-rate warm-up
    # after the warm-up: constant, or cosine from lr down to lr_min at max_steps (Loshchilov &
    # Hutter 2017, SGDR eq. 5, one cycle without restarts)
    lr_schedule: str = "constant"
    lr_min: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    ema_rate: float = 0.9999
    precision: str = "auto"  # auto: bf16 where the hardware has it, else fp32
    cfg_dropout: float = 0.2  # captions (and labels) replaced by the empty one (GLIDE s.2.3)
    timestep_sampler: str = "uniform"
    grad_checkpointing: bool = False
    hflip: bool = False  # off by default: flips break "left"/"right" captions
    data_size: int = 0  # read images at this size and take random model-size crops (0 = model size)
    low_res_size: int = 64  # upsampler tasks: the conditioning size
    lowres_noise: float = 0.0  # upsampler input augmentation: Gaussian noise std (in [-1, 1] units)
    lowres_blur: float = 0.0  # upsampler input augmentation: Gaussian blur sigma (low-res pixels)
    # upsampler tasks: train on random patch_size crops of each target with the matching crop of its
    # low-res image (SR3, Imagen's super-resolution stages); sampling still makes whole images
    # (0 = train on whole images)
    patch_size: int = 0
    mask_kinds: tuple[str, ...] = ("rect", "stroke", "border")  # inpainting tasks
    init_from: str = ""  # glidekit or official checkpoint to fine-tune from
    # state-dict key prefixes init_from leaves at their fresh initialisation; "text" = the text
    # tower (token/position/padding embeddings, transformer, final_ln), e.g. to retrain it alone
    init_fresh: tuple[str, ...] = ()
    # state-dict key prefixes trained not at all (no gradient, no optimizer state), e.g. a text
    # tower pretrained apart; "text" as in init_fresh
    freeze: tuple[str, ...] = ()
    num_workers: int = 0  # DataLoader worker processes reading ahead (0 = read in the training process)
    log_every: int = 10
    save_every: int = 500
    preview_every: int = 0  # 0 = no preview samples
    preview_prompts: tuple[str, ...] = ()
    preview_steps: int = 20
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; use one of {', '.join(TASKS)}")
        want = {"clip": NoisedCLIPConfig, "classifier": ClassifierConfig}.get(self.task, GlideConfig)
        if not isinstance(self.model, want):
            raise ConfigError(f"task {self.task} needs a {want.__name__} model config, got {type(self.model).__name__}")
        if self.task in ("base", "upsample", "base-inpaint", "upsample-inpaint"):
            u = self.model.unet
            if u.super_res != self.task.startswith("upsample") or u.inpaint != self.task.endswith("inpaint"):
                raise ConfigError(f"task {self.task} needs a model with super_res={self.task.startswith('upsample')} "
                                  f"and inpaint={self.task.endswith('inpaint')}")
        if self.init_fresh and not self.init_from:
            raise ConfigError("init_fresh needs init_from (the checkpoint the other tensors come from)")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if self.timestep_sampler not in TIMESTEP_SAMPLERS:
            raise ConfigError(f"unknown timestep_sampler {self.timestep_sampler!r}; use {' or '.join(TIMESTEP_SAMPLERS)}")
        for name in ("max_steps", "batch_size", "log_every", "save_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.cfg_dropout < 1.0:
            raise ConfigError(f"cfg_dropout must be in [0, 1), got {self.cfg_dropout}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be 0 or more, got {self.num_workers}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r}; use {' or '.join(LR_SCHEDULES)}")
        if not 0.0 <= self.lr_min <= self.lr:
            raise ConfigError(f"lr_min must be in [0, lr={self.lr}], got {self.lr_min}")
        if self.data_size:
            if self.task in ("clip", "classifier"):
                raise ConfigError("data_size (random crops) applies to the diffusion tasks only")
            if self.data_size < self.model.unet.image_size:
                raise ConfigError(f"data_size {self.data_size} is smaller than the model's {self.model.unet.image_size} px")
        if self.patch_size:
            self._check_patch_size()
        if not 0.0 <= self.ema_rate < 1.0:
            raise ConfigError(f"ema_rate must be in [0, 1), got {self.ema_rate}")

    def _check_patch_size(self) -> None:
        if not self.task.startswith("upsample"):
            raise ConfigError("patch_size (training on crops) applies to the upsampler tasks only")
        u = self.model.unet
        if u.image_size % self.low_res_size:  # a crop must cover whole low-res pixels (`data.paired_crop`)
            raise ConfigError(f"patch_size needs low_res_size to divide the model's {u.image_size} px, "
                              f"got {self.low_res_size}")
        factor = u.image_size // self.low_res_size
        align = max(factor, 2 ** (len(u.channel_mult) - 1))  # whole low-res pixels; every level halves evenly
        if not 0 < self.patch_size <= u.image_size or self.patch_size % align:
            raise ConfigError(f"patch_size must be a multiple of {align} up to the model's {u.image_size} px, "
                              f"got {self.patch_size}")


def train_config_to_dict(cfg: TrainConfig) -> dict:
    d = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    d["model"] = config_to_dict(cfg.model)
    return json.loads(json.dumps(d))  # plain JSON types all the way down (tuples -> lists)


def train_config_from_dict(data: dict) -> TrainConfig:
    data = dict(data)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
    if "model" in data:
        data["model"] = config_from_dict(data["model"])
    for f in dataclasses.fields(TrainConfig):
        if f.name in data and str(f.type).startswith("tuple") and isinstance(data[f.name], list):
            data[f.name] = tuple(data[f.name])
    return TrainConfig(**data)


# --------------------------------------------------------------------------------------------
# presets: small enough to train on a CPU, shaped like GLIDE


def _small_text(ctx: int = 64) -> TextEncoderConfig:
    return TextEncoderConfig(text_ctx=ctx, width=256, layers=4, heads=4)


def _small_unet(size: int, **kw) -> UNetConfig:
    mult = {32: (1, 2, 2), 64: (1, 2, 3, 4), 128: (1, 1, 2, 3, 4), 256: (1, 1, 2, 2, 4, 4)}[size]
    return UNetConfig(image_size=size, model_channels=64, num_res_blocks=2, channel_mult=mult,
                      attention_resolutions=tuple(r for r in (16, 8) if r < size), num_head_channels=32,
                      dropout=0.1, text=_small_text(), **kw)


def _preset(task: str, model: Any, **kw) -> TrainConfig:
    return TrainConfig(task=task, model=model, out_dir=f"runs/{task}", **kw)


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # text-conditional 64 px base (GLIDE's shape, CPU size), classifier-free dropout 20 %
    "base": _preset("base", GlideConfig(_small_unet(64), DiffusionConfig(1000, "squaredcos_cap_v2", "100")), data="emoji"),
    "base-32": _preset("base", GlideConfig(_small_unet(32), DiffusionConfig(1000, "squaredcos_cap_v2", "100")), data="emoji"),
    # the compositional benchmark set (docs/shapes.md), previews on held-out grammar prompts
    # v prediction: the black background needs an exact x_0 at t = T - 1; coordinate channels:
    # the captions name places (README, Training)
    "shapes-32": _preset("base", GlideConfig(_small_unet(32, coords=True), DiffusionConfig(1000, "squaredcos_cap_v2", "100", "v")), data="shapes",
                         preview_every=1000, preview_prompts=("a large red circle in the center", "a blue square above a yellow triangle")),
    "upsample": _preset("upsample", GlideConfig(_small_unet(256, super_res=True), DiffusionConfig(1000, "linear", "fast27")),
                        data="emoji", low_res_size=64, batch_size=4),
    "base-inpaint": _preset("base-inpaint", GlideConfig(_small_unet(64, inpaint=True), DiffusionConfig(1000, "squaredcos_cap_v2", "100")),
                            data="emoji"),
    "upsample-inpaint": _preset("upsample-inpaint", GlideConfig(_small_unet(256, super_res=True, inpaint=True),
                                DiffusionConfig(1000, "linear", "fast27")), data="emoji", batch_size=4),
    # noised CLIP at the base resolution (contrastive, images noised at random timesteps)
    "clip": _preset("clip", NoisedCLIPConfig(image_size=64, n_embd=256, n_head_text=4, n_head_state_text=64, n_xf_blocks_text=4,
                                             n_head_image=4, n_head_state_image=64, n_xf_blocks_image=4, n_vocab=49408),
                    data="emoji", lr=3e-4, batch_size=32, cfg_dropout=0.0),
    # noisy classifier for classifier guidance (ADM), e.g. on MNIST's classes
    "classifier": _preset("classifier", ClassifierConfig(image_size=32, model_channels=64, num_res_blocks=2, channel_mult=(1, 2, 2),
                                                         attention_resolutions=(16, 8), num_classes=10),
                          data="mnist", lr=3e-4, batch_size=32, cfg_dropout=0.0),
    # class-conditional 32 px model (null class for guidance), e.g. MNIST
    "class-32": _preset("base", GlideConfig(dataclasses.replace(_small_unet(32), text=None, num_classes=10),
                                            DiffusionConfig(1000, "squaredcos_cap_v2", "100")), data="mnist"),
}


def _coerce(value: str, current: Any, where: str) -> Any:
    """Parse an override string with the type of the value it replaces."""
    if isinstance(current, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where} expects true/false, got {value!r}")
    try:
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
    except ValueError:
        raise ConfigError(f"{where} expects a {type(current).__name__}, got {value!r}") from None
    if isinstance(current, list):
        # lists: comma-separated, or "|"-separated when items contain commas (prompts)
        parts = [p.strip() for p in value.split("|" if "|" in value else ",") if p.strip()]
        if current and all(isinstance(c, int) for c in current):
            try:
                return [int(p) for p in parts]
            except ValueError:
                raise ConfigError(f"{where} expects comma-separated integers, got {value!r}") from None
        return parts
    if current is None:
        if value.lower() in ("none", "null"):
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(current, dict):
        raise ConfigError(f"{where} is a group of options; set one of its fields, e.g. {where}.<field>=...")
    return value


def config_overrides(source: str, cfg: TrainConfig) -> list[str]:
    """The `key=value` overrides that turn preset `source` into `cfg`: resolve_train_config's inverse,
    so `glide train SOURCE *config_overrides(SOURCE, cfg)` trains with exactly `cfg` (e.g. the exact
    recipe behind a checkpoint, from the config it saved). A ConfigError if `cfg` is not reachable
    by overrides (another model type, or an option the preset sets and `cfg` leaves at none)."""
    def walk(base: Any, want: Any, key: str) -> list[str]:
        if isinstance(want, dict) and isinstance(base, dict):
            if base.get("type") != want.get("type"):
                raise ConfigError(f"{key or 'the config'} is a {want.get('type')} config; preset {source!r} has "
                                  f"a {base.get('type')} one")
            return [o for k in want if k != "type" for o in walk(base.get(k), want[k], f"{key}.{k}" if key else k)]
        if base == want:
            return []
        if isinstance(want, dict):  # a group of options where the preset has none, e.g. a text tower
            return [f"{key}={json.dumps(want, sort_keys=True)}"]
        if isinstance(want, list):
            if any("," in str(w) for w in want):  # "|"-separated, with a trailing "|" for one item
                return [f"{key}={'|'.join(str(w) for w in want)}{'|' if len(want) == 1 else ''}"]
            return [f"{key}={','.join(str(w) for w in want)}"]
        if want is None:
            raise ConfigError(f"{key} is none in the config; overrides cannot unset preset {source!r}'s {key}")
        return [f"{key}={str(want).lower() if isinstance(want, bool) else want}"]  # str(float) round-trips

    return walk(train_config_to_dict(resolve_train_config(source)), train_config_to_dict(cfg), "")


def train_command(cfg: TrainConfig) -> str | None:
    """The `glide train PRESET key=value ...` command that trains with exactly `cfg`, from the preset
    that needs the fewest overrides; None if no preset reaches it (e.g. an unconditional model)."""
    options = []
    for name in TRAIN_PRESETS:
        try:
            overrides = config_overrides(name, cfg)
        except ConfigError:
            continue
        options.append((len(overrides), name, overrides))
    if not options:
        return None
    _, name, overrides = min(options)
    return shlex.join(["glide", "train", name, *overrides])


def resolve_train_config(source: str, overrides: list[str] = ()) -> TrainConfig:
    """A preset name or a JSON config file, then `key=value` overrides (dotted for nested fields).

    Overrides are applied to the config's dict form and validated once at the end, so a set of
    changes that is only consistent as a whole (image_size with channel_mult) is accepted."""
    if source in TRAIN_PRESETS:
        cfg = TRAIN_PRESETS[source]
    else:
        p = Path(source)
        if not p.is_file():
            raise ConfigError(f"no training preset or config file {source!r}; presets: {', '.join(TRAIN_PRESETS)}")
        try:
            cfg = train_config_from_dict(json.loads(p.read_text()))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p} is not valid JSON: {e}") from None
    data = train_config_to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. lr=3e-4)")
        key, value = (part.strip() for part in item.split("=", 1))
        node = data
        path = key.split(".")
        for name in path[:-1]:
            if not isinstance(node.get(name), dict):
                raise ConfigError(f"unknown option {key!r}: {name!r} has no sub-options")
            node = node[name]
        if path[-1] not in node or path[-1] == "type":
            known = ", ".join(sorted(k for k in node if k != "type"))
            raise ConfigError(f"unknown option {key!r}; choose from {known}")
        node[path[-1]] = _coerce(value, node[path[-1]], key)
    try:
        return train_config_from_dict(data)
    except TypeError as e:
        raise ConfigError(f"invalid configuration: {e}") from None
