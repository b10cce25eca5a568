"""Readers of the detection formats people already have, into one sample format.

A *sample* is a plain dict::

    {"im_file": str,                 # absolute image path
     "shape": (h, w),                # original image size in pixels
     "cls": np.ndarray int64 [N],    # 0-based contiguous class index
     "boxes": np.ndarray float32 [N, 4],   # x1, y1, x2, y2 in original-image pixels
     "problems": [str, ...]}         # optional: what the reader found wrong (see check.py)

Readers never drop or clip anything silently: what is wrong with a label is written into
``problems`` and :func:`leanvision.detect.data.check.check_dataset` decides (fail or skip).
Only structural breakage of a whole annotation file (malformed COCO json, missing data.yaml
keys) raises :class:`DatasetFormatError` at once, because nothing can be read from it.

Supported layouts:

* YOLO: ``data.yaml`` (path, train, val, optional test, names) + ``labels/*.txt`` holding
  ``cls cx cy w h`` normalised to [0, 1]; labels live where ``/images/`` is replaced by ``/labels/``.
* COCO json: ``bbox`` is ``[x, y, w, h]`` in pixels; category ids are mapped to 0..K-1 in sorted
  id order; ``iscrowd`` boxes are dropped unless asked for; masks are ignored.
* Pascal VOC: ``Annotations/*.xml`` + ``JPEGImages/`` (+ ``ImageSets/Main/<split>.txt``);
  ``difficult`` boxes are dropped unless ``keep_difficult=True``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from ...data.base import DatasetError
from ...data.walk import walk_files

IMG_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DatasetFormatError(DatasetError):
    """An annotation file (or data.yaml) that cannot be read at all; the message names the file.

    A :class:`leanvision.data.DatasetError` (and so a ValueError), the one error family of dataset input."""


class MissingSplitError(DatasetFormatError):
    """The data.yaml has no entry for the split asked for, or it lists no images (a broken entry is a
    plain :class:`DatasetFormatError`, never this)."""


def make_sample(im_file, shape, cls=None, boxes=None, problems=None) -> dict:
    """Build a sample with the canonical dtypes (int64 classes, float32 xyxy pixel boxes)."""
    cls = np.asarray([] if cls is None else cls, dtype=np.int64).reshape(-1)
    boxes = np.asarray([] if boxes is None else boxes, dtype=np.float32).reshape(-1, 4)
    return {
        "im_file": str(im_file),
        "shape": (int(shape[0]), int(shape[1])),
        "cls": cls,
        "boxes": boxes,
        "problems": list(problems or []),
    }


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(h, w) from the image header (cheap; pixels are not decoded), or None if unreadable."""
    try:
        with Image.open(path) as im:
            w, h = im.size
        return int(h), int(w)
    except Exception:  # any decoder error means "unreadable"; check.py reports it
        return None


# ---------------------------------------------------------------------------------------- YOLO


def img2label_path(im_file: str | os.PathLike) -> Path:
    """Standard YOLO mapping: the last ``/images/`` folder becomes ``/labels/``, suffix ``.txt``."""
    p = Path(im_file)
    parts = list(p.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def label_beside(im_file: str | os.PathLike) -> Path:
    """The label file of darknet-style exports (CVAT YOLO 1.1, LabelImg): the image's own path with ``.txt``."""
    return Path(im_file).with_suffix(".txt")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTS)


def _moved_split(entry: str, bases: Sequence[Path]) -> Path | None:
    """A split path that does not exist, found again by its trailing folders next to the yaml.

    Exports carry the exporter's absolute paths (Roboflow: ``F://PPE detection//css-data//train//images``;
    ``../train/images`` from a yaml moved up a folder). Tried longest first, at least two components (a
    bare ``images`` would match any split), under each of ``bases``; Windows and POSIX separators alike.
    """
    parts = [q for q in entry.replace("\\", "/").split("/") if q not in ("", ".")]
    for k in range(len(parts), 1, -1):
        tail = parts[-k:]
        if ".." in tail or tail[0].endswith(":"):  # no way up, no drive letter
            continue
        for base in bases:
            if base.joinpath(*tail).exists():
                return base.joinpath(*tail)
    return None


