"""Detection data as Roboflow, CVAT, Label Studio and LabelImg export it (issue 13, item 1): each layout is built
here as the tool's documentation describes its export, from one table of boxes in pixels, and read through the
entry points training and validation use; the boxes read back must equal the table (VOC's 1-based inclusive
corners converted by hand)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from leanvision.cli import main
from leanvision.detect.data.exports import read_export
from leanvision.detect.data.formats import DatasetFormatError
from leanvision.detect.train import load_detection_data
from leanvision.detect.val import load_eval_split

NAMES = ["Hardhat", "Person"]
W, H = 64, 48
# split -> image stem -> [(class index, x1, y1, x2, y2) in pixels]
TRUTH = {
    "train": {f"t{i}": [(i % 2, 4 + i, 6, 30 + i, 40), (1, 40, 2, 60, 20)] for i in range(10)},
    "val": {"v0": [(0, 10, 10, 20, 30)], "v1": [(1, 2, 4, 50, 44)]},
    "test": {"s0": [(1, 8, 8, 16, 16)]},
}


def image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (W, H), (90, 120, 150)).save(path)


def yolo_line(c, x1, y1, x2, y2):
    return f"{c} {(x1 + x2) / 2 / W:.6f} {(y1 + y2) / 2 / H:.6f} {(x2 - x1) / W:.6f} {(y2 - y1) / H:.6f}"


def coco_json(stems: dict, file_name=lambda s: f"{s}.jpg", project="css"):
    """Roboflow style when ``project`` is given: the project is category 0 and every class's supercategory."""
    cats = ([{"id": 0, "name": project, "supercategory": "none"}] if project else [])
    first = 1 if project else 0
    cats += [{"id": first + i, "name": n, "supercategory": project or ""} for i, n in enumerate(NAMES)]
    images, anns = [], []
    for k, (stem, boxes) in enumerate(stems.items()):
        images.append({"id": k, "file_name": file_name(stem), "width": W, "height": H})
        for c, x1, y1, x2, y2 in boxes:
            anns.append({"id": len(anns), "image_id": k, "category_id": first + c, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": (x2 - x1) * (y2 - y1), "iscrowd": 0, "segmentation": []})
    return json.dumps({"info": {}, "licenses": [], "categories": cats, "images": images, "annotations": anns})


def voc_xml(stem, boxes, names=NAMES):
    objs = "".join(f"<object><name>{names[c]}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin>"
                   f"<ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                   for c, x1, y1, x2, y2 in boxes)
    return (f"<annotation><folder></folder><filename>{stem}.jpg</filename><size><width>{W}</width>"
            f"<height>{H}</height><depth>3</depth></size>{objs}</annotation>")


ALL = {**TRUTH["train"], **TRUTH["val"], **TRUTH["test"]}


def voc_export(root, image_folder):
    """Every image of TRUTH in ``root/image_folder`` with its xml in ``root/Annotations``."""
    (root / "Annotations").mkdir(parents=True)
    for stem, boxes in ALL.items():
        image(root / image_folder / f"{stem}.jpg")
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(stem, boxes))
    return root


def boxes_of(samples):
    return {os.path.basename(s["im_file"]).rsplit(".", 1)[0]:
            sorted((int(c), *np.round(b, 3).tolist()) for c, b in zip(s["cls"], s["boxes"])) for s in samples}


def expected(*splits):
    return {stem: sorted((c, *map(float, xyxy)) for c, *xyxy in boxes)
            for split in splits for stem, boxes in TRUTH[split].items()}


def assert_split(samples, *splits):
    got = boxes_of(samples)
    want = expected(*splits)
    assert set(got) == set(want)
    for stem in want:
        assert np.allclose(np.asarray(got[stem])[:, 1:], np.asarray(want[stem])[:, 1:], atol=1e-3), stem
        assert [g[0] for g in got[stem]] == [w[0] for w in want[stem]], stem


def assert_all_images_in_train_and_val(splits):
    """A layout without a val split: the seeded split keeps every image exactly once."""
    assert_split(splits["train"] + splits["val"], "train", "val", "test")
    assert splits["val"] and splits["train"]


# ------------------------------------------------------------------------------------------------- Roboflow


def roboflow_coco(root):
    for split, folder in (("train", "train"), ("val", "valid"), ("test", "test")):
        for stem in TRUTH[split]:
            image(root / folder / f"{stem}.jpg")
        (root / folder / "_annotations.coco.json").write_text(coco_json(TRUTH[split]))
    (root / "README.roboflow.txt").write_text("exported from roboflow.com\n")
    return root


def test_roboflow_coco_folder_reads_its_three_splits_and_leaves_the_project_category_out(tmp_path, capsys):
    root = roboflow_coco(tmp_path / "export")
    splits, names = load_detection_data(root)
    assert names == NAMES
    assert "is the export's name" in capsys.readouterr().out
    assert_split(splits["train"], "train")
    assert_split(splits["val"], "val")
    test, test_names = load_eval_split(root, "test")
    assert test_names == NAMES
    assert_split(test, "test")
    # the train json itself finds its valid/ and test/ siblings
    found, names, _ = read_export(root / "train" / "_annotations.coco.json")
    assert set(found) == {"train", "val", "test"} and names == NAMES


def test_a_coco_category_0_that_boxes_use_is_a_class(tmp_path):
    """Only the Roboflow pattern (supercategory 'none', every other class under it, no box) is left out."""
    stems = {"a": [(0, 1, 1, 10, 10)]}
    image(tmp_path / "a.jpg")
    data = json.loads(coco_json(stems))
    data["annotations"][0]["category_id"] = 0  # a box of the 'project' category: then it is a class
    (tmp_path / "x.json").write_text(json.dumps(data))
    _, names, _ = read_export(tmp_path / "x.json")
    assert names == ["css", *NAMES]


def test_roboflow_voc_folders_read_each_xml_beside_its_image(tmp_path):
    root = tmp_path / "export"
    for split, folder in (("train", "train"), ("val", "valid"), ("test", "test")):
        for stem, boxes in TRUTH[split].items():
            image(root / folder / f"{stem}.jpg")
            (root / folder / f"{stem}.xml").write_text(voc_xml(stem, boxes))
    splits, names = load_detection_data(root)
    assert [n.lower() for n in names] == [n.lower() for n in NAMES]
    assert_split(splits["train"], "train")
    assert_split(splits["val"], "val")
    assert_split(load_eval_split(root, "test")[0], "test")


def test_roboflow_yolo_folder_reads_its_data_yaml_with_the_publishers_paths(tmp_path, capsys):
    root = tmp_path / "export"
    for split, folder in (("train", "train"), ("val", "valid"), ("test", "test")):
        for stem, boxes in TRUTH[split].items():
            image(root / folder / "images" / f"{stem}.jpg")
            (root / folder / "labels").mkdir(parents=True, exist_ok=True)
            (root / folder / "labels" / f"{stem}.txt").write_text("\n".join(yolo_line(*b) for b in boxes))
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "../train/images", "val": "../valid/images",
                                                    "test": "../test/images", "nc": 2, "names": NAMES}))
    splits, names = load_detection_data(root)
    assert names == NAMES
    assert "is an export folder; reading" in capsys.readouterr().out
    assert_split(splits["train"], "train")
    assert_split(splits["val"], "val")


