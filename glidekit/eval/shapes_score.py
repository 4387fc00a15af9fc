"""Score images against `shapes` captions, from the pixels alone.

The scorer never sees the generator's scene specs: it segments the image by colour, finds the
connected objects and measures them, then compares with what the caption says (the caption is
read with `glidekit.data.shapes.parse_caption`). The decision rules and their thresholds are in
``docs/shapes.md``; in short:

- colour: each pixel brighter than the background goes to white (low saturation) or to the
  palette colour of nearest hue; same-colour 8-connected pixels form an object; objects smaller
  than `MIN_AREA` of the image, and off-colour fringes of a larger object, are dropped.
- shape: from soft (anti-aliasing aware) pixel weights: the vertical skewness of the mass
  (a point-up triangle is bottom-heavy, circles and squares are symmetric) and the fill ratio
  area / (tallest column x widest row) (square 1, circle pi/4, triangle 1/2).
- size: the object's extent (tallest column or widest row) against `SIZE_THRESHOLD` of the side.
- place: the bounding-box centre: `in the center` within `CENTER_RADIUS` of the middle on both
  axes, else left/right/top/bottom by the larger offset.
- relation: the larger of the horizontal and vertical offsets between the two centres.

`detect_objects(image)` -> list of `Detected`; `score(image, caption)` -> per-attribute dict;
`score_batch(images, captions)` -> accuracies, separately for one- and two-object captions.
Images: uint8 (H, W, 3) arrays, PIL images, or (3, H, W) / (1, 3, H, W) tensors or float arrays
in [-1, 1] (glidekit's sample format).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ..data.shapes import COLOURS, PALETTE, parse_caption

# --------------------------------------------------------------------------------------------
# thresholds (fractions of the image side / area unless said otherwise)

VALUE_MIN = 0.25  # a pixel is foreground when max(r, g, b) is this far above the background level
WHITE_SATURATION = 0.35  # foreground pixels less saturated than this are white
MIN_AREA = 0.006  # objects with fewer pixels than this fraction of the image are dropped
FRINGE = 0.5  # ... and so are objects with this share of their pixels touching a larger object
TRIANGLE_SKEW = -0.2  # vertical skewness below this (bottom-heavy) ...
TRIANGLE_FILL = 0.62  # ... or fill ratio below this: a triangle
SQUARE_FILL = 0.9  # otherwise fill ratio above this: a square, below: a circle
SIZE_THRESHOLD = 0.29  # extent above this: large
CENTER_RADIUS = 0.12  # |dx| and |dy| of the centre from the middle both below this: in the center

CHROMATIC = [c for c in COLOURS if c != "white"]
_HUES = np.array([colorsys.rgb_to_hsv(*(v / 255 for v in PALETTE[c]))[0] * 360 for c in CHROMATIC])


@dataclass
class Detected:
    """One object found in an image. `centre` (x, y) is the centre of its bounding box and
    `extent` its size, as fractions of the image side (y grows downwards); `area` is the soft
    (coverage-weighted) area as a fraction of the image; `fill` and `skew` are the shape features;
    `place` is the place region its centre falls in."""

    colour: str
    shape: str
    size: str
    place: str
    centre: tuple[float, float]
    extent: float
    area: float
    fill: float
    skew: float
    pixels: int
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, inclusive


# --------------------------------------------------------------------------------------------
# images


def to_uint8(image: Any) -> np.ndarray:
    """(H, W, 3) uint8 from a uint8 HWC array, a PIL image, or a [-1, 1] CHW tensor / array."""
    try:
        from PIL import Image

        if isinstance(image, Image.Image):
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except ImportError:  # pragma: no cover
        pass
    if hasattr(image, "detach"):  # torch tensor
        image = image.detach().float().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.dtype == np.uint8:
        if arr.ndim == 3 and arr.shape[-1] == 3:
            return arr
        if arr.ndim == 3 and arr.shape[0] == 3:
            return np.ascontiguousarray(arr.transpose(1, 2, 0))
        raise ValueError(f"uint8 image must be (H, W, 3), got shape {arr.shape}")
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"float image must be (3, H, W) in [-1, 1], got shape {arr.shape}")
    arr = np.clip(np.rint((arr.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr.transpose(1, 2, 0))


def classify_pixels(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-pixel colour classes: (labels (H, W) int, 0 = background, k = COLOURS[k - 1]; value
    (H, W) float in [0, 1]; background level)."""
    x = rgb.astype(np.float64) / 255.0
    v = x.max(-1)
    mn = x.min(-1)
    bg = float(np.median(v))  # objects cover well under half of the image
    fg = v >= bg + VALUE_MIN
    sat = np.where(v > 0, (v - mn) / np.maximum(v, 1e-9), 0.0)
    # hue in degrees (the usual hexcone formula)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    c = np.maximum(v - mn, 1e-9)
    h = np.where(v == r, ((g - b) / c) % 6, np.where(v == g, (b - r) / c + 2, (r - g) / c + 4)) * 60.0
    d = np.abs(h[..., None] - _HUES)
    d = np.minimum(d, 360 - d)
    nearest = np.array([COLOURS.index(n) + 1 for n in CHROMATIC])[d.argmin(-1)]
    labels = np.where(sat < WHITE_SATURATION, COLOURS.index("white") + 1, nearest)
    labels = np.where(fg, labels, 0)
    return labels.astype(np.int32), v, bg


