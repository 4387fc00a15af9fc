"""Per-layer timings of GLIDE's 3x3 convolutions: the direct kernels vs glidekit's Winograd.

    .venv/bin/python benchmarks/bench_conv.py --threads 1

For each (channels, size, batch) of the official base (64 px, batch 2) and upsampler (256 px,
batch 1), float32, prints the median ms of: the direct oneDNN convolution in NCHW and in
channels_last, oneDNN with prepacked weights (`torch.utils.mkldnn.to_mkldnn`), NNPACK (PyTorch's
Winograd-capable CPU library), and `layers.winograd_conv3x3` with F(2x2, 3x3) and F(4x4, 3x3);
plus each one's max error relative to the output's max against a float64 reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from glidekit import runtime  # noqa: E402
from glidekit.models import layers  # noqa: E402

SHAPES = [  # (in channels, out channels, size, batch)
    (192, 192, 64, 2),
    (384, 384, 32, 2),
    (576, 576, 16, 2),
    (768, 768, 8, 2),
    (192, 192, 256, 1),
    (384, 384, 64, 1),
    (768, 768, 16, 1),
    (3, 192, 256, 1),
    (192, 6, 256, 1),
]


def bench(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-allocator-tuning", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.no_allocator_tuning:
        runtime.tune_cpu_allocator()
    from torch.utils import mkldnn as mkldnn_utils

    print("| C_in -> C_out, size, batch | GFLOP | NCHW ms | channels_last ms | oneDNN prepacked ms | NNPACK ms | Winograd F2 ms | Winograd F4 ms | best vs NCHW |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for cin, cout, size, batch in SHAPES:
            x = torch.randn(batch, cin, size, size, generator=g)
            w = torch.randn(cout, cin, 3, 3, generator=g) / (9 * cin) ** 0.5
            b = torch.randn(cout, generator=g) * 0.1
            ref = F.conv2d(x.double(), w.double(), b.double(), padding=1)
            scale = ref.abs().max().item()
            conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
            conv.weight.copy_(w)
            conv.bias.copy_(b)
            conv_cl = torch.nn.Conv2d(cin, cout, 3, padding=1).to(memory_format=torch.channels_last)
            conv_cl.load_state_dict(conv.state_dict())
            x_cl = x.contiguous(memory_format=torch.channels_last)
            packed = mkldnn_utils.to_mkldnn(torch.nn.Sequential(conv))[0]
            cands = {
                "nchw": lambda: conv(x),
                "cl": lambda: conv_cl(x_cl),
                "mkldnn": lambda: packed(x),
                "nnpack": lambda: torch._nnpack_spatial_convolution(x, w, b, [1, 1], [1, 1]),
            }
            for tile in (2, 4):
                u = layers.winograd_weight(w, tile)
                cands[f"f{tile}"] = (lambda u=u, tile=tile: layers.winograd_conv3x3(x_cl, u, b, tile))
            cells = {}
            for name, fn in cands.items():
                try:
                    err = (fn().double() - ref).abs().max().item() / scale
                    cells[name] = (bench(fn, args.repeats), err)
                except RuntimeError:
                    cells[name] = None
            base = cells["nchw"][0]
            best = min(v[0] for v in cells.values() if v)
            gflop = 2 * cin * cout * 9 * size * size * batch / 1e9
            fmt = lambda c: "n/a" if c is None else f"{c[0]:.1f} ({c[1]:.0e})"  # noqa: E731
            print(f"| {cin} -> {cout}, {size} px, b{batch} | {gflop:.2f} | " + " | ".join(fmt(cells[k]) for k in cands)
                  + f" | {base / best:.2f}x |", flush=True)
    print("\n(ms, and in brackets the max error relative to the output's max vs a float64 reference)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
