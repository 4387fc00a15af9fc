"""`shapes`: a built-in synthetic compositional dataset (procedural, deterministic, unlimited).

Coloured circles, squares and point-up triangles on a black background, captioned from a small
grammar (see ``docs/shapes.md`` for the grammar, the rendering rules and the scorer)::

    a large red circle on the left
    a green square above a white triangle

Item i of ``ShapesDataset(image_size, seed=s)`` is generated from (s, i) alone, so any item can be
produced in any worker, in any order, for any i (``length`` is only the epoch size).
``glidekit.eval.shapes_score`` scores images against these captions without looking at the
generator's scene specs.

- `GRAMMAR`, `COLOURS`, `SHAPES`, `SIZES`, `PLACES`, `RELATIONS`, `PALETTE`: the vocabulary.
- `ShapesDataset`: map-style dataset of glidekit samples; `.spec(i)` is item i's `Scene`.
- `parse_caption(caption) -> Scene`: the grammar's parser (ValueError outside the grammar).
- `random_captions(n, seed, two_object_fraction)`: prompts drawn uniformly over the grammar;
  `all_captions(kind)`: every caption of one form.
- `sample_scene(rng_or_key, ...)` and `render_scene(scene, image_size)`: the two halves of an item.
- `scene_slots(scene)`: the scene's objects in layout order (top or left first), whatever its wording.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from ..errors import GlidekitError

# --------------------------------------------------------------------------------------------
# grammar

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "cyan", "white")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")
PLACES: tuple[str, ...] = ("on the left", "on the right", "at the top", "at the bottom", "in the center")
RELATIONS: tuple[str, ...] = ("above", "below", "to the left of", "to the right of")
GRAMMAR: dict[str, tuple[str, ...]] = {
    "colour": COLOURS, "shape": SHAPES, "size": SIZES, "place": PLACES, "relation": RELATIONS,
}
ONE_OBJECT_FORM = "a {size} {colour} {shape} {place}"
TWO_OBJECT_FORM = "a {colour} {shape} {relation} a {colour} {shape}"  # the two colours differ
# number of distinct captions of each form: 210 and 1512
N_ONE_OBJECT = len(SIZES) * len(COLOURS) * len(SHAPES) * len(PLACES)
N_TWO_OBJECT = len(COLOURS) * len(SHAPES) * len(RELATIONS) * (len(COLOURS) - 1) * len(SHAPES)

# pure, saturated colours; hues 0, 120, 240, 60, 277, 180 degrees and white (no hue)
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "purple": (160, 32, 240),
    "cyan": (0, 255, 255),
    "white": (255, 255, 255),
}
BACKGROUND = (0, 0, 0)

# --------------------------------------------------------------------------------------------
# rendering rules (fractions of the image side; y grows downwards)

SIZE_EXTENT = {"small": 0.22, "large": 0.38}  # side of the shape's bounding box
SIZE_JITTER = 0.02  # extent drawn uniformly in [extent - jitter, extent + jitter]
PLACE_CENTRE = {
    "on the left": (0.27, 0.5),
    "on the right": (0.73, 0.5),
    "at the top": (0.5, 0.27),
    "at the bottom": (0.5, 0.73),
    "in the center": (0.5, 0.5),
}
PLACE_JITTER = 0.04  # each coordinate of the centre moves uniformly by up to this much
MARGIN = 0.03  # every shape's bounding box stays this far inside the canvas
PAIR_GAP = 0.06  # two-object scenes: minimum gap between the boxes along the relation axis
PAIR_MIN_DISTANCE = 0.30  # ... and minimum distance between the centres along that axis
PAIR_ACROSS = 0.15  # the pair's common across-axis position is 0.5 +- this
PAIR_ACROSS_JITTER = 0.04  # each object's across-axis position moves by up to this much more
SUPERSAMPLE = 4  # shapes are drawn at 4x the size and box-filtered down (exact area coverage)


@dataclass(frozen=True)
class ShapeSpec:
    """One object of a scene. `size` is None for objects parsed from a two-object caption (the
    caption does not say); `centre` (x, y) and `extent` (bounding-box side), as fractions of the
    image side, are set for generated scenes and None for parsed ones. `centre` is the centre of
    the bounding box (for a triangle that is not its centroid)."""

    colour: str
    shape: str
    size: str | None = None
    centre: tuple[float, float] | None = None
    extent: float | None = None


@dataclass(frozen=True)
class Scene:
    """A scene: one object with a `place`, or two objects with a `relation` (objects[0]
    `relation` objects[1], e.g. objects[0] above objects[1])."""

    objects: tuple[ShapeSpec, ...]
    place: str | None = None
    relation: str | None = None

    @property
    def kind(self) -> str:
        """'one' or 'two'."""
        return "one" if len(self.objects) == 1 else "two"

    @property
    def caption(self) -> str:
        if len(self.objects) == 1:
            o = self.objects[0]
            return ONE_OBJECT_FORM.format(size=o.size, colour=o.colour, shape=o.shape, place=self.place)
        a, b = self.objects
        return f"a {a.colour} {a.shape} {self.relation} a {b.colour} {b.shape}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# parsing

_ONE_RE = re.compile(
    rf"a ({'|'.join(SIZES)}) ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) ({'|'.join(PLACES)})")
_TWO_RE = re.compile(
    rf"a ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) ({'|'.join(RELATIONS)}) a ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})")


def parse_caption(caption: str) -> Scene:
    """The `Scene` a caption describes (no geometry: centres and extents are None).

    Case, runs of whitespace and one trailing period are forgiven; anything else outside the
    grammar (unknown words, a two-object caption with one colour twice) raises ValueError."""
    if not isinstance(caption, str):
        raise ValueError(f"caption must be a string, got {type(caption).__name__}")
    text = " ".join(caption.strip().lower().split())
    if text.endswith("."):
        text = text[:-1].rstrip()
    m = _ONE_RE.fullmatch(text)
    if m:
        size, colour, shape, place = m.groups()
        return Scene((ShapeSpec(colour, shape, size),), place=place)
    m = _TWO_RE.fullmatch(text)
    if m:
        c1, s1, rel, c2, s2 = m.groups()
        if c1 == c2:
            raise ValueError(f"caption {caption!r}: the two objects must have different colours")
        return Scene((ShapeSpec(c1, s1), ShapeSpec(c2, s2)), relation=rel)
    raise ValueError(f"caption {caption!r} is not in the shapes grammar "
                     f"({ONE_OBJECT_FORM!r} or {TWO_OBJECT_FORM!r})")


# --------------------------------------------------------------------------------------------
# sampling scenes


def outside_grammar(captions) -> list[str]:
    """The captions that `parse_caption` refuses (not in the grammar), in order."""
    bad = []
    for c in captions:
        try:
            parse_caption(c)
        except ValueError:
            bad.append(c)
    return bad


def _rng(key: str) -> random.Random:
    # random.Random seeded with a str is the same on every platform and Python 3 version, and
    # only .random() is used below (its output is guaranteed stable for a given seed)
    return random.Random(key)


def _pick(rng: random.Random, options: Sequence[str]) -> str:
    return options[min(int(rng.random() * len(options)), len(options) - 1)]


def _uniform(rng: random.Random, lo: float, hi: float) -> float:
    return lo + (hi - lo) * rng.random()


def sample_scene(rng: random.Random | str, two_object_fraction: float = 0.5, *, geometry: bool = True) -> Scene:
    """A random scene, uniform over the grammar within each form; two objects with probability
    `two_object_fraction`. `rng` is a `random.Random` or a string key to seed one with.
    geometry=False draws the caption only (no sizes for two objects, no centres)."""
    if isinstance(rng, str):
        rng = _rng(rng)
    two = rng.random() < two_object_fraction
    if not two:
        size, colour, shape, place = (_pick(rng, SIZES), _pick(rng, COLOURS), _pick(rng, SHAPES), _pick(rng, PLACES))
        if not geometry:
            return Scene((ShapeSpec(colour, shape, size),), place=place)
        extent = SIZE_EXTENT[size] + _uniform(rng, -SIZE_JITTER, SIZE_JITTER)
        px, py = PLACE_CENTRE[place]
        cx = px + _uniform(rng, -PLACE_JITTER, PLACE_JITTER)
        cy = py + _uniform(rng, -PLACE_JITTER, PLACE_JITTER)
        return Scene((ShapeSpec(colour, shape, size, (cx, cy), extent),), place=place)

    c1 = _pick(rng, COLOURS)
    c2 = _pick(rng, [c for c in COLOURS if c != c1])
    s1, s2 = _pick(rng, SHAPES), _pick(rng, SHAPES)
    rel = _pick(rng, RELATIONS)
    if not geometry:
        return Scene((ShapeSpec(c1, s1), ShapeSpec(c2, s2)), relation=rel)
    z1, z2 = _pick(rng, SIZES), _pick(rng, SIZES)
    e1 = SIZE_EXTENT[z1] + _uniform(rng, -SIZE_JITTER, SIZE_JITTER)
    e2 = SIZE_EXTENT[z2] + _uniform(rng, -SIZE_JITTER, SIZE_JITTER)
    # along the relation axis: object 1 at a1, object 2 at a2; "first" = the one nearer 0
    first_is_1 = rel in ("above", "to the left of")
    ef, es = (e1, e2) if first_is_1 else (e2, e1)
    d_min = max(PAIR_MIN_DISTANCE, (ef + es) / 2 + PAIR_GAP)
    d_max = 1 - 2 * MARGIN - (ef + es) / 2  # both boxes inside the canvas
    d = _uniform(rng, d_min, max(d_min, d_max))
    lo = MARGIN + ef / 2  # leftmost (topmost) position of the first centre
    hi = 1 - MARGIN - es / 2 - d
    af = _uniform(rng, lo, max(lo, hi))
    a_s = af + d
    a1, a2 = (af, a_s) if first_is_1 else (a_s, af)
    across = 0.5 + _uniform(rng, -PAIR_ACROSS, PAIR_ACROSS)
    b1 = across + _uniform(rng, -PAIR_ACROSS_JITTER, PAIR_ACROSS_JITTER)
    b2 = across + _uniform(rng, -PAIR_ACROSS_JITTER, PAIR_ACROSS_JITTER)
    if rel in ("above", "below"):
        p1, p2 = (b1, a1), (b2, a2)
    else:
        p1, p2 = (a1, b1), (a2, b2)
    return Scene((ShapeSpec(c1, s1, z1, p1, e1), ShapeSpec(c2, s2, z2, p2, e2)), relation=rel)


_MIRROR = {"on the left": "on the right", "on the right": "on the left",
           "to the left of": "to the right of", "to the right of": "to the left of"}


def mirror_scene(scene: Scene) -> Scene:
    """The scene flipped left-right, its caption changed to match (left <-> right)."""
    objs = tuple(dataclasses.replace(o, centre=None if o.centre is None else (1 - o.centre[0], o.centre[1]))
                 for o in scene.objects)
    return Scene(objs, place=_MIRROR.get(scene.place, scene.place), relation=_MIRROR.get(scene.relation, scene.relation))


CONVERSE = {"below": "above", "to the right of": "to the left of"}


def canonical_scene(scene: Scene) -> Scene:
    """The same scene captioned with "above" or "to the left of" only: "a A below a B" becomes
    "a B above a A" (the objects swap places in the caption, not in the image)."""
    if scene.relation not in CONVERSE:
        return scene
    return Scene(scene.objects[::-1], relation=CONVERSE[scene.relation])


LAYOUTS: tuple[str, ...] = (*PLACES, "vertical", "horizontal")
"""A scene's layout in `scene_slots`: a one-object place, or the axis of a two-object relation."""


