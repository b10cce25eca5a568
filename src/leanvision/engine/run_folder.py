"""A run folder (``project/name``): what it holds, how each file is written, how it is cleared.

Every file goes through the atomic writer of :mod:`.checkpoint` (temporary file, fsync, rename, fsync of
the folder), so a kill leaves whole files only. ``metrics.jsonl``, ``metrics.csv`` and ``results.png`` (its
curves, :mod:`.plots`) are rewritten from the trainer's history after every epoch, the same history that
``last.pt`` holds: after a kill and a resume each epoch appears exactly once. JSON is strict: a non-finite
number is written as ``null`` (``-Infinity`` is not JSON).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
from pathlib import Path

import yaml

from .checkpoint import atomic_write_text

# the files the trainers write into a run folder (``--overwrite`` removes them before a new run starts)
ARTEFACTS = ("config.yaml", "metrics.csv", "metrics.jsonl", "results.json", "last.pt", "best.pt", "results.png",
             "val_batch0_pred.jpg", "PR_curve.png", "F1_curve.png", "confusion_matrix_normalized.png")


# the temporary files of the atomic writer (tempfile.mkstemp(prefix=".NAME.", suffix=".tmp")): ".last.pt.k2j4_x8a.tmp"
_TEMP = re.compile("|".join(rf"\.{re.escape(name)}\.[A-Za-z0-9_]+\.tmp" for name in ARTEFACTS))


def remove_stale_temp_files(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files that a kill during an atomic write left in ``run_dir``; returns them."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    stale = [p for p in run_dir.iterdir() if _TEMP.fullmatch(p.name) and p.is_file()]
    for p in stale:
        p.unlink()
    return stale


def clear_run(run_dir: str | Path) -> None:
    """Remove a previous run's artefacts (and its ``tensorboard/`` events) from ``run_dir``; other files stay."""
    run_dir = Path(run_dir)
    for name in ARTEFACTS:
        (run_dir / name).unlink(missing_ok=True)
    if (run_dir / "tensorboard").is_dir():
        shutil.rmtree(run_dir / "tensorboard")


def plain(obj):
    """``obj`` with non-finite floats as None and tuples as lists, so that strict JSON can hold it."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_text(obj, default=None) -> str:
    """Strict JSON (``allow_nan=False``) of :func:`plain` ``(obj)``."""
    return json.dumps(plain(obj), indent=2, allow_nan=False, default=default)


def write_json(path: str | Path, obj, default=None) -> None:
    atomic_write_text(path, json_text(obj, default) + "\n")


def write_config(run_dir: str | Path, values: dict) -> None:
    """``config.yaml``: the effective values of the run (loadable again with ``--config``)."""
    atomic_write_text(Path(run_dir) / "config.yaml", yaml.safe_dump(values, sort_keys=False))


def write_metrics(run_dir: str | Path, history: list[dict]) -> None:
    """``metrics.jsonl`` (one JSON row per epoch) and ``metrics.csv`` (columns: every key seen), from ``history``."""
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "metrics.jsonl",
                      "".join(json.dumps(plain(row), allow_nan=False) + "\n" for row in history))
    keys = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())


def output_folder(project: str | Path, name: str, overwrite: bool = False) -> Path:
    """``project/name`` for a command's outputs (val, predict): a new folder ``name2``, ``name3`` ... when it holds
    files already, unless ``overwrite`` (then files of the same name are replaced, others stay)."""
    out = Path(project) / name
    if out.exists() and any(out.iterdir()) and not overwrite:
        n = 2
        while (Path(project) / f"{name}{n}").exists():
            n += 1
        out = Path(project) / f"{name}{n}"
    return out