# ------------------------------------------------------------------------------------------------------ CVAT


def test_cvat_yolo_1_1_obj_data_with_darknet_paths_and_labels_beside_images(tmp_path):
    root = tmp_path / "images" / "export"  # under a folder named images: labels still beside, not in ../labels
    lines = []
    for stem, boxes in ALL.items():
        image(root / "obj_train_data" / f"{stem}.jpg")
        (root / "obj_train_data" / f"{stem}.txt").write_text("\n".join(yolo_line(*b) for b in boxes) + "\n")
        lines.append(f"data/obj_train_data/{stem}.jpg")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "obj.names").write_text("\n".join(NAMES) + "\n")
    (root / "obj.data").write_text("classes = 2\ntrain = data/train.txt\nnames = data/obj.names\nbackup = backup/\n")
    splits, names = load_detection_data(root)
    assert names == NAMES
    assert_all_images_in_train_and_val(splits)


def test_cvat_yolo_1_1_with_a_valid_list_uses_it(tmp_path):
    root = tmp_path / "images" / "export"
    for split in ("train", "val"):
        folder = "obj_train_data" if split == "train" else "obj_valid_data"
        for stem, boxes in TRUTH[split].items():
            image(root / folder / f"{stem}.jpg")
            (root / folder / f"{stem}.txt").write_text("\n".join(yolo_line(*b) for b in boxes))
        name = "train.txt" if split == "train" else "valid.txt"
        (root / name).write_text("\n".join(f"data/{folder}/{s}.jpg" for s in TRUTH[split]))
    (root / "obj.names").write_text("\n".join(NAMES))
    (root / "obj.data").write_text("classes = 2\ntrain = data/train.txt\nvalid = data/valid.txt\n"
                                   "names = data/obj.names\n")
    splits, _ = load_detection_data(root / "obj.data")
    assert_split(splits["train"], "train")
    assert_split(splits["val"], "val")


@pytest.mark.parametrize("text, key", [("train = train.txt\n", "names"), ("names = obj.names\n", "train"),
                                       ("classes = 3\nnames = obj.names\ntrain = train.txt\n", "classes = 3")])
def test_a_broken_obj_data_is_one_line_naming_the_file_and_key(tmp_path, text, key):
    (tmp_path / "obj.names").write_text("a\nb\n")
    (tmp_path / "train.txt").write_text("")
    (tmp_path / "obj.data").write_text(text)
    with pytest.raises(DatasetFormatError, match=key) as e:
        read_export(tmp_path / "obj.data")
    assert str(tmp_path / "obj.data") in str(e.value) and "\n" not in str(e.value)