def _list_images(entry, root: Path, yaml_file: Path, split: str) -> list[str]:
    """Expand one train/val entry (folder, txt list of images, or a single image) into files."""
    if not isinstance(entry, str) or not entry.strip():
        raise DatasetFormatError(
            f"{yaml_file}: '{split}' must be a folder, a .txt list of images, an image, or a list of those (paths "
            f"as strings); got {type(entry).__name__} {entry!r}"
        )
    p = Path(entry)
    p = p if p.is_absolute() else root / p
    if not p.exists():
        found = _moved_split(entry, [yaml_file.parent, root] if root != yaml_file.parent else [root])
        if found is not None:
            print(f"note: {yaml_file}: {split} path '{entry}' does not exist; using {found} (its trailing folders, "
                  f"found next to the yaml); write '{split}: {os.path.relpath(found, root)}' to silence this")
            p = found
    if p.is_dir():
        files, _, _ = walk_files(p, _is_image, error=DatasetFormatError)
        return [str(p / f) for f in files]
    if p.suffix.lower() == ".txt" and p.is_file():
        files = []
        for ln, line in enumerate(read_text_file(p, "this image list, one image path per line").splitlines(), 1):
            line = line.strip()
            if "\x00" in line:
                raise DatasetFormatError(f"{p}: line {ln} holds a NUL character; one image path per line")
            if line:
                f = Path(line)
                # ultralytics convention: "./x.jpg" is relative to the list file's folder
                # normpath, not resolve(): images may be symlinks, and labels sit beside the link
                files.append(os.path.normpath(f if f.is_absolute() else p.parent / f))
        return files
    if p.suffix.lower() in IMG_EXTS and p.is_file():
        return [str(p)]
    if not p.exists():
        raise DatasetFormatError(
            f"{yaml_file}: {split} path '{entry}' does not exist (looked for {p}, and for its trailing folders next "
            f"to the yaml); write the {split} images folder relative to {root}, e.g. '{split}: images/{split}' "
            f"or '{split}: {split}/images'"
        )
    raise DatasetFormatError(
        f"{yaml_file}: split entry '{entry}' resolves to {p}, which is not an image "
        "folder, a .txt list of images or an image; fix the path in the yaml"
    )


def _yaml_names(cfg: dict, yaml_file: Path) -> list[str]:
    """``names`` (list or {index: name}) checked against ``nc``; every mistake is one message naming the key."""
    names = cfg["names"]
    if isinstance(names, dict):
        try:
            index = {int(k): v for k, v in names.items() if not isinstance(k, bool)}
        except (TypeError, ValueError):
            index = {}
        if len(index) != len(names) or sorted(index) != list(range(len(index))):
            raise DatasetFormatError(f"{yaml_file}: 'names' keys must be the class indices 0..{len(names) - 1}, got "
                                     f"{list(names)[:10]}")
        names = [index[k] for k in range(len(index))]
    elif isinstance(names, str):
        raise DatasetFormatError(f"{yaml_file}: 'names' is the string {names!r}; give a list, e.g. 'names: [{names}]' "
                                 "for one class, or a mapping {0: name, 1: name}")
    elif not isinstance(names, list):
        raise DatasetFormatError(f"{yaml_file}: 'names' must be a list of class names or a mapping {{index: name}}, "
                                 f"got {type(names).__name__} {names!r}")
    if not names:
        raise DatasetFormatError(f"{yaml_file}: 'names' is empty; list the class names, e.g. 'names: [person, helmet]'")
    for i, n in enumerate(names):
        if isinstance(n, bool) or not isinstance(n, (str, int, float)) or not str(n).strip():
            raise DatasetFormatError(f"{yaml_file}: 'names' entry {i} is {n!r}; each class name must be a non-empty "
                                     "string")
    names = [str(n) for n in names]
    if "nc" in cfg:
        nc = cfg["nc"]
        if isinstance(nc, bool) or not isinstance(nc, int):
            raise DatasetFormatError(f"{yaml_file}: 'nc' must be the number of classes (an integer), got {nc!r}")
        if nc != len(names):
            raise DatasetFormatError(f"{yaml_file}: nc={nc} but 'names' has {len(names)} entries; make them agree")
    return names


