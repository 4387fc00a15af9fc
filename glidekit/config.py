"""Typed configurations, named presets and the converter from OpenAI's option dicts.

Every glidekit checkpoint stores one of these configs (as JSON, see `config_to_dict`) so a
checkpoint always says what it is (design.md, user request 2). The six official GLIDE (filtered)
models are named presets; `from_openai_options` reads the keyword dicts of OpenAI's
`model_and_diffusion_defaults()` / `create_model_and_diffusion`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

NOISE_SCHEDULES = ("linear", "squaredcos_cap_v2")
# what the first output channels predict: GLIDE's noise eps, or v = sqrt(abar) eps - sqrt(1 - abar) x_0
# (Salimans & Ho 2022, s.4), whose x_0 = sqrt(abar) x_t - sqrt(1 - abar) v stays exact at SNR ~ 0
PREDICTIONS = ("eps", "v")


PRETRAINED_TEXT_ENCODERS = ("minilm-l6",)  # TextEncoderConfig.pretrained: models/minilm.py


@dataclass(frozen=True)
class TextEncoderConfig:
    """GLIDE's text transformer (glide-text2im `xf.py`): pre-LN, bidirectional, GPT-2 BPE tokens."""

    n_vocab: int = 50257
    text_ctx: int = 128
    width: int = 512
    layers: int = 16
    heads: int = 8
    final_ln: bool = True
    padding: bool = True  # padded positions use a learned per-position padding embedding
    # glidekit's own: "minilm-l6" feeds a frozen pretrained encoder's hidden states (through a
    # trained linear layer, `text_in`) to the transformer instead of GLIDE's token embedding;
    # tokens are then its WordPiece ids and n_vocab is unused (models/minilm.py).
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if self.pretrained is not None and self.pretrained not in PRETRAINED_TEXT_ENCODERS:
            raise ConfigError(f"unknown pretrained text encoder {self.pretrained!r}; use "
                              f"{' or '.join(map(repr, PRETRAINED_TEXT_ENCODERS))}, or leave it unset")
        for name in ("text_ctx", "width", "heads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"text {name} must be positive, got {getattr(self, name)}")
        if self.layers < 0:
            raise ConfigError(f"text layers must be 0 or more, got {self.layers}")


@dataclass(frozen=True)
class UNetConfig:
    """The text-conditional UNet of GLIDE; variants are flags (extra input channels), not classes.

    `attention_resolutions` are feature-map sizes in pixels (OpenAI's option string, not the
    downsample factors). Heads: `num_head_channels` if not -1, else `num_heads` in the encoder and
    middle and `num_heads_upsample` (-1 = `num_heads`) in the decoder.

    `num_classes` (None for GLIDE's models, which then have no extra parameter) makes the UNet
    class-conditional as guided-diffusion's: an embedding of `num_classes + 1` rows added to the
    time embedding, the last row (label `num_classes`) being the null class used for dropped
    labels in training and for the unconditional half of classifier-free guidance. It combines
    with text conditioning, or stands alone with `text=None`.
    """

    image_size: int = 64
    model_channels: int = 192
    out_channels: int = 6  # eps (3) + learned-range variance values (3)
    num_res_blocks: int = 3
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    num_head_channels: int = 64
    num_heads: int = 1
    num_heads_upsample: int = -1
    dropout: float = 0.1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    super_res: bool = False
    inpaint: bool = False
    text: TextEncoderConfig | None = field(default_factory=TextEncoderConfig)
    num_classes: int | None = None  # class-conditional (label_emb) with this many classes + a null class
    # glidekit's own: 2 more input channels holding each pixel's x and y in [-1, 1] (CoordConv,
    # Liu et al. 2018). Convolutions and attention are translation-equivariant, so without them
    # the only absolute position a UNet sees is the zero padding at the border.
    coords: bool = False

    @property
    def kind_in_channels(self) -> int:
        """Input channels that tell the kind: x (3), + masked image and mask (3+1) if inpaint,
        + upsampled low-res (3)."""
        return 3 + (4 if self.inpaint else 0) + (3 if self.super_res else 0)

    @property
    def in_channels(self) -> int:
        """Input channels of the first conv: `kind_in_channels`, + x and y (2) if `coords`."""
        return self.kind_in_channels + (2 if self.coords else 0)

    def __post_init__(self) -> None:
        if not self.channel_mult:
            raise ConfigError("channel_mult must list at least one multiplier")
        if self.image_size % 2 ** (len(self.channel_mult) - 1):
            raise ConfigError(
                f"image_size {self.image_size} is not divisible by 2**{len(self.channel_mult) - 1} "
                f"(one halving per level of channel_mult {self.channel_mult})"
            )
        for name in ("model_channels", "num_res_blocks", "out_channels", "image_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if any((m * self.model_channels) % 32 for m in self.channel_mult):
            raise ConfigError(
                f"every level's channels (model_channels {self.model_channels} x channel_mult {self.channel_mult}) "
                "must be a multiple of 32, the GroupNorm group count"
            )
        if self.num_classes is not None and (isinstance(self.num_classes, bool) or self.num_classes <= 0):
            raise ConfigError(f"num_classes must be a positive integer or None, got {self.num_classes!r}")
        if self.num_head_channels != -1:
            if self.num_head_channels <= 0:
                raise ConfigError(f"num_head_channels must be positive, or -1 to use num_heads; got {self.num_head_channels}")
            # attention at the listed sizes and in the middle block (the deepest level)
            last = len(self.channel_mult) - 1
            levels = {i for i in range(last + 1) if self.image_size // 2**i in self.attention_resolutions} | {last}
            bad = sorted({c for c in (self.channel_mult[i] * self.model_channels for i in levels)
                          if c % self.num_head_channels})
            if bad:
                raise ConfigError(f"num_head_channels {self.num_head_channels} must divide the attention layers' "
                                  f"channels {bad}; choose a divisor of them, or -1 to use num_heads")


@dataclass(frozen=True)
class DiffusionConfig:
    """Gaussian diffusion as GLIDE uses it: eps prediction, learned-range variance.

    `prediction="v"` (glidekit-trained models only) makes the first output channels v instead of
    eps; `pipelines.model_fn` turns them back into eps for every sampler."""

    steps: int = 1000
    noise_schedule: str = "squaredcos_cap_v2"
    timestep_respacing: str = ""  # default sampling respacing ("" = all steps)
    prediction: str = "eps"

    def __post_init__(self) -> None:
        if self.noise_schedule not in NOISE_SCHEDULES:
            raise ConfigError(
                f"unknown noise_schedule {self.noise_schedule!r}; use one of {', '.join(NOISE_SCHEDULES)}"
            )
        if self.prediction not in PREDICTIONS:
            raise ConfigError(f"unknown prediction {self.prediction!r}; use one of {', '.join(PREDICTIONS)}")
        if self.steps <= 0:
            raise ConfigError(f"diffusion steps must be positive, got {self.steps}")


@dataclass(frozen=True)
class GlideConfig:
    """A diffusion model: the UNet and the diffusion process it was trained for."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


@dataclass(frozen=True)
class NoisedCLIPConfig:
    """GLIDE's noised CLIP (`glide_text2im/clip/config.yaml`): both encoders and their schedule."""

    logit_scale: float = 100.0
    beta_schedule: str = "squaredcos_cap_v2"
    n_timesteps: int = 1000
    image_size: int = 64
    patch_size: int = 4
    n_vocab: int = 65536
    max_text_len: int = 77
    n_embd: int = 512
    n_head_text: int = 8
    n_head_state_text: int = 64
    n_xf_blocks_text: int = 12
    n_head_image: int = 12
    n_head_state_image: int = 64
    n_xf_blocks_image: int = 12

    @property
    def text_width(self) -> int:
        return self.n_head_text * self.n_head_state_text

    @property
    def image_width(self) -> int:
        return self.n_head_image * self.n_head_state_image


CLASSIFIER_POOLS = ("attention", "adaptive")


@dataclass(frozen=True)
class ClassifierConfig:
    """A noisy classifier p(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, s.4).

    guided-diffusion's `EncoderUNetModel`: the UNet's encoder half and middle block, then a head
    (`pool`): "attention" (GN, SiLU, CLIP-style attention pooling to `num_classes` logits) or
    "adaptive" (GN, SiLU, global average pool, zero-initialised 1x1 conv). Defaults are
    guided-diffusion's `classifier_defaults()` (width 128, depth 2, attention at 32, 16, 8 px,
    scale-shift norm, resblock up/down, attention pool) for 1000 ImageNet classes. An empty
    `channel_mult` picks the per-size default of the UNet (64: 1,2,3,4; 128: 1,1,2,3,4;
    256: 1,1,2,2,4,4). `diffusion` is the process whose noised samples q(x_t | x_0) it was
    trained on, so a checkpoint says which models it can guide.
    """

    image_size: int = 64
    in_channels: int = 3
    model_channels: int = 128
    num_res_blocks: int = 2
    channel_mult: tuple[int, ...] = ()
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    num_head_channels: int = 64
    dropout: float = 0.0
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    num_classes: int = 1000
    pool: str = "attention"
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def __post_init__(self) -> None:
        if not self.channel_mult:
            object.__setattr__(self, "channel_mult", _default_channel_mult(self.image_size))
        if self.image_size % 2 ** (len(self.channel_mult) - 1):
            raise ConfigError(
                f"image_size {self.image_size} is not divisible by 2**{len(self.channel_mult) - 1} "
                f"(one halving per level of channel_mult {self.channel_mult})"
            )
        for name in ("image_size", "in_channels", "model_channels", "num_res_blocks", "num_head_channels"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if isinstance(self.num_classes, bool) or self.num_classes < 2:
            raise ConfigError(f"a classifier needs num_classes >= 2, got {self.num_classes!r}")
        if self.pool not in CLASSIFIER_POOLS:
            raise ConfigError(f"unknown classifier pool {self.pool!r}; use one of {', '.join(CLASSIFIER_POOLS)}")


CONFIG_TYPES: dict[str, type] = {
    "glide": GlideConfig,
    "noised_clip": NoisedCLIPConfig,
    "classifier": ClassifierConfig,
}


# ---------------------------------------------------------------------------------------------
# dict round trip


def config_to_dict(cfg: Any) -> dict:
    """A JSON-ready dict of any glidekit config, tagged with its type name."""
    for tag, cls in CONFIG_TYPES.items():
        if isinstance(cfg, cls):
            return {"type": tag, **dataclasses.asdict(cfg)}
    raise ConfigError(f"not a glidekit config: {type(cfg).__name__}")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown {cls.__name__} field(s) {', '.join(unknown)}")
    kwargs = {}
    for name, value in data.items():
        ftype = str(fields[name].type)
        sub = {
            "TextEncoderConfig | None": TextEncoderConfig,
            "UNetConfig": UNetConfig,
            "DiffusionConfig": DiffusionConfig,
        }.get(ftype)
        if sub is not None and value is not None:
            value = _build(sub, value, f"{where}.{name}")
        elif ftype.startswith("tuple") and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def config_from_dict(data: dict) -> Any:
    """Inverse of `config_to_dict`; unknown types or fields are a `ConfigError`."""
    data = dict(data)
    tag = data.pop("type", None)
    if tag not in CONFIG_TYPES:
        raise ConfigError(f"unknown config type {tag!r}; expected one of {', '.join(CONFIG_TYPES)}")
    return _build(CONFIG_TYPES[tag], data, tag)


def config_to_json(cfg: Any) -> str:
    return json.dumps(config_to_dict(cfg), sort_keys=True)


def config_from_json(text: str) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config is not valid JSON: {e}") from None
    return config_from_dict(data)


# ---------------------------------------------------------------------------------------------
# OpenAI option dicts


def _default_channel_mult(image_size: int) -> tuple[int, ...]:
    # glide_text2im/unet.py create_model: "" picks a per-resolution default.
    table = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
    if image_size not in table:
        raise ConfigError(f"no default channel_mult for image_size {image_size}; give channel_mult")
    return table[image_size]


def _int_tuple(text: str | tuple | list, name: str) -> tuple[int, ...]:
    if isinstance(text, (tuple, list)):
        return tuple(int(v) for v in text)
    try:
        return tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers, got {text!r}") from None


OPENAI_DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "num_channels": 192,
    "num_res_blocks": 3,
    "channel_mult": "",
    "num_heads": 1,
    "num_head_channels": 64,
    "num_heads_upsample": -1,
    "attention_resolutions": "32,16,8",
    "dropout": 0.1,
    "text_ctx": 128,
    "xf_width": 512,
    "xf_layers": 16,
    "xf_heads": 8,
    "xf_final_ln": True,
    "xf_padding": True,
    "diffusion_steps": 1000,
    "noise_schedule": "squaredcos_cap_v2",
    "timestep_respacing": "",
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "use_fp16": True,
    "cache_text_emb": False,
    "inpaint": False,
    "super_res": False,
}
"""`model_and_diffusion_defaults()` of glide-text2im (spec s.1)."""

OPENAI_UPSAMPLER_DEFAULTS: dict[str, Any] = {
    **OPENAI_DEFAULTS,
    "image_size": 256,
    "num_res_blocks": 2,
    "noise_schedule": "linear",
    "super_res": True,
}
"""`model_and_diffusion_defaults_upsampler()` of glide-text2im (spec s.1)."""


def from_openai_options(options: dict) -> GlideConfig:
    """Convert OpenAI's `create_model_and_diffusion(**options)` keywords to a `GlideConfig`.

    Missing keys take `model_and_diffusion_defaults()` values. `use_fp16` and `cache_text_emb`
    are runtime choices in glidekit (dtype at load time, cached embeddings in the samplers) and
    are accepted but not stored.
    """
    unknown = sorted(set(options) - set(OPENAI_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown GLIDE option(s): {', '.join(unknown)}")
    o = {**OPENAI_DEFAULTS, **options}
    image_size = int(o["image_size"])
    mult = _int_tuple(o["channel_mult"], "channel_mult") or _default_channel_mult(image_size)
    if 2 ** (len(mult) + 2) != image_size:
        # create_model asserts this for custom strings; glidekit allows other sizes for its own
        # models but OpenAI's factory does not, so keep the converter as strict as the original.
        raise ConfigError(
            f"channel_mult {o['channel_mult']!r} has {len(mult)} levels; OpenAI's create_model "
            f"needs 2**(levels+2) == image_size ({image_size})"
        )
    text = TextEncoderConfig(
        n_vocab=50257,
        text_ctx=int(o["text_ctx"]),
        width=int(o["xf_width"]),
        layers=int(o["xf_layers"]),
        heads=int(o["xf_heads"]),
        final_ln=bool(o["xf_final_ln"]),
        padding=bool(o["xf_padding"]),
    )
    unet = UNetConfig(
        image_size=image_size,
        model_channels=int(o["num_channels"]),
        out_channels=6,
        num_res_blocks=int(o["num_res_blocks"]),
        channel_mult=mult,
        attention_resolutions=_int_tuple(o["attention_resolutions"], "attention_resolutions"),
        num_head_channels=int(o["num_head_channels"]),
        num_heads=int(o["num_heads"]),
        num_heads_upsample=int(o["num_heads_upsample"]),
        dropout=float(o["dropout"]),
        use_scale_shift_norm=bool(o["use_scale_shift_norm"]),
        resblock_updown=bool(o["resblock_updown"]),
        super_res=bool(o["super_res"]),
        inpaint=bool(o["inpaint"]),
        text=text if text.width > 0 else None,
    )
    diffusion = DiffusionConfig(
        steps=int(o["diffusion_steps"]),
        noise_schedule=str(o["noise_schedule"]),
        timestep_respacing=str(o["timestep_respacing"]),
    )
    return GlideConfig(unet=unet, diffusion=diffusion)


# ---------------------------------------------------------------------------------------------
# presets: the six official GLIDE (filtered) models

OPENAI_BASE_URL = "https://openaipublic.blob.core.windows.net/diffusion/dec-2021/"


@dataclass(frozen=True)
class Preset:
    """A named official model: its config, what part it is, and where OpenAI publishes it."""

    name: str
    kind: str  # "base" | "upsample" | "base-inpaint" | "upsample-inpaint" | "clip-image" | "clip-text"
    config: GlideConfig | NoisedCLIPConfig
    filename: str
    description: str

    @property
    def url(self) -> str:
        return OPENAI_BASE_URL + self.filename


def _glide(**overrides: Any) -> GlideConfig:
    cfg = from_openai_options(overrides)
    # OpenAI samples the base with "100" and the upsamplers with "fast27" (spec s.5).
    return dataclasses.replace(
        cfg,
        diffusion=dataclasses.replace(
            cfg.diffusion, timestep_respacing="fast27" if cfg.unet.super_res else "100"
        ),
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("base", "base", _glide(), "base.pt", "64 px text-conditional base (385.0M)"),
        Preset(
            "upsample",
            "upsample",
            _glide(**OPENAI_UPSAMPLER_DEFAULTS),
            "upsample.pt",
            "64 -> 256 px text-conditional upsampler (398.4M)",
        ),
        Preset(
            "base-inpaint",
            "base-inpaint",
            _glide(inpaint=True),
            "base_inpaint.pt",
            "64 px text-conditional inpainting base (385.0M)",
        ),
        Preset(
            "upsample-inpaint",
            "upsample-inpaint",
            _glide(**{**OPENAI_UPSAMPLER_DEFAULTS, "inpaint": True}),
            "upsample_inpaint.pt",
            "64 -> 256 px inpainting upsampler (398.4M)",
        ),
        Preset(
            "clip-image",
            "clip-image",
            NoisedCLIPConfig(),
            "clip_image_enc.pt",
            "noised CLIP image encoder, 64 px (86.4M)",
        ),
        Preset(
            "clip-text",
            "clip-text",
            NoisedCLIPConfig(),
            "clip_text_enc.pt",
            "noised CLIP text encoder (71.7M)",
        ),
    )
}


def get_preset(name: str) -> Preset:
    """Look up an official preset by name; the error lists the valid names."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]
