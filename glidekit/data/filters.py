"""Filtering training data, as GLIDE (filtered) did before training on it.

A filter is any object with ``filter(sample) -> (keep: bool, reason: str)``; it may also have
``filter_batch(samples) -> list[(keep, reason)]`` (used when present, for models) and
``needs_image`` (False lets `apply_filters` judge folder datasets from their captions without
decoding a single image). `name` labels the counts in a `FilterReport`.

Two filters ship: `CaptionBlocklist` (whole words or phrases, case-insensitive) and
`ClassifierFilter`, which drops images that a classifier scores as an unwanted class (GLIDE
removed images of people, violence and hate symbols with classifiers; the training loop passes
a glidekit-trained classifier evaluated at t = 0). Filter before training with `apply_filters`
and either train on ``FilteredDataset(dataset, report.kept)`` or write the kept samples as a
manifest with `write_manifest`; or filter on the fly with ``WebDatasetShards(filters=[...])``.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch.utils.data import Dataset

from ..errors import GlidekitError
from ..files import atomic_open
from .common import is_skipped
from .folder import manifest_rows


class CaptionBlocklist:
    """Drops samples whose caption contains a blocked word or phrase.

    words: an iterable of words/phrases, or the path of a text file with one per line (blank
    lines and lines starting with '#' are ignored). Matching is case-insensitive and whole-word:
    'cat' blocks "a cat" and "Cat's toy" but not "concatenate" or "cats" (list plurals
    explicitly); spaces in a phrase match any run of whitespace.
    """

    needs_image = False

    def __init__(self, words: Iterable[str] | str | os.PathLike, name: str = "caption-blocklist") -> None:
        if isinstance(words, (str, os.PathLike)):
            p = Path(words)
            if not p.is_file():
                raise GlidekitError(f"blocklist file not found: {p} (pass a list to block words directly)")
            lines = p.read_text(encoding="utf-8").splitlines()
            words = [w.strip() for w in lines if w.strip() and not w.strip().startswith("#")]
        self.words = sorted({w.strip().lower() for w in words if w.strip()}, key=lambda w: (-len(w), w))
        if not self.words:
            raise GlidekitError("empty caption blocklist")
        alternatives = "|".join(r"\s+".join(re.escape(part) for part in w.split()) for w in self.words)
        self.pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
        self.name = name

    def filter(self, sample: dict) -> tuple[bool, str]:
        m = self.pattern.search(str(sample.get("caption", "")))
        if m:
            return False, f"caption contains blocked word {' '.join(m.group(0).lower().split())!r}"
        return True, ""


class ClassifierFilter:
    """Drops images whose probability of an unwanted class is >= `threshold`.

    score_fn(images) takes (B, 3, H, W) in [-1, 1] and returns (B,) probabilities (a (B, 1)
    tensor, a list or a numpy array also works); it runs under ``torch.no_grad()``."""

    needs_image = True

    def __init__(self, score_fn: Callable[[torch.Tensor], Any], threshold: float = 0.5, name: str = "classifier") -> None:
        if not 0.0 <= threshold <= 1.0:
            raise GlidekitError(f"classifier threshold must be a probability in [0, 1], got {threshold}")
        self.score_fn, self.threshold, self.name = score_fn, float(threshold), name

    def scores(self, images: torch.Tensor) -> list[float]:
        with torch.no_grad():
            p = self.score_fn(images)
        p = torch.as_tensor(p, dtype=torch.float64).reshape(-1)
        if p.numel() != images.shape[0]:
            raise GlidekitError(f"{self.name}: score_fn returned {p.numel()} scores for {images.shape[0]} images")
        return p.tolist()

    def filter_batch(self, samples: Sequence[dict]) -> list[tuple[bool, str]]:
        if not samples:
            return []
        scores = self.scores(torch.stack([s["image"] for s in samples]))
        return [(True, "") if p < self.threshold else (False, f"{self.name} score {p:.3f} >= {self.threshold:g}")
                for p in scores]

    def filter(self, sample: dict) -> tuple[bool, str]:
        return self.filter_batch([sample])[0]


@dataclass
class FilterReport:
    """What `apply_filters` kept and dropped, by dataset index."""

    total: int = 0
    kept: list[int] = field(default_factory=list)
    kept_keys: list[str] = field(default_factory=list)
    dropped: list[tuple[int, str, str]] = field(default_factory=list)  # (index, key, reason)
    counts: dict[str, int] = field(default_factory=dict)  # dropped per filter name ("unreadable" too)

    def summary(self) -> str:
        parts = ", ".join(f"{n} by {name}" for name, n in self.counts.items()) or "none dropped"
        return f"kept {len(self.kept)} of {self.total} ({parts})"

    def to_dict(self) -> dict:
        return {"total": self.total, "kept": self.kept, "kept_keys": self.kept_keys,
                "dropped": [list(d) for d in self.dropped], "counts": self.counts}


def _judge(f: Any, samples: list[dict]) -> list[tuple[bool, str]]:
    if hasattr(f, "filter_batch"):
        return list(f.filter_batch(samples))
    return [f.filter(s) for s in samples]


def apply_filters(dataset: Dataset, filters: Sequence[Any], batch_size: int = 64) -> FilterReport:
    """Run `filters` over a map-style dataset, in index order, `batch_size` samples at a time.

    Filters run in the order given and a sample is judged by later filters only if earlier ones
    kept it (put cheap caption filters before classifiers). Samples the dataset cannot read
    are dropped with reason "unreadable: ...". When no filter needs pixels and the dataset can
    describe a sample without decoding it (`record(i)`), no image is decoded."""
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise GlidekitError("apply_filters needs a map-style dataset (an image folder, a manifest, a built-in set); "
                            "filter shards on the fly with WebDatasetShards(..., filters=[...])")
    if batch_size < 1:
        raise GlidekitError(f"batch_size must be positive, got {batch_size}")
    filters = list(filters)
    need_pixels = any(getattr(f, "needs_image", True) for f in filters)
    cheap = (not need_pixels) and hasattr(dataset, "record")
    report = FilterReport(total=len(dataset))
    counts: Counter = Counter()
    for lo in range(0, len(dataset), batch_size):
        idx = list(range(lo, min(lo + batch_size, len(dataset))))
        samples = {i: (dataset.record(i) if cheap else dataset[i]) for i in idx}
        verdict: dict[int, tuple[str, str] | None] = {}
        alive = []
        for i in idx:
            s = samples[i]
            if is_skipped(s):
                verdict[i] = ("unreadable", f"unreadable: {s['skipped'] if s is not None else 'None'}")
            else:
                verdict[i] = None
                alive.append(i)
        for f in filters:
            if not alive:
                break
            results = _judge(f, [samples[i] for i in alive])
            if len(results) != len(alive):
                raise GlidekitError(f"filter {getattr(f, 'name', f)!r} returned {len(results)} verdicts for {len(alive)} samples")
            survivors = []
            for i, (keep, reason) in zip(alive, results):
                if keep:
                    survivors.append(i)
                else:
                    verdict[i] = (getattr(f, "name", type(f).__name__), reason or "rejected")
            alive = survivors
        for i in idx:
            key = str(samples[i]["key"]) if samples[i] is not None else str(i)
            if verdict[i] is None:
                report.kept.append(i)
                report.kept_keys.append(key)
            else:
                name, reason = verdict[i]
                counts[name] += 1
                report.dropped.append((i, key, reason))
    report.counts = dict(counts)
    return report


def write_manifest(report: FilterReport, dataset: Dataset, path: str | os.PathLike) -> Path:
    """Write the kept samples of `dataset` as a JSONL manifest, atomically (temp file + rename).

    File paths inside the manifest's folder are written relative to it (the folder can move);
    others are absolute. Load it with ``build_dataset("manifest:PATH", size)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    classes = list(getattr(dataset, "classes", []) or [])
    lines = []
    for row in manifest_rows(dataset, report.kept):
        f = Path(row["file"]).resolve()
        file = f.relative_to(base).as_posix() if f.is_relative_to(base) else str(f)
        out = {"file": file, "caption": row["caption"], "label": int(row["label"]), "key": row["key"]}
        if classes and 0 <= out["label"] < len(classes):
            out["class"] = classes[out["label"]]
        lines.append(json.dumps(out, ensure_ascii=False))
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + ("\n" if lines else ""))
    return path


class FilteredDataset(Dataset):
    """The samples of `dataset` at `kept_indices`, in that order (e.g. ``report.kept``).

    Other attributes (classes, image_size, set_epoch, skipped...) are the wrapped dataset's."""

    def __init__(self, dataset: Dataset, kept_indices: Sequence[int]) -> None:
        n = len(dataset)
        self.dataset = dataset
        self.indices = [int(i) for i in kept_indices]
        bad = [i for i in self.indices if not 0 <= i < n]
        if bad:
            raise GlidekitError(f"kept index {bad[0]} is outside a dataset of {n} samples")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[self.indices[i]]

    @property
    def record(self):
        inner = self.dataset.record  # AttributeError when the samples are not files

        def record(i: int) -> dict:
            return inner(self.indices[i])

        return record

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("dataset", "indices"):
            raise AttributeError(name)
        return getattr(self.dataset, name)
