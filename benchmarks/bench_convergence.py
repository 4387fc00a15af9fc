"""Few-step solvers against the probability-flow ODE solution they approximate, on real models.

    .venv/bin/python benchmarks/bench_convergence.py --json convergence.json
    .venv/bin/python benchmarks/bench_convergence.py --models shapes     # a trained glidekit model

For each model, the same initial noise (and prompts) is solved with DDIM (eta 0) over *all*
1000 timesteps, the discrete ODE solution of GLIDE's process (DDIM is the PF-ODE's first-order
solver on GLIDE's own time grid; Song et al. 2021, s.4.3), and then with few-step samplers:
DPM-Solver++(2M) at each step count with the "linspace" (GLIDE's respacing "N") and "logsnr"
spacings, DDIM at the same counts, and OpenAI's upsampler spacing "fast27" (DDIM). Reported:
RMS and max |x - x_ODE| of the final images in [-1, 1] (one 8-bit level is 2/255 = 0.0078), and
the observed order between consecutive step counts (log2 of the error ratio per doubling).

Problems: the analytic Gaussian denoiser (`glidekit.sampling.analytic`: data N(0.3, 0.5^2), whose
exact ODE solution is known in closed form; "gaussian-linear" and "gaussian-cosine", the
upsampler's and the base's schedules; no clamping, float64), the tiny random-weight parity models of `tests/vectors` (base with classifier-free
guidance 3, cosine schedule; upsampler, linear schedule, conditioned on a fixed low-res image,
x_T scaled by upsample_temp 0.997), which is what issue 3 asks for, and any trained glidekit base
by name or path (its own prompts: the `shapes` grammar for `shapes`). Random weights are not a
trained model's ODE; the trained base is the closer evidence for the step counts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from glidekit.config import from_openai_options  # noqa: E402
from glidekit.diffusion.schedule import Schedule  # noqa: E402
from glidekit.io import build_model  # noqa: E402
from glidekit.pipelines import GlideModel, guided_model_fn, model_fn, text_kwargs  # noqa: E402
from glidekit.sampling import reference, solvers  # noqa: E402

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors"
STEPS = (5, 10, 15, 20, 30, 50, 100)


def tiny(name: str) -> GlideModel:
    v = torch.load(VECTORS / f"{name}.pt", weights_only=True)
    cfg = from_openai_options(v["options"])
    net = build_model(name, cfg)
    net.load_state_dict(v["state_dict"])
    return GlideModel(net.eval(), cfg, f"tiny parity {name}")


def problem(model: GlideModel, prompts: list[str], guidance: float, seed: int):
    """(model_fn, model_kwargs, x_T, full schedule) for one batch."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    size = cfg.unet.image_size
    x_T = torch.randn(len(prompts), 3, size, size, generator=g)
    kwargs = text_kwargs(model, prompts, guidance if not cfg.unet.super_res else 1.0)
    if cfg.unet.super_res:
        x_T = x_T * 0.997
        kwargs["low_res"] = torch.rand(len(prompts), 3, size // 4, size // 4, generator=g) * 2 - 1
        fn = model_fn(model)
    else:
        fn = guided_model_fn(model, guidance)
    schedule = Schedule.create(cfg.diffusion.noise_schedule, cfg.diffusion.steps)
    return fn, kwargs, x_T, schedule


def sampler_rows(fn, schedule_name: str, T: int, x_T: torch.Tensor, ode: torch.Tensor, steps, **kw) -> list[dict]:
    """RMS / max distance from `ode` of DPM-Solver++(2M) (linspace and logsnr spacing) and DDIM at
    each step count, and of OpenAI's fast27 DDIM; `kw` goes to every sampler (model_kwargs, clip_denoised)."""

    def row(sampler: str, n: int, x: torch.Tensor) -> dict:
        d = x.double() - ode
        return {"sampler": sampler, "steps": n, "rms": float(d.pow(2).mean().sqrt()), "max": float(d.abs().max())}

    full = Schedule.create(schedule_name, T)
    rows = []
    with torch.no_grad():
        for n in steps:
            for spacing in ("linspace", "logsnr"):
                rows.append(row(f"dpm++2m ({spacing})", n, solvers.dpm_solver_pp_2m(fn, full, x_T, steps=n, spacing=spacing, **kw)))
            rows.append(row("ddim (respacing N)", n,
                            reference.ddim_sample_loop(fn, Schedule.create(schedule_name, T, str(n)), x_T, eta=0.0, **kw)))
        rows.append(row("ddim (fast27)", 27,
                        reference.ddim_sample_loop(fn, Schedule.create(schedule_name, T, "fast27"), x_T, eta=0.0, **kw)))
    return rows


def run_gaussian(schedule_name: str, seed: int, steps) -> dict:
    """The same table on the analytic problem, errors against its closed-form ODE solution."""
    from glidekit.sampling.analytic import gaussian_denoiser, ode_solution

    full = Schedule.create(schedule_name, 1000)
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rows = sampler_rows(gaussian_denoiser(full), schedule_name, 1000, x_T, ode_solution(full, x_T)[0], steps,
                        clip_denoised=False)
    return {"model": "analytic Gaussian data", "schedule": schedule_name, "guidance": None, "batch": 2,
            "ode_reference": "the closed-form ODE solution", "rows": rows}


def run_model(label: str, model: GlideModel, prompts: list[str], guidance: float, seed: int, steps) -> dict:
    fn, kwargs, x_T, _ = problem(model, prompts, guidance, seed)
    cfg = model.config.diffusion
    t0 = time.perf_counter()
    with torch.no_grad():
        ode = reference.ddim_sample_loop(fn, Schedule.create(cfg.noise_schedule, cfg.steps, str(cfg.steps)), x_T,
                                         eta=0.0, model_kwargs=kwargs).double()
    ref_s = time.perf_counter() - t0
    rows = sampler_rows(fn, cfg.noise_schedule, cfg.steps, x_T, ode, steps, model_kwargs=kwargs)
    return {"model": label, "schedule": cfg.noise_schedule, "guidance": None if model.unet.super_res else guidance,
            "batch": len(prompts), "ode_reference": f"ddim over all {cfg.steps} timesteps ({ref_s:.0f} s)", "rows": rows}


def table(result: dict) -> str:
    lines = [f"### {result['model']} ({result['schedule']} schedule"
             + (f", classifier-free guidance {result['guidance']:g}" if result["guidance"] is not None else "")
             + f", batch {result['batch']}; reference: {result['ode_reference']})", "",
             "| sampler | steps | RMS error | max error | order (per doubling) |", "| --- | ---: | ---: | ---: | ---: |"]
    by = {}
    for r in result["rows"]:
        by.setdefault(r["sampler"], []).append(r)
    for name, rs in by.items():
        prev = None
        for r in rs:
            order = ""
            if prev is not None and r["rms"] > 0 and prev["rms"] > 0:
                order = f"{math.log(prev['rms'] / r['rms']) / math.log(r['steps'] / prev['steps']):.2f}"
            lines.append(f"| {name} | {r['steps']} | {r['rms']:.2e} | {r['max']:.2e} | {order} |")
            prev = r
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="gaussian-linear,gaussian-cosine,tiny-base,tiny-upsample",
                    help="comma list: gaussian-linear, gaussian-cosine, tiny-base, tiny-upsample, or a trained base "
                         "(bundled name or .safetensors)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", default=",".join(map(str, STEPS)))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = [int(s) for s in args.steps.split(",")]
    results = []
    for name in args.models.split(","):
        if name.startswith("gaussian-"):
            res = run_gaussian({"linear": "linear", "cosine": "squaredcos_cap_v2"}[name[len("gaussian-"):]], args.seed, steps)
            results.append(res)
            print(table(res) + "\n", flush=True)
            continue
        if name.startswith("tiny-"):
            model = tiny(name[len("tiny-"):])
            prompts = ["an oil painting of a corgi", "a red circle", "", "a blue square above a yellow triangle"][: args.batch]
            prompts += prompts * (args.batch // len(prompts))
            prompts = prompts[: args.batch]
        else:
            from glidekit.data.shapes import random_captions

            model = GlideModel.load(name)
            prompts = random_captions(args.batch, seed=args.seed + 1)
        res = run_model(name, model, prompts, args.guidance, args.seed, steps)
        results.append(res)
        print(table(res) + "\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