def scene_slots(scene: Scene) -> tuple[ShapeSpec, ShapeSpec | None, str]:
    """The scene in an order that does not depend on its wording: (the object on top or on the
    left, the other object or None, layout in `LAYOUTS`). "a red circle below a blue square" and
    "a blue square above a red circle" give the same slots (the blue square first, "vertical");
    a one-object scene gives (its object, None, its place)."""
    if scene.kind == "one":
        return scene.objects[0], None, scene.place
    a, b = canonical_scene(scene).objects
    return a, b, "vertical" if scene.relation in ("above", "below") else "horizontal"


# --------------------------------------------------------------------------------------------
# rendering


def _draw(draw: ImageDraw.ImageDraw, obj: ShapeSpec, side: int) -> None:
    cx, cy = obj.centre[0] * side, obj.centre[1] * side
    h = obj.extent * side / 2
    x0, y0, x1, y1 = cx - h, cy - h, cx + h, cy + h
    colour = PALETTE[obj.colour]
    if obj.shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
        return
    # Pillow's boxes include their last pixel: [x0, x1) in continuous coordinates becomes pixels
    # round(x0) .. round(x1) - 1
    box = (round(x0), round(y0), round(x1) - 1, round(y1) - 1)
    if obj.shape == "circle":
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)


