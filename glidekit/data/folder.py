"""Image folders with captions in `.txt` files beside the images, or in a JSONL / CSV manifest."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import Dataset

from ..errors import GlidekitError
from .common import (
    IMAGE_EXTENSIONS,
    SkipTally,
    center_crop_resize,
    check_image_size,
    decode_image,
    error_reason,
    flip_decision,
    pil_to_chw,
    skip_marker,
)

CAPTION_MODES = ("txt", "none")
LABEL_MODES = ("none", "dirs")


@dataclass(frozen=True)
class Entry:
    """One sample before decoding: where the image is and what describes it."""

    file: Path
    key: str
    caption: str | None  # None: read `file`'s sibling .txt when asked
    label: int = -1


def walk_images(root: Path) -> list[Path]:
    """Image files under `root`, sorted by relative path; hidden files and folders are ignored
    (macOS `._x.png` AppleDouble files and `.ipynb_checkpoints` look like images but are not)."""
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _label_from(value: Any, where: str) -> int | str:
    if value is None or value == "":
        return -1
    if isinstance(value, bool):
        raise GlidekitError(f"{where}: label must be an integer or a class name, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value.strip()
    raise GlidekitError(f"{where}: label must be an integer or a class name, got {value!r}")


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Rows ``{"file", "caption", "label", "key", "class"}`` of a JSONL or CSV manifest, in file
    order ("key" and "class", the name of an integer label, are optional: None when absent)."""
    p = Path(path)
    if not p.is_file():
        raise GlidekitError(f"no such manifest file: {p}")
    suffix = p.suffix.lower()
    rows: list[dict] = []
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GlidekitError(f"cannot read manifest {p}: {e}") from None
    if suffix in (".jsonl", ".json", ".ndjson"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise GlidekitError(f"{p}:{n}: not a JSON object ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("file"), str):
                raise GlidekitError(f'{p}:{n}: each line must be an object with a "file" string')
            rows.append({"file": row["file"], "caption": row.get("caption") or "",
                         "label": _label_from(row.get("label"), f"{p}:{n}"), "key": row.get("key"),
                         "class": row.get("class")})
    elif suffix in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        if not reader.fieldnames or "file" not in reader.fieldnames:
            raise GlidekitError(f"{p}: a CSV manifest needs a header with a 'file' column (and 'caption', optionally 'label')")
        for n, row in enumerate(reader, 2):
            if not row.get("file"):
                raise GlidekitError(f"{p}:{n}: empty 'file' value")
            rows.append({"file": row["file"], "caption": row.get("caption") or "",
                         "label": _label_from(row.get("label"), f"{p}:{n}"), "key": row.get("key") or None,
                         "class": row.get("class") or None})
    else:
        raise GlidekitError(f"{p}: unknown manifest type {suffix!r}; use .jsonl or .csv")
    return rows


class ImageFolderDataset(Dataset, SkipTally):
    """Images under `root` (png / jpg / jpeg / webp, any depth, sorted by relative path).

    captions: "txt" (a UTF-8 `.txt` with the image's stem beside each image; a missing one
    gives the empty caption, counted in `missing_captions`), "none" (all captions empty), or the
    path of a JSONL (``{"file", "caption", "label"}`` per line) or CSV (columns ``file,
    caption[, label]``) manifest, whose relative file paths are resolved against `root`.
    labels: "none" or "dirs" (label = index of the image's top-level sub-folder in `classes`);
    a manifest's labels are integers, or class names mapped to indices of sorted `classes`.
    hflip: random horizontal flips, off by default because flipping breaks captions that say
    "left" or "right"; the coin depends on (seed, epoch, index), so it is the same in any worker.
    validate: decode every image now and leave the unreadable ones out of the index
    (`validate()` does the same later); otherwise an unreadable image is found when it is read,
    and `dataset[i]` returns a skip marker that `collate` drops and counts.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int | None,
        *,
        captions: str | os.PathLike = "txt",
        labels: str = "none",
        hflip: bool = False,
        seed: int = 0,
        validate: bool = False,
        background: tuple[int, int, int] = (255, 255, 255),
    ) -> None:
        SkipTally.__init__(self)
        check_image_size(image_size)
        self.root = Path(root)
        if not self.root.is_dir():
            raise GlidekitError(f"dataset folder not found: {self.root}")
        self.image_size = image_size
        self.hflip = hflip
        self.seed = seed
        self.epoch = 0
        self.background = background
        self.missing_captions = 0
        self.classes: list[str] = []
        self._bad: set[int] = set()
        if labels not in LABEL_MODES:
            raise GlidekitError(f"unknown labels mode {labels!r}; use {' or '.join(LABEL_MODES)}")
        if isinstance(captions, str) and captions in CAPTION_MODES:
            self.manifest: Path | None = None
            self.entries = self._scan(captions, labels)
        else:
            self.manifest = Path(captions)
            if labels != "none":
                raise GlidekitError("labels='dirs' applies to folders without a manifest; put labels in the manifest")
            self.entries = self._from_manifest(self.manifest)
        if validate:
            self.validate()

    # -- index ---------------------------------------------------------------------------------

    def _scan(self, captions: str, labels: str) -> list[Entry]:
        files = walk_images(self.root)
        if not files:
            raise GlidekitError(f"no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) found under {self.root}")
        rels = [f.relative_to(self.root) for f in files]
        if labels == "dirs":
            tops = [r.parts[0] if len(r.parts) > 1 else "" for r in rels]
            if "" in tops:
                raise GlidekitError(f"labels='dirs' needs every image inside a class sub-folder of {self.root}; "
                                    f"{rels[tops.index('')]} is not")
            self.classes = sorted(set(tops))
            index = {c: i for i, c in enumerate(self.classes)}
            labs = [index[t] for t in tops]
        else:
            labs = [-1] * len(files)
        return [Entry(f, r.as_posix(), "" if captions == "none" else None, lab) for f, r, lab in zip(files, rels, labs)]

    def _from_manifest(self, path: Path) -> list[Entry]:
        rows = read_manifest(path)
        if not rows:
            raise GlidekitError(f"manifest {path} lists no images")
        names = sorted({r["label"] for r in rows if isinstance(r["label"], str)})
        if names and any(isinstance(r["label"], int) and r["label"] >= 0 for r in rows):
            raise GlidekitError(f"manifest {path} mixes integer labels and class names")
        self.classes = names
        if not names:  # integer labels, possibly named by a "class" field (write_manifest adds it)
            named = {r["label"]: str(r["class"]) for r in rows if r.get("class") and isinstance(r["label"], int) and r["label"] >= 0}
            if named:
                self.classes = [named.get(i, "") for i in range(max(named) + 1)]
        index = {c: i for i, c in enumerate(names)}
        entries = []
        for r in rows:
            f = Path(r["file"])
            file = f if f.is_absolute() else self.root / f
            label = index[r["label"]] if isinstance(r["label"], str) else int(r["label"])
            entries.append(Entry(file, r["key"] or f.as_posix(), str(r["caption"]), label))
        return entries

    def validate(self) -> list[tuple[str, str]]:
        """Decode every image; drop unreadable ones from the index. Returns [(key, reason)]."""
        good, bad = [], []
        for e in self.entries:
            try:
                decode_image(e.file)
                good.append(e)
            except Exception as exc:  # noqa: BLE001 - any failure to read is a skip
                bad.append((e.key, error_reason(exc)))
                self._record_skip(e.key, error_reason(exc))
        self.entries = good
        self._bad.clear()
        if not good:
            raise GlidekitError(f"none of the {len(bad)} images under {self.root} could be read "
                                f"(first: {bad[0][0]}: {bad[0][1]})")
        return bad

    # -- access --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def caption_of(self, entry: Entry) -> str:
        if entry.caption is not None:
            return entry.caption
        txt = entry.file.with_suffix(".txt")
        try:
            return txt.read_text(encoding="utf-8", errors="replace").strip()
        except FileNotFoundError:
            self.missing_captions += 1
            return ""

    def record(self, index: int) -> dict:
        """The sample without its pixels: ``{"file", "caption", "label", "key"}`` (cheap)."""
        e = self.entries[index]
        return {"file": str(e.file), "caption": self.caption_of(e), "label": e.label, "key": e.key}

    def __getitem__(self, index: int) -> dict:
        e = self.entries[index]
        if index in self._bad:
            return skip_marker(e.key, "unreadable (seen before)")
        try:
            image = decode_image(e.file, self.background, self.image_size)
        except Exception as exc:  # noqa: BLE001 - corrupt data must never stop training
            self._bad.add(index)
            self._record_skip(e.key, error_reason(exc))
            return skip_marker(e.key, error_reason(exc))
        if self.image_size is not None:
            image = center_crop_resize(image, self.image_size)
        x = pil_to_chw(image)
        if self.hflip and flip_decision(self.seed, self.epoch, index):
            x = x.flip(-1)
        return {"image": x, "caption": self.caption_of(e), "label": e.label, "key": e.key}


def manifest_rows(dataset: Any, indices: Sequence[int]) -> list[dict]:
    """`record(i)` of each index, for datasets whose samples are files (used by write_manifest)."""
    if not hasattr(dataset, "record"):
        raise GlidekitError(f"{type(dataset).__name__} samples are not image files, so they cannot be listed in a "
                            "manifest; use FilteredDataset(dataset, report.kept) instead")
    return [dataset.record(i) for i in indices]
