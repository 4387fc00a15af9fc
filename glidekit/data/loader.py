"""Resumable batching for training: one object that yields batches forever and remembers where
it is, for map-style datasets (via `ResumableSampler`) and for `WebDatasetShards` alike.

    loader = make_loader(dataset, batch_size=8, seed=0, rank=rank, world_size=world)
    loader.load_state_dict(checkpoint["data"])       # on resume
    for step, batch in zip(range(max_steps), loader):
        ...                                          # batch["skipped"]: corrupt samples dropped
        checkpoint["data"] = loader.state_dict()     # {"epoch", "consumed", "skipped"}

The state is exact: a resumed run sees the same batches as an uninterrupted one (same seed,
batch size, rank and world size; the number of DataLoader workers may differ).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from ..errors import GlidekitError
from .common import collate


class ResumableSampler(Sampler[int]):
    """DistributedSampler-like: a seeded permutation per epoch, padded by wrapping around to a
    multiple of world_size (equal steps on every rank), rank r taking positions r, r + world, ...;
    iteration starts at position `consumed` of this rank's share."""

    def __init__(self, n: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if n <= 0:
            raise GlidekitError("cannot sample from an empty dataset")
        if not 0 <= rank < world_size:
            raise GlidekitError(f"rank {rank} is outside world_size {world_size}")
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.consumed = 0, 0

    def order(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        total = -(-self.n // self.world_size) * self.world_size
        idx = (idx * (total // self.n + 1))[:total]
        return idx[self.rank :: self.world_size]

    def set_state(self, epoch: int, consumed: int = 0) -> None:
        self.epoch, self.consumed = int(epoch), int(consumed)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch)[self.consumed :])

    def __len__(self) -> int:
        return max(0, -(-self.n // self.world_size) - self.consumed)


class ResumableLoader:
    """Infinite iterator over collated batches with an exact `state_dict()` (see module doc).

    Map-style datasets are ordered by a `ResumableSampler(shuffle, seed, rank, world_size)`;
    a `WebDatasetShards` keeps its own order (its seed, shuffle, rank and world_size), and the
    loader only sets its batch_size so that worker chunks line up with batches."""

    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool = True, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, num_workers: int = 0, drop_last: bool = False, pin_memory: bool = False) -> None:
        if batch_size < 1:
            raise GlidekitError(f"batch_size must be positive, got {batch_size}")
        self.dataset, self.batch_size = dataset, batch_size
        self.num_workers, self.drop_last, self.pin_memory = num_workers, drop_last, pin_memory
        self.iterable = isinstance(dataset, IterableDataset)
        if self.iterable:
            if not hasattr(dataset, "load_state_dict"):
                raise GlidekitError(f"{type(dataset).__name__} is not resumable (no load_state_dict)")
            mine = (getattr(dataset, "rank", 0), getattr(dataset, "world_size", 1))
            if (rank if rank is not None else mine[0], world_size if world_size is not None else mine[1]) != mine:
                raise GlidekitError(f"the shard dataset was made for rank {mine[0]} of {mine[1]}; give rank and world_size "
                                    "to WebDatasetShards itself (its shuffle and seed apply too)")
            dataset.batch_size = batch_size  # worker chunks line up with batches
            dataset.repeat = False
            self.sampler = None
        else:
            self.sampler = ResumableSampler(len(dataset), shuffle=shuffle, seed=seed, rank=rank or 0,
                                            world_size=world_size or 1)
        self.epoch, self.consumed, self.skipped = 0, 0, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        try:
            self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
            self.skipped = int(state.get("skipped", 0))
        except (KeyError, TypeError, ValueError):
            raise GlidekitError(f"not a data loader state: {state!r}") from None

    def _epoch_loader(self) -> DataLoader:
        if self.iterable:
            self.dataset.load_state_dict({"epoch": self.epoch, "consumed": self.consumed})
            sampler = None
        else:
            self.sampler.set_state(self.epoch, self.consumed)
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(self.epoch)
            sampler = self.sampler
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=collate,
                          num_workers=self.num_workers, drop_last=self.drop_last, pin_memory=self.pin_memory)

    def __iter__(self) -> Iterator[dict]:
        while True:
            empty_epoch = True
            for batch in self._epoch_loader():
                used = len(batch["key"]) + batch["skipped"]
                empty_epoch = empty_epoch and used == 0
                if "data_state" in batch:
                    self.epoch, self.consumed = batch["data_state"]["epoch"], batch["data_state"]["consumed"]
                else:
                    self.consumed += used
                self.skipped += batch["skipped"]
                yield batch
            if empty_epoch and self.consumed == 0:
                raise GlidekitError("the dataset produced no samples in a whole epoch")
            self.epoch, self.consumed = self.epoch + 1, 0


def make_loader(dataset: Dataset, batch_size: int, **kw) -> ResumableLoader:
    """A `ResumableLoader` (shuffle, seed, rank, world_size, num_workers, drop_last, pin_memory)."""
    return ResumableLoader(dataset, batch_size, **kw)