def render_scene(scene: Scene, image_size: int) -> Image.Image:
    """An RGB image of a scene with geometry: drawn at `SUPERSAMPLE` x the size, then reduced by
    a box filter, so edge pixels hold the exact fraction of the shape covering them."""
    side = image_size * SUPERSAMPLE
    im = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(im)
    for obj in scene.objects:
        if obj.centre is None or obj.extent is None:
            raise ValueError("render_scene needs a scene with geometry (from sample_scene or ShapesDataset.spec)")
        _draw(draw, obj, side)
    return im.reduce(SUPERSAMPLE)


# --------------------------------------------------------------------------------------------
# dataset


class ShapesDataset(Dataset):
    """Coloured shapes on black with compositional captions, generated on the fly.

    Item i is a pure function of (seed, i): the same image and caption in any process and on any
    machine; `length` is only the size of an epoch (any non-negative i works). Samples are
    ``{"image": (3, H, W) in [-1, 1], "caption": str, "label": -1, "key": "shapes-{seed}-{i}"}``;
    `spec(i)` is the scene behind item i (objects with colour, shape, size, centre, extent).

    image_size: any integer >= 16 (None: 64). two_object_fraction: share of two-object scenes.
    hflip=True mirrors a seeded half of the items per epoch (`set_epoch`) and swaps left/right
    in their captions, so captions stay true; off by default, and of little use here.
    split="canonical" (data spec `shapes:canonical`) keeps the images and words every two-object
    caption with "above" or "to the left of" (`canonical_scene`). In the full grammar which object
    is on top depends on the word order and the relation word together (an XOR: neither alone
    says anything about the image), which gradient descent finds slowly; with canonical captions
    the order alone decides, a first-order signal. A curriculum: train on `shapes:canonical`,
    then on `shapes`, where "below" must then only flip what the order already says.
    """

    def __init__(self, image_size: int | None = 64, *, length: int = 100_000, seed: int = 0,
                 two_object_fraction: float = 0.5, hflip: bool = False, split: str = "all") -> None:
        if split not in ("all", "canonical"):
            raise GlidekitError(f"shapes: unknown variant {split!r}; use shapes or shapes:canonical")
        self.canonical = split == "canonical"
        image_size = 64 if image_size is None else image_size
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 16:
            raise GlidekitError(f"shapes: image_size must be an integer >= 16, got {image_size!r}")
        if not isinstance(length, int) or length <= 0:
            raise GlidekitError(f"shapes: length must be a positive integer, got {length!r}")
        if not 0.0 <= float(two_object_fraction) <= 1.0:
            raise GlidekitError(f"shapes: two_object_fraction must be in [0, 1], got {two_object_fraction!r}")
        self.image_size, self.length, self.seed = image_size, length, int(seed)
        self.two_object_fraction = float(two_object_fraction)
        self.hflip, self.epoch = bool(hflip), 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _flipped(self, index: int) -> bool:
        return self.hflip and _rng(f"shapes-flip:{self.seed}:{self.epoch}:{index}").random() < 0.5

    def spec(self, index: int) -> Scene:
        """The scene of item `index` (as rendered: mirrored when hflip chose to flip it)."""
        index = int(index)
        if index < 0:
            raise IndexError(f"shapes: index must be >= 0, got {index}")
        scene = sample_scene(_rng(f"shapes:{self.seed}:{index}"), self.two_object_fraction)
        scene = mirror_scene(scene) if self._flipped(index) else scene
        return canonical_scene(scene) if self.canonical else scene

    def render(self, index: int) -> Image.Image:
        """Item `index` as an RGB PIL image."""
        return render_scene(self.spec(index), self.image_size)

    def __getitem__(self, index: int) -> dict:
        scene = self.spec(index)
        arr = np.asarray(render_scene(scene, self.image_size), dtype=np.float32).transpose(2, 0, 1)
        image = torch.from_numpy(np.ascontiguousarray(arr / np.float32(127.5) - np.float32(1.0)))
        return {"image": image, "caption": scene.caption, "label": -1, "key": f"shapes-{self.seed}-{int(index)}"}


