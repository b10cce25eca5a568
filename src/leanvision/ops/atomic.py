"""One atomic writer for every file leanvision writes: a temporary file beside the target, fsync, rename, fsync of
the folder. A crash or kill at any point leaves the old file or the new one, never a mix.

On layer 0 so that every layer can use it: run artefacts and checkpoints (:mod:`leanvision.engine.checkpoint`
adds ``atomic_save`` for ``torch.save``), reports, exports and caches such as the timm check's.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename inside ``folder`` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not support fsync on folders
        pass
    finally:
        os.close(fd)


@contextmanager
def _replaced_on_success(path: Path, suffix: str) -> Iterator[str]:
    """A temporary file beside ``path`` (with the permissions ``open()`` would give): renamed to ``path`` when the
    block ends without an error, deleted when it raises; the folder is fsynced after the rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes the file private (0600)
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)


def _atomic_write(path: str | os.PathLike, write: Callable[[IO], None], binary: bool) -> None:
    """``write(f)`` into a temporary file beside ``path``, fsync it, rename it into place, fsync the folder.

    A crash or kill at any point leaves either the old file or the new one, never a mix; a kill before the
    rename can leave a ``.NAME.*.tmp`` file (``run_folder.remove_stale_temp_files`` clears those of a run).
    """
    with _replaced_on_success(Path(path), ".tmp") as tmp:
        with open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`_atomic_write`)."""
    _atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`_atomic_write`); e.g. a PNG rendered into memory."""
    _atomic_write(path, lambda f: f.write(data), binary=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside ``path`` for writers that need a file name or write for a long time (a video
    encoder, a JSON-lines log that grows while a video is read): renamed to ``path`` when the block ends without
    an error, deleted when it raises, so ``path`` is never half-written. The temporary name ends in ``.tmp``
    plus ``path``'s own suffix (``.site.mp4.k2j4.tmp.mp4``), so OpenCV still picks the container by extension.
    """
    path = Path(path)
    with _replaced_on_success(path, f".tmp{path.suffix}") as tmp:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
