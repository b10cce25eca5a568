"""ImageNet-style folder trees (``<split>/<class>/<image>``), given as a folder or a .tar/.tar.gz of one.

Layout: the root holds ``train/`` and ``test/`` or ``val/``, each with one folder per class; or the
root is one split itself (its sub-folders are classes), used whatever ``train`` says. One top-level
folder wrapping all of it (as many archives have) is skipped. Class names and labels come from the
training split's folders in sorted order (label = index); images are sorted by relative path, so
index i of a split is its i-th image path in sorted order. Files without an image extension and
hidden files are ignored, like torchvision's ImageFolder; images may sit deeper inside a class folder.

Small or large: a tree whose first image is at most ``SMALL_MAX`` = 64 pixels on its longer side
(CIFAR, SVHN, downsampled ImageNet) is decoded once into memory (cached as .npz, see ``cache.py``)
and augmented batch-wise on the device with the CIFAR recipe scaled to its size; larger images
(ImageNet) are streamed from disk with the ImageNet recipe, an archive being extracted once into the
cache folder. ``in_memory=True|False`` overrides the choice.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from . import recipes
from ._decode import decode_all, image_size
from .base import ArrayDataset, DatasetError, DataSpec
from .cache import cache_root, cached_arrays, file_key, files_key, load_cached, store_cached
from .files import is_archive, open_tar
from .walk import check_name, walk_files

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SMALL_MAX = 64  # px, longer side; 64x64x3 bytes x 100k images is 1.2 GB, still fine in memory
_SPLITS = ("train", "test", "val")


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMG_EXTENSIONS)


def _resolve_layout(files: list[str], dirs: set[str], source: str, train: bool,
                    split: str | None) -> tuple[list[str], list[int], list[str]]:
    """Pick the split's images and labels from every image path of the tree (relative, '/'-separated).

    Returns:
        (sorted image paths, their labels, class names)
    """
    if not files:
        raise DatasetError(f"{source}: no images ({', '.join(IMG_EXTENSIONS)}) found; expected "
                           f"train/<class>/<image> and test/<class>/<image> (or val/)")
    top = ""
    firsts = {f.split("/", 1)[0] for f in files}
    if len(firsts) == 1 and not firsts & set(_SPLITS) and all(f.count("/") >= 2 for f in files):
        # One folder wrapping the whole tree (wrapper/<split>/<class>/... or wrapper/<class>/<image>): a
        # lone class folder with sub-folders would be read the same way, but one class cannot be trained.
        top = next(iter(firsts)) + "/"
    comps = {f[len(top):].split("/", 1)[0] for f in files if f[len(top):].count("/") >= 1}
    if comps & set(_SPLITS):
        name = split or ("train" if train else ("test" if "test" in comps else "val"))
        if name not in comps:
            have = ", ".join(f"{c}/" for c in sorted(comps))
            raise DatasetError(f"{source}: no {top}{name}/ folder with images (has {have}); "
                               f"expected {top}{name}/<class>/<image>, or pass split= one of those")
        prefix = f"{top}{name}/"
        class_prefix = f"{top}train/" if "train" in comps else prefix
    elif split is not None:
        raise DatasetError(f"{source}: split={split!r} given but the tree has no train/test/val folders")
    else:
        prefix = class_prefix = top

    def classes_under(p: str, where: list[str]) -> list[str]:
        names = {f[len(p):].split("/", 1)[0] for f in where if f.startswith(p) and f[len(p):].count("/") >= 1}
        empty = sorted(d for d in dirs if d.startswith(p) and d[len(p):] and "/" not in d[len(p):].rstrip("/")
                       and d[len(p):].rstrip("/") not in names)
        if empty:
            raise DatasetError(f"{source}: class folder {empty[0]} has no images "
                               f"({', '.join(IMG_EXTENSIONS)}); remove it or add images")
        return sorted(names)

    split_files = sorted(f for f in files if f.startswith(prefix))
    loose = [f for f in split_files if "/" not in f[len(prefix):]]
    if loose:
        raise DatasetError(f"{source}: image {loose[0]} sits directly in {prefix or 'the root'}; expected "
                           f"{prefix}<class>/<image>, one folder per class")
    classes = classes_under(class_prefix, files)
    own = classes_under(prefix, split_files) if prefix != class_prefix else classes
    unknown = sorted(set(own) - set(classes))
    if unknown:
        raise DatasetError(f"{source}: class folder {prefix}{unknown[0]} has no counterpart in "
                           f"{class_prefix}; every split needs the training split's class folders")
    if len(classes) < 2:
        found = f"only one class folder ({class_prefix}{classes[0]}/)" if classes else "no class folders"
        raise DatasetError(f"{source}: {found}; a classifier needs at least two classes, one folder per class")
    index = {c: i for i, c in enumerate(classes)}
    labels = [index[f[len(prefix):].split("/", 1)[0]] for f in split_files]
    return split_files, labels, classes


def _scan_dir(root: Path) -> tuple[list[str], set[str]]:
    """Images and folders of a tree, symlinks followed once and never into a loop (see ``walk.py``)."""
    files, dirs, skipped = walk_files(root, _is_image)
    if skipped:
        print(f"note: {root}: skipped {len(skipped)} symlink(s) into folders or files already in the tree, so "
              f"no image is read twice or under two classes (e.g. {skipped[0]})")
    return files, dirs


def _scan_tar(path: Path, keep_bytes: bool | None) -> tuple[list[str], set[str], dict[str, bytes], bool]:
    """One streaming pass over an archive: image names, folder names and, for small images, their bytes.

    Args:
        keep_bytes: True/False forces keeping the bytes; None keeps them while the first image is small.

    Returns:
        (image names, folder names, name -> bytes, whether bytes were kept)
    """
    files, dirs, blobs = [], set(), {}
    keep = keep_bytes
    with open_tar(path) as tf:
        try:
            for m in tf:
                if m.isdir():
                    dirs.add(m.name.rstrip("/") + "/")
                elif m.isfile() and _is_image(m.name):
                    check_name(m.name, str(path))
                    files.append(m.name)
                    if keep is not False:
                        data = tf.extractfile(m).read()
                        if keep is None:
                            try:
                                keep = max(image_size(data)) <= SMALL_MAX
                            except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
                                raise DatasetError(f"{path}: member {m.name} is not a readable image ({e}); "
                                                   f"replace it in the archive") from e
                        if keep:
                            blobs[m.name] = data
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DatasetError(f"{path}: archive is truncated or damaged ({e}); recreate or download it "
                               f"again") from e
    for f in files:  # archives may omit folder entries
        parts = f.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) + "/" for i in range(len(parts)))
    return files, dirs, blobs, bool(keep)


def _extract_once(path: Path, cache_dir: str | os.PathLike | None) -> Path:
    """Extract a large-image archive into the cache folder once (temp folder then rename)."""
    import hashlib

    root = cache_root(cache_dir)
    digest = hashlib.sha1(file_key(path).encode()).hexdigest()[:16]
    dest = root / f"extracted-{path.name.split('.')[0]}-{digest}"
    if dest.is_dir():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        with tarfile.open(path, "r:*") as tf:
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(tmp, **kw)
        os.replace(tmp, dest)
    except (tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetError(f"{path}: could not extract into {root} ({e}); check the archive and the free "
                           f"space") from e
    return dest


class FolderDataset(torch.utils.data.Dataset):
    """A folder tree streamed from disk (large images). Items are (RGB PIL image, label).

    Args:
        root: folder the paths are relative to.
        paths: image paths relative to ``root``, sorted.
        labels: label of every path.
        classes: class names (label i means ``classes[i]``).
        spec: recipe (ImageNet by default); the loader builds the transforms from it.
        name: name for logs (the source path).
        train: which split this is.
    """

    in_memory = False

    def __init__(self, root: Path, paths: Sequence[str], labels: Sequence[int], classes: Sequence[str],
                 spec: DataSpec, name: str, train: bool) -> None:
        self.root = Path(root)
        self.paths = list(paths)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.classes = list(classes)
        self.spec = spec
        self.name = name
        self.train = train

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        path = self.root / self.paths[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            raise DatasetError(f"image {path} cannot be decoded ({type(e).__name__}: {e}); delete or "
                               f"replace it") from e
        return img, int(self.labels[i])

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> FolderDataset:
        """The samples at ``indices`` (in that order), as a dataset of the same kind and recipe."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise DatasetError(f"{self.name}: subset indices must be in 0..{len(self) - 1}")
        return FolderDataset(self.root, [self.paths[i] for i in idx], self.labels[idx].tolist(), self.classes,
                             self.spec, self.name, self.train)

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return (f"FolderDataset({self.name!r}, {split}, {len(self)} images streamed from {self.root}, "
                f"{self.num_classes} classes; {self.spec.describe()})")


