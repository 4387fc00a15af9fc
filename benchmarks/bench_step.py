"""Time one denoising step of an official-size GLIDE UNet: fp32 eager vs glidekit's default path.

    .venv/bin/python benchmarks/bench_step.py --model base --repeats 3 --threads 1
    .venv/bin/python benchmarks/bench_step.py --model upsample --repeats 3 --threads 1 --ablation

base: one classifier-free guided step (batch 2 = prompt + empty prompt, 64 px, scale 3).
upsample: one step of the 64 -> 256 upsampler (batch 1, 256 px, text-conditioned, no guidance).
Random weights (OpenAI's checkpoints are not bundled; the arithmetic is the same). The zero-
initialised output layers are re-initialised so outputs are not trivially zero and the two
paths can be compared numerically.

- "fp32 eager": the plain `GlideUNet`, `torch.no_grad()`, NCHW, the text transformer run inside
  every step (how OpenAI's code and a naive port run).
- "default": `glidekit.runtime`'s path: `choose_device` / `choose_dtype`,
  `prepare_for_inference`, the text embedding computed once per prompt (`encode_text`, timed
  separately: it is paid once per image, not per step), `inference_context`.

Each configuration runs in its own worker process (process-wide settings such as
`prepare_for_inference`'s allocator tuning cannot leak into the eager baseline), built and warmed
up one at a time; the parent then interleaves their steps round by round, so the machine's load
drifts equally over them, and prints medians, min/max and the ratio to fp32 eager. Peak memory
is each worker's own high-water mark (VmHWM): after building the model, and at the end.

`--ablation` adds each setting on its own (cached text, fused attention, allocator tuning,
channels_last, channels_last + Winograd F(2x2, 3x3) / auto) and the default path with
F(2x2, 3x3) only. Configurations run in groups of `--group` workers (memory); every group
reruns fp32 eager and its ratios are to that group's eager.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from glidekit import runtime  # noqa: E402
from glidekit.config import get_preset  # noqa: E402
from glidekit.models import layers  # noqa: E402
from glidekit.models.unet import GlideUNet  # noqa: E402
from glidekit.sampling.guidance import classifier_free  # noqa: E402
from glidekit.tokenizers import glide_tokenizer  # noqa: E402

PROMPT = "an oil painting of a corgi"
GUIDANCE = 3.0


def rss_mib() -> float:
    """Peak resident set size of this process so far, MiB.

    /proc/self/status VmHWM where it exists: ru_maxrss is not reset by exec on Linux, so a child
    of a large process would report its parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def machine() -> str:
    name = runtime.cpu_model_name()
    flags = runtime.cpu_flags()
    isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "?"
    return (
        f"{name}, {isa}, bf16 instructions: {'yes' if runtime.cpu_has_fast_bf16() else 'no'}, "
        f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} thread(s)"
    )


def build(name: str, seed: int = 0) -> GlideUNet:
    torch.manual_seed(seed)
    model = GlideUNet(get_preset(name).config.unet).eval()
    # GLIDE zero-initialises its residual output convs and the final conv; give them weights.
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)) and not m.weight.any():
            m.reset_parameters()
    return model


class Case:
    """Inputs of one step of the chosen model."""

    def __init__(self, name: str):
        cfg = get_preset(name).config.unet
        self.name = name
        g = torch.Generator().manual_seed(1)
        prompts = [PROMPT, ""] if name == "base" else [PROMPT]
        self.tokens, self.mask = glide_tokenizer().encode_batch(prompts, cfg.text.text_ctx)
        b = len(prompts)
        self.x = torch.randn(b, 3, cfg.image_size, cfg.image_size, generator=g)
        self.t = torch.full((b,), 500, dtype=torch.long)
        self.kwargs = {}
        if cfg.super_res:
            self.kwargs["low_res"] = torch.rand(b, 3, 64, 64, generator=g) * 2 - 1

    def fn(self, model):
        return classifier_free(model, GUIDANCE) if self.name == "base" else model


# ---------------------------------------------------------------------------------------------
# Configurations: (description, setup(models) -> step function)


def _set(model: nn.Module, tile: int) -> None:
    for m in model.modules():
        if isinstance(m, layers.WinogradConv2d):
            m.winograd_tile = tile


