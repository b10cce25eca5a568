"""Datasets as annotation tools export them: ``--data`` may be the file or the unzipped folder a user downloaded.

:func:`find_annotation_file` turns an export *folder* into the file that describes it, and :func:`read_export`
reads every layout other than a YOLO ``data.yaml`` (which :func:`~.check.load_yolo_dataset` reads) into
``{split: samples}`` for the splits the export has. The layouts, as each tool's documentation describes its
export:

======================================  =================================================================
export                                  layout
======================================  =================================================================
Roboflow YOLOv5/v8                      ``data.yaml`` (``train: ../train/images``, ...); the yaml reader
                                        finds the trailing folders next to the yaml
Roboflow COCO                           ``train/_annotations.coco.json`` with the images beside it, the same
                                        in ``valid/`` and ``test/``; the project is listed as category 0
                                        (left out, one line says so)
Roboflow Pascal VOC                     ``train/``, ``valid/``, ``test/``, each image beside its ``.xml``
CVAT YOLO 1.1 (darknet)                 ``obj.data`` (``names = data/obj.names``, ``train = data/train.txt``,
                                        optional ``valid``), ``obj_train_data/`` with each ``.txt`` beside its
                                        image; list paths start with darknet's ``data/``
CVAT Ultralytics YOLO                   ``data.yaml`` + ``train.txt`` + ``images/train`` + ``labels/train``
CVAT COCO 1.0                           ``annotations/instances_<subset>.json`` + ``images/[<subset>/]``
CVAT Pascal VOC 1.1                     ``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/<subset>.txt``
Label Studio YOLO                       ``classes.txt``, ``images/``, ``labels/`` (and ``notes.json``)
Label Studio COCO                       ``result.json`` (``file_name``: ``images/...``) + ``images/``
Label Studio Pascal VOC                 ``Annotations/`` + ``images/``
LabelImg YOLO                           a folder of images, each ``.txt`` beside it, and ``classes.txt``
======================================  =================================================================

A split the export does not have is absent from the returned dict (the trainer then makes a seeded split of
``train``). Every file read is named in the errors, as in :mod:`.formats`.
"""

from __future__ import annotations

from pathlib import Path

from ...data.walk import walk_files
from .formats import (
    DatasetFormatError,
    _is_image,
    img2label_path,
    label_beside,
    read_coco,
    read_text_file,
    read_voc,
    read_voc_xml,
    read_yolo_split,
    voc_split_ids,
)

SPLIT_FOLDERS = {"train": ("train",), "val": ("valid", "val", "validation"), "test": ("test",)}
EXPORT_FILES = ("data.yaml", "data.yml", "obj.data", "result.json", "annotations/instances_train.json",
                "annotations/instances_default.json")


def find_annotation_file(folder: Path) -> Path | None:
    """The file that describes an export folder (``data.yaml``, ``obj.data``, Label Studio's ``result.json``,
    CVAT's ``annotations/instances_*.json``), or None when the folder itself is the dataset (VOC, Label Studio
    YOLO, Roboflow's split folders) or unknown."""
    for name in EXPORT_FILES:
        if (folder / name).is_file():
            return folder / name
    jsons = sorted((folder / "annotations").glob("instances_*.json")) if (folder / "annotations").is_dir() else []
    return jsons[0] if len(jsons) == 1 else None


def read_export(path: Path) -> tuple[dict[str, list[dict]], list[str], str]:
    """Samples per split, class names and the layout's name, for any supported layout but ``data.yaml``.

    Raises:
        DatasetFormatError: the layout is not one of the module docstring's, or a file of it is broken.
    """
    if path.is_file() and path.suffix.lower() == ".json":
        return (*_coco_with_siblings(path), "COCO json")
    if path.is_file() and path.suffix.lower() == ".data":
        return (*_darknet(path), "darknet / CVAT YOLO 1.1")
    if path.is_dir():
        if (path / "Annotations").is_dir():
            return (*_voc_folder(path), "Pascal VOC")
        if (path / "classes.txt").is_file():
            return (*_yolo_classes_txt(path), "YOLO folder with classes.txt")
        split_dirs = {s: d for s in SPLIT_FOLDERS if (d := _split_folder(path, s)) is not None}
        if "train" in split_dirs:
            return (*_split_folders(split_dirs), "split folders (Roboflow COCO / VOC)")
    raise DatasetFormatError(
        f"{path}: unknown dataset format; pass a YOLO data.yaml, a COCO .json, a darknet obj.data, a VOC folder "
        f"(Annotations/), a folder with classes.txt + images/ + labels/, or an export folder holding one of these "
        f"or train/ and valid/ folders (Roboflow COCO or VOC)")


# ------------------------------------------------------------------------------------------------- COCO


def _split_folder(root: Path, split: str) -> Path | None:
    return next((root / d for d in SPLIT_FOLDERS[split] if (root / d).is_dir()), None)


def _coco_siblings(json_file: Path) -> dict[str, Path]:
    """The val/test json of a train json: ``train`` replaced in the file name (``instances_train.json`` ->
    ``instances_val.json``), or the same file name in a sibling split folder (Roboflow's
    ``train/_annotations.coco.json`` -> ``valid/_annotations.coco.json``)."""
    out = {}
    for split in ("val", "test"):
        named = [json_file.with_name(json_file.name.replace(k, split)) for k in ("train", "val")
                 if k != split and k in json_file.name]
        if any(c.is_file() for c in named):
            out[split] = next(c for c in named if c.is_file())
            continue
        if json_file.parent.name in SPLIT_FOLDERS["train"]:
            folder = _split_folder(json_file.parent.parent, split)
            if folder is not None and (folder / json_file.name).is_file():
                out[split] = folder / json_file.name
    return out