def connected_components(labels: np.ndarray) -> np.ndarray:
    """8-connected components of equal non-zero labels: an (H, W) int array, -1 = background,
    else the flat index of the component's first pixel. Min-label propagation with pointer
    jumping, in numpy."""
    H, W = labels.shape
    big = H * W
    comp = np.where(labels > 0, np.arange(big).reshape(H, W), big)
    # pairs of neighbouring pixels with the same non-zero label: (slices of a, slices of b)
    shifts = []
    for dy, dx in ((1, 0), (0, 1), (1, 1), (1, -1)):
        ya, yb = slice(0, H - dy), slice(dy, H)
        xa, xb = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
        same = (labels[ya, xa] == labels[yb, xb]) & (labels[ya, xa] > 0)
        if same.any():
            shifts.append(((ya, xa), (yb, xb), same))
    flat_fg = (labels > 0).ravel()
    while True:
        prev = comp.copy()
        for a, b, same in shifts:
            m = np.where(same, np.minimum(comp[a], comp[b]), big)
            comp[a] = np.minimum(comp[a], m)
            comp[b] = np.minimum(comp[b], m)
        flat = comp.ravel()
        for _ in range(4):  # pointer jumping: a pixel takes its root's root
            flat[flat_fg] = flat[flat[flat_fg]]
        comp = flat.reshape(H, W)
        if np.array_equal(comp, prev):
            break
    return np.where(labels > 0, comp, -1)


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    m = out.copy()
    out[:, 1:] |= m[:, :-1]
    out[:, :-1] |= m[:, 1:]
    return out


def _place(cx: float, cy: float) -> str:
    dx, dy = cx - 0.5, cy - 0.5
    if abs(dx) < CENTER_RADIUS and abs(dy) < CENTER_RADIUS:
        return "in the center"
    if abs(dx) >= abs(dy):
        return "on the left" if dx < 0 else "on the right"
    return "at the top" if dy < 0 else "at the bottom"


def relation_between(a: Detected, b: Detected) -> str:
    """How `a` stands to `b`: above, below, to the left of, to the right of."""
    dx, dy = a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]
    if abs(dy) > abs(dx):
        return "above" if dy < 0 else "below"
    return "to the left of" if dx < 0 else "to the right of"


def _shape(fill: float, skew: float) -> str:
    if skew < TRIANGLE_SKEW or fill < TRIANGLE_FILL:
        return "triangle"
    return "square" if fill > SQUARE_FILL else "circle"


def _measure(comp_mask: np.ndarray, others: np.ndarray, v: np.ndarray, bg: float) -> dict:
    H, W = comp_mask.shape
    ys, xs = np.nonzero(comp_mask)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    # soft weights: the pixel's share of the object's colour, read from its brightness, over the
    # object's pixels and a one-pixel ring around them (the anti-aliased edge)
    region = _dilate(comp_mask) & ~others
    ref = float(np.percentile(v[comp_mask], 90))
    w = np.clip((v - bg) / max(ref - bg, 1e-6), 0.0, 1.0) * region
    area = float(w.sum())
    col, row = w.sum(0), w.sum(1)
    hmax, wmax = float(col.max()), float(row.max())
    fill = area / max(hmax * wmax, 1e-9)
    yy = np.arange(H, dtype=np.float64)
    my = float((row * yy).sum() / area)
    var = float((row * (yy - my) ** 2).sum() / area)
    skew = float((row * (yy - my) ** 3).sum() / area / max(var, 1e-9) ** 1.5)
    side = float(max(H, W))
    return {
        "centre": ((x0 + x1 + 1) / 2 / W, (y0 + y1 + 1) / 2 / H),
        "extent": max(hmax, wmax) / side,
        "area": area / (H * W),
        "fill": fill,
        "skew": skew,
        "pixels": int(comp_mask.sum()),
        "bbox": (x0, y0, x1, y1),
    }


