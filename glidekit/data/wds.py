"""Streaming img2dataset / WebDataset tar shards with the standard library's `tarfile`.

A shard is a tar file whose members are grouped into samples by key: ``00001.jpg``,
``00001.txt``, ``00001.json`` are one sample with key ``00001`` (the member path up to the first
dot of its file name, as WebDataset groups them). The image is the first of jpg / jpeg / png /
webp; the caption is the `.txt` member, else ``caption`` (or ``text``) in the `.json` member
(img2dataset writes both); the label is a `.cls` member or ``label`` in the json, else -1.

Order. Every rank reads its own shards (shard i of the epoch's shuffled list goes to rank
i % world_size); inside an uncompressed local shard the samples are permuted too. Both
permutations are seeded by (seed, epoch), so an epoch's order is fixed. That per-rank
*canonical stream* is the same whatever the number of DataLoader workers: the stream is cut into
chunks of `batch_size` samples and worker w decodes chunks w, w + W, w + 2W, ..., which is the
order in which a DataLoader (batch_size = the same value) hands their batches back. Every worker
reads all tar headers of the rank's shards (cheap for uncompressed local files: tarfile seeks
past member data) but decodes only its own samples. Streamed sources (``pipe:`` commands,
http(s) URLs, and compressed local ``.tar.gz`` shards, read front to back) keep their in-shard
order, and every worker reads every shard of its rank in full, so use few workers there.
This trades some reading for an order that does not depend on the worker count, which is what
makes resuming exact.

Resuming. `state_dict()` is ``{"epoch": e, "consumed": n}``: the next sample is position n of
epoch e's canonical stream. Positions count skipped samples too, so a resumed run continues at
exactly the same sample. With DataLoader workers the dataset object in the main process does not
see the iteration; read the position from the batches instead (`collate` puts the position
after each batch in ``batch["data_state"]``) or use `glidekit.data.make_loader`, which does this.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
import subprocess
import tarfile
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from torch.utils.data import IterableDataset, get_worker_info

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
)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """``data/{00000..00002}.tar`` -> the three names, zero padding kept; ``{a,b}`` alternatives;
    several groups multiply out, left to right."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if rng:
        lo, hi = int(rng.group(1)), int(rng.group(2))
        if hi < lo:
            raise GlidekitError(f"empty range {{{body}}} in shard pattern {pattern!r}")
        width = len(rng.group(1)) if rng.group(1).startswith("0") else 0
        options = [str(i).zfill(width) for i in range(lo, hi + 1)]
    else:
        options = body.split(",")
    head, tail = pattern[: m.start()], pattern[m.end():]
    return [head + o + rest for o in options for rest in expand_braces(tail)]


def _is_stream(url: str) -> bool:
    return url.startswith(("pipe:", "http://", "https://"))


