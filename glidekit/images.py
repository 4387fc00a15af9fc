"""Images, masks and PNG files: conversions, atomic writes, generation metadata.

Tensors are NCHW float in [-1, 1]. Masks inside glidekit follow GLIDE: 1 = keep (known pixel),
0 = generate. Mask *files* are read with an explicit convention (`white-repaints`, as image
editors paint the area to change, or `white-keeps`, GLIDE's tensor convention); nothing guesses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from .errors import GlidekitError
from .files import atomic_open

MASK_MODES = ("white-repaints", "white-keeps")
METADATA_KEY = "glidekit"


def flatten_alpha(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """`image` as RGB, its transparency composited on `background` (white: what the bundled emoji
    models were trained on, and what a viewer shows a transparent PNG on); an opaque image as it is."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        canvas = Image.new("RGBA", image.size, background + (255,))
        return Image.alpha_composite(canvas, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def open_image(path: str | os.PathLike) -> Image.Image:
    """An RGB PIL image from a file (transparency on white, `flatten_alpha`), with one clear error
    for missing or non-image files."""
    p = Path(path)
    if not p.is_file():
        raise GlidekitError(f"no such image file: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            return flatten_alpha(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise GlidekitError(f"{p} is not a readable image ({type(e).__name__}: {e})") from None


def pil_to_tensor(image: Image.Image, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1]; resized with bicubic filtering like GLIDE's notebooks.

    `size` is an int (square) or (height, width)."""
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        if image.size != (w, h):
            image = image.resize((w, h), resample=Image.BICUBIC)
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1


def tensor_to_pils(x: torch.Tensor) -> list[Image.Image]:
    """PIL images from (N, 3, H, W) in [-1, 1], quantised as the notebooks do."""
    arr = ((x.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in arr]


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels and back to [-1, 1] (what the upsampler sees as low_res)."""
    return ((x + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1


def back_project(hr: torch.Tensor, low_res: torch.Tensor, iterations: int = 1) -> torch.Tensor:
    """Iterative back-projection (Irani & Peleg 1991): correct an upsampled (N, 3, H, W) image so that
    its area average at the input's size comes back to `low_res` (N, 3, h, w). Each iteration adds
    the bicubic-upsampled residual `low_res - area(hr)`; the result is clamped to [-1, 1].

    A diffusion upsampler draws sharp detail but can drift in the low frequencies (a tint over a
    plain background, `emoji-upsample`'s card); the correction removes what the input contradicts
    and, the residual being smooth, leaves the edges."""
    out = hr.float().clamp(-1, 1)
    low = low_res.float().to(out.device)
    for _ in range(iterations):
        residual = low - F.interpolate(out, size=low.shape[-2:], mode="area")
        out = (out + F.interpolate(residual, size=out.shape[-2:], mode="bicubic", align_corners=False)).clamp(-1, 1)
    return out


def load_mask(
    path: str | os.PathLike, mode: str, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """A (1, 1, H, W) keep-mask (1 = keep) from a PNG mask file.

    `mode`: "white-repaints" (white = area to generate) or "white-keeps" (white = area to keep).
    `size` (width, height) is the image size the mask must match; a different size is an error
    rather than a silent resize, since a misaligned mask edits the wrong pixels.
    """
    if mode not in MASK_MODES:
        raise GlidekitError(f"unknown mask mode {mode!r}; use {' or '.join(MASK_MODES)}")
    p = Path(path)
    if not p.is_file():
        raise GlidekitError(f"no such mask file: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            return mask_from_image(im, mode, size, name=p.name)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise GlidekitError(f"{p} is not a readable mask image ({type(e).__name__}: {e})") from None


def mask_from_image(
    im: Image.Image, mode: str, size: tuple[int, int] | None = None, *, name: str = "mask", threshold: int = 128
) -> torch.Tensor:
    """A (1, 1, H, W) keep-mask from a mask image (see `load_mask`): an image with an alpha
    channel is a painted layer whose opaque strokes are the white pixels, any other is read as
    grey levels. A pixel is white from `threshold` up (1: any paint counts, as for the strokes
    of a brush in the web page)."""
    if mode not in MASK_MODES:
        raise GlidekitError(f"unknown mask mode {mode!r}; use {' or '.join(MASK_MODES)}")
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        # A painted alpha channel: opaque strokes mark the painted region.
        gray = np.asarray(im.convert("RGBA"), dtype=np.float32)[..., 3]
    else:
        gray = np.asarray(im.convert("L"), dtype=np.float32)
    h, w = gray.shape
    if size is not None and (w, h) != tuple(size):
        raise GlidekitError(f"mask {name} is {w}x{h} but the image is {size[0]}x{size[1]}; draw the mask at the image's size")
    white = torch.from_numpy(gray >= threshold).float()[None, None]
    keep = 1 - white if mode == "white-repaints" else white
    if keep.min() == 1:
        raise GlidekitError(f"mask {name} marks nothing to generate (mode {mode}); check --mask-mode")
    return keep


def rect_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> torch.Tensor:
    """A keep-mask of `size` (width, height) that regenerates the box (left, top, right, bottom)."""
    w, h = size
    left, top, right, bottom = box
    if not (0 <= left < right <= w and 0 <= top < bottom <= h):
        raise GlidekitError(f"rectangle {box} is empty or outside the {w}x{h} image (use LEFT,TOP,RIGHT,BOTTOM pixels)")
    keep = torch.ones(1, 1, h, w)
    keep[..., top:bottom, left:right] = 0
    return keep


def resize_mask(keep: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize a keep-mask; a pixel stays 'keep' only if everything under it was kept, so no
    region the user asked to change is silently kept."""
    h, w = (size, size) if isinstance(size, int) else size
    if keep.shape[-2:] == (h, w):
        return keep
    if keep.shape[-2] >= h and keep.shape[-1] >= w:
        return (F.adaptive_avg_pool2d(keep, (h, w)) > 0.999).float()
    return F.interpolate(keep, (h, w), mode="nearest")


def make_grid(images: list[Image.Image], ncols: int | None = None, pad: int = 2) -> Image.Image:
    """Tile same-size images in a grid (ncols defaults to a near-square layout)."""
    if not images:
        raise ValueError("no images to tile")
    n = len(images)
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    w, h = images[0].size
    grid = Image.new("RGB", (ncols * w + (ncols - 1) * pad, nrows * h + (nrows - 1) * pad), (255, 255, 255))
    for i, im in enumerate(images):
        grid.paste(im, ((i % ncols) * (w + pad), (i // ncols) * (h + pad)))
    return grid


def split_grid(grid: Image.Image, n: int, ncols: int, pad: int = 2) -> list[Image.Image]:
    """The `n` same-size tiles of a grid `make_grid(images, ncols, pad)` made, in order."""
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    w, h = (grid.width - (ncols - 1) * pad) // ncols, (grid.height - (nrows - 1) * pad) // nrows
    if ncols * w + (ncols - 1) * pad != grid.width or nrows * h + (nrows - 1) * pad != grid.height:
        raise ValueError(f"a {grid.width}x{grid.height} image is not a grid of {n} tiles in {ncols} columns")
    return [grid.crop(((i % ncols) * (w + pad), (i // ncols) * (h + pad),
                       (i % ncols) * (w + pad) + w, (i // ncols) * (h + pad) + h)) for i in range(n)]


def save_png(image: Image.Image, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write a PNG atomically (temp file + rename) with `metadata` as JSON in a text chunk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if metadata is not None:
        info.add_text(METADATA_KEY, json.dumps(metadata, sort_keys=True))
    with atomic_open(path, "wb") as f:
        image.save(f, format="PNG", pnginfo=info)
    return path


def read_png_metadata(path: str | os.PathLike) -> dict:
    """The glidekit generation record stored in a PNG by `save_png`."""
    p = Path(path)
    if not p.is_file():
        raise GlidekitError(f"no such file: {p}")
    try:
        with Image.open(p) as im:
            text = getattr(im, "text", {}).get(METADATA_KEY)
    except (UnidentifiedImageError, OSError) as e:
        raise GlidekitError(f"{p} is not a readable PNG ({e})") from None
    if text is None:
        raise GlidekitError(f"{p} has no glidekit metadata (it was not written by glide sample)")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise GlidekitError(f"{p} has corrupt glidekit metadata") from None
