"""Checkpoints: saved with the one atomic writer (:mod:`leanvision.ops.atomic`: a temporary file, fsync, rename,
fsync of the folder; its functions are importable from here too), loaded safely.

A crash or kill during a save leaves the previous file intact; loading never unpickles
arbitrary objects (``weights_only=True``), so a downloaded checkpoint cannot run code.
"""

from __future__ import annotations

import os
import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from ..ops import atomic
from ..ops.atomic import (  # noqa: F401 - the writers' old home, imported from here by the layers above
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
)


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or belongs to another model/method."""


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (see :func:`leanvision.ops.atomic._atomic_write`)."""
    atomic._atomic_write(path, lambda f: torch.save(obj, f), binary=True)


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
