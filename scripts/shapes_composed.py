"""Two-object `shapes` captions as two one-object prompts joined by AND (Composable Diffusion,
Liu et al. 2022), against the caption itself, on the same seeds.

    .venv/bin/python scripts/shapes_composed.py --model shapes [--json out.json]

"a red circle above a blue square" becomes "a small red circle at the top AND a small blue
square at the bottom" (below: the other way round; to the left of / to the right of: on the
left / on the right). Both forms of each of the report's two-object prompts (`random_captions(n,
seed)`, prompt i with seed `--image-seed` + i, as docs/results.md) are sampled with DPM-Solver++(2M)
20 steps and scored by the shapes scorer against the two-object caption. The rewrite is made from
the caption's parse, so this measures whether the network can draw a scene it is told in parts,
not how well it reads the caption.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glidekit.data.shapes import parse_caption, random_captions  # noqa: E402
from glidekit.eval.shapes_score import score_batch  # noqa: E402
from glidekit.pipelines import GlideModel, SamplerSpec, text_to_image  # noqa: E402
from scripts.common import run, write_result  # noqa: E402

PLACES = {"above": ("at the top", "at the bottom"), "below": ("at the bottom", "at the top"),
          "to the left of": ("on the left", "on the right"), "to the right of": ("on the right", "on the left")}


def composed(caption: str, size: str = "small") -> str:
    """A two-object caption as two one-object prompts joined by AND, each at its side of the relation."""
    scene = parse_caption(caption)
    if scene.kind != "two":
        raise ValueError(f"not a two-object caption: {caption!r}")
    (a, b), (pa, pb) = scene.objects, PLACES[scene.relation]
    return f"a {size} {a.colour} {a.shape} {pa} AND a {size} {b.colour} {b.shape} {pb}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--n", type=int, default=500, help="prompts drawn; the two-object ones are used")
    ap.add_argument("--seed", type=int, default=20261122, help="prompt draw seed (docs/results.md's)")
    ap.add_argument("--image-seed", type=int, default=7_000_000, help="prompt i is sampled with this + i")
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--size", default="small", choices=("small", "large"), help="size word of the one-object parts")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = GlideModel.load(args.model)
    drawn = random_captions(args.n, args.seed)
    index = [i for i, c in enumerate(drawn) if parse_caption(c).kind == "two"]
    captions = [drawn[i] for i in index]
    out: dict = {"model": args.model, "n": len(captions), "guidance": args.guidance, "size": args.size}
    for form, prompts in (("caption", captions), ("composed", [composed(c, args.size) for c in captions])):
        images = []
        for i, p in zip(index, prompts):  # one call per prompt: its seed is the report's, whatever the batch
            images.append(text_to_image(model, [p], seed=args.image_seed + i, guidance_scale=args.guidance,
                                        sampler=SamplerSpec("dpm++2m", 20)).images[0])
        s = score_batch(images, captions)["two"]
        out[form] = {k: s[k] for k in ("whole_caption", "colour", "shape", "relation", "count")} | {"example": prompts[0]}
        print(f"{form:8s} {len(captions)} two-object prompts: whole caption {100 * s['whole_caption']:.1f} %, colour "
              f"{100 * s['colour']:.1f}, shape {100 * s['shape']:.1f}, relation {100 * s['relation']:.1f}, "
              f"count {100 * s['count']:.1f}  e.g. {prompts[0]!r}", flush=True)
    return write_result(out, args.json)


if __name__ == "__main__":
    run(main, __file__)