def load_data_yaml(path: str | os.PathLike, splits: Sequence[str] = ("train", "val", "test")) -> dict:
    """Read a YOLO ``data.yaml`` and resolve its splits into image lists.

    Args:
        path: the yaml file. Keys: ``path`` (dataset root; relative to the yaml's folder; default
            the yaml's folder), ``train``, ``val``, optional ``test`` (each a folder, a txt list
            of images or a list of those), ``names`` (list or {index: name} dict), optional ``nc``.
            A split path that does not exist is looked for by its trailing folders next to the yaml
            (exports carry the exporter's own drive paths); one line says which folder is used.
        splits: the splits to resolve (the others are returned empty, and not checked).

    Returns:
        ``{"root": Path, "names": list[str], "train"/"val"/"test": list[str] image files (absent
        splits give [])}``.

    Raises:
        DatasetFormatError: one line naming the yaml and the key: unreadable yaml, missing ``train`` or
            ``names``, ``names`` not a non-empty list/mapping of strings, ``nc`` not an integer equal to
            their number, ``path`` or a split entry not a path string, a split path that does not exist.
    """
    yaml_file = Path(path)
    try:
        cfg = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        why = " ".join(str(e).split())  # YAML's messages span lines; the error is one
        raise DatasetFormatError(f"{yaml_file}: cannot read the data yaml ({why}); check the path and syntax") from e
    if not isinstance(cfg, dict) or "names" not in cfg or "train" not in cfg:
        raise DatasetFormatError(
            f"{yaml_file}: a data yaml needs at least 'train' and 'names' keys (and usually 'path' and 'val')"
        )
    names = _yaml_names(cfg, yaml_file)
    root = cfg.get("path")
    if root is not None and not isinstance(root, str):
        raise DatasetFormatError(f"{yaml_file}: 'path' must be the dataset folder (a string), got {root!r}")
    root = Path(root or ".")
    root = root if root.is_absolute() else (yaml_file.parent / root)
    root = root.resolve()
    out = {"root": root, "names": names}
    for split in ("train", "val", "test"):
        entry = cfg.get(split) if split in splits else None
        entries = [] if entry is None else (entry if isinstance(entry, list) else [entry])
        out[split] = [f for e in entries for f in _list_images(e, root, yaml_file, split)]
    return out


def read_yolo_label(label_file: str | os.PathLike, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, list]:
    """Parse one YOLO txt (``cls cx cy w h`` normalised) into classes and xyxy pixel boxes.

    A missing file is an image without objects. Lines that cannot be parsed are reported in the
    returned problem list (with their line number) and skipped; values are not clipped here.
    """
    h, w = shape
    cls, boxes, problems = [], [], []
    try:
        text = Path(label_file).read_text()
    except FileNotFoundError:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32), []
    except (OSError, UnicodeDecodeError) as e:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32), [f"label file unreadable ({e})"]
    for ln, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:  # polygons (segmentation labels) have more columns; not supported here
            problems.append(f"line {ln}: expected 5 columns 'cls cx cy w h', got {len(parts)}")
            continue
        try:
            c = float(parts[0])
            cx, cy, bw, bh = (float(v) for v in parts[1:])
        except ValueError:
            problems.append(f"line {ln}: non-numeric value in '{line.strip()}'")
            continue
        if not math.isfinite(c) or c != int(c):
            problems.append(f"line {ln}: class id {parts[0]} is not an integer")
            continue
        if abs(c) >= 2**31:  # no dataset has that many classes, and 2**63 would overflow the int64 array
            problems.append(f"line {ln}: class id {parts[0]} is out of range")
            continue
        cls.append(int(c))
        boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
    return np.asarray(cls, np.int64), np.asarray(boxes, np.float32).reshape(-1, 4), problems


