"""The bundled offline default: scikit-learn's digits as 32×32 RGB images.

scikit-learn ships 1 797 handwritten digits of 8×8 pixels with values 0..16 (10 classes) in
``sklearn/datasets/data/digits.csv.gz``. We scale them to 0..255, upsample ×4 bilinearly to 32×32 and
repeat the grey channel three times, so every CIFAR-sized model runs on them unchanged.

Split (deterministic): the one ``sklearn.model_selection.train_test_split(test_size=360,
stratify=labels, random_state=0)`` gives -> 1 437 training and 360 test images, every class in the same
proportion in both. Recipe: the SVHN one (zero-pad 2, random crop 32, no flip since digits are not
mirror-symmetric, mean = std = 0.5).

The file is read with numpy and the split computed here (:func:`stratified_split`, the same draws from
the same ``RandomState``), without importing scikit-learn: its import (and scipy's parts it pulls in)
made ~70 MB of a training run's resident memory, more than the data (BENCHMARKS.md, "Memory: the outside
view"). ``tests/test_data_formats.py`` checks both against scikit-learn's ``load_digits`` and
``train_test_split``.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import recipes
from .base import ArrayDataset, DatasetError

_cache: dict[str, np.ndarray] = {}


def digits_file() -> Path:
    """Where scikit-learn keeps its digits (found without importing scikit-learn); DatasetError if absent."""
    spec = importlib.util.find_spec("sklearn")  # a top-level name: locates the package, runs none of it
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    where = f"not in {roots[0]}/datasets/data" if roots else "scikit-learn is not installed"
    raise DatasetError(f"--data digits reads scikit-learn's bundled digits.csv.gz ({where}): "
                       f"pip install scikit-learn, or give --data another dataset")


def read_digits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 8×8 images (float64 0..16, shape (N, 8, 8)) and int64 labels of a digits.csv.gz file.

    Each line is 64 pixel values and the label, comma-separated (scikit-learn's ``load_digits`` reads
    it the same way, with ``np.loadtxt``).
    """
    try:
        with gzip.open(path, mode="rt", encoding="utf-8") as f:
            data = np.loadtxt(f, delimiter=",", ndmin=2)
    except (OSError, ValueError, EOFError) as e:
        raise DatasetError(f"{path}: not a readable digits file ({e}); reinstall scikit-learn") from None
    if data.shape[1] != 65 or len(data) < 20:
        raise DatasetError(f"{path}: expected rows of 64 pixels and a label, got shape {data.shape}; "
                           f"reinstall scikit-learn")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of each class to draw: the floor of each class's share, the remainder to the largest
    fractional parts, ties broken by ``rng.choice`` (scikit-learn's ``_approximate_mode``, same draws)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need = int(n_draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add = min(len(inds), need)
            floored[rng.choice(inds, size=add, replace=False)] += 1
            need -= add
            if need == 0:
                break
    return floored.astype(int)


def stratified_split(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices: the split ``train_test_split(arange(N), test_size=n_test,
    stratify=labels, random_state=seed)`` makes (``StratifiedShuffleSplit``: the same random draws in
    the same order from ``np.random.RandomState(seed)``, whose stream numpy keeps fixed)."""
    classes, y_indices, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, len(labels) - n_test, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train, test = [], []
    for i in range(len(classes)):
        perm = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(perm[: n_i[i]])
        test.extend(perm[n_i[i]: n_i[i] + t_i[i]])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))


def _load_once() -> None:
    """Decode and split once per process; the cache keeps the two splits (uint8), not the whole set."""
    if not _cache:
        images, labels = read_digits(digits_file())
        x = torch.from_numpy(images.astype(np.float32) * (255.0 / 16.0))[:, None]  # (N, 1, 8, 8)
        x = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)  # (N, 1, 32, 32)
        x = x.round_().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).numpy()  # expand: a view, no copy
        train, test = stratified_split(labels, n_test=360, seed=0)
        _cache.update(train_images=x[train], train_labels=labels[train],  # fancy indexing copies: contiguous
                      test_images=x[test], test_labels=labels[test])


def load_digits32(train: bool = True) -> ArrayDataset:
    """scikit-learn digits, 32×32 RGB uint8; 1 437 training or 360 test images (see module docstring).

    Args:
        train: training split, else test split.
    """
    _load_once()
    split = "train" if train else "test"
    return ArrayDataset(_cache[f"{split}_images"], _cache[f"{split}_labels"], [str(d) for d in range(10)],
                        recipes.DIGITS, "digits", train)
