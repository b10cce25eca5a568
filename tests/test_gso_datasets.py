"""SODA, MOCS and CIS in the layouts their users have, on tiny files written here: what test_det_formats.py
does not cover (official split lists, difficult boxes, a MOCS folder of split jsons with polygon and RLE
masks, training straight from a CIS json). Expected YOLO lines are worked out by hand."""

import json
import warnings

import pytest
from PIL import Image

from leanvision.detect.data.check import load_yolo_dataset
from leanvision.detect.data.convert import MOCS_CLASSES, SODA_CLASSES, convert_dataset
from leanvision.detect.data.formats import load_data_yaml
from leanvision.detect.train import load_detection_data


def image(path, w, h):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (90, 120, 60)).save(path)


def soda_xml(fname, w, h, objects):
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects)
    return (f"<annotation><folder>VOC2007</folder><filename>{fname}</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size>{objs}</annotation>")


def labels(root, split, stem):
    return (root / "labels" / split / f"{stem}.txt").read_text().split("\n")[:-1]


def test_soda_voc_layout_with_official_lists_difficult_boxes_and_aliases(tmp_path):
    src = tmp_path / "SODA"
    objects = {
        "a": [("person", (11, 21, 30, 60), 0), ("Scaffolding", (51, 1, 100, 80), 0), ("helmet", (1, 1, 5, 5), 1)],
        "b": [("electric box", (1, 1, 50, 40), 0)],
        "c": [("slogan", (21, 31, 40, 50), 0)],
    }
    for stem, objs in objects.items():
        image(src / "JPEGImages" / f"{stem}.jpg", 100, 80)
        (src / "Annotations").mkdir(parents=True, exist_ok=True)
        (src / "Annotations" / f"{stem}.xml").write_text(soda_xml(f"{stem}.jpg", 100, 80, objs))
    (src / "ImageSets" / "Main").mkdir(parents=True)
    for split, stems in (("train", "a b"), ("val", "c"), ("test", "")):
        (src / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems.split()) + "\n")

    y = convert_dataset(src, "soda", tmp_path / "out")
    cfg = load_data_yaml(y)
    assert cfg["names"] == SODA_CLASSES
    assert (len(cfg["train"]), len(cfg["val"])) == (2, 1) and not cfg.get("test")  # the lists, not a seeded split
    # VOC pixels are 1-based inclusive: (11, 21, 30, 60) -> x 10..30, y 20..60 in 0-based edges
    person = f"0 {20 / 100:.6f} {40 / 80:.6f} {20 / 100:.6f} {40 / 80:.6f}"
    scaffold = f"{SODA_CLASSES.index('scaffold')} {75 / 100:.6f} {40 / 80:.6f} {50 / 100:.6f} {80 / 80:.6f}"
    assert labels(tmp_path / "out", "train", "a") == [person, scaffold]  # the difficult helmet is ignored
    assert labels(tmp_path / "out", "train", "b")[0].startswith(f"{SODA_CLASSES.index('ebox')} ")

    convert_dataset(src, "soda", tmp_path / "keep", keep_difficult=True)
    assert len(labels(tmp_path / "keep", "train", "a")) == 3
    samples, names = load_yolo_dataset(y, "val", cache=False)
    assert names == SODA_CLASSES and samples[0]["cls"].tolist() == [SODA_CLASSES.index("slogan")]


def mocs_json(images, anns, names=MOCS_CLASSES):
    return {"info": {"description": "MOCS"}, "licenses": [],
            "images": [{"id": i, "file_name": f, "width": w, "height": h} for i, (f, w, h) in enumerate(images, 1)],
            "annotations": anns, "categories": [{"id": i + 1, "name": n, "supercategory": "none"}
                                                for i, n in enumerate(names)]}


