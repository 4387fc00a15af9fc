"""Training throughput (samples/s) of a small config, fp32 vs bf16 autocast, on this machine.

    .venv/bin/python benchmarks/bench_train.py --steps 12 --threads 1

Trains the `base-32` preset (text-conditional 32 px UNet, GLIDE-shaped) on the built-in emoji
set for a few steps per precision and reports the median samples/s of the timed steps (the
first steps are warm-up). bf16 is measured even where the CPU has no bf16 instructions, to show
why glidekit's `precision=auto` picks fp32 there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from glidekit import runtime
from glidekit.train import count_parameters, train
from glidekit.train_config import resolve_train_config


def measure(precision: str, steps: int, warmup: int, batch: int, data: str) -> dict:
    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(step, record):
        now = time.perf_counter()
        if step > warmup:
            times.append(now - last[0])
        last[0] = now

    with tempfile.TemporaryDirectory() as out:
        cfg = resolve_train_config("base-32", [f"data={data}", f"out_dir={out}", f"max_steps={steps + warmup}",
                                               f"batch_size={batch}", f"precision={precision}", "save_every=100000",
                                               "log_every=1000"])
        train(cfg, progress=False, device="cpu", on_step=on_step)
    med = statistics.median(times)
    return {"precision": precision, "step_s": med, "samples_per_s": batch / med, "min_step_s": min(times),
            "max_step_s": max(times), "params": count_parameters(cfg)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default="emoji")
    ap.add_argument("--precisions", default="fp32,bf16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, bf16 instructions: {runtime.cpu_has_fast_bf16()}, "
          f"{args.threads} thread(s), batch {args.batch}")
    rows = [measure(p, args.steps, args.warmup, args.batch, args.data) for p in args.precisions.split(",")]
    for r in rows:
        print(f"{r['precision']:>5}: {r['samples_per_s']:7.2f} samples/s  (step median {r['step_s']:.3f} s, "
              f"min {r['min_step_s']:.3f}, max {r['max_step_s']:.3f}; {r['params']:,} params)")
    if len(rows) == 2:
        print(f"ratio {rows[0]['precision']}/{rows[1]['precision']} throughput: {rows[1]['samples_per_s'] / rows[0]['samples_per_s']:.3f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