def test_cvat_ultralytics_yolo_export_with_image_lists(tmp_path):
    """CVAT's 'Ultralytics YOLO Detection' export: data.yaml (path ./, names as a mapping), train.txt / val.txt
    listing images/<subset>/..., labels in labels/<subset>/."""
    root = tmp_path / "export"
    for split in ("train", "val"):
        for stem, boxes in TRUTH[split].items():
            image(root / "images" / split / f"{stem}.jpg")
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{stem}.txt").write_text("\n".join(yolo_line(*b) for b in boxes))
        (root / f"{split}.txt").write_text("".join(f"images/{split}/{s}.jpg\n" for s in TRUTH[split]))
    (root / "data.yaml").write_text(yaml.safe_dump({"path": "./", "train": "train.txt", "val": "val.txt",
                                                    "names": dict(enumerate(NAMES))}))
    splits, names = load_detection_data(root)
    assert names == NAMES
    assert_split(splits["train"], "train")
    assert_split(splits["val"], "val")


def test_cvat_coco_1_0_instances_default_with_subset_image_folder(tmp_path):
    root = tmp_path / "export"
    stems = ALL
    for stem in stems:
        image(root / "images" / "default" / f"{stem}.jpg")
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_default.json").write_text(coco_json(stems, project=""))
    splits, names = load_detection_data(root)
    assert names == NAMES
    assert_all_images_in_train_and_val(splits)


def test_cvat_voc_1_1_with_default_subset_list_and_labelmap(tmp_path):
    root = voc_export(tmp_path / "export", "JPEGImages")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "default.txt").write_text("\n".join(ALL))
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nHardhat:1,2,3::\nPerson:4,5,6::\n")
    splits, names = load_detection_data(root)
    assert [n.lower() for n in names] == [n.lower() for n in NAMES]
    assert_all_images_in_train_and_val(splits)


# ----------------------------------------------------------------------------------------------- Label Studio


def test_label_studio_yolo_export_classes_txt_images_labels(tmp_path):
    root = tmp_path / "export"
    stems = ALL
    for stem, boxes in stems.items():
        image(root / "images" / f"{stem}.jpg")
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{stem}.txt").write_text("\n".join(yolo_line(*b) for b in boxes))
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    (root / "notes.json").write_text(json.dumps({"categories": [{"id": i, "name": n} for i, n in enumerate(NAMES)]}))
    splits, names = load_detection_data(root)
    assert names == NAMES
    assert_all_images_in_train_and_val(splits)


def test_label_studio_coco_result_json_with_images_prefix(tmp_path):
    root = tmp_path / "export"
    stems = ALL
    for stem in stems:
        image(root / "images" / f"{stem}.jpg")
    (root / "result.json").write_text(coco_json(stems, file_name=lambda s: f"images/{s}.jpg", project=""))
    splits, names = load_detection_data(root)
    assert names == NAMES
    assert_all_images_in_train_and_val(splits)


def test_label_studio_voc_export_keeps_images_in_images(tmp_path):
    root = voc_export(tmp_path / "export", "images")
    splits, _ = load_detection_data(root, on_error="fail")
    assert_all_images_in_train_and_val(splits)


def test_labelimg_yolo_folder_labels_beside_images(tmp_path):
    root = tmp_path / "images" / "shots"
    stems = ALL
    for stem, boxes in stems.items():
        image(root / f"{stem}.jpg")
        (root / f"{stem}.txt").write_text("\n".join(yolo_line(*b) for b in boxes))
    (root / "classes.txt").write_text("\n".join(NAMES))
    splits, names = load_detection_data(root, on_error="fail")
    assert names == NAMES
    assert_all_images_in_train_and_val(splits)


def test_an_unknown_folder_says_which_layouts_are_read(tmp_path):
    image(tmp_path / "a.jpg")
    with pytest.raises(DatasetFormatError, match="unknown dataset format.*obj.data.*classes.txt.*Roboflow"):
        load_detection_data(tmp_path)


def test_a_layout_without_test_split_refuses_split_test_by_name(tmp_path):
    root = tmp_path / "export"
    (root / "images").mkdir(parents=True)
    image(root / "images" / "a.jpg")
    (root / "classes.txt").write_text("a\n")
    assert main(["detect", "val", "--weights", str(tmp_path / "missing.pt"), "--data", str(root), "--split",
                 "test", "--workers", "0"]) == 2


# ------------------------------------------------------------------------------------------------------- CLI


def test_train_and_val_from_the_cli_on_a_roboflow_coco_export_folder(tmp_path, capsys):
    root = roboflow_coco(tmp_path / "export")
    rc = main(["detect", "train", "--model", "yolov8n", "--data", str(root), "--epochs", "1", "--batch", "2",
               "--imgsz", "64", "--workers", "0", "--project", str(tmp_path / "runs"), "--no-progress", "--no-plots"])
    assert rc == 0
    run = tmp_path / "runs" / "train"
    assert main(["detect", "val", "--weights", str(run / "best.pt"), "--data", str(root), "--split", "test",
                 "--workers", "0", "--no-plots"]) == 0
    first_words = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert "Hardhat" in first_words and "Person" in first_words and "css" not in first_words
