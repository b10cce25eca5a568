"""Construction-site datasets (SODA, MOCS, CIS) and conversion of VOC/COCO into YOLO format.

``convert_dataset(src, fmt, out)`` is the backend of ``leanvision detect convert``: it reads the
source with :mod:`.formats`, checks it (:func:`.check.check_dataset`), and writes::

    out/images/<split>/<file>     (symlink to the original when possible, else a copy)
    out/labels/<split>/<stem>.txt (cls cx cy w h, normalised, 6 decimals)
    out/<split>.txt               (the published file list of the split)
    out/data.yaml                 (path, train, val, [test], names)

Class lists (spelling as written in the datasets' annotation files, lower-case for SODA):

* SODA (VOC xml, 15 classes; Duan et al. 2022). No official split: a seeded 8:1:1 split is made.
* MOCS (COCO json, 13 classes; An et al. 2021). Official train/val/test jsons are used as given.
* CIS (COCO-style json): the class list is taken from the annotation file.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from ...engine.checkpoint import atomic_write_text
from .check import check_dataset
from .formats import DatasetFormatError, read_coco, read_voc, voc_split_ids

SODA_CLASSES = [
    "person",
    "helmet",
    "vest",
    "board",
    "wood",
    "rebar",
    "brick",
    "scaffold",
    "handcart",
    "cutter",
    "ebox",
    "hopper",
    "hook",
    "fence",
    "slogan",
]
# Spelling variants seen in public SODA converters and re-labelled copies -> canonical name.
SODA_ALIASES = {
    "electric box": "ebox",
    "e-box": "ebox",
    "electricbox": "ebox",
    "e_box": "ebox",
    "hand cart": "handcart",
    "hand-cart": "handcart",
    "scaffolding": "scaffold",
}

MOCS_CLASSES = [
    "Worker",
    "Static crane",
    "Hanging head",
    "Crane",
    "Roller",
    "Bulldozer",
    "Excavator",
    "Truck",
    "Loader",
    "Pump truck",
    "Concrete mixer",
    "Pile driving",
    "Other vehicle",
]

SPLITS = ("train", "val", "test")


def seeded_split(ids: Sequence[str], fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, list[str]]:
    """Split ids into train/val/test by a seeded permutation of the *sorted* ids (order-independent).

    Counts are floor(n * f) for val and test; train takes the rest, so no id is lost.
    """
    ids = sorted(ids)
    perm = np.random.default_rng(seed).permutation(len(ids))
    n_val, n_test = int(len(ids) * fractions[1]), int(len(ids) * fractions[2])
    shuffled = [ids[i] for i in perm]
    return {
        "val": sorted(shuffled[:n_val]),
        "test": sorted(shuffled[n_val : n_val + n_test]),
        "train": sorted(shuffled[n_val + n_test :]),
    }


def _link_or_copy(src: Path, dst: Path, copy: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if not copy:
        try:
            os.symlink(src.resolve(), dst)
            return
        except OSError:  # filesystems without symlinks (some Windows setups): fall back to copying
            pass
    shutil.copy2(src, dst)


def yolo_lines(sample: dict) -> list[str]:
    """Normalised ``cls cx cy w h`` lines of a sample (boxes are xyxy pixels)."""
    h, w = sample["shape"]
    lines = []
    for c, (x1, y1, x2, y2) in zip(sample["cls"].tolist(), sample["boxes"].tolist()):
        lines.append(f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    return lines


def write_yolo_dataset(
    splits: dict[str, list[dict]], names: Sequence[str], out: str | os.PathLike, copy_images: bool = False
) -> Path:
    """Write samples as a YOLO dataset; returns the path of the written ``data.yaml``.

    Image file names must be unique within a split (the stem names the label file).
    """
    out = Path(out)
    cfg: dict = {"path": str(out.resolve())}
    for split, samples in splits.items():
        stems = [Path(s["im_file"]).stem for s in samples]
        if len(set(stems)) != len(stems):
            dup = next(s for s in stems if stems.count(s) > 1)
            raise DatasetFormatError(
                f"split '{split}': two images share the name stem '{dup}'; YOLO labels are "
                "keyed by stem, rename one of them"
            )
        listed = []
        for s in samples:
            src = Path(s["im_file"])
            dst = out / "images" / split / src.name
            _link_or_copy(src, dst, copy_images)
            lab = out / "labels" / split / (src.stem + ".txt")
            lab.parent.mkdir(parents=True, exist_ok=True)
            lines = yolo_lines(s)
            lab.write_text("\n".join(lines) + ("\n" if lines else ""))
            listed.append(f"./images/{split}/{src.name}")
        (out / f"{split}.txt").write_text("\n".join(listed) + "\n")
        cfg[split] = f"{split}.txt"
    cfg["names"] = {i: n for i, n in enumerate(names)}
    yaml_path = out / "data.yaml"
    atomic_write_text(yaml_path, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return yaml_path


# ------------------------------------------------------------------------------- dataset readers


def read_soda(root: str | os.PathLike, keep_difficult: bool = False, seed: int = 0) -> tuple[dict, list[str]]:
    """SODA (VOC layout). Uses ``ImageSets/Main/{train,val,test}.txt`` when present, else a seeded 8:1:1 split.

    Returns ({split: samples}, SODA_CLASSES).
    """
    root = Path(root)
    if (root / "ImageSets" / "Main" / "train.txt").is_file():
        ids = {s: _ids_or_empty(root, s) for s in SPLITS}
    else:
        all_ids = [p.stem for p in (root / "Annotations").glob("*.xml")]
        if not all_ids:
            raise DatasetFormatError(f"{root}: no Annotations/*.xml found; point at the SODA VOC folder")
        ids = seeded_split(all_ids, seed=seed)
    splits = {
        s: read_voc(root, names=SODA_CLASSES, keep_difficult=keep_difficult, aliases=SODA_ALIASES, ids=ids[s])[0]
        for s in SPLITS
        if ids[s]
    }
    return splits, list(SODA_CLASSES)


def _ids_or_empty(root: Path, split: str) -> list[str]:
    return voc_split_ids(root, split) or []


def _coco_jsons(src: Path) -> dict[str, Path]:
    """Find train/val/test jsons: a single json is 'train'; in a folder, names containing the split."""
    if src.is_file():
        return {"train": src}
    found = {}
    for f in sorted(src.rglob("*.json")):
        for s in SPLITS:
            if s in f.stem.lower() and s not in found:
                found[s] = f
    if not found:
        raise DatasetFormatError(f"{src}: no COCO json found (expected names containing train/val/test)")
    return found


def read_coco_splits(
    src: str | os.PathLike, keep_crowd: bool = False, expected: Sequence[str] | None = None, what: str = "COCO"
) -> tuple[dict, list[str]]:
    """Read one json per split; all splits must share one category list (checked).

    ``expected``: canonical class list (e.g. MOCS); file names are compared case-insensitively
    and a mismatch is a warning, the file's names win (the ids in the file are the truth).
    """
    splits, names = {}, None
    for split, f in _coco_jsons(Path(src)).items():
        samples, n = read_coco(f, keep_crowd=keep_crowd)
        if names is not None and n != names:
            raise DatasetFormatError(
                f"{f}: categories differ from the other split's ({n} vs {names}); "
                "all splits must share one category list"
            )
        names, splits[split] = n, samples
    if expected is not None and [x.lower() for x in names] != [x.lower() for x in expected]:
        warnings.warn(
            f"{what}: categories in the json {names} differ from the expected {list(expected)}; using the json's list",
            stacklevel=2,
        )
    return splits, names


def convert_dataset(
    src: str | os.PathLike,
    fmt: str = "voc",
    out: str | os.PathLike = "converted",
    keep_difficult: bool = False,
    keep_crowd: bool = False,
    seed: int = 0,
    copy_images: bool = False,
    on_error: str = "fail",
) -> Path:
    """Convert a dataset to YOLO format; returns the written ``data.yaml``.

    Args:
        src: VOC/SODA root folder, or a COCO json / folder of ``*train*.json``, ``*val*.json``, ...
        fmt: "voc" | "coco" | "soda" | "mocs" | "cis".
        out: output folder.
        keep_difficult: keep VOC ``difficult`` boxes. keep_crowd: keep COCO ``iscrowd`` boxes.
        seed: seed of the 8:1:1 split made when the source has none (VOC, SODA).
        copy_images: copy images instead of symlinking them.
        on_error: "fail" raises listing every bad file; "skip" drops bad boxes/images with a warning.
    """
    src = Path(src)
    fmt = fmt.lower()
    if fmt == "soda":
        splits, names = read_soda(src, keep_difficult=keep_difficult, seed=seed)
    elif fmt == "voc":
        if (src / "ImageSets" / "Main" / "train.txt").is_file():
            first, names = read_voc(src, split="train", keep_difficult=keep_difficult)
            splits = {"train": first}
            for s in ("val", "test"):
                if (src / "ImageSets" / "Main" / f"{s}.txt").is_file():
                    splits[s] = read_voc(src, split=s, names=names, keep_difficult=keep_difficult)[0]
        else:
            samples, names = read_voc(src, keep_difficult=keep_difficult)
            ids = seeded_split([Path(s["im_file"]).stem for s in samples], seed=seed)
            by_id = {Path(s["im_file"]).stem: s for s in samples}
            splits = {k: [by_id[i] for i in v] for k, v in ids.items() if v}
    elif fmt in ("coco", "cis"):
        splits, names = read_coco_splits(src, keep_crowd=keep_crowd, what=fmt.upper())
    elif fmt == "mocs":
        splits, names = read_coco_splits(src, keep_crowd=keep_crowd, expected=MOCS_CLASSES, what="MOCS")
    else:
        raise ValueError(f"unknown dataset format '{fmt}'; use one of voc, coco, soda, mocs, cis")
    checked = {s: check_dataset(v, nc=len(names), on_error=on_error)[0] for s, v in splits.items()}
    if "val" not in checked and "test" in checked:  # YOLO training needs a val split
        checked["val"] = checked["test"]
    return write_yolo_dataset(checked, names, out, copy_images=copy_images)


def samples_to_coco(samples: Sequence[dict], names: Sequence[str]) -> dict:
    """COCO detection dict (category ids 1..K in class order, bbox xywh pixels) from samples."""
    images, anns = [], []
    for i, s in enumerate(samples, 1):
        h, w = s["shape"]
        images.append({"id": i, "file_name": Path(s["im_file"]).name, "height": h, "width": w})
        for c, (x1, y1, x2, y2) in zip(s["cls"].tolist(), s["boxes"].tolist()):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": c + 1,
                    "iscrowd": 0,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                }
            )
    return {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }


def write_coco_json(samples: Sequence[dict], names: Sequence[str], path: str | os.PathLike) -> Path:
    """Write :func:`samples_to_coco` atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(samples_to_coco(samples, names)))
    return path