def _coco_with_siblings(json_file: Path) -> tuple[dict[str, list[dict]], list[str]]:
    samples, names = read_coco(json_file)
    splits = {"train": samples}
    for split, f in _coco_siblings(json_file).items():
        splits[split], other = read_coco(f)
        if other != names:
            raise DatasetFormatError(f"{f}: categories differ from {json_file}'s; use one category list")
    return splits, names


# ---------------------------------------------------------------------------------------------- darknet


def _darknet_path(value: str, base: Path) -> Path:
    """A path written in an ``obj.data`` or its image lists: as written if it exists, else relative to ``base``,
    else with leading folders dropped until it exists under ``base`` (darknet runs from the folder above
    ``data/``, so CVAT writes ``data/train.txt`` for a file that sits beside ``obj.data``)."""
    p = Path(value)
    if p.is_absolute() and p.exists():
        return p
    parts = [q for q in value.replace("\\", "/").split("/") if q not in ("", ".")]
    for k in range(len(parts), 0, -1):
        if ".." in parts[-k:] or parts[-k].endswith(":"):
            continue
        cand = base.joinpath(*parts[-k:])
        if cand.exists():
            return cand
    return base / value


def _darknet(data_file: Path) -> tuple[dict[str, list[dict]], list[str]]:
    keys = {}
    for ln, line in enumerate(read_text_file(data_file, "a darknet .data file").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise DatasetFormatError(f"{data_file}: line {ln} is not 'key = value': {line[:80]!r}")
        k, v = (x.strip() for x in line.split("=", 1))
        keys[k] = v
    for k in ("names", "train"):
        if not keys.get(k):
            raise DatasetFormatError(f"{data_file}: no '{k} = ...' line; a darknet .data file names the class list "
                                     f"('names = obj.names') and the train image list ('train = train.txt')")
    base = data_file.parent
    names_file = _darknet_path(keys["names"], base)
    names = [n.strip() for n in read_text_file(names_file, "the class names, one per line").splitlines() if n.strip()]
    if not names:
        raise DatasetFormatError(f"{names_file}: no class names; write one name per line")
    if keys.get("classes", "").isdigit() and int(keys["classes"]) != len(names):
        raise DatasetFormatError(f"{data_file}: classes = {keys['classes']} but {names_file} lists {len(names)} "
                                 f"names; make them agree")
    splits = {}
    for split, key in (("train", "train"), ("val", "valid")):
        if not keys.get(key):
            continue
        list_file = _darknet_path(keys[key], base)
        if not list_file.is_file():
            raise DatasetFormatError(f"{data_file}: '{key} = {keys[key]}' does not exist (looked for {list_file})")
        lines = [x.strip() for x in read_text_file(list_file, "an image list, one path per line").splitlines()]
        files = [str(_darknet_path(x, list_file.parent)) for x in lines if x]
        splits[split] = read_yolo_split(files, label_path=label_beside)
    return splits, names


# ------------------------------------------------------------------------------------------- YOLO folders


def _yolo_classes_txt(root: Path) -> tuple[dict[str, list[dict]], list[str]]:
    """Label Studio's YOLO export (``images/`` + ``labels/``) or LabelImg's (each ``.txt`` beside its image)."""
    names_file = root / "classes.txt"
    names = [n.strip() for n in read_text_file(names_file, "the class names, one per line").splitlines() if n.strip()]
    if not names:
        raise DatasetFormatError(f"{names_file}: no class names; write one name per line")
    images = root / "images" if (root / "images").is_dir() else root
    files, _, _ = walk_files(images, _is_image, error=DatasetFormatError)
    if not files:
        raise DatasetFormatError(f"{root}: classes.txt but no images (looked in {images})")
    label_path = img2label_path if images != root else label_beside
    return {"train": read_yolo_split([str(images / f) for f in files], label_path=label_path)}, names


# -------------------------------------------------------------------------------------------------- VOC


def _voc_folder(root: Path) -> tuple[dict[str, list[dict]], list[str]]:
    """``ImageSets/Main/{train,val,test}.txt`` when train and val are listed (test optional), else every xml."""
    if voc_split_ids(root, "train") is not None and voc_split_ids(root, "val") is not None:
        train, names = read_voc(root, split="train")
        splits = {"train": train, "val": read_voc(root, split="val", names=names)[0]}
        if voc_split_ids(root, "test") is not None:
            splits["test"] = read_voc(root, split="test", names=names)[0]
        return splits, names
    samples, names = read_voc(root)
    return {"train": samples}, names


def _xml_beside_images(folder: Path, names: list[str] | None) -> tuple[list[dict], list[str]]:
    """Roboflow's VOC split folder: every ``*.xml`` with its image beside it."""
    results = [read_voc_xml(x, names, folder) for x in sorted(folder.glob("*.xml"))]
    if names is not None:
        return [s for s, _ in results], names
    return [], sorted({n for _, seen in results for n in seen})


def _split_folders(split_dirs: dict[str, Path]) -> tuple[dict[str, list[dict]], list[str]]:
    train_dir = split_dirs["train"]
    jsons = sorted(train_dir.glob("*.json"))
    if len(jsons) == 1:
        return _coco_with_siblings(jsons[0])
    if any(train_dir.glob("*.xml")):
        # class names: every name in every split, sorted (lower case, as read_voc_xml matches them)
        names = sorted({n for d in split_dirs.values() for n in _xml_beside_images(d, None)[1]})
        return {s: _xml_beside_images(d, names)[0] for s, d in split_dirs.items()}, names
    what = f"{len(jsons)} .json files" if jsons else "no .json and no .xml files"
    raise DatasetFormatError(f"{train_dir}: a split folder of an export needs one COCO .json (Roboflow COCO) or "
                             f"an .xml beside each image (Roboflow VOC); found {what}")