def detect_objects(image: Any, *, min_area: float = MIN_AREA) -> list[Detected]:
    """The coloured objects in an image, largest first.

    Same-colour connected pixel sets are objects, except specks (fewer than `min_area` of the
    image's pixels) and fringes: a set with at least `FRINGE` of its pixels touching a larger
    object is an off-colour rim or part of that object (a generated shape whose edge or shading
    drifted to a neighbouring hue), not an object of its own."""
    rgb = to_uint8(image)
    H, W = rgb.shape[:2]
    labels, v, bg = classify_pixels(rgb)
    comp = connected_components(labels)
    ids, counts = np.unique(comp[comp >= 0], return_counts=True)
    order = sorted(((int(c), int(i)) for i, c in zip(ids, counts) if c >= min_area * H * W), reverse=True)
    kept: list[tuple[int, np.ndarray]] = []
    larger = np.zeros((H, W), dtype=bool)
    for n, cid in order:
        mask = comp == cid
        if kept and (mask & _dilate(larger)).sum() >= FRINGE * n:
            continue
        kept.append((cid, mask))
        larger |= mask
    out: list[Detected] = []
    for cid, mask in kept:
        m = _measure(mask, larger & ~mask, v, bg)
        colour = COLOURS[int(labels.flat[cid]) - 1]
        size = "large" if m["extent"] > SIZE_THRESHOLD else "small"
        out.append(Detected(colour=colour, shape=_shape(m["fill"], m["skew"]), size=size,
                            place=_place(*m["centre"]), **m))
    return out


# --------------------------------------------------------------------------------------------
# scoring


def _find(dets: Sequence[Detected], colour: str) -> Detected | None:
    for d in dets:  # largest first
        if d.colour == colour:
            return d
    return None


def score(image: Any, caption: str, *, detections: Sequence[Detected] | None = None) -> dict:
    """How well `image` matches `caption` (a caption of the shapes grammar).

    Returns ``{"kind": "one"|"two", "objects": n detected, "count": n == objects in the caption,
    "colour", "shape", "size" (one object), "place" (one object), "relation" (two objects),
    "whole_caption": bool, "detections": [Detected]}``. Attributes are judged on the detected
    object of the caption's colour (for two objects: each caption object's colour), so "shape"
    etc. are False when that colour is missing. Whole caption, one object: exactly one object,
    with the right colour, shape, size and place; two objects: exactly two, both colour and
    shape right, and the relation right."""
    scene = parse_caption(caption)
    dets = list(detect_objects(image) if detections is None else detections)
    if scene.kind == "one":
        want = scene.objects[0]
        d = _find(dets, want.colour)
        res = {
            "kind": "one", "objects": len(dets), "count": len(dets) == 1,
            "colour": d is not None,
            "shape": d is not None and d.shape == want.shape,
            "size": d is not None and d.size == want.size,
            "place": d is not None and d.place == scene.place,
        }
        res["whole_caption"] = all(res[k] for k in ("count", "colour", "shape", "size", "place"))
    else:
        a, b = scene.objects
        da, db = _find(dets, a.colour), _find(dets, b.colour)
        res = {
            "kind": "two", "objects": len(dets), "count": len(dets) == 2,
            "colour": da is not None and db is not None,
            "shape": da is not None and db is not None and da.shape == a.shape and db.shape == b.shape,
            "relation": da is not None and db is not None and relation_between(da, db) == scene.relation,
        }
        res["whole_caption"] = all(res[k] for k in ("count", "colour", "shape", "relation"))
    res["detections"] = dets
    return res


ONE_KEYS = ("whole_caption", "colour", "shape", "size", "place", "count")
TWO_KEYS = ("whole_caption", "colour", "shape", "relation", "count")


def score_batch(images: Iterable[Any], captions: Sequence[str], *, return_items: bool = False) -> dict:
    """Accuracies over a batch: ``{"n", "whole_caption", "one": {"n", "whole_caption", "colour",
    "shape", "size", "place", "count"}, "two": {"n", "whole_caption", "colour", "shape",
    "relation", "count"}}`` (accuracies in [0, 1]; None for a group with no captions).
    `images` is a (B, 3, H, W) tensor in [-1, 1] or any iterable of images `score` takes.
    return_items=True adds "items": the per-image `score` dicts."""
    captions = list(captions)
    images = list(images)
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    items = [score(im, cap) for im, cap in zip(images, captions)]

    def group(kind: str, keys: Sequence[str]) -> dict:
        rows = [r for r in items if r["kind"] == kind]
        out: dict = {"n": len(rows)}
        for k in keys:
            out[k] = (sum(bool(r[k]) for r in rows) / len(rows)) if rows else None
        return out

    summary = {
        "n": len(items),
        "whole_caption": (sum(r["whole_caption"] for r in items) / len(items)) if items else None,
        "one": group("one", ONE_KEYS),
        "two": group("two", TWO_KEYS),
    }
    if return_items:
        summary["items"] = items
    return summary


__all__ = [
    "CENTER_RADIUS", "Detected", "MIN_AREA", "SIZE_THRESHOLD", "classify_pixels", "connected_components",
    "detect_objects", "relation_between", "score", "score_batch", "to_uint8",
]
