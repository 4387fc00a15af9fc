"""Checkpoints: OpenAI's official `.pt` files (read-only, recognised by their keys) and
glidekit's own safetensors format, which carries its kind and full config in the metadata.

* `identify_state_dict` tells which of the six official models a state dict belongs to (or
  that it is a noisy classifier, which has no official preset).
* `load_official` reads an official `.pt` with `torch.load(weights_only=True)` only, and checks
  its keys and shapes against the architecture of a config (the official preset by default).
* `save_checkpoint` / `load_checkpoint` write and read glidekit files; writes are atomic.
* `load_model` turns a preset name or a file into a ready `nn.Module`; `convert_official`
  turns an official `.pt` into a glidekit file.

Every problem with a file is a `CheckpointError` whose one-line message names the file and says
what to do. Tensors are kept in the dtype they were stored in; `load_state_dict` casts them into
the model's parameters.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.overrides import TorchFunctionMode

from .config import PRESETS, ClassifierConfig, GlideConfig, NoisedCLIPConfig, config_from_json, config_to_json
from .download import cache_dir
from .errors import CheckpointError, ConfigError, GlidekitError
from .files import atomic_path

FORMAT_VERSION = "1"
"""`glidekit_format` written into (and accepted from) safetensors metadata."""

UNET_KINDS_BY_IN_CHANNELS = {3: "base", 6: "upsample", 7: "base-inpaint", 10: "upsample-inpaint"}
"""The four UNet kinds by the input channels of their first conv (`UNetConfig.kind_in_channels`:
coordinate channels, glidekit's own, come on top)."""

CLIP_KINDS = ("clip-image", "clip-text")
CLASSIFIER_KIND = "classifier"
"""A noisy classifier (`NoisyClassifier`, `ClassifierConfig`); glidekit's own, no official preset."""
KINDS = (*UNET_KINDS_BY_IN_CHANNELS.values(), *CLIP_KINDS, CLASSIFIER_KIND)
_PRESET_BY_KIND = {p.kind: p for p in PRESETS.values()}
_RESERVED_METADATA = ("glidekit_format", "kind", "config")
_MAX_LISTED = 3  # differing / found keys quoted in an error message

State = dict[str, torch.Tensor]
ModelConfig = GlideConfig | NoisedCLIPConfig | ClassifierConfig
PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------------
# kinds, configs and architectures


def identify_state_dict(sd: Mapping[str, Any]) -> str:
    """The official model kind a state dict is from, by its keys.

    `blocks.input.w_t` -> "clip-image", `blocks.input.w_voc` -> "clip-text"; a UNet
    (`input_blocks.0.0.weight`) by the input channels of its first conv: 3 "base",
    6 "upsample", 7 "base-inpaint", 10 "upsample-inpaint"; an encoder-only UNet with a pooling
    head (no `output_blocks.*`, `out.2.c_proj.weight` or `out.3.weight`: guided-diffusion's
    `EncoderUNetModel`, glidekit's `NoisyClassifier`) -> "classifier". Anything else
    is a `CheckpointError`. Class-conditional UNets are identified by their input channels like
    the others (their config carries `num_classes`).
    """
    if "blocks.input.w_t" in sd:
        return "clip-image"
    if "blocks.input.w_voc" in sd:
        return "clip-text"
    conv = sd.get("input_blocks.0.0.weight")
    if isinstance(conv, torch.Tensor) and conv.ndim == 4:
        head = "out.2.c_proj.weight" in sd or "out.3.weight" in sd  # attention / adaptive pool
        if head and not any(isinstance(k, str) and k.startswith("output_blocks.") for k in sd):
            return CLASSIFIER_KIND
        kind = UNET_KINDS_BY_IN_CHANNELS.get(conv.shape[1])
        if kind is None:
            raise CheckpointError(
                f"UNet state dict has {conv.shape[1]} input channels; official GLIDE models have "
                f"{', '.join(f'{c} ({k})' for c, k in UNET_KINDS_BY_IN_CHANNELS.items())}"
            )
        return kind
    found = ", ".join(list(sd)[:_MAX_LISTED]) or "no keys"
    raise CheckpointError(
        f"not a GLIDE UNet or noised CLIP state dict (found {found}, ...); expected "
        f"'input_blocks.0.0.weight', 'blocks.input.w_t' or 'blocks.input.w_voc'"
    )


def _check_kind_name(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _check_config(kind: str, config: Any) -> None:
    """A `ConfigError` unless `config` is the right config type (and UNet variant) for `kind`."""
    _check_kind_name(kind)
    want = NoisedCLIPConfig if kind in CLIP_KINDS else ClassifierConfig if kind == CLASSIFIER_KIND else GlideConfig
    if not isinstance(config, want):
        raise ConfigError(f"{_a(kind)} model needs a {want.__name__}, got {type(config).__name__}")
    if want is GlideConfig and UNET_KINDS_BY_IN_CHANNELS[config.unet.kind_in_channels] != kind:
        described = UNET_KINDS_BY_IN_CHANNELS[config.unet.kind_in_channels]
        raise ConfigError(
            f"the config describes {_a(described)} model (super_res={config.unet.super_res}, "
            f"inpaint={config.unet.inpaint}), not {kind}; pass a config for {kind}"
        )


class _SkipRandomInitOnMeta(TorchFunctionMode):
    """Make random initialisers no-ops on meta tensors. They have no values to fill anyway, and
    `normal_` on meta would import torch._dynamo (about 2 s) the first time it runs."""

    OPS = frozenset({"normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                     "xavier_uniform_", "xavier_normal_"})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in self.OPS:
            t = args[0] if args else kwargs.get("tensor")
            if isinstance(t, torch.Tensor) and t.is_meta:
                return t
        return func(*args, **kwargs)


def build_model(
    kind: str,
    config: ModelConfig,
    *,
    device: Any = "cpu",
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """A constructed but uninitialised model of `kind` for `config`, to load a state dict into.

    `GlideUNet(config.unet)` for the four UNet kinds, `CLIPImageEncoder(config)` /
    `CLIPTextEncoder(config)` for "clip-image" / "clip-text", `NoisyClassifier(config)` for
    "classifier". The module is built on the meta device (no memory, no random init) and then
    given empty storage on `device` in `dtype` (the model's default when None); parameter values
    are arbitrary until a state dict is loaded. Models with non-persistent buffers (constants a
    state dict does not carry) are constructed normally instead. `device="meta"` gives a shape-only model.
    """
    from .models.classifier import NoisyClassifier
    from .models.clip import CLIPImageEncoder, CLIPTextEncoder
    from .models.unet import GlideUNet

    _check_config(kind, config)

    def make() -> nn.Module:
        if kind in CLIP_KINDS:
            return (CLIPImageEncoder if kind == "clip-image" else CLIPTextEncoder)(config)
        if kind == CLASSIFIER_KIND:
            return NoisyClassifier(config)
        return GlideUNet(config.unet)

    with torch.device("meta"), _SkipRandomInitOnMeta():
        model = make()
    if dtype is not None:
        model = model.to(dtype)
    device = torch.device(device)
    if device.type == "meta":
        return model
    persistent = set(model.state_dict())
    if all(name in persistent for name, _ in model.named_buffers()):
        return model.to_empty(device=device)
    with torch.device(device):
        model = make()
    return model.to(dtype) if dtype is not None else model


def _shape(t: Any) -> str:
    return "(" + ",".join(str(d) for d in t.shape) + ")" if isinstance(t, torch.Tensor) else type(t).__name__


def _check_architecture(
    sd: Mapping[str, Any], kind: str, config: Any, against: str, hint: str = "pass the matching config"
) -> None:
    """A `CheckpointError` listing the first differing keys unless `sd` has exactly the keys and
    shapes of `build_model(kind, config)` (built on the meta device: no memory, no time)."""
    expected = build_model(kind, config, device="meta").state_dict()
    diffs = []
    for key, ref in expected.items():
        if key not in sd:
            diffs.append(f"{key} is missing (expected {_shape(ref)})")
        elif not isinstance(sd[key], torch.Tensor) or sd[key].shape != ref.shape:
            diffs.append(f"{key} has {_shape(sd[key])}, expected {_shape(ref)}")
    diffs += [f"unexpected {key} {_shape(sd[key])}" for key in sd if key not in expected]
    if diffs:
        more = f" (and {len(diffs) - _MAX_LISTED} more)" if len(diffs) > _MAX_LISTED else ""
        raise CheckpointError(
            f"state dict does not match {against}: "
            f"{'; '.join(diffs[:_MAX_LISTED])}{more}; {hint}"
        )


@contextlib.contextmanager
def _prefixed(source: Any):
    """Re-raise any `GlidekitError` from inside as a `CheckpointError` prefixed with `source`."""
    try:
        yield
    except GlidekitError as e:
        raise CheckpointError(f"{source}: {e}") from None


def _check_expected_kind(source: Any, found: str, wanted: str | None) -> None:
    if wanted is not None:
        _check_kind_name(wanted)
        if found != wanted:
            raise CheckpointError(f"{source} holds {_a(found)} checkpoint, not {wanted}")


def _existing_file(path: PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"no such file: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    return path


# ---------------------------------------------------------------------------------------------
# official .pt files


def _unpickling_refused(path: Path, e: pickle.UnpicklingError) -> CheckpointError:
    text = str(e)
    match = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if match:
        detail = f"it references {match.group(1)}"
    else:
        match = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        detail = match.group(1).strip() if match else "objects other than tensors and containers"
    return CheckpointError(
        f"{path} needs arbitrary unpickling ({detail}); glidekit refuses to unpickle code objects "
        f"for safety (torch.load weights_only=True): re-save just its state dict of tensors"
    )


def load_official(
    path: PathLike,
    *,
    kind: str | None = None,
    config: ModelConfig | None = None,
    map_location: Any = "cpu",
) -> tuple[str, ModelConfig, State]:
    """Read an official GLIDE `.pt` state dict: returns `(kind, config, state_dict)`.

    Only `torch.load(path, map_location=..., weights_only=True)` is used: files that need
    arbitrary unpickling are refused. The kind comes from the keys (`identify_state_dict`) and
    must equal `kind` when given. The state dict is checked key by key and shape by shape
    against `config`, by default the official preset of its kind. Tensors keep their stored
    dtype (official files may be fp16). A classifier `.pt` (e.g. guided-diffusion's) has no
    preset and needs `config` (a `ClassifierConfig`).
    """
    path = _existing_file(path)
    try:
        sd = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in str(e):
            raise _unpickling_refused(path, e) from None
        # torch's messages are long: keep their first sentence; EOFError or KeyError say nothing
        reason = type(e).__name__
        if isinstance(e, (RuntimeError, pickle.UnpicklingError)):
            reason = str(e).strip().split("\n")[0].split(". ")[0]
        if reason.startswith("Attempting to deserialize object on"):  # e.g. CUDA on a CPU-only machine
            raise CheckpointError(f"cannot load {path} with map_location={map_location!r}: {reason}") from None
        raise CheckpointError(
            f"{path} is truncated or not a PyTorch checkpoint ({reason}); download it again"
        ) from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{path} holds a {type(sd).__name__}, not a state dict (a dict of tensors)")
    bad = next((k for k, v in sd.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))), None)
    if bad is not None:
        raise CheckpointError(
            f"{path} is not a state dict: entry {bad!r} holds a {type(sd[bad]).__name__}, "
            f"not a tensor; pass a file with just the model's state dict"
        )
    sd = dict(sd)
    with _prefixed(path):
        found = identify_state_dict(sd)
    _check_expected_kind(path, found, kind)
    with _prefixed(path):
        if config is None and found not in _PRESET_BY_KIND:
            raise CheckpointError(
                f"{_a(found)} checkpoint has no official preset; pass its config "
                f"(config=ClassifierConfig(...))"
            )
        if config is None:
            config, against = _PRESET_BY_KIND[found].config, f"the official {found!r} architecture"
        else:
            against = f"the given {found!r} config"
        _check_config(found, config)
        _check_architecture(sd, found, config, against)
    return found, config, sd


# ---------------------------------------------------------------------------------------------
# glidekit safetensors files


def _storable(state_dict: Mapping[str, torch.Tensor]) -> State:
    """CPU, contiguous tensors with no two sharing memory (as safetensors requires)."""
    out, seen = {}, set()
    for key, value in state_dict.items():
        t = value.detach().cpu()
        ptr = t.untyped_storage().data_ptr()
        t = t.clone(memory_format=torch.contiguous_format) if ptr in seen else t.contiguous()
        if ptr:
            seen.add(ptr)
        out[key] = t
    return out


def save_checkpoint(
    path: PathLike,
    state_dict: Mapping[str, torch.Tensor],
    config: ModelConfig,
    *,
    kind: str,
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a glidekit checkpoint: safetensors whose metadata holds `glidekit_format`, `kind`
    and `config` (JSON), plus `extra_metadata` (string keys and values). Returns the path written
    (`~` expanded).

    The state dict must match `build_model(kind, config)`. The file is written to a temporary
    file in the same folder, fsynced and renamed over `path` with `os.replace`, so `path` holds
    either its previous content or the complete new file; the temporary file is removed on any
    failure. Tensors are stored as they are (dtype kept), made contiguous, shared ones cloned.
    """
    path = Path(path).expanduser()
    extra = dict(extra_metadata or {})
    clash = [k for k in extra if k in _RESERVED_METADATA]
    if clash:
        raise ValueError(f"extra_metadata may not set the reserved key(s) {', '.join(clash)}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise TypeError("extra_metadata keys and values must be strings")
    _check_config(kind, config)
    with _prefixed(path):
        _check_architecture(state_dict, kind, config, f"the {kind!r} config being saved")
    metadata = {"glidekit_format": FORMAT_VERSION, "kind": kind, "config": config_to_json(config), **extra}
    tensors = _storable(state_dict)
    try:
        with atomic_path(path, mkdir=False) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def load_checkpoint(
    path: PathLike, map_location: Any = "cpu"
) -> tuple[str, ModelConfig, State, dict[str, str]]:
    """Read a glidekit checkpoint: returns `(kind, config, state_dict, metadata)`.

    `metadata` is the file's whole string metadata (including `kind` and `config`). The state
    dict is checked against the stored config; tensors are loaded onto `map_location` (a device)
    in their stored dtype.
    """
    path = _existing_file(path)
    try:
        with safe_open(str(path), framework="pt", device=str(torch.device(map_location))) as f:
            metadata = dict(f.metadata() or {})
            sd = {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as e:
        raise CheckpointError(
            f"{path} is truncated or not a safetensors file ({e}); write or download it again"
        ) from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    if "config" not in metadata or "kind" not in metadata or "glidekit_format" not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file without a glidekit config; load the official .pt "
            f"instead, or convert it: glide convert CHECKPOINT.pt OUTPUT.safetensors"
        )
    if metadata["glidekit_format"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has glidekit format {metadata['glidekit_format']!r}; this glidekit reads "
            f"format {FORMAT_VERSION}: upgrade glidekit"
        )
    kind = metadata["kind"]
    with _prefixed(path):
        config = config_from_json(metadata["config"])
        _check_config(kind, config)
        _check_architecture(
            sd, kind, config, f"its stored {kind!r} config",
            hint="the file is damaged or was not written by glidekit",
        )
    return kind, config, sd, metadata


def convert_official(
    src_pt: PathLike, dst_safetensors: PathLike, *, config: ModelConfig | None = None
) -> str:
    """Convert an official `.pt` (see `load_official`) to a glidekit safetensors file with its
    config; returns the kind. Tensors keep their dtype; the source file name is recorded as
    `source` in the metadata."""
    return convert_checkpoint(src_pt, dst_safetensors, config=config)


STORE_DTYPES = {"keep": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def convert_checkpoint(
    src: PathLike, dst_safetensors: PathLike, *, config: ModelConfig | None = None, dtype: str = "keep",
    extra_metadata: Mapping[str, str] | None = None,
) -> str:
    """Write `src` (an official `.pt` or a glidekit `.safetensors`) as a glidekit safetensors
    file, floating-point tensors cast to `dtype` ("keep", "fp16", "bf16", "fp32"); returns the
    kind. The metadata records the source file name; a glidekit source's own extra metadata is
    kept, and `extra_metadata` is added. Models load float16 files into float32 (or any compute
    dtype) as usual."""
    if dtype not in STORE_DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {', '.join(STORE_DTYPES)}")
    extra = {"source": Path(src).name}
    if str(src).lower().endswith(".safetensors"):
        if config is not None:
            raise CheckpointError(f"{src} carries its own config; do not pass one")
        kind, config, sd, meta = load_checkpoint(src)
        extra = {k: v for k, v in meta.items() if k not in _RESERVED_METADATA} | extra
    else:
        kind, config, sd = load_official(src, config=config)
    cast = STORE_DTYPES[dtype]
    if cast is not None:
        sd = {k: v.to(cast) if v.is_floating_point() else v for k, v in sd.items()}
    save_checkpoint(dst_safetensors, sd, config, kind=kind, extra_metadata=extra | dict(extra_metadata or {}))
    return kind


# ---------------------------------------------------------------------------------------------
# models


def model_identity(name_or_path: PathLike) -> str | None:
    """The fingerprint (`download.file_identity`) of the file `model_path` resolves a name or path to,
    None when there is no such file (an official model not downloaded yet): how sweep rows, report
    sections and PNG records name the model they came from."""
    from .download import file_identity

    path = model_path(name_or_path)
    return file_identity(path) if path.is_file() else None


def model_path(name_or_path: PathLike) -> Path:
    """The file `load_model` reads for a model name or path: a bundled model's file, an official
    preset's file in the download cache (which may not be downloaded yet), or the path itself."""
    from .bundled import BUNDLED, bundled_path

    name = str(name_or_path)
    if name in BUNDLED:
        return bundled_path(name)
    if name in PRESETS:
        return cache_dir() / PRESETS[name].filename
    return Path(name_or_path).expanduser()


def load_model(
    name_or_path: PathLike,
    *,
    device: Any = "cpu",
    dtype: torch.dtype | None = None,
    kind: str | None = None,
    config: ModelConfig | None = None,
) -> tuple[nn.Module, str, ModelConfig]:
    """A ready model in eval mode on `device` (in `dtype`): returns `(model, kind, config)`.

    `name_or_path` is a bundled model's name (`"shapes"`, `"emoji-64"`: `glidekit.bundled`),
    an official preset name (`"base"`, `"upsample"`, ..., loaded from the download cache
    `cache_dir()`), an official `.pt` file or a glidekit `.safetensors` file. When `kind`
    is given, the checkpoint must be of that kind. `config` describes a `.pt` file that is not
    one of the official sizes (glidekit checkpoints carry their own). Weights load with
    `strict=True`.
    """
    if config is not None and str(name_or_path).lower().endswith(".safetensors"):
        raise CheckpointError(f"{name_or_path} carries its own config; do not pass one")
    from .bundled import BUNDLED

    name, path = str(name_or_path), model_path(name_or_path)
    if name in BUNDLED:
        found, config, sd, _ = load_checkpoint(path)
        _check_expected_kind(path, found, kind)
    elif name in PRESETS:
        if not path.is_file():
            raise CheckpointError(f"model {name!r} is not downloaded; run: glide download {name}")
        found, config, sd = load_official(path, kind=kind or PRESETS[name].kind, config=config)
    else:
        suffix = path.suffix.lower()
        if suffix == ".pt":
            found, config, sd = load_official(path, kind=kind, config=config)
        elif suffix == ".safetensors":
            found, config, sd, _ = load_checkpoint(path)
            _check_expected_kind(path, found, kind)
        else:
            raise CheckpointError(
                f"cannot load {name}: give a model name ({', '.join([*BUNDLED, *PRESETS])}), an official .pt "
                f"file or a glidekit .safetensors file"
            )
    model = build_model(found, config, device=device, dtype=dtype)
    model.load_state_dict(sd, strict=True)
    return model.eval(), found, config


def clip_pair(source: PathLike) -> tuple[str, str]:
    """The (image encoder, text encoder) sources a noised CLIP name or path stands for.

    - `"clip"`: OpenAI's pair (`clip-image`, `clip-text`, after `glide download clip-image clip-text`);
    - a bundled CLIP such as `"shapes-clip"`: the bundled `shapes-clip-image` and `shapes-clip-text`;
    - either file of a pair glidekit's training wrote (`.../ema-clip-image.safetensors` or
      `.../ema-clip-text.safetensors`), or their common stem (`.../step-0005000/ema`).
    """
    from .bundled import BUNDLED

    name = str(source)
    if f"{name}-image" in BUNDLED or f"{name}-image" in PRESETS:
        return f"{name}-image", f"{name}-text"
    for own, other in (("-clip-image.safetensors", "-clip-text.safetensors"), ("-clip-text.safetensors", "-clip-image.safetensors")):
        if name.endswith(own):
            pair = (name, name[: -len(own)] + other)
            return pair if own.startswith("-clip-image") else pair[::-1]
    stem = Path(name).expanduser()
    image, text = Path(f"{stem}-clip-image.safetensors"), Path(f"{stem}-clip-text.safetensors")
    if image.is_file() or text.is_file():
        return str(image), str(text)
    raise CheckpointError(
        f"no noised CLIP {name!r}: give 'clip' (OpenAI's), a bundled CLIP ({', '.join(n[:-6] for n in BUNDLED if n.endswith('-image')) or 'none bundled'}), "
        "or a glidekit CLIP checkpoint (NAME-clip-image.safetensors with its NAME-clip-text.safetensors)")


def load_noised_clip(source: PathLike | tuple[PathLike, PathLike], *, device: Any = "cpu"):
    """A `NoisedCLIP` (eval mode) from a name or path (`clip_pair`) or an explicit (image, text) pair."""
    from .models.clip import NoisedCLIP

    image_src, text_src = clip_pair(source) if isinstance(source, (str, os.PathLike)) else source
    image_enc, _, cfg = load_model(image_src, kind="clip-image", device=device)
    text_enc, _, text_cfg = load_model(text_src, kind="clip-text", device=device)
    if text_cfg != cfg:
        raise CheckpointError(f"{image_src} and {text_src} are not one CLIP: their configs differ")
    return NoisedCLIP.from_encoders(image_enc, text_enc, cfg).eval()


__all__ = [
    "KINDS",
    "clip_pair",
    "load_noised_clip",
    "build_model",
    "convert_checkpoint",
    "convert_official",
    "identify_state_dict",
    "load_checkpoint",
    "load_model",
    "load_official",
    "model_path",
    "save_checkpoint",
]
