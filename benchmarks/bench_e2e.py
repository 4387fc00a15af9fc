"""One 256 px image end to end: glidekit's fast defaults vs OpenAI's notebook recipe, same run.

    nohup .venv/bin/python benchmarks/bench_e2e.py --threads 1 --json e2e.json > e2e.log 2>&1 &

Official-size base and upsampler with random weights (the arithmetic of a step does not depend
on the weights), 1 thread by default, prompt "an oil painting of a corgi", guidance scale 3.

- fast: glidekit's default path (`runtime.choose_device` / `choose_dtype` /
  `prepare_for_inference`, text embeddings once per model, `inference_context`):
  DPM-Solver++(2M), 20 steps of the base with classifier-free guidance (batch 2), then
  10 steps of the upsampler (spaced evenly in log-SNR) from randn * 0.997 conditioned on the
  quantised 64 px sample: `pipelines.FAST_BASE` / `FAST_UPSAMPLE`, the CLI's defaults
  (`--up-steps 10,15:linspace` runs one fast recipe per item, in the same run).
- reference: OpenAI's notebook recipe on glidekit's reference-exact path, float32 eager (plain
  models, no_grad, NCHW, the text transformer inside every step): ancestral sampling over
  Schedule("squaredcos_cap_v2", 1000, "100") with CFG 3 on batch 2, then DDIM (eta 0) over
  Schedule("linear", 1000, "fast27") from randn * 0.997 with the quantised 64 px sample.

Each recipe runs in its own subprocess (one after the other), so its peak RSS (VmHWM) is its
own and process-wide settings of the fast path cannot reach the reference. Building the random
models is not timed (it stands in for loading a checkpoint, the same for both); "prepare" is
everything after that and before the first step (prepare_for_inference, text embeddings); the
fast path's first steps include any one-time weight transforms (Winograd, on the float32 CPU path).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from bench_step import build, machine, rss_mib  # noqa: E402
from glidekit import runtime  # noqa: E402
from glidekit.config import get_preset  # noqa: E402
from glidekit.diffusion.schedule import Schedule  # noqa: E402
from glidekit.pipelines import FAST_BASE, FAST_UPSAMPLE  # noqa: E402
from glidekit.sampling import guidance, reference, solvers  # noqa: E402
from glidekit.tokenizers import glide_tokenizer  # noqa: E402

PROMPT = "an oil painting of a corgi"
GUIDANCE = 3.0
UPSAMPLE_TEMP = 0.997


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def quantise(sample: torch.Tensor) -> torch.Tensor:
    """The 64 px sample as the notebook hands it on: rounded to 8 bits, back in [-1, 1]."""
    return ((sample + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1


def progress(name: str, total: int, t0: float, every: int = 10):
    def callback(j, *_):
        if (j + 1) % every == 0 or j + 1 == total:
            log(f"{name}: step {j + 1}/{total}, {time.perf_counter() - t0:.0f} s")

    return callback


def run_recipe(recipe: str, args) -> dict:
    torch.set_num_threads(args.threads)
    base_cfg, up_cfg = get_preset("base").config, get_preset("upsample").config
    tok = glide_tokenizer()
    tokens, mask = tok.encode_batch([PROMPT, ""], base_cfg.unet.text.text_ctx)
    up_tokens, up_mask = tok.encode_batch([PROMPT], up_cfg.unet.text.text_ctx)
    g = torch.Generator().manual_seed(args.seed)
    x_T = torch.randn(2, 3, 64, 64, generator=g)
    up_noise = torch.randn(1, 3, 256, 256, generator=g) * UPSAMPLE_TEMP

    t0 = time.perf_counter()
    base, up = build("base", 0), build("upsample", 1)
    built_s = time.perf_counter() - t0
    built_mib = rss_mib()
    log(f"{recipe}: models built in {built_s:.1f} s, RSS peak so far {built_mib:.0f} MiB")
    result = {"recipe": recipe, "build_s": built_s, "built_mib": built_mib}

    if recipe == "fast":
        t0 = time.perf_counter()
        device = runtime.choose_device("auto")
        dtype = runtime.choose_dtype(device)
        base = runtime.prepare_for_inference(base, device, dtype)
        up = runtime.prepare_for_inference(up, device, dtype)
        with runtime.inference_context(device, dtype):
            emb = base.encode_text(tokens.to(device), mask.to(device))
            up_emb = up.encode_text(up_tokens.to(device), up_mask.to(device))
        result["prepare_s"] = time.perf_counter() - t0
        result["device"], result["dtype"] = str(device), str(dtype)
        result["winograd"] = str(runtime.WINOGRAD_TILE)
        n_base, n_up = args.base_steps, int(args.up_steps)

        t0 = time.perf_counter()
        fn = guidance.classifier_free(lambda x, t: base(x, t, text_emb=emb), GUIDANCE)
        with runtime.inference_context(device, dtype):
            sample = solvers.dpm_solver_pp_2m(
                fn, Schedule.create(base_cfg.diffusion.noise_schedule, base_cfg.diffusion.steps),
                runtime.to_model_input(x_T, device), steps=n_base, spacing=FAST_BASE.spacing,
                callback=progress("fast base", n_base, t0),
            )[:1].float().cpu()
        result["base_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        low_res = runtime.to_model_input(quantise(sample), device)
        up_fn = lambda x, t: up(x, t, text_emb=up_emb, low_res=low_res)  # noqa: E731
        with runtime.inference_context(device, dtype):
            image = solvers.dpm_solver_pp_2m(
                up_fn, Schedule.create(up_cfg.diffusion.noise_schedule, up_cfg.diffusion.steps),
                runtime.to_model_input(up_noise, device), steps=n_up, spacing=args.up_spacing,
                callback=progress("fast upsample", n_up, t0),
            ).float().cpu()
        result["upsample_s"] = time.perf_counter() - t0
        result["base_calls"], result["upsample_calls"], result["upsample_spacing"] = n_base, n_up, args.up_spacing
    else:
        result["prepare_s"] = 0.0
        s_base = Schedule.create(base_cfg.diffusion.noise_schedule, base_cfg.diffusion.steps, args.ref_base_respacing)
        s_up = Schedule.create(up_cfg.diffusion.noise_schedule, up_cfg.diffusion.steps, args.ref_up_respacing)
        t0 = time.perf_counter()
        sample = reference.p_sample_loop(
            guidance.classifier_free(base, GUIDANCE), s_base, x_T,
            model_kwargs={"tokens": tokens, "mask": mask},
            callback=progress("reference base", s_base.num_steps, t0),
        )[:1]
        result["base_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        image = reference.ddim_sample_loop(
            up, s_up, up_noise, eta=0.0,
            model_kwargs={"tokens": up_tokens, "mask": up_mask, "low_res": quantise(sample)},
            callback=progress("reference upsample", s_up.num_steps, t0),
        )
        result["upsample_s"] = time.perf_counter() - t0
        result["base_calls"], result["upsample_calls"] = s_base.num_steps, s_up.num_steps

    assert image.shape == (1, 3, 256, 256) and torch.isfinite(image).all()
    result["total_s"] = result["prepare_s"] + result["base_s"] + result["upsample_s"]
    result["peak_mib"] = rss_mib()
    log(f"{recipe}: done, total {result['total_s']:.1f} s, peak RSS {result['peak_mib']:.0f} MiB")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["fast", "reference"], help="run one recipe only")
    ap.add_argument("--base-steps", type=int, default=FAST_BASE.steps, help="fast path: DPM-Solver++(2M) base steps")
    ap.add_argument("--up-steps", default=str(FAST_UPSAMPLE.steps),
                    help="fast path: DPM-Solver++(2M) upsampler steps; a comma list runs one fast recipe per item, "
                         "each N or N:SPACING (e.g. 10,15:linspace)")
    ap.add_argument("--up-spacing", default=FAST_UPSAMPLE.spacing, help="fast path: the upsampler solver's step spacing")
    ap.add_argument("--ref-base-respacing", default="100", help="reference: base respacing (notebook: 100)")
    ap.add_argument("--ref-up-respacing", default="fast27", help="reference: upsampler respacing (notebook: fast27)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--_child", dest="child", choices=["fast", "reference"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_recipe(args.child, args)), flush=True)
        return 0

    torch.set_num_threads(args.threads)
    log(f"machine: {machine()}")
    results = {}
    variants = []  # "10" or "15:linspace": upsampler steps and (optionally) their spacing
    for item in args.up_steps.split(","):
        n, _, spacing = item.partition(":")
        variants.append((int(n), spacing or args.up_spacing))
    runs = [(f"fast-{n}-{sp}", "fast", n, sp) for n, sp in variants] + [("reference", "reference", variants[0][0], args.up_spacing)]
    for key, recipe, n_up, spacing in runs:
        if args.only and recipe != args.only:
            continue
        cmd = [sys.executable, "-W", "ignore", __file__, "--_child", recipe, "--threads", str(args.threads),
               "--seed", str(args.seed), "--base-steps", str(args.base_steps), "--up-steps", str(n_up),
               "--up-spacing", spacing,
               "--ref-base-respacing", args.ref_base_respacing, "--ref-up-respacing", args.ref_up_respacing]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
        results[key] = json.loads(out.strip().splitlines()[-1])

    print()
    print("| recipe | model calls (base + upsampler) | prepare s | base stage s | upsampler stage s | total s | peak RSS MiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    def name(key: str, r: dict) -> str:
        if key == "reference":
            return f"reference: notebook recipe (ancestral {args.ref_base_respacing} + DDIM {args.ref_up_respacing}), fp32 eager"
        return (f"fast: DPM-Solver++(2M) {r['base_calls']} + {r['upsample_calls']} steps ({r['upsample_spacing']} upsampler "
                f"spacing), glidekit default path ({r['dtype']})")

    for key, r in results.items():
        print(f"| {name(key, r)} | {r['base_calls']} + {r['upsample_calls']} | {r['prepare_s']:.1f} | {r['base_s']:.1f} | "
              f"{r['upsample_s']:.1f} | {r['total_s']:.1f} | {r['peak_mib']:.0f} |")
    ref = results.get("reference")
    for key, f in results.items():
        if ref is None or key == "reference":
            continue
        print(f"\n{key}: speedup (reference / fast): total {ref['total_s'] / f['total_s']:.2f}x, "
              f"base stage {ref['base_s'] / f['base_s']:.2f}x, upsampler stage {ref['upsample_s'] / f['upsample_s']:.2f}x")
        print(f"per model call: base {ref['base_s'] / ref['base_calls']:.2f} s vs {f['base_s'] / f['base_calls']:.2f} s, "
              f"upsampler {ref['upsample_s'] / ref['upsample_calls']:.2f} s vs {f['upsample_s'] / f['upsample_calls']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
