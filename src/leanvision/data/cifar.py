"""CIFAR-10 and CIFAR-100 in the official "python version" (pickled batches).

CIFAR-10: ``cifar-10-batches-py/`` with ``data_batch_1..5``, ``test_batch`` and ``batches.meta``;
CIFAR-100: ``cifar-100-python/`` with ``train``, ``test`` and ``meta`` (fine labels). Each batch is
a pickled dict with ``b'data'`` (N, 3072) uint8 (R, G, B planes of 32×32) and ``b'labels'`` or
``b'fine_labels'``. The folder, its parent or the downloaded .tar.gz may be given as ``root``.
The batches are read by :func:`plain_pickle.load_plain_pickle`, which rebuilds only plain data, so a
crafted batch file in a data folder cannot run code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..ops.plain_pickle import PlainPickleError, load_plain_pickle
from . import recipes
from .base import ArrayDataset, DatasetError, check_labels
from .files import read_release


def _unpickle(opener, source: str) -> dict:
    try:
        with opener() as f:
            d = load_plain_pickle(f, source, encoding="bytes")
    except PlainPickleError as e:
        raise DatasetError(f"{e}; expected a batch of the python version of CIFAR, download it again") from None
    if not isinstance(d, dict):
        raise DatasetError(f"{source}: expected a pickled dict, got {type(d).__name__}")
    return d


def _get(d: dict, key: str, source: str):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DatasetError(f"{source}: no key {key!r} (has {sorted(map(str, d))}); not a CIFAR batch file")


def _load(root: Path, folder: str, batches: list[str], meta: str, label_key: str, names_key: str,
          num_classes: int, what: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    files = read_release(root, folder, [*batches, meta], what)
    names = _get(_unpickle(files[meta], f"{root}/{meta}"), names_key, f"{root}/{meta}")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if len(classes) != num_classes:
        raise DatasetError(f"{root}/{meta}: {len(classes)} class names, expected {num_classes}")
    images, labels = [], []
    for b in batches:
        source = f"{root}/{b}"
        d = _unpickle(files[b], source)
        data = np.asarray(_get(d, "data", source))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DatasetError(f"{source}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
        lab = check_labels(_get(d, label_key, source), num_classes, source)
        if len(lab) != len(data):
            raise DatasetError(f"{source}: {len(data)} images but {len(lab)} labels")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels), classes


def load_cifar10(root: str | Path, train: bool = True) -> ArrayDataset:
    """CIFAR-10 (50 000 train / 10 000 test, 32×32) from the official python-version files.

    Args:
        root: ``cifar-10-batches-py`` folder, its parent, or ``cifar-10-python.tar.gz``.
        train: training batches 1-5, else ``test_batch``.
    """
    batches = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    images, labels, classes = _load(Path(root), "cifar-10-batches-py", batches, "batches.meta", "labels",
                                    "label_names", 10, "CIFAR-10 (python version)")
    return ArrayDataset(images, labels, classes, recipes.CIFAR10, "cifar10", train)


def load_cifar100(root: str | Path, train: bool = True) -> ArrayDataset:
    """CIFAR-100 (fine labels, 100 classes) from the official python-version files.

    Args:
        root: ``cifar-100-python`` folder, its parent, or ``cifar-100-python.tar.gz``.
        train: ``train`` file, else ``test``.
    """
    images, labels, classes = _load(Path(root), "cifar-100-python", ["train" if train else "test"], "meta",
                                    "fine_labels", "fine_label_names", 100, "CIFAR-100 (python version)")
    return ArrayDataset(images, labels, classes, recipes.CIFAR100, "cifar100", train)
