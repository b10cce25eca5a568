"""``build_loader``: batches of normalised float images and int64 labels on the target device.

In-memory datasets are batched without a DataLoader: the whole uint8 set sits on the device, each
batch is one gather (crop + flip + padding, see ``augment.py``) and one normalisation. Streamed
folder trees go through a torch DataLoader with torchvision transforms that stay uint8 (4x less
inter-process traffic); normalisation happens on the device too.

Both kinds shard exactly like ``torch.utils.data.DistributedSampler`` (it computes the indices of
both): the permutation of epoch e comes from ``seed + e``, rank r takes every world_size-th index
from r; with ``drop_last`` the tail that does not divide evenly is dropped, otherwise indices are
repeated to pad. Call ``set_epoch(e)`` before each epoch, as with DistributedSampler.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from .augment import crop_flip, draw_params, normalize
from .base import ArrayDataset, DatasetError, DataSpec
from .folder import FolderDataset


def _sampler(n: int, shuffle: bool, seed: int, rank: int, world_size: int,
             drop_last: bool) -> DistributedSampler:
    if not 0 <= rank < world_size:
        raise DatasetError(f"rank {rank} is outside 0..{world_size - 1} for world_size={world_size}")
    # range(n) stands in for the dataset: the sampler only needs its length.
    return DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                              drop_last=drop_last)


class _EpochSampled:
    """Shared by both loaders: the epoch lives in the sampler (deterministic per seed, epoch, rank)."""

    sampler: DistributedSampler

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation (and augmentation draws) of ``epoch``, as DistributedSampler.set_epoch."""
        self.sampler.set_epoch(epoch)


class InMemoryLoader(_EpochSampled):
    """Batches of an :class:`ArrayDataset`, augmented on the device. Built by :func:`build_loader`."""

    def __init__(self, ds: ArrayDataset, batch_size: int, train: bool, augment: bool, device: torch.device,
                 drop_last: bool, seed: int, epoch: int, rank: int, world_size: int) -> None:
        self.dataset, self.batch_size, self.train, self.augment = ds, batch_size, train, augment
        self.device, self.drop_last, self.seed, self.rank = device, drop_last, seed, rank
        self.sampler = _sampler(len(ds), train, seed, rank, world_size, drop_last)
        self.sampler.set_epoch(epoch)
        self._mean = torch.tensor(ds.spec.mean, device=device)
        self._std = torch.tensor(ds.spec.std, device=device)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        images, labels = self.dataset.on_device(self.device)
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.int64)  # this rank's indices
        if self.augment:
            # A stream of its own per (seed, epoch, rank), apart from the permutation's.
            seq = np.random.SeedSequence([self.seed, self.epoch, self.rank, 0xA06])
            g = torch.Generator().manual_seed(int(seq.generate_state(1, np.uint64)[0] >> 1))
            drawn = draw_params(len(order), self.dataset.spec, *images.shape[2:], g)
            params = [p.to(self.device) for p in drawn]
        order = order.to(self.device)
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            idx = order[sl]
            if self.augment:
                x = crop_flip(images, idx, *(p[sl] for p in params), self.dataset.spec)
            else:
                x = images[idx]
            yield normalize(x, self._mean, self._std), labels[idx]


def stream_transform(spec: DataSpec, augment: bool):
    """torchvision v2 transforms for a streamed image: geometry only, output uint8 (3, crop, crop)."""
    from torchvision.transforms import v2

    if augment and spec.random_resized_crop:
        ops = [v2.ToImage(), v2.RandomResizedCrop(spec.crop, antialias=True)]
    elif augment:
        ops = [v2.ToImage(), v2.RandomCrop(spec.crop, padding=spec.pad or None, padding_mode=spec.pad_mode)]
    elif spec.resize:
        ops = [v2.ToImage(), v2.Resize(spec.resize, antialias=True), v2.CenterCrop(spec.crop)]
    else:
        ops = [v2.ToImage()]
    if augment and spec.flip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops)


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, ds: FolderDataset, transform) -> None:
        self.ds, self.transform = ds, transform

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, label = self.ds[i]
        return self.transform(img).as_subclass(torch.Tensor), label


class StreamingLoader(_EpochSampled):
    """Batches of a :class:`FolderDataset` through a DataLoader. Built by :func:`build_loader`."""

    def __init__(self, ds: FolderDataset, batch_size: int, train: bool, augment: bool, device: torch.device,
                 drop_last: bool, seed: int, epoch: int, rank: int, world_size: int, workers: int) -> None:
        self.dataset, self.batch_size, self.train, self.device = ds, batch_size, train, device
        self.sampler = _sampler(len(ds), train, seed, rank, world_size, drop_last)
        self.sampler.set_epoch(epoch)
        self.loader = DataLoader(_Transformed(ds, stream_transform(ds.spec, augment)),
                                 batch_size=batch_size, sampler=self.sampler, num_workers=workers,
                                 drop_last=drop_last,
                                 pin_memory=device.type == "cuda", persistent_workers=workers > 0)
        self._mean = torch.tensor(ds.spec.mean, device=device)
        self._std = torch.tensor(ds.spec.std, device=device)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True)
            yield normalize(x, self._mean, self._std), y.to(self.device, non_blocking=True)


def build_loader(ds: ArrayDataset | FolderDataset, batch_size: int = 128, train: bool | None = None,
                 device: str | torch.device = "cpu", drop_last: bool | None = None, seed: int = 0,
                 epoch: int = 0, rank: int = 0, world_size: int = 1, workers: int | None = None,
                 augment: bool | None = None) -> InMemoryLoader | StreamingLoader:
    """Batches ``(images, labels)``: float32 normalised (B, 3, H, W) and int64 (B,), both on ``device``.

    Args:
        ds: a dataset from :func:`build_dataset`.
        batch_size: samples per batch on this rank.
        train: shuffle per epoch and augment (default: ``ds.train``); False keeps dataset order.
        device: where batches are made; in-memory datasets are copied there once and augmented there.
        drop_last: drop the last incomplete batch and the uneven shard tail (default: ``train``).
        seed, epoch: the permutation and augmentation of an epoch depend only on (seed, epoch, rank).
        rank, world_size: this process's shard (DistributedSampler semantics).
        workers: DataLoader processes for streamed datasets (default: min(8, CPUs)); in-memory
            datasets ignore it.
        augment: apply the recipe's training augmentation (default: ``train``).
    """
    if batch_size < 1:
        raise DatasetError(f"batch_size must be at least 1, got {batch_size}")
    train = ds.train if train is None else train
    drop_last = train if drop_last is None else drop_last
    augment = train if augment is None else augment
    device = torch.device(device)
    if isinstance(ds, ArrayDataset):
        return InMemoryLoader(ds, batch_size, train, augment, device, drop_last, seed, epoch, rank,
                              world_size)
    if isinstance(ds, FolderDataset):
        workers = min(8, os.cpu_count() or 1) if workers is None else workers
        return StreamingLoader(ds, batch_size, train, augment, device, drop_last, seed, epoch, rank,
                               world_size,
                               workers)
    raise DatasetError(f"build_loader needs a dataset from build_dataset, got {type(ds).__name__}")
