"""Dataset check (corrupt images, bad boxes, unknown classes) and the label cache.

:func:`check_dataset` looks at every sample and collects problems per file:

* image unreadable/corrupt (PIL ``verify`` plus a full decode of the header-declared size);
* label lines the reader could not parse (``sample["problems"]`` from :mod:`.formats`);
* boxes outside the image by more than ``tol`` pixels (for YOLO labels: coordinates out of [0, 1]);
* unknown class ids (outside ``0..nc-1``);
* duplicate boxes (same class and coordinates);
* zero-area boxes (x2 <= x1 or y2 <= y1).

``on_error="fail"`` raises one :class:`DatasetCheckError` listing every file and problem;
``on_error="skip"`` drops the bad boxes (corrupt images: the whole image) and warns once with a
summary. Boxes within ``tol`` pixels outside the image are clipped silently (rounding in exports).

:func:`load_yolo_dataset` = data.yaml -> checked samples per split, with a cache of parsed and
checked labels next to the labels folder (``labels/<split>.cache``; or in ``cache_dir``), written
atomically. The cache records what it was built from: a hash of every image and label file's path,
size, mtime, ctime and inode (``data.cache.stat_key``), and the image list itself; it is used only when
both match, and rebuilt otherwise (a damaged or foreign cache file with a warning).

A split none of whose images has a label file is an error, whatever ``on_error`` says: a missing
``labels/`` folder would otherwise train on background only (a single image without a label file
is an image without objects, as in YOLO).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ...data.cache import stat_key
from ...ops.atomic import atomic_write_text
from .dataset import load_rgb
from .formats import (
    DatasetFormatError,
    MissingSplitError,
    img2label_path,
    load_data_yaml,
    make_sample,
    read_yolo_split,
)

CACHE_VERSION = 2  # 2: images verified with the training decoder (OpenCV)
# Problems that make the whole sample unusable (not just one box) start with one of these;
# such images are dropped under on_error="skip" rather than trained on as background.
IMAGE_PROBLEM = ("image ", "malformed ", "annotation ", "label file unreadable")


class DatasetCheckError(ValueError):
    """The dataset check found problems and ``on_error="fail"``; the message lists every file."""


def verify_image(path: str | os.PathLike) -> str | None:
    """None if the image decodes, else a short reason. PIL's ``verify`` checks the structure but misses
    truncated data, which PIL's full decode catches (OpenCV's only warns); the decoder training uses
    (:func:`load_rgb`, OpenCV) must then read it too."""
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.load()
            w, h = im.size
        if w < 2 or h < 2:
            return f"image too small ({w}x{h})"
        load_rgb(str(path))
    except FileNotFoundError:
        return "image file not found"
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError...) for bad data
        return f"image unreadable or corrupt ({type(e).__name__}: {e})"
    return None


def check_sample(sample: dict, nc: int, verify: bool = True, tol: float = 1.0) -> tuple[dict, list[str], bool]:
    """Check one sample. Returns (cleaned sample, problems, image_ok).

    The cleaned sample keeps only good boxes (clipped to the image) and has no ``problems`` key.
    """
    problems = list(sample.get("problems", []))
    h, w = sample["shape"]
    image_ok = not any(p.startswith(IMAGE_PROBLEM) for p in problems)
    if verify and image_ok:
        reason = verify_image(sample["im_file"])
        if reason:
            problems.append(reason)
            image_ok = False
    cls, boxes = sample["cls"], sample["boxes"]
    keep = np.ones(len(cls), bool)
    for i, (c, b) in enumerate(zip(cls.tolist(), boxes.tolist())):
        x1, y1, x2, y2 = b
        if not np.all(np.isfinite(b)):
            problems.append(f"box {i}: non-finite coordinates {b}")
            keep[i] = False
        elif c < 0 or c >= nc:
            problems.append(f"box {i}: unknown class id {c} (valid 0..{nc - 1})")
            keep[i] = False
        elif x2 <= x1 or y2 <= y1:
            problems.append(f"box {i}: zero or negative area {[round(v, 2) for v in b]}")
            keep[i] = False
        elif h > 0 and w > 0 and (x1 < -tol or y1 < -tol or x2 > w + tol or y2 > h + tol):
            nb = [round(x1 / w, 4), round(y1 / h, 4), round(x2 / w, 4), round(y2 / h, 4)]
            problems.append(f"box {i}: outside the {w}x{h} image (normalised xyxy {nb}, must be in [0, 1])")
            keep[i] = False
    seen = set()
    for i in np.flatnonzero(keep):
        key = (int(cls[i]), *np.round(boxes[i], 3).tolist())
        if key in seen:
            problems.append(f"box {i}: duplicate of an earlier box (class {key[0]})")
            keep[i] = False
        seen.add(key)
    good = boxes[keep].copy()
    if h > 0 and w > 0 and len(good):
        good[:, [0, 2]] = good[:, [0, 2]].clip(0, w)
        good[:, [1, 3]] = good[:, [1, 3]].clip(0, h)
    clean = make_sample(sample["im_file"], sample["shape"], cls[keep], good)
    del clean["problems"]
    return clean, problems, image_ok


def check_dataset(
    samples: Sequence[dict],
    nc: int,
    on_error: str = "fail",
    verify_images: bool = True,
    tol: float = 1.0,
    what: str = "dataset",
) -> tuple[list[dict], dict[str, list[str]]]:
    """Check samples; returns (kept samples, {file: problems}).

    Args:
        samples: from any reader in :mod:`.formats`.
        nc: number of classes (valid ids 0..nc-1).
        on_error: "fail" (raise :class:`DatasetCheckError` listing all problems) or "skip".
        verify_images: decode each image with PIL (slow on big sets; :func:`load_yolo_dataset` caches it).
        tol: pixels a box may stick out of the image before it counts as a problem (it is clipped).
        what: name used in messages (e.g. the yaml path and split).
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got '{on_error}'")
    kept, report = [], {}
    for s in samples:
        clean, problems, image_ok = check_sample(s, nc, verify_images, tol)
        if problems:
            report[s["im_file"]] = problems
        if image_ok:
            kept.append(clean)
    if report:
        lines = [f"{f}: {'; '.join(p)}" for f, p in report.items()]
        if on_error == "fail":
            raise DatasetCheckError(
                f"{what}: {len(report)} file(s) with problems; fix them or pass on_error='skip' to drop the bad "
                "boxes/images:\n  " + "\n  ".join(lines)
            )
        n_img = len(samples) - len(kept)
        warnings.warn(
            f"{what}: skipped problems in {len(report)} file(s) ({n_img} image(s) dropped): "
            + " | ".join(lines[:5])
            + (" | ..." if len(lines) > 5 else ""),
            stacklevel=2,
        )
    return kept, report


