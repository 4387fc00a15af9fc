"""Device, dtype and inference settings, chosen from what the machine does fast (not assumed).

`choose_device` / `choose_dtype` pick where and in what precision to run, `autocast_context`
wraps a forward pass in that precision, and `prepare_for_inference` applies the settings that
measured fastest for GLIDE's UNets. Sampling code uses them as

    device = choose_device(args.device)
    dtype = choose_dtype(device, args.dtype)
    model = prepare_for_inference(model, device, dtype)
    emb = model.encode_text(tokens, mask)            # once per prompt, not once per step
    with inference_context(device, dtype):
        x0 = solver(lambda x, t: model(x, t, text_emb=emb), ...)

On a CPU with bf16 instructions (AVX512-BF16 or AMX) the default is bf16 autocast: measured on a
Zen 4 (BENCHMARKS.md), 2.25x (base CFG step) and 2.23x (upsampler step) over float32 eager,
with the convolutions at the core's bf16 peak; Winograd (float32 only) is then not used.

Measurements behind the float32 choices (BENCHMARKS.md, "Earlier machine"):
official-size models with random weights, AMD EPYC (Zen 3, AVX2 + FMA, no AVX-512 / bf16
instructions), torch 2.13 CPU, 1 thread, float32; medians of 5 (base, CFG batch 2) or 3
(upsampler, 256 px) interleaved rounds after a warm-up, each configuration in its own process,
speedups against fp32 eager in the same run (base / upsampler):

- Winograd for the 3x3 convolutions (`layers.WinogradConv2d`, see `WINOGRAD_TILE`): the
  convolutions were ~75% of a step and the direct oneDNN kernel already runs at ~60-75% of the
  AVX2 FMA peak, so fewer multiplications is what is left. With channels_last: 1.40x / 1.55x
  ("auto"), 1.51x / 1.43x (F2 only); per layer 1.6-3.3x faster than the direct convolution.
- cached text embedding (`GlideUNet.encode_text` once per prompt, `text_emb=` every step):
  1.20x / 1.00x (the text transformer is a small part of the 256 px upsampler's step).
- fused attention (`F.scaled_dot_product_attention`, `layers.set_fused_attention`): 1.17x /
  1.00x; the (length x length) softmax and two einsums were ~20% of a base step.
- glibc allocator tuning (`tune_cpu_allocator`): 1.04x / 1.20x (page faults of large
  activations; the 256 px maps are 48 MiB each).
- channels_last memory format (model + input): 1.04x / 1.11x alone; needed by Winograd anyway.
- all of them (`prepare_for_inference` + cached text, the default path): 1.94-1.97x / 2.30x,
  outputs within 2.2e-5 of eager (output max 1.4-1.9); peak RSS 4.6 / 5.5 GiB instead of
  2.1 / 2.5 GiB (the cached Winograd weights); the first step pays ~6-12 s once for them.
- `torch.inference_mode` instead of `torch.no_grad`: 1.00x (base), and it would break CLIP
  guidance (its cond_fn needs autograd), so `inference_context` uses `no_grad`.
- torch.compile (inductor, channels_last + fused attention + cached text): 1.01x after a
  423 s first call; with `freezing` (oneDNN weight prepacking) 1.02x after 153 s. Not applied.
- oneDNN with prepacked weights (`torch.utils.mkldnn`): no gain per layer; NNPACK: 1.2-5x
  slower at 64 px batch 2 (faster only at 256 px batch 1, with 5x the Winograd F4 error).
- bf16 autocast without bf16 instructions: matmuls 70x and NCHW convolutions 190x *slower*
  than float32 (emulated), so bf16 is the CPU default only where `cpu_has_fast_bf16()`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError
from .models import layers

# Winograd for the float32 CPU path (`layers.WinogradConv2d`), per 3x3 convolution:
#   2: F(2x2, 3x3): 2.25x fewer multiplications; error ~6e-7 of the output's max, below the
#      direct float32 convolution's own ~2e-6;
#   4: F(4x4, 3x3): 4x fewer; error ~4e-6 of the max (points 0, +-1, 1/2, -2);
#   "auto": F4 from 16 px up, F2 at 8 px (`layers.winograd_tile_for`), the measured fastest;
#   0: off (the direct oneDNN convolution).
# Convolutions with fewer than 128 input or output channels (GLIDE's first and last) always
# run direct. The transformed weights are cached: +1.8x (F2) / +4x (F4) of the 3x3 weights in
# memory, computed during the first forward pass.
WINOGRAD_TILE: int | str = "auto"


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (empty where that file does not exist)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX).

    Without them PyTorch emulates bf16 matmuls and convolutions, which measured 10-200x *slower*
    than float32 on an AVX2-only AMD EPYC, so bf16 autocast must not be a blind CPU default.
    """
    flags = cpu_flags()
    if flags:
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    return torch.backends.cpu.get_cpu_capability() not in ("DEFAULT", "AVX2", "NO AVX")


