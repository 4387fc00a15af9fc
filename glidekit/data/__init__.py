"""Training data for every GLIDE model type.

Every dataset yields samples ``{"image": (3, H, W) in [-1, 1], "caption": str, "label": int
(-1 = none), "key": str}``; `collate` batches them and drops (and counts) unreadable samples.

- `ImageFolderDataset`: image folders with `.txt` captions, or JSONL / CSV manifests.
- `WebDatasetShards`: streamed img2dataset tar shards, split over workers and ranks, resumable.
- built-in sets from packages: `EmojiDataset`, `MNIST`, `FashionMNIST`, `AnimalMNIST`.
- `build_dataset(spec, image_size)`: one of the above from a string (the CLI's ``data=``).
- `make_loader`: batches forever with an exact, resumable position.
- `masks`: random inpainting masks; `transforms`: crops and the upsampler's low-res input;
  `filters`: caption blocklists and classifier filters, reports and filtered manifests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import GlidekitError
from .shapes import ShapesDataset
from .builtin import (
    ANIMAL_MNIST_CLASSES,
    ATTRIBUTIONS,
    FASHION_MNIST_CLASSES,
    INSTALL,
    MNIST_CLASSES,
    TWEMOJI_ATTRIBUTION,
    AnimalMNIST,
    EmojiDataset,
    FashionMNIST,
    MissingDataPackage,
    MNIST,
)
from .common import IMAGE_EXTENSIONS, center_crop_resize, collate, decode_image, is_skipped
from .filters import CaptionBlocklist, ClassifierFilter, FilteredDataset, FilterReport, apply_filters, write_manifest
from .folder import ImageFolderDataset, read_manifest
from .loader import ResumableLoader, ResumableSampler, make_loader
from .masks import MASK_KINDS, random_mask, random_masks
from .transforms import make_low_res, paired_crop, random_crop
from .wds import WebDatasetShards, expand_braces, expand_urls

DATASET_SPECS = (
    "folder:PATH",
    "manifest:PATH.jsonl|PATH.csv",
    "wds:PATTERN",
    "emoji[:no-skin-tones]",
    "mnist[:train|valid|test|train+valid|all]",
    "fashion-mnist[:train|test|all]",
    "animal-mnist",
    "shapes[:canonical]",
)
BUILTIN = {"emoji": EmojiDataset, "mnist": MNIST, "fashion-mnist": FashionMNIST, "animal-mnist": AnimalMNIST,
           "shapes": ShapesDataset}


def build_dataset(spec: str, image_size: int | None, **kw: Any):
    """A dataset from a spec string (see DATASET_SPECS); keyword options go to its constructor.

    ``folder:PATH`` -> ImageFolderDataset(PATH); ``manifest:M`` -> ImageFolderDataset(M's folder,
    captions=M); ``wds:PATTERN`` -> WebDatasetShards; ``mnist:test`` picks a split; ``emoji:no-skin-tones`` leaves out the skin-tone variants
    (one image per emoji instead of up to six near-identical ones).

    `rank` and `world_size` may be given for any spec: shards use them to pick their share,
    map-style datasets ignore them (`make_loader(..., rank=, world_size=)` splits those)."""
    spec = str(spec).strip()
    kind, sep, arg = spec.partition(":")
    kind = kind.lower()
    if kind != "wds":
        kw.pop("rank", None)
        kw.pop("world_size", None)
    try:
        if kind == "folder" and arg:
            return ImageFolderDataset(arg, image_size, **kw)
        if kind == "manifest" and arg:
            root = kw.pop("root", None) or Path(arg).parent
            return ImageFolderDataset(root, image_size, captions=Path(arg), **kw)
        if kind == "wds" and arg:
            return WebDatasetShards(arg, image_size, **kw)
        if kind in BUILTIN and (not sep or kind in ("mnist", "fashion-mnist", "shapes", "emoji")):
            if arg:
                kw["split"] = arg
            return BUILTIN[kind](image_size, **kw)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise GlidekitError(f"dataset {spec!r}: {str(e).split('() ', 1)[-1]}") from None
        raise
    hint = ""
    if spec and Path(spec).is_dir():
        hint = f" (did you mean folder:{spec}?)"
    elif spec.lower().endswith((".jsonl", ".csv")):
        hint = f" (did you mean manifest:{spec}?)"
    elif spec.lower().endswith(".tar") or "{" in spec:
        hint = f" (did you mean wds:{spec}?)"
    raise GlidekitError(f"unknown dataset {spec!r}{hint}; use one of: {', '.join(DATASET_SPECS)}")


__all__ = [
    "ANIMAL_MNIST_CLASSES", "ATTRIBUTIONS", "BUILTIN", "DATASET_SPECS", "FASHION_MNIST_CLASSES", "IMAGE_EXTENSIONS",
    "INSTALL", "MASK_KINDS", "MNIST_CLASSES", "TWEMOJI_ATTRIBUTION", "AnimalMNIST", "CaptionBlocklist",
    "ClassifierFilter", "EmojiDataset", "FashionMNIST", "FilterReport", "FilteredDataset", "ImageFolderDataset",
    "MNIST", "MissingDataPackage", "ResumableLoader", "ResumableSampler", "WebDatasetShards", "apply_filters",
    "build_dataset", "center_crop_resize", "collate", "decode_image", "expand_braces", "expand_urls", "is_skipped",
    "make_loader", "make_low_res", "paired_crop", "random_crop", "random_mask", "random_masks", "read_manifest", "write_manifest",
]
