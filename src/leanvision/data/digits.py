"""The bundled offline default: scikit-learn's digits as 32×32 RGB images.

scikit-learn ships 1 797 handwritten digits of 8×8 pixels with values 0..16 (10 classes) in
``sklearn/datasets/data/digits.csv.gz``. We scale them to 0..255, upsample ×4 bilinearly to 32×32 and
repeat the grey channel three times, so every CIFAR-sized model runs on them unchanged (torch's bilinear
``F.interpolate``, reproduced exactly in numpy: :func:`upsample_digits`).

Split (deterministic): the one ``sklearn.model_selection.train_test_split(test_size=360,
stratify=labels, random_state=0)`` gives -> 1 437 training and 360 test images, every class in the same
proportion in both. Recipe: the SVHN one (zero-pad 2, random crop 32, no flip since digits are not
mirror-symmetric, mean = std = 0.5).

The file is read with numpy and the split computed here (:func:`stratified_split`, the same draws from
the same ``RandomState``), without importing scikit-learn: its import (and scipy's parts it pulls in)
made ~70 MB of a training run's resident memory, more than the data (BENCHMARKS.md, "Memory: the outside
view"). ``tests/test_data_formats.py`` checks the images, labels and split against scikit-learn's
``load_digits`` and ``train_test_split`` followed by torch's ``F.interpolate`` (the reader before).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from ..ops.memory import trim_host_memory
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


def _bilinear_taps(n_in: int, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows and weights of ``F.interpolate(scale_factor=scale, mode="bilinear", align_corners=False)``
    along one axis: output i reads rows ``i0`` and ``i1`` with weights ``1 - lam`` and ``lam``."""
    src = np.maximum((np.arange(n_in * scale) + 0.5) / scale - 0.5, 0.0)  # torch clamps the left edge to 0
    i0 = np.floor(src).astype(np.int64)
    return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)


def upsample_digits(images: np.ndarray) -> np.ndarray:
    """(N, 8, 8) values 0..16 -> (N, 32, 32) uint8 0..255: scaled by 255/16, bilinear ×4, rounded half to even.

    The same numbers as torch's ``F.interpolate(..., scale_factor=4, mode="bilinear", align_corners=False)``
    on the scaled float32 images followed by ``round``: every weight is a multiple of 1/8 and every value
    p·255/16, so each sum is exact in float32 whatever the order, and the rounding is the same. Done in
    numpy because torch's kernels cost ~15 MB of their libraries' pages, resident for the whole run.
    """
    i0, i1, lam = _bilinear_taps(8, 4)
    v = images.astype(np.float32) * np.float32(255.0 / 16.0)
    rows = v[:, i0, :] * (1 - lam)[:, None] + v[:, i1, :] * lam[:, None]  # (N, 32, 8)
    del v
    out = rows[:, :, i0] * (1 - lam) + rows[:, :, i1] * lam  # (N, 32, 32)
    del rows
    return np.round(out, out=out).clip(0, 255, out=out).astype(np.uint8)


def _load_once() -> None:
    """Decode and split once per process; the cache keeps the two splits (uint8 RGB), not the whole set."""
    if not _cache:
        images, labels = read_digits(digits_file())
        grey = upsample_digits(images)  # (N, 32, 32)
        train, test = stratified_split(labels, n_test=360, seed=0)
        for split, idx in (("train", train), ("test", test)):
            _cache[f"{split}_images"] = np.repeat(grey[idx][:, None], 3, axis=1)  # (n, 3, 32, 32), contiguous
            _cache[f"{split}_labels"] = labels[idx]
        del images, grey
        trim_host_memory()  # the float temporaries' heap pages (glibc keeps them resident otherwise)


def load_digits32(train: bool = True) -> ArrayDataset:
    """scikit-learn digits, 32×32 RGB uint8; 1 437 training or 360 test images (see module docstring).

    Args:
        train: training split, else test split.
    """
    _load_once()
    split = "train" if train else "test"
    return ArrayDataset(_cache[f"{split}_images"], _cache[f"{split}_labels"], [str(d) for d in range(10)],
                        recipes.DIGITS, "digits", train)
