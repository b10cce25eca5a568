"""Listing a dataset folder: symlinks followed once, never into a loop, and file names that can be printed.

Both the classification folder trees (``folder.py``) and the detection splits (``detect/data/formats.py``)
list their images here, so they share one rule for links:

* A symlinked folder is followed (``train -> /big/disk/train`` is common) unless its real folder is
  already part of the listing: a link back to an ancestor (a loop) or to another folder of the same
  tree (an alias) is skipped, so no image is listed twice or under a second class. The tree's own
  folders are listed before any link is followed, so an alias never wins over the real folder.
* A symlinked file is listed like a file, unless its target lies inside the tree: the target is then
  listed in its own place, with its own label, and the link is skipped.
* Hidden files and folders (a leading ``.``: ``.git``, macOS's ``._x.jpg``) are ignored.
* A file or folder name that is not valid UTF-8 is an error naming it (bytes escaped): it could not be
  printed in any message, cached or written to a json, so it is refused before anything is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .base import DatasetError


def check_name(name: str, folder: str, error: type[Exception] = DatasetError) -> None:
    """Raise ``error`` naming ``folder`` and the name (undecodable bytes escaped) unless ``name`` is UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(name).decode("utf-8", "backslashreplace")
        where = os.fsencode(folder).decode("utf-8", "backslashreplace")
        raise error(f"{where}: file name '{shown}' is not valid UTF-8; rename it (e.g. convmv -f latin1 -t utf8)") \
            from None


def walk_files(root: str | os.PathLike, keep: Callable[[str], bool],
               error: type[Exception] = DatasetError) -> tuple[list[str], set[str], list[str]]:
    """Every file under ``root`` whose name ``keep`` accepts, with the rules of the module docstring.

    Args:
        root: the folder to list (itself may be a symlink).
        keep: file name (no folder) -> list it.
        error: exception type raised for a name that is not UTF-8 (the caller's error type).

    Returns:
        (sorted relative file paths, relative folder paths each ending in "/", skipped links as
        "link -> target" strings for a note); paths are "/"-separated, relative to ``root``.
    """
    root = Path(root)
    real_root = os.path.realpath(root)
    files, dirs, skipped = [], set(), []
    seen: set[tuple[int, int]] = set()
    pending: list[tuple[str, str]] = [("", str(root))]  # (relative path, path on disk) of folders to list
    links: list[tuple[str, str]] = []  # symlinked folders met, followed after the tree's own folders
    while pending or links:
        if not pending:  # every real folder is known now: follow the next link unless it is one of them
            rel, path = links.pop(0)
            target = os.path.realpath(path)
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in seen or real_root.startswith(target.rstrip(os.sep) + os.sep):
                skipped.append(f"{rel.rstrip('/')} -> {target}")  # a loop (an ancestor) or an alias
                continue
            pending.append((rel, path))
            dirs.add(rel)
            continue
        rel, path = pending.pop()
        try:
            st = os.stat(path)
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:  # unreadable folder or dangling link: nothing to list, as os.walk does
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        for e in entries:
            check_name(e.name, path, error)
            if e.name.startswith("."):
                continue
            sub = f"{rel}{e.name}"
            try:
                is_dir = e.is_dir()  # follows links
            except OSError:
                continue
            if is_dir:
                if e.is_symlink():
                    links.append((sub + "/", e.path))
                else:
                    dirs.add(sub + "/")
                    pending.append((sub + "/", e.path))
            elif keep(e.name):
                if e.is_symlink():
                    target = os.path.realpath(e.path)
                    if not os.path.isfile(target):
                        continue  # dangling link
                    if target.startswith(real_root + os.sep):
                        skipped.append(f"{sub} -> {target}")
                        continue
                files.append(sub)
    return sorted(files), dirs, skipped