def make_configs(case: Case, ablation: bool):
    """name -> (description, needs, make(models) -> step()). needs: which models to build."""
    device = runtime.choose_device("auto")
    dtype = runtime.choose_dtype(device)

    def eager(models, cached=False, fused=False, allocator=False):
        model, fn = models["plain"], case.fn(models["plain"])
        if allocator:
            runtime.tune_cpu_allocator()
        emb = model.encode_text(case.tokens, case.mask) if cached else None

        def step():
            layers.set_fused_attention(fused)
            with torch.no_grad():
                if cached:
                    return fn(case.x, case.t, text_emb=emb, **case.kwargs)
                return fn(case.x, case.t, tokens=case.tokens, mask=case.mask, **case.kwargs)

        return step

    def fast(models, tile=runtime.WINOGRAD_TILE, fused=True, cached=True):
        model = models["fast"]
        fn = case.fn(model)
        with runtime.inference_context(device, dtype):
            emb = model.encode_text(case.tokens.to(device), case.mask.to(device)) if cached else None
        x = runtime.to_model_input(case.x, device)
        kwargs = {k: runtime.to_model_input(v, device) for k, v in case.kwargs.items()}
        t = case.t.to(device)

        def step():
            layers.set_fused_attention(fused)
            _set(model, tile)
            with runtime.inference_context(device, dtype):
                if cached:
                    out = fn(x, t, text_emb=emb, **kwargs)
                else:
                    out = fn(x, t, tokens=case.tokens.to(device), mask=case.mask.to(device), **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out

        return step

    dt = str(dtype).replace("torch.", "")
    configs = {"eager": ("fp32 eager: plain model, no_grad, NCHW, text transformer every step", eager)}
    if ablation:
        configs.update(
            {
                "cached_text": ("eager + text embedding cached", lambda m: eager(m, cached=True)),
                "fused_attn": ("eager + fused attention (SDPA)", lambda m: eager(m, fused=True)),
                "allocator": ("eager + tune_cpu_allocator (glibc: no mmap / trim)", lambda m: eager(m, allocator=True)),
                "channels_last": ("channels_last only", lambda m: fast(m, tile=0, fused=False, cached=False)),
                "cl_winograd2": ("channels_last + Winograd F(2x2,3x3)", lambda m: fast(m, tile=2, fused=False, cached=False)),
                "cl_winograd": ("channels_last + Winograd auto (F4 >= 16 px, F2 below)", lambda m: fast(m, tile="auto", fused=False, cached=False)),
                "default_f2": ("default path with F(2x2,3x3) only", lambda m: fast(m, tile=2)),
            }
        )
    configs["default"] = (f"glidekit default ({device.type}, {dt}): prepare_for_inference + cached text", fast)
    return configs, device, dtype


# Ablations of single settings: prepared models whose allocator is left alone.
NO_ALLOCATOR_TUNING = {"channels_last", "cl_winograd2", "cl_winograd"}


def make_models(name: str, which: set[str], device, dtype, tune_allocator: bool = True) -> dict[str, nn.Module]:
    models = {}
    base = build(name)
    if "fast" in which:
        fast = copy.deepcopy(base) if "plain" in which else base
        models["fast"] = runtime.prepare_for_inference(fast, device, dtype, tune_allocator=tune_allocator)
    if "plain" in which:
        models["plain"] = base
    return models


def needs(config: str) -> set[str]:
    return {"plain"} if config in ("eager", "cached_text", "fused_attn", "allocator") else {"fast"}


# ---------------------------------------------------------------------------------------------
# One worker process per configuration: process-wide settings (the allocator tuning of
# prepare_for_inference, the attention switch) cannot leak into the eager baseline, and each
# worker's peak RSS is that configuration's alone. The parent interleaves the workers' steps.


def worker(name: str, config: str, threads: int, ablation: bool, out_path: str) -> None:
    torch.set_num_threads(threads)
    case = Case(name)
    configs, device, dtype = make_configs(case, ablation)
    send = lambda obj: print(json.dumps(obj), flush=True)  # noqa: E731
    start = rss_mib()
    t0 = time.perf_counter()
    models = make_models(name, needs(config), device, dtype, config not in NO_ALLOCATOR_TUNING)
    build_s = time.perf_counter() - t0
    built = rss_mib()
    encode_s = None
    if "fast" in models:
        with runtime.inference_context(device, dtype):
            t0 = time.perf_counter()
            models["fast"].encode_text(case.tokens.to(device), case.mask.to(device))
            encode_s = time.perf_counter() - t0
    step = configs[config][1](models)
    t0 = time.perf_counter()
    out = step()  # warm-up; fills the Winograd weight caches
    first_s = time.perf_counter() - t0
    torch.save(out.float().cpu().contiguous(), out_path)
    send({"ready": True, "build_s": build_s, "first_s": first_s, "encode_s": encode_s,
          "start_mib": start, "built_mib": built, "warm_mib": rss_mib()})
    for line in sys.stdin:
        if line.strip() == "step":
            t0 = time.perf_counter()
            step()
            send({"s": time.perf_counter() - t0})
        else:
            send({"peak_mib": rss_mib()})
            return


class Worker:
    def __init__(self, name, config, threads, ablation, tmpdir):
        self.out_path = str(Path(tmpdir) / f"{config}.pt")
        cmd = [sys.executable, "-W", "ignore", __file__, "--model", name, "--threads", str(threads),
               "--_worker", config, "--_out", self.out_path]
        if ablation:
            cmd.append("--ablation")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {self.out_path} died (exit {self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def step(self) -> float:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self._read()["s"]

    def finish(self) -> float:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        peak = self._read()["peak_mib"]
        self.proc.wait()
        return peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["base", "upsample"], default="base")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up (median reported)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ablation", action="store_true", help="also time each setting on its own")
    ap.add_argument("--group", type=int, default=4,
                    help="configurations alive at once (each group reruns fp32 eager for its ratios; bounds memory)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--_worker", dest="worker", help=argparse.SUPPRESS)
    ap.add_argument("--_out", dest="out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.model, args.worker, args.threads, args.ablation, args.out)
        return 0

    torch.set_num_threads(args.threads)
    case = Case(args.model)
    configs, device, dtype = make_configs(case, args.ablation)
    print(f"machine: {machine()}")
    what = "classifier-free guided step, batch 2, 64 px" if args.model == "base" else "step, batch 1, 256 px"
    print(f"model: official-size {args.model} (random weights), one {what}; {args.repeats} rounds after a warm-up")
    others = [c for c in configs if c != "eager"]
    per = max(1, args.group - 1)
    groups = [["eager"] + others[i : i + per] for i in range(0, len(others), per)]
    rows = []
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for g, group in enumerate(groups):
            workers = {}
            for c in group:  # started one at a time: building and warm-up are not timed against each other
                workers[c] = Worker(args.model, c, args.threads, args.ablation, tmp)
                print(f"[group {g + 1}/{len(groups)}] {c}: ready {workers[c].info}", flush=True)
            times = {c: [] for c in group}
            for r in range(args.repeats):
                for c, w in workers.items():
                    times[c].append(w.step())
                print(f"  round {r + 1}: " + ", ".join(f"{c} {v[-1]:.2f}s" for c, v in times.items()), flush=True)
            ref = torch.load(workers["eager"].out_path)
            eager_med = statistics.median(times["eager"])
            for c, w in workers.items():
                peak = w.finish()
                out = torch.load(w.out_path)
                v = times[c]
                med = statistics.median(v)
                if c == "eager" and g > 0:
                    c_label = f"eager (group {g + 1})"
                else:
                    c_label = c
                rows.append({"config": c_label, "description": configs[c][0], "median_s": med, "min_s": min(v),
                             "max_s": max(v), "speedup": eager_med / med, "times_s": v,
                             "first_call_s": w.info["first_s"], "encode_s": w.info["encode_s"],
                             "max_abs_diff": (out - ref).abs().max().item(), "output_scale": ref.abs().max().item(),
                             "built_mib": w.info["built_mib"], "peak_mib": peak})

    print()
    print("| configuration | median s | min s | max s | speedup vs fp32 eager | first call s | max abs diff vs eager | peak RSS MiB (model built / peak) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['config']}: {row['description']} | {row['median_s']:.2f} | {row['min_s']:.2f} | {row['max_s']:.2f} | "
              f"{row['speedup']:.2f}x | {row['first_call_s']:.2f} | {row['max_abs_diff']:.1e} | {row['built_mib']:.0f} / {row['peak_mib']:.0f} |")
    enc = [r["encode_s"] for r in rows if r["encode_s"] is not None]
    if enc:
        print(f"\ndefault path: text embedding, once per prompt (not in the step times): {enc[-1]:.2f} s")
    wino = " (on the float32 CPU path: including the one-time Winograd weight transforms)" if dtype in (None, torch.float32) else ""
    print(f"output scale (max |eager|): {rows[0]['output_scale']:.3g}; first call = the warm-up step{wino}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "model": args.model, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
