"""What every classification dataset offers: the error type, the recipe record and the in-memory dataset.

Small-image datasets (CIFAR, SVHN, STL-10, digits, small folder trees) live in memory as one uint8
tensor ``images`` of shape (N, 3, H, W) and one int64 tensor ``labels`` of shape (N,); the loader
indexes, crops, flips and normalises whole batches on the target device (see ``augment.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


class DatasetError(ValueError):
    """Bad dataset input. The message names the file (or name) and says what to do."""


@dataclass(frozen=True)
class DataSpec:
    """Normalisation and training augmentation of one dataset (specs/local_learning.md §4.1, §4.2).

    Attributes:
        image_size: side of the images the model sees (the crop size).
        mean / std: per-channel normalisation on pixels scaled to [0, 1].
        pad: pixels of padding on each side before the random crop (0: none).
        pad_mode: "reflect" (CIFAR) or "constant" (zero pixels, SVHN/STL-10/digits).
        crop: side of the random training crop.
        flip: random horizontal flip in training.
        random_resized_crop: ImageNet-style RandomResizedCrop(crop) instead of pad + crop (streaming).
        resize: evaluation resize of the shorter side before a centre crop of ``crop`` (streaming);
            None means images are used at their own size.
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pad: int = 0
    pad_mode: str = "constant"
    crop: int = 0
    flip: bool = False
    random_resized_crop: bool = False
    resize: int | None = None

    def __post_init__(self) -> None:
        if self.pad_mode not in ("reflect", "constant"):
            raise DatasetError(f"pad_mode must be 'reflect' or 'constant', got {self.pad_mode!r}")
        if self.crop == 0:
            object.__setattr__(self, "crop", self.image_size)

    def describe(self) -> str:
        """One line for logs, e.g. 'reflect-pad 4, crop 32, flip; mean (0.491, ...)'."""
        if self.random_resized_crop:
            aug = f"RandomResizedCrop {self.crop}"
        else:
            aug = f"{self.pad_mode}-pad {self.pad}, crop {self.crop}" if self.pad else f"crop {self.crop}"
        aug += ", flip" if self.flip else ", no flip"
        mean = ", ".join(f"{m:.3f}" for m in self.mean)
        std = ", ".join(f"{s:.3f}" for s in self.std)
        return f"{aug}; mean ({mean}) std ({std})"


def check_labels(labels: np.ndarray, num_classes: int, source: str, first: int = 0) -> np.ndarray:
    """Check every label is in [first, first + num_classes) and return them shifted to start at 0.

    Args:
        labels: integer labels, any shape that flattens to (N,).
        num_classes: number of classes.
        source: the file the labels came from, for the error message.
        first: the file's first label value (1 for SVHN and STL-10).

    Returns:
        int64 labels of shape (N,) in [0, num_classes).
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    bad = (labels < first) | (labels >= first + num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            f"{source}: label {labels[i]} at index {i} is outside {first}..{first + num_classes - 1} "
            f"({int(bad.sum())} bad labels); the file is corrupt or not this dataset, replace it"
        )
    return labels - first


class ArrayDataset(torch.utils.data.Dataset):
    """A labelled image set held in memory.

    Args:
        images: uint8 array or tensor of shape (N, 3, H, W).
        labels: integer labels of shape (N,), each in [0, len(classes)).
        classes: class names; label i means ``classes[i]``.
        spec: normalisation and augmentation recipe.
        name: dataset name for logs ("cifar10", "digits", or the source path).
        train: which split this is.
        paths: optional source path of every image (folder trees), in the same order.
    """

    in_memory = True

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        classes: Sequence[str],
        spec: DataSpec,
        name: str,
        train: bool,
        paths: Sequence[str] | None = None,
    ) -> None:
        images = torch.as_tensor(images)
        labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise DatasetError(f"{name}: images must be uint8 (N, 3, H, W), got {images.dtype} "
                               f"{tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise DatasetError(f"{name}: {images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        self.images = images.contiguous()
        self.labels = labels
        self.classes = list(classes)
        self.spec = spec
        self.name = name
        self.train = train
        self.paths = list(paths) if paths is not None else None
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """One raw sample: uint8 image (3, H, W) and its label (no augmentation, no normalisation)."""
        return self.images[i], int(self.labels[i])

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ArrayDataset:
        """The samples at ``indices`` (in that order), as a dataset of the same kind and recipe."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        if idx.numel() and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise DatasetError(f"{self.name}: subset indices must be in 0..{len(self) - 1}")
        paths = [self.paths[i] for i in idx.tolist()] if self.paths is not None else None
        return ArrayDataset(self.images[idx], self.labels[idx], self.classes, self.spec, self.name,
                            self.train, paths)

    def on_device(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels moved to ``device`` once and kept (airbench keeps CIFAR on the GPU)."""
        key = str(torch.device(device))
        if key not in self._on_device:
            self._on_device[key] = (self.images.to(device), self.labels.to(device))
        return self._on_device[key]

    def __repr__(self) -> str:
        h, w = self.images.shape[2:]
        split = "train" if self.train else "test"
        return (f"ArrayDataset({self.name!r}, {split}, {len(self)} images {h}x{w}, "
                f"{self.num_classes} classes; {self.spec.describe()})")
