"""``build_dataset``: one entry point for named datasets and paths."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..registry import Registry
from .base import ArrayDataset, DatasetError, DataSpec
from .cifar import load_cifar10, load_cifar100
from .digits import load_digits32
from .files import is_archive
from .folder import FolderDataset, load_folder
from .stl10 import load_stl10
from .svhn import load_svhn


def _needs_root(name: str, what: str, loader: Callable) -> Callable:
    def build(root=None, train=True, **kw):
        if root is None:
            raise DatasetError(f"dataset {name!r} needs root= the folder (or archive) holding {what}; "
                               f"leanvision downloads nothing")
        return loader(root, train=train, **kw)

    return build


def _imagenet(root=None, train=True, **kw):
    if root is None:
        raise DatasetError("dataset 'imagenet' needs root= a folder with train/<class>/ and val/<class>/ "
                           "(or a .tar of one)")
    return load_folder(root, train=train, **kw)


DATASETS: Registry = Registry("dataset", normalize=str.lower)
DATASETS.add("cifar10", _needs_root("cifar10", "cifar-10-batches-py (python version)", load_cifar10))
DATASETS.add("cifar100", _needs_root("cifar100", "cifar-100-python (python version)", load_cifar100))
DATASETS.add("svhn", _needs_root("svhn", "train_32x32.mat / test_32x32.mat", load_svhn))
DATASETS.add("stl10", _needs_root("stl10", "stl10_binary/ (train_X.bin, train_y.bin, ...)", load_stl10))
DATASETS.add("imagenet", _imagenet)
DATASETS.add("digits", lambda root=None, train=True: load_digits32(train=train))

# Files that identify an official release inside a folder given as a path.
_MARKERS = {"batches.meta": "cifar10", "data_batch_1": "cifar10",
            "train_32x32.mat": "svhn", "test_32x32.mat": "svhn",
            "train_X.bin": "stl10", "test_X.bin": "stl10"}


def list_datasets() -> list[str]:
    """Dataset names accepted by :func:`build_dataset` (besides any path)."""
    return DATASETS.names()


def _official_format(path: Path) -> str | None:
    """Name of the official release found in folder ``path`` (or its standard sub-folder), if any."""
    for base in (path, path / "cifar-10-batches-py", path / "cifar-100-python", path / "stl10_binary"):
        if not base.is_dir():
            continue
        if (base / "meta").is_file() and (base / "train").is_file():
            return "cifar100"
        for marker, name in _MARKERS.items():
            if (base / marker).is_file():
                return name
    return None


def build_dataset(name_or_path: str | os.PathLike, train: bool = True, *,
                  root: str | os.PathLike | None = None, spec: DataSpec | None = None,
                  **kwargs) -> ArrayDataset | FolderDataset:
    """Build a classification dataset by name or from a path.

    Args:
        name_or_path: one of :func:`list_datasets` (cifar10, cifar100, svhn, stl10, imagenet, digits),
            or a path: a folder tree ``<split>/<class>/<image>`` or a .tar/.tar.gz of one (such as
            ``../shared/datasets/cifar10-jpg.tar.gz``), or a folder holding an official
            CIFAR/SVHN/STL-10 release (detected by its files).
        train: training split, else the test (or val) split.
        root: where a named dataset's files are (not used by "digits"; for a path, the path is the root).
        spec: recipe override (normalisation and augmentation); default per dataset, see ``recipes.py``.
        **kwargs: passed on: ``extra=`` (svhn); ``split=``, ``in_memory=``, ``cache_dir=``,
            ``decode_workers=`` (folder trees and imagenet).

    Returns:
        an :class:`ArrayDataset` (in memory) or a :class:`FolderDataset` (streamed), both with
        ``classes``, ``num_classes``, ``spec``, ``subset(indices)`` and ``len()``.
    """
    key = str(name_or_path)
    if key in DATASETS:
        try:
            ds = DATASETS.get(key)(root=root, train=train, **kwargs)
        except TypeError as e:  # an option this dataset does not take
            raise DatasetError(f"dataset {key!r} does not take {', '.join(map(repr, kwargs))}: {e}") from e
    else:
        path = Path(key).expanduser()
        looks_like_path = os.sep in key or "/" in key or path.exists() or is_archive(path)
        if not looks_like_path:
            raise DatasetError(f"unknown dataset {key!r}; valid names: {', '.join(list_datasets())}, or a "
                               f"path to a folder tree <split>/<class>/<image> or a .tar/.tar.gz of one")
        if root is not None:
            raise DatasetError(f"root= is for named datasets; {key!r} is a path already")
        official = _official_format(path) if path.is_dir() else None
        if official:
            ds = DATASETS.get(official)(root=path, train=train, **kwargs)
        else:
            ds = load_folder(path, train=train, spec=spec, **kwargs)
    if spec is not None and ds.spec != spec:
        ds.spec = spec
    return ds