def read_yolo_split(image_files: Sequence[str], label_path=img2label_path) -> list[dict]:
    """Samples for a list of images with labels at ``label_path(image)`` (default :func:`img2label_path`; exports
    that keep each ``.txt`` beside its image, such as CVAT's YOLO 1.1, pass ``label_beside``)."""
    samples = []
    for f in image_files:
        shape = image_size(f)
        if shape is None:
            samples.append(make_sample(f, (0, 0), problems=["image unreadable or corrupt"]))
            continue
        cls, boxes, problems = read_yolo_label(label_path(f), shape)
        samples.append(make_sample(f, shape, cls, boxes, problems))
    return samples


# ---------------------------------------------------------------------------------------- COCO


def _guess_images_dir(json_file: Path, first_name: str | None) -> Path:
    """The folder holding the json's first ``file_name``: beside the json, ``images/`` next to or above
    it, or any folder one or two levels under the json's parent's parent (``images/train2017``...)."""
    up = json_file.parent.parent
    cand = [json_file.parent, up / "images", json_file.parent / "images"]
    cand += sorted(d for d in up.iterdir() if d.is_dir()) if up.is_dir() else []
    cand += sorted(d for d in (up / "images").glob("*") if d.is_dir())
    if first_name:
        for d in cand:
            if (d / first_name).exists():
                return d
    return json_file.parent


def _export_name_category(cats: list[dict], annotations: list) -> dict | None:
    """Roboflow's COCO export lists the project itself as a category (``{"id": 0, "name": PROJECT,
    "supercategory": "none"}``) and makes it every real category's supercategory; no box uses it. That entry,
    or None."""
    if len(cats) < 2:
        return None
    first = cats[0]
    used = {a.get("category_id") for a in annotations
            if isinstance(a, dict) and isinstance(a.get("category_id"), (int, float, str))}
    if (first.get("supercategory") == "none" and first["id"] not in used
            and all(c.get("supercategory") == first["name"] for c in cats[1:])):
        return first
    return None


