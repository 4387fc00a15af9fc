"""Is torch.compile worth it on the CPU? Compile time and step time of the official-size base.

    .venv/bin/python benchmarks/bench_compile.py --mode default --repeats 3
    .venv/bin/python benchmarks/bench_compile.py --mode freezing --repeats 3

Compares, in one process, the eager model with the settings of glidekit's default path except
Winograd (channels_last, fused attention, cached text embedding; inductor has its own
convolution lowering) with `torch.compile` of the same model (inductor; `--mode freezing` sets
`torch._inductor.config.freezing`, which constant-folds the weights and prepacks them for
oneDNN). Prints the first call (compilation), a second call at another timestep (a recompile
would show here) and the medians. Compilation needs a C++ compiler (gcc) and takes minutes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from bench_step import Case, build, machine  # noqa: E402
from glidekit.models import layers  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["default", "freezing", "max-autotune"], default="default")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    case = Case("base")
    model = build("base").eval().requires_grad_(False).to(memory_format=torch.channels_last)
    layers.set_fused_attention(True)
    x = case.x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        emb = model.encode_text(case.tokens, case.mask)
    if args.mode == "freezing":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    compiled = torch.compile(model, mode="max-autotune" if args.mode == "max-autotune" else None)
    eager_fn, compiled_fn = case.fn(model), case.fn(compiled)
    with torch.no_grad():
        t0 = time.perf_counter()
        compiled_fn(x, case.t, text_emb=emb)
        print(f"first call (compiles): {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        compiled_fn(x, torch.full_like(case.t, 300), text_emb=emb)
        print(f"second call, another timestep: {time.perf_counter() - t0:.2f} s", flush=True)
        eager_fn(x, case.t, text_emb=emb)
        te, tc = [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            eager_fn(x, case.t, text_emb=emb)
            te.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            compiled_fn(x, case.t, text_emb=emb)
            tc.append(time.perf_counter() - t0)
            print(f"round {r + 1}: eager {te[-1]:.2f} s, compiled {tc[-1]:.2f} s", flush=True)
    me, mc = statistics.median(te), statistics.median(tc)
    print(f"{args.mode}: eager (channels_last + fused attention + cached text) median {me:.2f} s, "
          f"compiled median {mc:.2f} s, speedup {me / mc:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
