"""`glide demo` before any trained model ships: the official architecture, built and timed.

Builds GLIDE's 64 px base at its official size (random weights: OpenAI's checkpoints are not
bundled), checks its parameter count against the released model, and times one classifier-free
guided denoising step (batch 2) in float32 eager mode and on glidekit's default inference path
(`runtime.prepare_for_inference` + cached text embeddings; bf16 autocast only where the CPU has
bf16 instructions, since without them bf16 is emulated and far slower).
"""

from __future__ import annotations

import statistics
import time

import torch

from . import runtime
from .config import get_preset
from .models.unet import GlideUNet
from .sampling.guidance import classifier_free
from .tokenizers import glide_tokenizer

OFFICIAL_PARAMS = {"base": 385_030_726, "upsample": 398_361_286}


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_demo(threads: int = 1, repeats: int = 2, prompt: str = "an oil painting of a corgi") -> dict:
    """Print and return sizes and per-step timings of the official base model."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    result: dict = {}
    for name in ("base", "upsample"):
        with torch.device("meta"):
            n = sum(p.numel() for p in GlideUNet(get_preset(name).config.unet).parameters())
        ok = "matches" if n == OFFICIAL_PARAMS[name] else "DIFFERS FROM"
        print(f"{name:<9} {n:>12,} parameters ({ok} OpenAI's released {name}.pt: {OFFICIAL_PARAMS[name]:,})")
        result[f"{name}_params"] = n

    cfg = get_preset("base").config
    print("building the official base model (random weights)...", flush=True)
    model = GlideUNet(cfg.unet).eval()
    tok = glide_tokenizer()
    tokens, mask = tok.encode_batch([prompt, ""], cfg.unet.text.text_ctx)
    print(f"prompt {prompt!r} -> {int(mask[0].sum())} GLIDE tokens: {tok.encode(prompt)}")
    guided = classifier_free(model, 3.0)
    x = torch.randn(2, 3, 64, 64)
    t = torch.full((2,), 999)

    def step() -> None:
        with torch.no_grad():
            guided(x, t, tokens=tokens, mask=mask)

    fp32 = _time(step, repeats)
    print(f"one classifier-free guided base step (batch 2, 64 px, {threads} thread, {torch.backends.cpu.get_cpu_capability()}):")
    print(f"  float32 eager     {fp32:6.2f} s")
    result["fp32_step_s"] = fp32

    # glidekit's default inference path: runtime preparation + text encoded once per prompt
    device = torch.device("cpu")
    dtype = runtime.choose_dtype(device, "auto")
    fast_model = runtime.prepare_for_inference(model, device, dtype)
    with torch.no_grad():
        emb = fast_model.encode_text(tokens, mask)
    xf = runtime.to_model_input(x, device)
    guided_fast = classifier_free(fast_model, 3.0)

    def step_default() -> None:
        with runtime.inference_context(device, dtype):
            guided_fast(xf, t, text_emb=emb)

    default = _time(step_default, repeats)
    print(f"  glidekit default  {default:6.2f} s  ({fp32 / default:.1f}x; {str(dtype).replace('torch.', '')}, see BENCHMARKS.md)")
    result["default_step_s"] = default
    print(f"  OpenAI's 100-step base sampling would take ~{100 * fp32 / 60:.1f} min in float32 here")
    return result