def read_coco(
    json_file: str | os.PathLike, images_dir: str | os.PathLike | None = None, keep_crowd: bool = False
) -> tuple[list[dict], list[str]]:
    """Read COCO detection json.

    Args:
        json_file: the annotation file.
        images_dir: folder holding ``file_name``; default the json's folder, then ``../images``.
        keep_crowd: keep ``iscrowd=1`` boxes (dropped by default, as COCO evaluation ignores them).

    Returns:
        (samples, names): every image listed in ``images`` (also those without boxes) and the
        category names in sorted category-id order (index = contiguous class id).
    """
    json_file = Path(json_file)
    try:
        data = json.loads(json_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetFormatError(f"{json_file}: cannot parse COCO json ({e}); check the file is complete") from e
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise DatasetFormatError(f"{json_file}: a COCO json needs 'images', 'annotations' and 'categories' lists")
    if "annotations" not in data:  # an image-info file (e.g. a test split whose labels are withheld)
        warnings.warn(f"{json_file}: no 'annotations' list; its images are read without labels", stacklevel=2)
    elif not isinstance(data["annotations"], list):
        raise DatasetFormatError(f"{json_file}: 'annotations' must be a list, got {type(data['annotations']).__name__}")
    bad = (KeyError, TypeError, ValueError, OverflowError, AttributeError)  # what a malformed entry raises
    try:
        cats = sorted(data["categories"], key=lambda c: int(c["id"]))
        cat_index = {int(c["id"]): i for i, c in enumerate(cats)}
        names = [str(c["name"]) for c in cats]
        imgs = {}
        for im in data["images"]:
            if not isinstance(im.get("file_name"), str) or not im["file_name"].strip("\x00"):
                raise ValueError(f"image entry {str(im)[:80]} has no 'file_name' string")
            if "\x00" in im["file_name"]:
                raise ValueError(f"file_name {im['file_name']!r} holds a NUL character")
            imgs[int(im["id"])] = im
    except bad as e:
        raise DatasetFormatError(f"{json_file}: malformed 'categories' or 'images' entry ({e!r})") from None
    if len(cat_index) != len(cats):
        raise DatasetFormatError(f"{json_file}: two categories share an id; each category needs its own 'id'")
    workspace = _export_name_category(cats, data.get("annotations") or [])
    if workspace is not None:
        print(f"note: {json_file}: category {workspace['id']} '{workspace['name']}' is the export's name (the "
              f"supercategory of every other category, used by no annotation), not a class; left out")
        cats = [c for c in cats if c is not workspace]
        cat_index = {int(c["id"]): i for i, c in enumerate(cats)}
        names = [str(c["name"]) for c in cats]
    if images_dir is None:
        images_dir = _guess_images_dir(json_file, next(iter(imgs.values()), {}).get("file_name"))
    images_dir = Path(images_dir)

    per_img: dict[int, tuple[list, list, list]] = {i: ([], [], []) for i in imgs}
    for k, ann in enumerate(data.get("annotations", [])):
        try:
            img_id, cat = int(ann["image_id"]), int(ann["category_id"])
            bbox = [float(v) for v in ann["bbox"]]
            crowd = ann.get("iscrowd", 0)
        except bad as e:
            raise DatasetFormatError(f"{json_file}: annotation #{k} is malformed ({e!r})") from None
        if img_id not in per_img:
            raise DatasetFormatError(
                f"{json_file}: annotation #{k} refers to image_id {img_id}, which is not in 'images'"
            )
        if crowd and not keep_crowd:
            continue
        c, b, p = per_img[img_id]
        if len(bbox) != 4:
            p.append(f"annotation id {ann.get('id', k)}: bbox needs 4 numbers, got {len(bbox)}")
            continue
        if cat not in cat_index:
            p.append(f"annotation id {ann.get('id', k)}: category_id {cat} not in 'categories'")
            continue
        x, y, bw, bh = bbox
        c.append(cat_index[cat])
        b.append([x, y, x + bw, y + bh])
    samples = []
    for img_id, im in imgs.items():
        c, b, p = per_img[img_id]
        try:
            shape = (int(im.get("height", 0) or 0), int(im.get("width", 0) or 0))
        except (TypeError, ValueError, OverflowError):
            shape = (0, 0)  # read from the image header below
        f = images_dir / im["file_name"]
        if shape[0] <= 0 or shape[1] <= 0:
            shape = image_size(f) or (0, 0)
        samples.append(make_sample(f, shape, c, b, p))
    return samples, names


# ----------------------------------------------------------------------------------------- VOC


def read_voc_xml(
    xml_file: str | os.PathLike,
    names: Sequence[str] | None,
    images_dir: Path,
    keep_difficult: bool = False,
    aliases: dict[str, str] | None = None,
) -> tuple[dict, list[str]]:
    """Parse one VOC xml into a sample.

    Class names are matched case-insensitively (after ``aliases``); an unknown name becomes a
    problem ("unknown class"). With ``names=None`` every name is accepted: the sample's ``cls``
    then index the returned list of names seen in this file, for :func:`read_voc` to remap.

    Returns:
        (sample, names seen in this file; empty unless ``names`` is None).
    """
    xml_file = Path(xml_file)
    aliases = aliases or {}
    try:
        root = ET.parse(xml_file).getroot()
    except (ET.ParseError, OSError) as e:
        f = images_dir / (xml_file.stem + ".jpg")
        return make_sample(f, (0, 0), problems=[f"malformed xml {xml_file.name} ({e})"]), []
    fname = root.findtext("filename") or ""
    f = images_dir / fname if fname and (images_dir / fname).exists() else None
    if f is None:  # VOC files often carry a stale <filename>; fall back to the xml's stem
        f = next(
            (images_dir / (xml_file.stem + e) for e in IMG_EXTS if (images_dir / (xml_file.stem + e)).exists()),
            images_dir / (fname or xml_file.stem + ".jpg"),
        )
    size = root.find("size")
    try:
        shape = (int(float(size.findtext("height"))), int(float(size.findtext("width"))))
    except (AttributeError, TypeError, ValueError, OverflowError):
        shape = (0, 0)
    if shape[0] <= 0 or shape[1] <= 0:
        shape = image_size(f) or (0, 0)
    index = {n.lower(): i for i, n in enumerate(names)} if names is not None else {}
    cls, boxes, problems, seen = [], [], [], []
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        key = aliases.get(name.lower(), name.lower())
        if obj.findtext("difficult", "0").strip() in ("1", "true") and not keep_difficult:
            continue
        bb = obj.find("bndbox")
        try:
            box = [float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            problems.append(f"object #{k} ('{name}'): missing or non-numeric bndbox")
            continue
        if names is None:
            if key not in seen:
                seen.append(key)
            cls.append(seen.index(key))  # provisional; remapped by the caller
        elif key in index:
            cls.append(index[key])
        else:
            problems.append(f"object #{k}: unknown class '{name}' (known: {', '.join(names)})")
            continue
        # VOC pixel indices are 1-based and inclusive: xmin=1 is the first column's left edge
        boxes.append([box[0] - 1, box[1] - 1, box[2], box[3]])
    return make_sample(f, shape, cls, boxes, problems), seen


def voc_split_ids(root: str | os.PathLike, split: str | None) -> list[str] | None:
    """Ids listed in ``ImageSets/Main/<split>.txt`` or None if that file does not exist."""
    if split is None:
        return None
    f = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    if not f.is_file():
        return None
    return [line.split()[0] for line in read_text_file(f, "an id list, one image id per line").splitlines()
            if line.strip()]


def read_text_file(path: Path, what: str) -> str:
    """A small UTF-8 text file of a dataset (image or id list), or a DatasetFormatError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{path}: cannot read {what} ({e}); it must be UTF-8 text") from None


def read_voc(
    root: str | os.PathLike,
    split: str | None = None,
    names: Sequence[str] | None = None,
    keep_difficult: bool = False,
    aliases: dict[str, str] | None = None,
    ids: Sequence[str] | None = None,
) -> tuple[list[dict], list[str]]:
    """Read a VOC-style folder (``Annotations/`` + ``JPEGImages/``, or ``images/`` as Label Studio exports it).

    Args:
        root: folder holding ``Annotations`` and ``JPEGImages``.
        split: read only the ids in ``ImageSets/Main/<split>.txt`` (all xml files if absent).
        names: class list (index order); None collects names in sorted order from the files.
        keep_difficult: keep ``<difficult>1</difficult>`` objects (dropped by default).
        aliases: lower-case name -> canonical name, for spelling variants in the xml files.
        ids: explicit id list (overrides ``split``).

    Returns:
        (samples, names).
    """
    root = Path(root)
    ann_dir, img_dir = root / "Annotations", root / "JPEGImages"
    if not img_dir.is_dir() and (root / "images").is_dir():  # Label Studio's Pascal VOC export
        img_dir = root / "images"
    if not ann_dir.is_dir():
        raise DatasetFormatError(
            f"{root}: no 'Annotations' folder; a VOC dataset needs Annotations/*.xml and JPEGImages/"
        )
    ids = list(ids) if ids is not None else voc_split_ids(root, split)
    xmls = [ann_dir / f"{i}.xml" for i in ids] if ids is not None else sorted(ann_dir.glob("*.xml"))
    results = [
        read_voc_xml(x, names, img_dir, keep_difficult, aliases)
        if x.is_file()
        else (make_sample(img_dir / (x.stem + ".jpg"), (0, 0), problems=[f"annotation {x} missing"]), [])
        for x in xmls
    ]
    if names is not None:
        return [s for s, _ in results], list(names)
    all_names = sorted({n for _, seen in results for n in seen})
    samples = []
    for s, seen in results:  # remap provisional per-file indices to the global sorted list
        if len(s["cls"]):
            s["cls"] = np.asarray([all_names.index(seen[c]) for c in s["cls"]], np.int64)
        samples.append(s)
    return samples, all_names