# ----------------------------------------------------------------------------------------- cache


def _files_key(files: Sequence[str]) -> str:
    """Hash of the path and :func:`stat_key` of every image and label file; any edit, copy or move
    invalidates the cache."""
    h = hashlib.sha256()
    for f in files:
        for p in (f, img2label_path(f)):
            try:
                h.update(f"{p}|{stat_key(p)}\n".encode("utf-8", "surrogateescape"))
            except OSError:
                h.update(f"{p}|missing\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _to_json(samples: Sequence[dict]) -> list:
    return [
        {
            "im_file": s["im_file"],
            "shape": list(s["shape"]),
            "cls": s["cls"].tolist(),
            "boxes": s["boxes"].tolist(),
            "problems": s.get("problems", []),
        }
        for s in samples
    ]


def _from_json(rows: Sequence[dict]) -> list[dict]:
    return [make_sample(r["im_file"], r["shape"], r["cls"], r["boxes"], r["problems"]) for r in rows]


def _read_cache(path: Path, key: str, image_files: Sequence[str]) -> list[dict] | None:
    """The cached samples if ``path`` was built from ``key`` and holds exactly ``image_files``, else None
    (a stale cache silently, a damaged or foreign one with a warning naming it)."""
    try:
        data = json.loads(path.read_text())
        shaped = isinstance(data, dict) and isinstance(data.get("key"), str) and isinstance(data.get("samples"), list)
        if not shaped:
            raise ValueError("not a label cache")
        if data["key"] != key:
            return None  # built from other files or settings: rebuilt
        samples = _from_json(data["samples"])
        if [s["im_file"] for s in samples] != list(image_files):
            raise ValueError("its image list differs from the split's")
        return samples
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        warnings.warn(f"label cache {path} is damaged or belongs to another dataset ({e}); rebuilding it",
                      stacklevel=3)
        return None


def cache_path_for(image_files: Sequence[str], split: str, cache_dir: str | os.PathLike | None) -> Path:
    """Cache file: beside the first label file's folder, or ``cache_dir/<hash>-<split>.cache``."""
    if cache_dir is not None:
        tag = hashlib.sha1(str(Path(image_files[0]).parent).encode()).hexdigest()[:12]
        return Path(cache_dir) / f"{tag}-{split}.cache"
    folder = img2label_path(image_files[0]).parent
    # labels/train.cache as usual; a split that does not own its folder (txt lists, val == train
    # folder) gets labels/<folder>.<split>.cache so two splits never overwrite each other's cache
    return folder.with_suffix(".cache") if folder.name == split else folder.with_name(f"{folder.name}.{split}.cache")


def read_checked_split(
    image_files: Sequence[str],
    nc: int,
    split: str = "train",
    verify_images: bool = True,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """Parse and check (with ``on_error="skip"`` semantics stored) YOLO labels, via the cache.

    Returns raw samples whose ``problems`` include the check's findings, so the caller can still
    apply its own ``on_error`` policy without re-verifying images.
    """
    if not image_files:
        return []
    key = _files_key(image_files) + f"|nc={nc}|verify={verify_images}|v{CACHE_VERSION}"
    path = cache_path_for(image_files, split, cache_dir)
    if cache and path.is_file():
        cached = _read_cache(path, key, image_files)
        if cached is not None:
            return cached
    raw = read_yolo_split(image_files)
    if verify_images:  # fold the image check into the cached problems: decoding is the slow part
        for s in raw:
            if not any(p.startswith(IMAGE_PROBLEM) for p in s["problems"]):
                reason = verify_image(s["im_file"])
                if reason:
                    s["problems"].append(reason)
    if cache:
        try:
            atomic_write_text(path, json.dumps({"key": key, "samples": _to_json(raw)}))
        except OSError as e:  # read-only dataset folders are common; caching is an optimisation
            warnings.warn(f"could not write label cache {path} ({e}); pass cache_dir= to cache elsewhere", stacklevel=2)
    return raw


def load_yolo_dataset(
    data_yaml: str | os.PathLike,
    split: str = "train",
    on_error: str = "fail",
    verify_images: bool = True,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[list[dict], list[str]]:
    """data.yaml -> (checked samples of one split, class names). See the module docstring."""
    cfg = load_data_yaml(data_yaml, splits=(split,))
    files = cfg.get(split) or []
    if not files:
        raise MissingSplitError(f"{data_yaml}: split '{split}' is empty or missing; set '{split}:' in the yaml")
    if not any(img2label_path(f).is_file() for f in files):
        raise DatasetFormatError(
            f"{data_yaml}: none of the {len(files)} '{split}' images has a label file (the first would be "
            f"{img2label_path(files[0])}); YOLO labels live where the last /images/ folder of an image path is "
            "replaced by /labels/, one .txt per image")
    nc = len(cfg["names"])
    raw = read_checked_split(files, nc, split, verify_images, cache, cache_dir)
    # images already verified (or not) above; the check below only looks at labels
    kept, _ = check_dataset(raw, nc, on_error=on_error, verify_images=False, what=f"{data_yaml} [{split}]")
    return kept, cfg["names"]
