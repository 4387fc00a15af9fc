"""What guidance does to what a caption leaves open: the share of large objects in two-object
`shapes` scenes, whose captions never name a size, in the report's sample grids against the
training renders.

    .venv/bin/python scripts/shapes_sizes.py docs/results/grids/dpm++2m-20-g*.png [--json out.json]

The training stream draws each object's size at random, so about half the objects of two-object
scenes are large. A model that matches the data draws the same share; classifier-free guidance
moves samples towards images that fit the caption best (GLIDE s.3.2, Ho & Salimans 2021), which
can also narrow what the caption does not say. Both sides are measured with the shapes scorer's
detector (`detect_objects`: large = extent over `SIZE_THRESHOLD`), the renders over `--renders`
two-object items of `ShapesDataset(seed=0)`, the grids over the two-object prompts their PNG
records (the report's sweep writes the first 64 prompts of each point).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glidekit.data.shapes import ShapesDataset, parse_caption  # noqa: E402
from glidekit.errors import GlidekitError  # noqa: E402
from glidekit.eval.shapes_score import detect_objects  # noqa: E402
from glidekit.eval.sweep import GRID_COLS  # noqa: E402
from glidekit.images import split_grid  # noqa: E402
from scripts.common import run, write_result  # noqa: E402


def large_share(images, captions: list[str]) -> dict:
    """Detected objects in the two-object images and the share of them that are large."""
    sizes = [d.size for im, c in zip(images, captions) if parse_caption(c).kind == "two" for d in detect_objects(im)]
    return {"objects": len(sizes), "large": sum(s == "large" for s in sizes) / max(len(sizes), 1)}


def grid_images(path: Path) -> tuple[list, list[str]]:
    """The tiles of a sweep grid PNG and the prompts it records."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            prompts = json.loads(im.info["glidekit"])["prompts"]
            return split_grid(im.convert("RGB"), len(prompts), GRID_COLS), prompts
    except (OSError, KeyError, ValueError) as e:
        raise GlidekitError(f"{path} is not a sample grid of the report's sweep ({e}); give docs/results/grids/*.png") from e


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("grids", type=Path, nargs="+", help="sweep grid PNGs (docs/results/grids/*.png)")
    ap.add_argument("--renders", type=int, default=400, help="training renders to measure (default 400)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    grids = {path.name: grid_images(path) for path in args.grids}  # a bad file fails before the renders
    ds = ShapesDataset(32, seed=0)
    items = [ds[i] for i in range(args.renders)]
    out = {"renders": large_share([x["image"] for x in items], [x["caption"] for x in items])}
    print(f"{'training renders':28s} {out['renders']['objects']:4d} objects  large {100 * out['renders']['large']:5.1f} %")
    for name, (tiles, prompts) in grids.items():
        out[name] = large_share(tiles, prompts)
        print(f"{name:28s} {out[name]['objects']:4d} objects  large {100 * out[name]['large']:5.1f} %")
    return write_result(out, args.json)


if __name__ == "__main__":
    run(main, __file__)