def expand_urls(urls: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard names from a pattern (``::``-separated patterns allowed), brace-expanded; local
    patterns with ``*`` / ``?`` are globbed (sorted)."""
    items = [os.fspath(urls)] if isinstance(urls, (str, os.PathLike)) else [os.fspath(u) for u in urls]
    out: list[str] = []
    for item in items:
        for part in item.split("::"):
            part = part.strip()
            if not part:
                continue
            for name in expand_braces(part):
                if name.startswith("file://"):
                    name = name[len("file://"):]
                if not _is_stream(name) and any(c in name for c in "*?["):
                    out.extend(sorted(glob.glob(name)))
                else:
                    out.append(name)
    return out


def _split_name(name: str) -> tuple[str, str]:
    """Member name -> (sample key, extension), WebDataset style."""
    d, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), ext.lower()


_COMPRESSED = (".gz", ".tgz", ".bz2", ".xz")


class _Stream:
    """A byte stream read front to back: a ``pipe:`` command, an http(s) URL, or a compressed
    local tar (random access into a compressed tar would decompress it again for every seek)."""

    def __init__(self, url: str) -> None:
        self.proc = None
        if url.startswith("pipe:"):
            self.proc = subprocess.Popen(url[5:], shell=True, stdout=subprocess.PIPE)  # noqa: S602 - the user's command
            self.f = self.proc.stdout
        elif url.startswith(("http://", "https://")):
            self.f = urllib.request.urlopen(url, timeout=60)  # noqa: S310 - the user's own shard URL
        else:
            self.f = open(url, "rb")  # noqa: SIM115 - closed by close()

    def close(self) -> None:
        try:
            self.f.close()
        finally:
            if self.proc is not None:
                if self.proc.poll() is None:
                    self.proc.kill()
                self.proc.wait()


Loader = Callable[[], dict[str, bytes]]


def _tar_groups(url: str, shuffle_seed: str | None) -> Iterator[tuple[str, Loader | None, str | None]]:
    """(key, load-bytes function, error) per sample of one shard, in reading order; a final
    (shard, None, reason) item when the shard is unreadable or truncated. For a local file the
    headers are read first and the samples are permuted when `shuffle_seed` is given; for a
    stream, `load()` must be called before asking for the next item."""
    if _is_stream(url) or url.lower().endswith(_COMPRESSED):
        yield from _stream_groups(url)
        return
    try:
        tf = tarfile.open(url, "r:")
    except Exception as exc:  # noqa: BLE001
        yield url, None, f"cannot open shard: {error_reason(exc)}"
        return
    with tf:
        groups: list[tuple[str, dict[str, tarfile.TarInfo]]] = []
        error = None
        try:
            while True:
                info = tf.next()
                if info is None:
                    break
                if not info.isfile():
                    continue
                key, ext = _split_name(info.name)
                if key.rpartition("/")[2].startswith("."):
                    continue
                if groups and groups[-1][0] == key:
                    groups[-1][1][ext] = info
                else:
                    groups.append((key, {ext: info}))
        except Exception as exc:  # noqa: BLE001 - a truncated or damaged tar ends the shard
            error = f"shard damaged after {len(groups)} samples: {error_reason(exc)}"
        order = list(range(len(groups)))
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(order)
        for i in order:
            key, members = groups[i]

            def load(members=members) -> dict[str, bytes]:
                out = {}
                for ext, info in members.items():
                    f = tf.extractfile(info)
                    if f is None:
                        continue
                    data = f.read()
                    if len(data) != info.size:
                        raise EOFError(f"member {info.name} truncated")
                    out[ext] = data
                return out

            yield key, load, None
        if error:
            yield url, None, error


def _stream_groups(url: str) -> Iterator[tuple[str, Loader | None, str | None]]:
    """`_tar_groups` for a stream: member bytes are read as they pass (no seeking back), and a
    sample is complete when the next member has another key."""
    try:
        stream = _Stream(url)
    except Exception as exc:  # noqa: BLE001
        yield url, None, f"cannot open shard: {error_reason(exc)}"
        return
    try:
        try:
            tf = tarfile.open(fileobj=stream.f, mode="r|*")
        except Exception as exc:  # noqa: BLE001
            yield url, None, f"cannot open shard: {error_reason(exc)}"
            return
        n, error = 0, None
        cur_key: str | None = None
        cur: dict[str, bytes] = {}
        while True:
            try:
                info = tf.next()
                if info is None:
                    break
                if not info.isfile():
                    continue
                key, ext = _split_name(info.name)
                if key.rpartition("/")[2].startswith("."):
                    continue
                if key != cur_key:
                    if cur_key is not None:
                        n += 1
                        yield cur_key, (lambda h=cur: h), None
                    cur_key, cur = key, {}
                cur[ext] = tf.extractfile(info).read()
            except Exception as exc:  # noqa: BLE001 - a truncated or damaged tar ends the shard
                error = f"shard damaged after {n} samples: {error_reason(exc)}"
                break
        if cur_key is not None:
            yield cur_key, (lambda h=cur: h), None
        if error:
            yield url, None, error
    finally:
        stream.close()


def decode_group(key: str, members: dict[str, bytes]) -> tuple[bytes, str, int]:
    """(encoded image bytes, caption, label) of one sample's members, or raise."""
    ext = next((e for e in IMAGE_EXTS if e in members), None)
    if ext is None:
        ext = next((e for e in members if e.rpartition(".")[2] in IMAGE_EXTS), None)
    if ext is None:
        raise ValueError(f"no image member (has {', '.join(sorted(members)) or 'nothing'})")
    meta: dict = {}
    if "json" in members:
        try:
            loaded = json.loads(members["json"].decode("utf-8", errors="replace"))
            meta = loaded if isinstance(loaded, dict) else {}
        except json.JSONDecodeError:
            meta = {}
    if "txt" in members:
        caption = members["txt"].decode("utf-8", errors="replace").strip()
    else:
        caption = str(meta.get("caption") or meta.get("text") or "").strip()
    label = -1
    if "cls" in members:
        label = int(members["cls"].decode("ascii", errors="replace").strip())
    elif isinstance(meta.get("label"), int):
        label = meta["label"]
    return members[ext], caption, label


class WebDatasetShards(IterableDataset, SkipTally):
    """Samples streamed from img2dataset-layout tar shards (see the module docstring).

    urls_or_pattern: ``"data/{00000..00099}.tar"``, a list of paths, ``pipe:CMD`` or http(s)
    URLs. rank / world_size: this process's share of the shards (torch.distributed ranks).
    batch_size: the DataLoader batch size, so that worker chunks line up with batches (see
    above; `make_loader` sets it). shuffle: permute shards and samples per epoch (seeded).
    repeat: run through epochs forever (epoch += 1 at the end of each) instead of stopping.
    filters: objects with ``filter(sample) -> (keep, reason)`` (glidekit.data.filters) applied
    to each decoded sample; a rejected one becomes a skip marker with the filter's reason.
    """

    def __init__(
        self,
        urls_or_pattern: str | os.PathLike | Sequence[str | os.PathLike],
        image_size: int | None,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        repeat: bool = False,
        batch_size: int = 1,
        hflip: bool = False,
        filters: Sequence[Any] = (),
        background: tuple[int, int, int] = (255, 255, 255),
    ) -> None:
        SkipTally.__init__(self)
        check_image_size(image_size)
        self.shards = expand_urls(urls_or_pattern)
        if not self.shards:
            raise GlidekitError(f"no shards match {urls_or_pattern!r}")
        missing = [s for s in self.shards if not _is_stream(s) and not Path(s).is_file()]
        if missing:
            raise GlidekitError(f"{len(missing)} of {len(self.shards)} shard files not found (first: {missing[0]})")
        if not 0 <= rank < world_size:
            raise GlidekitError(f"rank {rank} is outside world_size {world_size}")
        if len(self.shards) < world_size:
            raise GlidekitError(f"{len(self.shards)} shards cannot be split over {world_size} ranks; "
                                "write at least one shard per rank")
        if batch_size < 1:
            raise GlidekitError(f"batch_size must be positive, got {batch_size}")
        self.image_size = image_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle, self.repeat = seed, shuffle, repeat
        self.batch_size = batch_size
        self.hflip = hflip
        self.filters = list(filters)
        self.background = background
        self.epoch = 0
        self.start = 0  # position in the epoch's stream where the next iteration begins

    # -- order and position --------------------------------------------------------------------

    def rank_shards(self, epoch: int) -> list[str]:
        """This rank's shards for `epoch`, in reading order."""
        shards = list(self.shards)
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(shards)
        return shards[self.rank :: self.world_size]

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first sample at the next iteration."""
        self.epoch, self.start = int(epoch), 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.start}

    def load_state_dict(self, state: dict) -> None:
        try:
            self.epoch, self.start = int(state["epoch"]), int(state["consumed"])
        except (KeyError, TypeError, ValueError):
            raise GlidekitError(f"not a WebDatasetShards state: {state!r}; expected {{'epoch': int, 'consumed': int}}") from None

    def num_samples(self, epoch: int | None = None) -> int:
        """Positions in this rank's stream for `epoch` (reads all tar headers; local shards)."""
        return sum(1 for _ in self._positions(self.epoch if epoch is None else epoch))

    def _positions(self, epoch: int) -> Iterator[tuple[str, Loader | None, str | None]]:
        index = {s: i for i, s in enumerate(self.shards)}
        for shard in self.rank_shards(epoch):
            # seeded by the shard's index, not its path, so that moving the data keeps the order
            seed = f"{self.seed}:{epoch}:{index[shard]}" if self.shuffle else None
            yield from _tar_groups(shard, seed)

    # -- iteration -----------------------------------------------------------------------------

    def _sample(self, key: str, load: Loader | None, error: str | None, epoch: int, pos: int) -> dict:
        where = {"position": (epoch, pos)}
        if load is None:
            return skip_marker(key, error or "unreadable", **where)
        try:
            data, caption, label = decode_group(key, load())
            image = decode_image(data, self.background, self.image_size)
        except Exception as exc:  # noqa: BLE001 - corrupt members are skipped, never fatal
            return skip_marker(key, error_reason(exc), **where)
        if self.image_size is not None:
            image = center_crop_resize(image, self.image_size)
        x = pil_to_chw(image)
        if self.hflip and flip_decision(self.seed, epoch, key):
            x = x.flip(-1)
        sample = {"image": x, "caption": caption, "label": label, "key": key, **where}
        for f in self.filters:
            keep, reason = f.filter(sample)
            if not keep:
                return skip_marker(key, reason, **where)
        return sample

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        epoch, start = self.epoch, self.start
        g = 0  # index of the position among those this iteration yields (all workers agree)
        while True:
            pos = -1
            for pos, (key, load, error) in enumerate(self._positions(epoch)):
                if pos < start:
                    continue
                mine = (g // self.batch_size) % workers == worker
                g += 1
                if not mine:
                    continue
                sample = self._sample(key, load, error, epoch, pos)
                if "skipped" in sample:
                    self._record_skip(key, sample["skipped"])
                if info is None:  # iterated in this process: track the position here
                    self.epoch, self.start = epoch, pos + 1
                yield sample
            if info is None and pos + 1 >= start:
                self.epoch, self.start = epoch + 1, 0
            if not self.repeat:
                return
            epoch, start = epoch + 1, 0
