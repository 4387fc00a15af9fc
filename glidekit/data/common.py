"""The sample format every glidekit dataset yields, image decoding and resizing, `collate`.

A sample is a dict::

    {"image": FloatTensor (3, H, W) in [-1, 1], "caption": str, "label": int (-1 = none), "key": str}

A sample that could not be read (corrupt or truncated file, undecodable member, filtered out on
the fly) is not an exception: the dataset returns a *skip marker* in its place,
``{"key": str, "skipped": reason}``, and `collate` drops markers from the batch and counts them in
``batch["skipped"]``. Counting in the batch (rather than only in a counter on the dataset object)
is what makes the count reach the training loop when a DataLoader decodes in worker processes,
each with its own copy of the dataset. Every dataset also keeps a per-process tally
(`.skipped`, `.skip_reasons`), which is complete when there are no workers.
"""

from __future__ import annotations

import io
import os
import random
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from PIL import Image

from ..images import flatten_alpha

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
SAMPLE_KEYS = ("image", "caption", "label", "key")
MAX_SKIP_REASONS = 1000  # a dataset remembers at most this many (key, reason) pairs per process


def skip_marker(key: str, reason: str, **extra: Any) -> dict:
    """What a dataset returns instead of a sample it could not read."""
    return {"key": key, "skipped": reason, **extra}


def error_reason(exc: BaseException) -> str:
    """A one-line reason from an exception: 'OSError: image file is truncated'."""
    msg = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def is_skipped(sample: Any) -> bool:
    return sample is None or "skipped" in sample


class SkipTally:
    """Per-process count of skipped samples with the first `MAX_SKIP_REASONS` reasons."""

    def __init__(self) -> None:
        self.skipped = 0
        self.skip_reasons: list[tuple[str, str]] = []

    def _record_skip(self, key: str, reason: str) -> None:
        self.skipped += 1
        if len(self.skip_reasons) < MAX_SKIP_REASONS:
            self.skip_reasons.append((key, reason))


# --------------------------------------------------------------------------------------------
# decoding and resizing


def decode_image(
    source: str | os.PathLike | bytes,
    background: tuple[int, int, int] = (255, 255, 255),
    target_size: int | None = None,
) -> Image.Image:
    """An RGB PIL image from a path or encoded bytes; transparency is composited on `background`.

    Raises whatever Pillow raises for unreadable data (the caller turns it into a skip); the
    pixels are fully decoded here (`load()`), so a truncated file fails now, not later.
    target_size: the square size the image will be resized to; a large JPEG is then decoded at
    a reduced DCT scale that still leaves at least twice that size (much faster on photos, and
    the antialiased resize afterwards sets the final quality)."""
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    with Image.open(fp) as im:
        if target_size is not None and im.format == "JPEG":
            im.draft("RGB", (2 * target_size, 2 * target_size))
        im.load()
        if im.mode in ("P", "RGBA", "LA", "PA", "RGBa", "La"):
            return flatten_alpha(im, background)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale PNGs
            arr = np.asarray(im, dtype=np.float64)
            arr = np.clip(arr / (65535.0 if arr.max() > 255 else 255.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return Image.fromarray(arr).convert("RGB")
        return im.convert("RGB")


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """GLIDE-style square image: the largest centred square, resized to `size` x `size`.

    Pillow's BICUBIC resize is antialiased (its kernel widens with the reduction factor), which
    is the filter GLIDE's notebooks and guided-diffusion's `center_crop_arr` use; LANCZOS would be
    marginally sharper but overshoots more on hard edges (emoji outlines, MNIST strokes), and the
    overshoot is clipped to [0, 255]. `reducing_gap=3.0` first shrinks large photos by an
    integer box reduction to within 3x of the target, which Pillow documents as indistinguishable
    from a full-kernel resize and is much faster on multi-megapixel inputs.
    """
    w, h = image.size
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        image = image.crop((left, top, left + s, top + s))
    if image.size != (size, size):
        gap = 3.0 if image.size[0] >= 3 * size else None
        image = image.resize((size, size), resample=Image.BICUBIC, reducing_gap=gap)
    return image


def pil_to_chw(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [-1, 1] from an RGB PIL image."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def uint8_to_chw(gray: np.ndarray, size: int) -> torch.Tensor:
    """(3, size, size) in [-1, 1] from a (h, w) uint8 greyscale array (MNIST-like sets)."""
    im = Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8))
    if im.size != (size, size):
        im = center_crop_resize(im, size)
    t = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).float().div_(127.5).sub_(1.0)
    return t.expand(3, -1, -1).contiguous()


def flip_decision(seed: int, epoch: int, index: int | str) -> bool:
    """A horizontal-flip coin that depends only on (seed, epoch, index): same in any worker."""
    return random.Random(f"{seed}:{epoch}:{index}").random() < 0.5


def check_image_size(image_size: int | None) -> None:
    from ..errors import GlidekitError

    if image_size is not None and (not isinstance(image_size, int) or image_size <= 0):
        raise GlidekitError(f"image_size must be a positive integer, got {image_size!r}")


# --------------------------------------------------------------------------------------------
# batching


def collate(samples: Iterable[Mapping[str, Any] | None]) -> dict:
    """Stack samples into a batch, dropping and counting skip markers (and `None`s).

    Returns ``{"image": (B, 3, H, W), "caption": list[str], "label": LongTensor (B,),
    "key": list[str], "skipped": int, "skipped_keys": list[str]}``; samples from
    `WebDatasetShards` add ``"data_state": {"epoch", "consumed"}`` (the stream position after
    this batch, for resuming). A batch whose samples were all skipped has B = 0 (image shape
    (0, 3, 0, 0)): skip the step. ``len(batch["key"]) + batch["skipped"]`` is the number of
    positions of the data stream this batch used up.
    """
    samples = list(samples)
    kept = [s for s in samples if not is_skipped(s)]
    skipped = [s for s in samples if is_skipped(s)]
    if kept:
        shapes = {tuple(s["image"].shape) for s in kept}
        if len(shapes) > 1:
            from ..errors import GlidekitError

            raise GlidekitError(f"cannot batch images of different shapes {sorted(shapes)}; give the dataset one image_size")
        image = torch.stack([s["image"] for s in kept])
    else:
        image = torch.empty(0, 3, 0, 0)
    batch = {
        "image": image,
        "caption": [str(s["caption"]) for s in kept],
        "label": torch.tensor([int(s["label"]) for s in kept], dtype=torch.long),
        "key": [str(s["key"]) for s in kept],
        "skipped": len(skipped),
        "skipped_keys": [f"{s['key']}: {s['skipped']}" if s is not None else "?: None" for s in skipped],
    }
    positions = [s["position"] for s in samples if s is not None and "position" in s]
    if positions:
        epoch, index = max(positions)
        batch["data_state"] = {"epoch": int(epoch), "consumed": int(index) + 1}
    return batch