def test_mocs_folder_of_split_jsons_with_polygon_and_rle_masks(tmp_path):
    root = tmp_path / "MOCS"
    for f in ("t1.jpg", "t2.jpg", "v1.jpg", "s1.jpg"):
        image(root / "images" / f, 200, 100)
    poly = {"id": 1, "image_id": 1, "category_id": 7, "bbox": [20, 10, 40, 30], "area": 1200, "iscrowd": 0,
            "segmentation": [[20, 10, 60, 10, 60, 40, 20, 40]]}
    rle = {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 100, 50], "area": 5000, "iscrowd": 0,
           "segmentation": {"size": [100, 200], "counts": "abc"}}
    crowd = {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 1,
             "segmentation": {"size": [100, 200], "counts": "def"}}
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_train.json").write_text(
        json.dumps(mocs_json([("t1.jpg", 200, 100), ("t2.jpg", 200, 100)], [poly, rle, crowd])))
    (root / "annotations" / "instances_val.json").write_text(json.dumps(mocs_json([("v1.jpg", 200, 100)], [])))
    (root / "annotations" / "instances_test.json").write_text(
        json.dumps(mocs_json([("s1.jpg", 200, 100)], [{**poly, "id": 9}])))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the canonical names match: no warning
        y = convert_dataset(root / "annotations", "mocs", tmp_path / "out")
    cfg = load_data_yaml(y)
    assert cfg["names"] == MOCS_CLASSES
    assert (len(cfg["train"]), len(cfg["val"]), len(cfg["test"])) == (2, 1, 1)
    assert labels(tmp_path / "out", "train", "t1") == [f"6 {40 / 200:.6f} {25 / 100:.6f} {40 / 200:.6f} "
                                                       f"{30 / 100:.6f}"]  # Excavator = id 7 -> class 6
    assert labels(tmp_path / "out", "train", "t2") == ["0 0.250000 0.250000 0.500000 0.500000"]  # crowd dropped
    assert labels(tmp_path / "out", "val", "v1") == []

    renamed = mocs_json([("t1.jpg", 200, 100)], [poly], names=[n.upper() for n in MOCS_CLASSES[:-1]] + ["Other"])
    (tmp_path / "renamed_train.json").write_text(json.dumps(renamed))
    image(tmp_path / "t1.jpg", 200, 100)
    with pytest.warns(UserWarning, match="differ from the expected"):
        y2 = convert_dataset(tmp_path / "renamed_train.json", "mocs", tmp_path / "out2")
    assert load_data_yaml(y2)["names"][-1] == "Other"  # the file's names win


def test_cis_json_trains_directly_with_its_own_class_list(tmp_path):
    names = {3: "worker", 10: "excavator", 5: "hard hat"}  # non-contiguous ids -> classes in id order
    for split in ("train", "val"):
        image(tmp_path / "cis" / "images" / f"{split}.jpg", 64, 48)
        anns = [{"id": 1, "image_id": 1, "category_id": 10, "bbox": [8, 4, 16, 24], "iscrowd": 0,
                 "segmentation": [[8, 4, 24, 4, 24, 28]]},
                {"id": 2, "image_id": 1, "category_id": 3, "bbox": [32, 8, 8, 32], "iscrowd": 0, "segmentation": []}]
        d = {"images": [{"id": 1, "file_name": f"{split}.jpg", "width": 64, "height": 48}], "annotations": anns,
             "categories": [{"id": k, "name": v} for k, v in names.items()]}
        (tmp_path / "cis" / f"cis_{split}.json").write_text(json.dumps(d))
    splits, got = load_detection_data(tmp_path / "cis" / "cis_train.json")
    assert got == ["worker", "hard hat", "excavator"]
    assert [len(splits["train"]), len(splits["val"])] == [1, 1]  # the sibling val json is the val split
    s = splits["val"][0]
    assert s["cls"].tolist() == [2, 0] and s["boxes"].tolist() == [[8, 4, 24, 28], [32, 8, 40, 40]]
    y = convert_dataset(tmp_path / "cis", "cis", tmp_path / "out")
    assert load_data_yaml(y)["names"] == got
    assert labels(tmp_path / "out", "train", "train")[0] == f"2 {16 / 64:.6f} {16 / 48:.6f} {16 / 64:.6f} {24 / 48:.6f}"