# ---------------------------------------------------------------------------------------------
# Device and dtype


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def choose_device(requested: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda if available, else mps if available, else cpu; explicit names are checked.

    Accepts "auto", "cpu", "cuda", "cuda:N", "mps" (or a `torch.device`). Asking for a device
    this machine does not have is a `ConfigError` (a `GlidekitError`) saying so.
    """
    if isinstance(requested, torch.device):
        requested = str(requested)
    name = str(requested).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {requested!r} requested but CUDA is not available on this machine (use auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {requested!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return device
    if device.type == "mps":
        if not _mps_available():
            raise ConfigError(f"device {requested!r} requested but Apple MPS is not available on this machine (use auto or cpu)")
        return device
    raise ConfigError(f"unsupported device {requested!r}; use auto, cpu, cuda, cuda:N or mps")


_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}


def choose_dtype(device: torch.device | str, requested: str | torch.dtype | None = "auto") -> torch.dtype:
    """The compute precision for `device`: "auto", "fp32", "bf16" or "fp16" (or a torch dtype).

    auto: CUDA -> bf16 where the GPU supports it, else fp16; MPS -> fp32; CPU -> bf16 only when
    the CPU has bf16 instructions (`cpu_has_fast_bf16`), else fp32. Weights stay float32 either
    way; the dtype is what `autocast_context` computes in (float32 means no autocast). fp16 on
    the CPU is refused: PyTorch emulates it there (~100x slower than float32).
    """
    device = torch.device(device)
    if requested is None or (isinstance(requested, str) and requested.strip().lower() == "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    if isinstance(requested, torch.dtype):
        dtype = requested
    else:
        dtype = _DTYPES.get(requested.strip().lower())
        if dtype is None:
            raise ConfigError(f"unknown dtype {requested!r}; use auto, fp32, bf16 or fp16")
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ConfigError(f"unsupported compute dtype {dtype}; use fp32, bf16 or fp16")
    if dtype == torch.float16 and device.type == "cpu":
        raise ConfigError(
            "fp16 on the CPU is emulated by PyTorch (~100x slower than fp32); use fp32, or bf16 on a CPU with bf16 instructions"
        )
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU does not support bf16; use fp16 or fp32")
    return dtype


def autocast_context(device: torch.device | str, dtype: torch.dtype | None):
    """`torch.autocast` in `dtype` on `device`; a null context for float32 (or None)."""
    device = torch.device(device)
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def inference_context(device: torch.device | str, dtype: torch.dtype | None):
    """`no_grad` + `autocast_context`: what a sampling loop runs under.

    `torch.inference_mode` measured no faster than `no_grad` here (base step 1.00x) and makes
    tensors that autograd refuses later, which CLIP guidance's cond_fn needs; so `no_grad`.
    """
    with torch.no_grad(), autocast_context(device, dtype):
        yield


# ---------------------------------------------------------------------------------------------
# Model preparation


def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process for reuse (glibc malloc); True where it was applied.

    glibc serves every block over 32 MiB with a fresh mmap and unmaps it on free, so each large
    activation (a 192 x 256 x 256 float32 map is 48 MiB) is page-faulted in again, which on this
    virtual machine costs ~0.6 ms per MiB: a SiLU over such a map took 60 ms with a fresh output
    and 15 ms once memory was reused. With mmap off and no trimming, freed blocks stay in the
    heap: the upsampler's eager fp32 step 1.20x faster, the base's 1.04x (BENCHMARKS.md), for
    ~10% more peak RSS (freed memory is not handed back to the OS while the process runs).
    Process-wide; a no-op where the C library is not glibc.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
    ok = mallopt(M_MMAP_MAX, 0) == 1
    ok = ok and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    ok = ok and mallopt(M_TOP_PAD, 64 << 20) == 1
    _ALLOCATOR_TUNED = ok
    return ok


_ALLOCATOR_TUNED = False


@functools.lru_cache(maxsize=None)
def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo (else the platform's processor or machine name)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _use_winograd(device: torch.device, dtype: torch.dtype | None) -> bool:
    # Only the float32 CPU path: GPUs pick Winograd-or-not themselves (cuDNN), and under autocast
    # the convolutions run in the low precision anyway.
    return device.type == "cpu" and (dtype is None or dtype == torch.float32) and WINOGRAD_TILE != 0


def prepare_for_inference(
    model: nn.Module, device: torch.device | str, dtype: torch.dtype | None, *, tune_allocator: bool = True
) -> nn.Module:
    """Put `model` in its fastest inference form for `device` / `dtype` (in place; returns it).

    - `eval()` and `requires_grad_(False)`: no dropout, no autograd bookkeeping.
    - weights stay float32 on `device` (autocast does the low-precision compute, GroupNorm and
      LayerNorm run in float32 as GLIDE does).
    - channels_last memory format on CPU and CUDA.
    - fused attention for every GLIDE attention block, process-wide:
      `layers.set_fused_attention(False)` restores the unfused reference order of operations
      (the parity tests also pass with it on).
    - CPU: `tune_cpu_allocator()` (process-wide; `tune_allocator=False` leaves malloc alone).
    - float32 on CPU: 3x3 stride-1 convolutions computed with Winograd (`layers.WinogradConv2d`,
      the same parameters and state dict; the class is swapped in place; `WINOGRAD_TILE`).
    - torch.compile is not applied: on this CPU (1 thread) it measured 1.01-1.02x over the eager
      settings after a first call of 2.5-7 minutes, which a 20-100 step run does not pay back.
    Measured effect of each: the module docstring.

    Outputs equal the plain model's within float32 rounding (tests/test_runtime.py: 1e-5 on the
    tiny parity model; 2.2e-5 at an output max of 1.4 on the official-size base).
    """
    device = torch.device(device)
    model.eval()
    model.requires_grad_(False)
    model.to(device)
    if device.type in ("cpu", "cuda"):
        model.to(memory_format=torch.channels_last)
    layers.set_fused_attention(True)
    if device.type == "cpu" and tune_allocator:
        tune_cpu_allocator()
    if _use_winograd(device, dtype):
        # Same parameters and state dict; only forward changes, and it falls back to
        # nn.Conv2d wherever Winograd does not apply (autograd, autocast, odd sizes, thin convs).
        for module in model.modules():
            if type(module) is nn.Conv2d and module.kernel_size == (3, 3) and module.stride == (1, 1):
                module.__class__ = layers.WinogradConv2d
                module.winograd_tile = WINOGRAD_TILE
    return model


def to_model_input(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """An image batch on `device` in the memory format `prepare_for_inference` chose."""
    device = torch.device(device)
    x = x.to(device)
    if x.dim() == 4 and device.type in ("cpu", "cuda"):
        x = x.contiguous(memory_format=torch.channels_last)
    return x