def random_captions(n: int, seed: int = 0, two_object_fraction: float = 0.5) -> list[str]:
    """`n` prompts drawn uniformly over the grammar (within each form; two-object captions with
    probability `two_object_fraction`), deterministic per seed. Drawn from a stream of their own:
    not the captions of `ShapesDataset(seed=seed)`'s items."""
    return [sample_scene(_rng(f"shapes-prompts:{seed}:{i}"), two_object_fraction, geometry=False).caption
            for i in range(int(n))]


def all_captions(kind: str) -> list[str]:
    """Every caption of one form of the grammar, in a fixed order: `kind` "one" (the 210
    one-object captions) or "two" (the 1,512 two-object ones)."""
    if kind == "one":
        return [ONE_OBJECT_FORM.format(size=z, colour=c, shape=s, place=p)
                for z in SIZES for c in COLOURS for s in SHAPES for p in PLACES]
    if kind == "two":
        return [f"a {c1} {s1} {r} a {c2} {s2}" for c1, c2 in itertools.permutations(COLOURS, 2)
                for s1 in SHAPES for s2 in SHAPES for r in RELATIONS]
    raise ValueError(f"kind must be 'one' or 'two', got {kind!r}")


# Synonyms outside the grammar, one table per word family: prompts the captions never used,
# scored as the grammar caption they paraphrase (scripts/shapes_paraphrases.py).
PARAPHRASES: dict[str, dict[str, str]] = {
    "colour": {"red": "scarlet", "green": "emerald", "blue": "azure", "yellow": "golden", "purple": "violet",
               "cyan": "turquoise", "white": "ivory"},
    "size": {"small": "tiny", "large": "big"},
    "layout": {"on the left": "at the left", "on the right": "at the right", "at the top": "on top",
               "at the bottom": "at the base", "in the center": "in the middle", "to the left of": "left of",
               "to the right of": "right of", "above": "over", "below": "under"},
    "shape": {"circle": "disk", "square": "quadrate", "triangle": "trigon"},
}


def paraphrase(caption: str, family: str) -> str:
    """`caption` with every word or phrase of one `PARAPHRASES` family replaced by its synonym
    (longest phrases first, whole words only)."""
    if family not in PARAPHRASES:
        raise ValueError(f"unknown word family {family!r}; use one of {', '.join(PARAPHRASES)}")
    table = PARAPHRASES[family]
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, table), key=len, reverse=True)) + r")\b")
    return pattern.sub(lambda m: table[m.group(1)], caption)


__all__ = [
    "BACKGROUND", "COLOURS", "GRAMMAR", "N_ONE_OBJECT", "N_TWO_OBJECT", "ONE_OBJECT_FORM", "PALETTE", "PLACES",
    "PARAPHRASES", "PLACE_CENTRE", "RELATIONS", "SHAPES", "SIZES", "SIZE_EXTENT", "Scene", "ShapeSpec", "ShapesDataset",
    "TWO_OBJECT_FORM", "mirror_scene", "outside_grammar", "paraphrase", "parse_caption", "random_captions", "render_scene", "sample_scene",
]
