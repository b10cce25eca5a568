"""One writer for checkpoints and every run artefact: a temporary file, fsync, rename, fsync of the folder.

A crash or kill during a save leaves the previous file intact; loading never unpickles
arbitrary objects (``weights_only=True``), so a downloaded checkpoint cannot run code.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import torch


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or belongs to another model/method."""


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


def _atomic_write(path: str | os.PathLike, write: Callable[[IO], None], binary: bool) -> None:
    """``write(f)`` into a temporary file beside ``path``, fsync it, rename it into place, fsync the folder.

    A crash or kill at any point leaves either the old file or the new one, never a mix; a kill before the
    rename can leave a ``.NAME.*.tmp`` file (``run_folder.remove_stale_temp_files`` clears those of a run).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes the file private (0600); give it the permissions open() would
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (see :func:`_atomic_write`)."""
    _atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`_atomic_write`)."""
    _atomic_write(path, lambda f: f.write(text), binary=False)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint dict safely; errors name the file and say what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; pass the path of a last.pt/best.pt file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, foreign pickle, not a torch file
        raise CheckpointError(f"{path}: not a readable leanvision checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(ckpt).__name__}")
    return ckpt


def rng_state() -> dict:
    """All random generators a training run draws from, as tensors and plain lists."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, pystate, pygauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "gauss": gauss, "kind": kind},
        "python": {"version": version, "state": list(pystate), "gauss": pygauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
