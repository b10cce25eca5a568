"""Decoded-array cache: decode compressed images once, then load a .npz in about a second.

Default folder ``~/.cache/leanvision``; the ``LEANVISION_CACHE`` environment variable or a
``cache_dir=`` argument overrides it. An entry is keyed by the source (its resolved path, or for a
folder every image's relative path, with each file's size, mtime, ctime and inode) plus what was asked
of it, so editing or replacing the source makes a new entry: ctime and inode change whenever a file is
written, copied or moved in, even when a copy keeps the old mtime and size (``cp -p``, ``tar x``,
``rsync -a``). The key is also stored inside the entry and compared on loading, so an entry never
serves another source, whatever its file name. Entries are written to a temporary file and renamed,
so an interrupted build never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..ops.atomic import atomic_path


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir`` if given, else ``$LEANVISION_CACHE``, else ``~/.cache/leanvision``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("LEANVISION_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "leanvision"


_KEY = "__cache_key__"  # array name of the key inside an entry


def stat_key(path: str | os.PathLike) -> str:
    """What identifies one version of a file: size, mtime, ctime (ns) and inode."""
    st = os.stat(path)
    return f"{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


def file_key(path: Path) -> str:
    """Key of one source file: resolved path and :func:`stat_key`."""
    return f"{path.resolve()}|{stat_key(path)}"


def files_key(root: Path, relpaths: Iterable[str]) -> str:
    """Key of a set of files under ``root``: a hash of every relative path and its :func:`stat_key`."""
    h = hashlib.sha1(str(root.resolve()).encode("utf-8", "surrogateescape"))
    for rel in relpaths:
        h.update(f"{rel}|{stat_key(root / rel)}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _entry(key: str, label: str, cache_dir: str | os.PathLike | None) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:80]
    return cache_root(cache_dir) / f"{safe}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"


def load_cached(key: str, label: str, cache_dir: str | os.PathLike | None = None
                ) -> dict[str, np.ndarray] | None:
    """The arrays stored under ``key``, or None when there is no readable entry built from that key."""
    path = _entry(key, label, cache_dir)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        warnings.warn(f"cache entry {path} is unreadable ({e}); rebuilding it", stacklevel=2)
        return None
    stored = arrays.pop(_KEY, None)
    if stored is None or stored.shape != () or str(stored) != key:
        warnings.warn(f"cache entry {path} was not built from this source (its key differs); rebuilding it",
                      stacklevel=2)
        return None
    return arrays


def store_cached(key: str, label: str, arrays: dict[str, np.ndarray],
                 cache_dir: str | os.PathLike | None = None) -> None:
    """Store ``arrays`` (no object arrays) under ``key``: temporary file, then an atomic rename."""
    path = _entry(key, label, cache_dir)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays, **{_KEY: np.asarray(key)})
    except OSError as e:  # a read-only or full disk costs speed, not correctness
        warnings.warn(f"could not write cache entry {path} ({e}); set LEANVISION_CACHE to a writable "
                      f"folder to avoid decoding again", stacklevel=2)


def cached_arrays(
    key: str,
    label: str,
    build: Callable[[], dict[str, np.ndarray]],
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Load the arrays stored under ``key``, or ``build()`` them and store them.

    Args:
        key: identifies the source and the request (see :func:`file_key`, :func:`files_key`).
        label: readable prefix of the cache file name (e.g. "cifar10-jpg-train").
        build: returns a dict of numpy arrays (no object arrays) when the entry is missing.
        cache_dir: cache folder override (see :func:`cache_root`).
    """
    arrays = load_cached(key, label, cache_dir)
    if arrays is None:
        arrays = build()
        store_cached(key, label, arrays, cache_dir)
    return arrays
