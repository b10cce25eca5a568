"""One writer for checkpoints and every run artefact: a temporary file, fsync, rename, fsync of the folder.

A crash or kill during a save leaves the previous file intact; loading never unpickles
arbitrary objects (``weights_only=True``), so a downloaded checkpoint cannot run code.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (see :func:`_atomic_write`)."""
    _atomic_write(path, lambda f: torch.save(obj, f), binary=True)


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


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint dict safely; errors name the file, say what it is and what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; pass the path of a last.pt/best.pt file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files: the error says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, foreign pickle, not a torch file
        raise CheckpointError(f"{path}: not a readable leanvision checkpoint: {_unreadable(path, e)}") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(ckpt).__name__}")
    return ckpt


def _unreadable(path: Path, e: Exception) -> str:
    """What a file that ``torch.load(weights_only=True)`` refused probably is, in a few words."""
    if path.stat().st_size == 0:
        return "the file is empty"
    if isinstance(e, pickle.UnpicklingError):
        return ("it holds Python objects beyond tensors and plain data (a pickled model, or a file of another "
                "tool); leanvision never unpickles code, pass a best.pt/last.pt written by leanvision")
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "zip archive" in first or "central directory" in first:
        return "the file is truncated or damaged (an interrupted copy or download?); copy it again"
    return f"not a file written by torch.save ({type(e).__name__}: {first[:200]})"


def describe_checkpoint(ckpt: dict) -> tuple[str | None, str]:
    """(task, description) of a loaded checkpoint dict, for loaders and their error messages.

    Returns:
        task: ``"classify"`` for ``leanvision train`` checkpoints, ``"detect"`` for ``leanvision detect train``
            ones, None for anything else; description: what it is, e.g. "a detector checkpoint (yolov8n, 3
            classes) of `leanvision detect train`" or "a bare state_dict (weights only, no model name or classes)".
    """
    cfg = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    has_weights = isinstance(ckpt.get("method"), dict)
    if has_weights and isinstance(cfg.get("detector"), dict):
        spec = cfg["detector"]
        return "detect", (f"a detector checkpoint ({spec.get('name')}, {spec.get('nc')} classes) of "
                          "`leanvision detect train`")
    if has_weights and isinstance(cfg.get("model"), str) and isinstance(cfg.get("method"), str):
        return "classify", (f"a classifier checkpoint ({cfg['model']}, method {cfg['method']}) of "
                            "`leanvision train`")
    if ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        return None, (f"a bare state_dict ({len(ckpt)} tensors, no model name, classes or normalisation), "
                      "not a leanvision checkpoint")
    keys = ", ".join(sorted(map(str, ckpt))[:6]) + (", ..." if len(ckpt) > 6 else "")
    return None, f"a dict with keys {keys or '(none)'}, not a leanvision checkpoint (a file of another tool?)"


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