def load_folder(path: str | os.PathLike, train: bool = True, *, split: str | None = None,
                in_memory: bool | None = None, spec: DataSpec | None = None,
                cache_dir: str | os.PathLike | None = None,
                decode_workers: int | None = None) -> ArrayDataset | FolderDataset:
    """A folder tree (or a .tar/.tar.gz of one) as an in-memory or a streamed dataset.

    Args:
        path: the tree's root folder, or an archive of it.
        train: training split (``train/``), else ``test/`` (or ``val/`` when there is no test/).
        split: explicit split folder name ("train", "test", "val") instead of the ``train`` choice.
        in_memory: None decides by image size (``SMALL_MAX``); True decodes into memory; False streams.
        spec: recipe override (default: :func:`recipes.small_folder_spec` in memory, ImageNet streamed).
        cache_dir: decoded-array cache folder override (see ``cache.py``).
        decode_workers: processes decoding images on the first load (default up to 2).
    """
    path = Path(path).expanduser()
    source = str(path)
    if not path.exists():
        raise DatasetError(f"{path}: not found; expected a folder tree <split>/<class>/<image> or a "
                           f".tar/.tar.gz of one")
    if path.is_file() and not is_archive(path):
        raise DatasetError(f"{path}: not a folder or a .tar/.tar.gz archive; expected a tree "
                           f"<split>/<class>/<image> or an archive of one")
    label = f"{path.name.split('.')[0]}-{split or ('train' if train else 'test')}"
    request = f"|train={train}|split={split}"

    if path.is_file():
        key = file_key(path) + request
        if in_memory is not False and (arrays := load_cached(key, label, cache_dir)) is not None:
            return _array_dataset(arrays, source, train, spec)
        files, dirs, blobs, small = _scan_tar(path, in_memory)
        paths, labels, classes = _resolve_layout(files, dirs, source, train, split)
        if small:
            arrays = _decode_arrays([blobs[p] for p in paths], paths, labels, classes, source, decode_workers)
            store_cached(key, label, arrays, cache_dir)
            return _array_dataset(arrays, source, train, spec)
        root = _extract_once(path, cache_dir)
        return FolderDataset(root, paths, labels, classes, spec or recipes.IMAGENET, source, train)

    files, dirs = _scan_dir(path)
    paths, labels, classes = _resolve_layout(files, dirs, source, train, split)
    if in_memory is None:
        try:
            in_memory = max(image_size(str(path / paths[0]))) <= SMALL_MAX
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            raise DatasetError(f"image {path / paths[0]} cannot be decoded ({e}); delete or replace "
                               f"it") from e
    if not in_memory:
        return FolderDataset(path, paths, labels, classes, spec or recipes.IMAGENET, source, train)
    key = files_key(path, paths) + request
    arrays = cached_arrays(key, label, lambda: _decode_arrays([str(path / p) for p in paths], paths, labels,
                                                             classes, source, decode_workers), cache_dir)
    return _array_dataset(arrays, source, train, spec)


def _decode_arrays(items, paths, labels, classes, source, workers) -> dict[str, np.ndarray]:
    first = items[0]
    try:
        w, h = image_size(first)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DatasetError(f"image {source}/{paths[0]} cannot be decoded ({e}); delete or replace it") from e
    names = [f"{source}/{p}" for p in paths]
    images = decode_all(items, names, (h, w), workers)
    return {"images": images, "labels": np.asarray(labels, np.int64), "classes": np.asarray(classes),
            "paths": np.asarray(paths)}


def _array_dataset(arrays: dict[str, np.ndarray], source: str, train: bool,
                   spec: DataSpec | None) -> ArrayDataset:
    images = arrays["images"]
    spec = spec or recipes.small_folder_spec(images.shape[2])
    return ArrayDataset(images, arrays["labels"], [str(c) for c in arrays["classes"]], spec, source, train,
                        [str(p) for p in arrays["paths"]])
