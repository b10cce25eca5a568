"""Reading the files of an official release from a folder or from a .tar/.tar.gz of it."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .base import DatasetError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def open_tar(path: Path, stream: bool = True) -> tarfile.TarFile:
    """Open ``path`` as a tar archive; a damaged or non-tar file raises a :class:`DatasetError`.

    Args:
        stream: read members in archive order without seeking ("r|*"), the fast way through a .gz.
    """
    try:
        return tarfile.open(path, "r|*" if stream else "r:*")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DatasetError(f"{path}: cannot open as a .tar/.tar.gz archive ({e}); "
                           f"check the file is complete and really a tar archive") from e


def read_release(root: Path, folder: str, names: list[str], what: str) -> dict[str, Callable[[], BinaryIO]]:
    """Find the files ``names`` of an official release under ``root``.

    ``root`` may be the release folder itself, its parent (holding ``folder``), or an archive of
    either (as downloaded). Archive members are read in one pass into memory.

    Args:
        root: folder or archive given by the user.
        folder: the release's own folder name (e.g. "cifar-10-batches-py").
        names: file names needed.
        what: dataset description for messages (e.g. "CIFAR-10 (python version)").

    Returns:
        name -> a function opening that file for binary reading.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: not found; pass root= the folder (or archive) holding {what} "
                           f"files {', '.join(names)}")
    if root.is_dir():
        for base in (root, root / folder):
            if all((base / n).is_file() for n in names):
                return {n: (lambda p=base / n: open(p, "rb")) for n in names}
        missing = [n for n in names if not (root / n).is_file() and not (root / folder / n).is_file()]
        raise DatasetError(f"{root}: missing {', '.join(missing)}; expected the {what} files "
                           f"{', '.join(names)} in this folder or in {folder}/")
    if not is_archive(root):
        raise DatasetError(f"{root}: expected a folder or .tar/.tar.gz archive with the {what} files "
                           f"{', '.join(names)}")
    found: dict[str, bytes] = {}
    with open_tar(root) as tf:
        try:
            for m in tf:
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in names and base not in found:
                    found[base] = tf.extractfile(m).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DatasetError(f"{root}: archive is truncated or damaged ({e}); download it again") from e
    missing = [n for n in names if n not in found]
    if missing:
        raise DatasetError(f"{root}: archive has no {', '.join(missing)}; expected the {what} files "
                           f"{', '.join(names)}")
    return {n: (lambda b=found[n]: io.BytesIO(b)) for n in names}
