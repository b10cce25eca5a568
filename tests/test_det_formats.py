"""Detection dataset readers, checks, cache and converters, on tiny files written here."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import yaml
from PIL import Image

from leanvision.detect.data.check import DatasetCheckError, check_dataset, load_yolo_dataset
from leanvision.detect.data.convert import (
    MOCS_CLASSES,
    SODA_CLASSES,
    convert_dataset,
    seeded_split,
    write_coco_json,
)
from leanvision.detect.data.formats import (
    DatasetFormatError,
    img2label_path,
    load_data_yaml,
    read_coco,
    read_voc,
)


def write_image(path, w=64, h=48, color=(114, 114, 114)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), color).save(path)
    return path


def write_yolo(root, files: dict[str, str], names=("a", "b"), split_entry="images/train"):
    """files: image stem -> label text. Images are 64x48."""
    for stem, text in files.items():
        write_image(root / "images" / "train" / f"{stem}.jpg")
        lab = root / "labels" / "train" / f"{stem}.txt"
        lab.parent.mkdir(parents=True, exist_ok=True)
        lab.write_text(text)
    cfg = {"path": str(root), "train": split_entry, "val": split_entry, "names": {i: n for i, n in enumerate(names)}}
    (root / "data.yaml").write_text(yaml.safe_dump(cfg))
    return root / "data.yaml"


def voc_xml(fname, w, h, objects):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    return (
        f"<annotation><filename>{fname}</filename><size><width>{w}</width><height>{h}</height>"
        f"<depth>3</depth></size>{objs}</annotation>"
    )


def write_voc(root, items, splits=None):
    """items: id -> list of (name, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult)."""
    for i, objs in items.items():
        write_image(root / "JPEGImages" / f"{i}.jpg", 80, 60)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{i}.xml").write_text(voc_xml(f"{i}.jpg", 80, 60, objs))
    for split, ids in (splits or {}).items():
        (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")


def by_file(samples):
    return {os.path.basename(s["im_file"]).split(".")[0]: s for s in samples}


# ---------------------------------------------------------------------------------------- YOLO


def test_img2label_path_replaces_last_images_folder():
    assert str(img2label_path("/d/images/x/images/train/a.jpg")) == "/d/images/x/labels/train/a.txt"


def test_yolo_reader_gives_xyxy_pixels(tmp_path):
    y = write_yolo(tmp_path, {"im0": "0 0.5 0.5 0.25 0.5\n1 0.125 0.25 0.25 0.5\n", "im1": ""})
    samples, names = load_yolo_dataset(y, "train")
    assert names == ["a", "b"]
    s = by_file(samples)
    assert s["im0"]["shape"] == (48, 64)
    np.testing.assert_allclose(s["im0"]["boxes"], [[24, 12, 40, 36], [0, 0, 16, 24]], atol=1e-4)
    assert s["im0"]["cls"].dtype == np.int64 and s["im0"]["boxes"].dtype == np.float32
    assert s["im1"]["boxes"].shape == (0, 4)


def test_data_yaml_accepts_txt_lists_and_lists_of_entries(tmp_path):
    write_yolo(tmp_path, {"im0": "0 0.5 0.5 0.2 0.2\n", "im1": "1 0.5 0.5 0.2 0.2\n"})
    (tmp_path / "list.txt").write_text("./images/train/im0.jpg\n")
    cfg = {"path": ".", "train": ["list.txt", "images/train/im1.jpg"], "val": "images/train", "names": ["a", "b"]}
    (tmp_path / "d2.yaml").write_text(yaml.safe_dump(cfg))
    d = load_data_yaml(tmp_path / "d2.yaml")
    assert [os.path.basename(f) for f in d["train"]] == ["im0.jpg", "im1.jpg"]
    assert len(d["val"]) == 2 and d["test"] == [] and d["names"] == ["a", "b"]


def test_data_yaml_without_names_names_the_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("train: images\n")
    with pytest.raises(DatasetFormatError, match="bad.yaml"):
        load_data_yaml(tmp_path / "bad.yaml")


def test_broken_yolo_dataset_fails_listing_every_file_and_problem(tmp_path):
    y = write_yolo(
        tmp_path,
        {
            "good": "0 0.5 0.5 0.2 0.2\n",
            "outside": "0 0.95 0.5 0.3 0.2\n",  # x2 = 1.1 of the width
            "unknown": "7 0.5 0.5 0.2 0.2\n",
            "dup": "1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n",
            "zero": "0 0.5 0.5 0.0 0.2\n",
            "garbage": "0 0.5 abc 0.2 0.2\n",
            "corrupt": "0 0.5 0.5 0.2 0.2\n",
        },
    )
    (tmp_path / "images" / "train" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(DatasetCheckError) as e:
        load_yolo_dataset(y, "train", cache=False)
    msg = str(e.value)
    assert "good.jpg" not in msg
    for stem, problem in [
        ("outside", "outside"),
        ("unknown", "unknown class id 7"),
        ("dup", "duplicate"),
        ("zero", "zero or negative area"),
        ("garbage", "line 1: non-numeric"),
        ("corrupt", "corrupt"),
    ]:
        line = next(ln for ln in msg.splitlines() if f"{stem}.jpg" in ln)
        assert problem in line, line


def test_broken_yolo_dataset_skip_drops_bad_boxes_and_images(tmp_path):
    y = write_yolo(
        tmp_path,
        {
            "good": "0 0.5 0.5 0.2 0.2\n",
            "dup": "1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n0 1.5 0.5 0.2 0.2\n",
            "corrupt": "0 0.5 0.5 0.2 0.2\n",
        },
    )
    (tmp_path / "images" / "train" / "corrupt.jpg").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="2 file"):
        samples, _ = load_yolo_dataset(y, "train", on_error="skip", cache=False)
    s = by_file(samples)
    assert set(s) == {"good", "dup"}
    assert s["dup"]["cls"].tolist() == [1]  # the duplicate and the outside box are gone


def test_truncated_jpeg_is_reported(tmp_path):
    y = write_yolo(tmp_path, {"t": "0 0.5 0.5 0.2 0.2\n"})
    p = tmp_path / "images" / "train" / "t.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(DatasetCheckError, match="t.jpg.*corrupt"):
        load_yolo_dataset(y, "train", cache=False)


def test_image_pillow_reads_but_the_training_decoder_cannot_is_reported(tmp_path):
    """A PCX file under a .jpg name: Pillow opens it by content, OpenCV (what training decodes with) cannot,
    so the check must flag it rather than let training fail on it mid-epoch."""
    y = write_yolo(tmp_path, {"p": "0 0.5 0.5 0.2 0.2\n"})
    p = tmp_path / "images" / "train" / "p.jpg"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(p, format="PCX")
    with Image.open(p) as im:
        im.load()  # Pillow reads it
    with pytest.raises(DatasetCheckError, match="p.jpg.*cannot decode"):
        load_yolo_dataset(y, "train", cache=False)


def test_label_cache_is_written_atomically_and_invalidated_by_edits(tmp_path):
    y = write_yolo(tmp_path, {"im0": "0 0.5 0.5 0.25 0.5\n"})
    samples, _ = load_yolo_dataset(y, "train")
    cache = tmp_path / "labels" / "train.cache"
    assert cache.is_file() and not list((tmp_path / "labels").glob("*.tmp"))
    assert json.loads(cache.read_text())["samples"][0]["cls"] == [0]
    again, _ = load_yolo_dataset(y, "train")
    np.testing.assert_array_equal(again[0]["boxes"], samples[0]["boxes"])
    lab = tmp_path / "labels" / "train" / "im0.txt"
    lab.write_text("1 0.5 0.5 0.5 0.5\n")
    os.utime(lab, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    edited, _ = load_yolo_dataset(y, "train")
    assert edited[0]["cls"].tolist() == [1]
    np.testing.assert_allclose(edited[0]["boxes"], [[16, 12, 48, 36]], atol=1e-4)


def test_splits_sharing_a_folder_get_separate_caches(tmp_path):
    y = write_yolo(tmp_path, {"im0": "0 0.5 0.5 0.25 0.5\n"})  # val: images/train too
    load_yolo_dataset(y, "train")
    load_yolo_dataset(y, "val")
    assert sorted(p.name for p in (tmp_path / "labels").glob("*.cache")) == ["train.cache", "train.val.cache"]


def test_cache_dir_option(tmp_path):
    y = write_yolo(tmp_path / "ds", {"im0": "0 0.5 0.5 0.25 0.5\n"})
    load_yolo_dataset(y, "train", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.cache"))) == 1


# ---------------------------------------------------------------------------------------- COCO


def coco_dict():
    return {
        "images": [
            {"id": 10, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 11, "file_name": "b.jpg", "width": 64, "height": 48},
        ],
        "categories": [{"id": 9, "name": "z"}, {"id": 2, "name": "x"}, {"id": 5, "name": "y"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 10,
                "category_id": 5,
                "bbox": [1, 2, 10, 20],
                "iscrowd": 0,
                "segmentation": [[1, 2, 11, 2, 11, 22]],
            },
            {"id": 2, "image_id": 10, "category_id": 9, "bbox": [30, 5, 4, 6], "iscrowd": 0},
            {"id": 3, "image_id": 10, "category_id": 2, "bbox": [0, 0, 64, 48], "iscrowd": 1},
        ],
    }


def test_coco_reader_maps_sorted_ids_and_drops_crowd(tmp_path):
    for n in ("a", "b"):
        write_image(tmp_path / f"{n}.jpg")
    (tmp_path / "ann.json").write_text(json.dumps(coco_dict()))
    samples, names = read_coco(tmp_path / "ann.json")
    assert names == ["x", "y", "z"]  # category ids 2, 5, 9 -> 0, 1, 2
    s = by_file(samples)
    assert s["a"]["cls"].tolist() == [1, 2]
    np.testing.assert_allclose(s["a"]["boxes"], [[1, 2, 11, 22], [30, 5, 34, 11]])
    assert s["b"]["boxes"].shape == (0, 4)
    crowd, _ = read_coco(tmp_path / "ann.json", keep_crowd=True)
    assert by_file(crowd)["a"]["cls"].tolist() == [1, 2, 0]


def test_malformed_coco_json_names_the_file(tmp_path):
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(DatasetFormatError, match="broken.json"):
        read_coco(tmp_path / "broken.json")
    d = coco_dict()
    d["annotations"][0]["image_id"] = 99
    (tmp_path / "bad_ref.json").write_text(json.dumps(d))
    with pytest.raises(DatasetFormatError, match="bad_ref.json.*image_id 99"):
        read_coco(tmp_path / "bad_ref.json")


# ----------------------------------------------------------------------------------------- VOC


def test_voc_reader_converts_one_based_boxes_and_ignores_difficult(tmp_path):
    write_voc(tmp_path, {"0001": [("cat", (11, 21, 40, 50), 0), ("dog", (1, 1, 80, 60), 1)]})
    samples, names = read_voc(tmp_path, names=["cat", "dog"])
    np.testing.assert_allclose(samples[0]["boxes"], [[10, 20, 40, 50]])
    assert samples[0]["shape"] == (60, 80)
    kept, _ = read_voc(tmp_path, names=["cat", "dog"], keep_difficult=True)
    assert kept[0]["cls"].tolist() == [0, 1]
    np.testing.assert_allclose(kept[0]["boxes"][1], [0, 0, 80, 60])


def test_voc_reader_uses_imagesets_and_collects_names(tmp_path):
    write_voc(tmp_path, {"a": [("b_cls", (1, 1, 5, 5), 0)], "b": [("a_cls", (1, 1, 5, 5), 0)]}, {"train": ["b"]})
    samples, names = read_voc(tmp_path, split="train")
    assert len(samples) == 1 and names == ["a_cls"]
    all_samples, all_names = read_voc(tmp_path)
    assert all_names == ["a_cls", "b_cls"]
    assert by_file(all_samples)["a"]["cls"].tolist() == [1]


def test_malformed_voc_xml_and_unknown_class_are_reported_by_file(tmp_path):
    write_voc(tmp_path, {"ok": [("cat", (1, 1, 5, 5), 0)], "alien": [("ufo", (1, 1, 5, 5), 0)]})
    (tmp_path / "Annotations" / "broken.xml").write_text("<annotation><object>")
    samples, _ = read_voc(tmp_path, names=["cat"])
    with pytest.raises(DatasetCheckError) as e:
        check_dataset(samples, nc=1)
    msg = str(e.value)
    assert "broken.jpg: malformed xml broken.xml" in msg
    assert "alien.jpg: object #0: unknown class 'ufo'" in msg
    with pytest.warns(UserWarning):
        kept, _ = check_dataset(samples, nc=1, on_error="skip")
    assert sorted(by_file(kept)) == ["alien", "ok"]  # the unreadable xml's image is dropped, not kept empty
    assert len(by_file(kept)["alien"]["cls"]) == 0


# ----------------------------------------------------------------------------------- conversion


def test_voc_yolo_coco_round_trip_gives_the_same_boxes(tmp_path):
    items = {f"im{i}": [("cat", (3 + i, 5, 30 + i, 40), 0), ("dog", (40, 10 + i, 79, 59), 0)] for i in range(10)}
    write_voc(tmp_path / "voc", items)
    voc_samples, names = read_voc(tmp_path / "voc")
    y = convert_dataset(tmp_path / "voc", "voc", tmp_path / "yolo")
    yolo = {}
    for split in ("train", "val", "test"):
        yolo.update(by_file(load_yolo_dataset(y, split, cache=False)[0]))
    assert load_data_yaml(y)["names"] == names == ["cat", "dog"]
    assert set(yolo) == set(items)
    write_coco_json(voc_samples, names, tmp_path / "voc.json")
    coco, coco_names = read_coco(tmp_path / "voc.json", images_dir=tmp_path / "voc" / "JPEGImages")
    assert coco_names == names
    coco = by_file(coco)
    for s in voc_samples:
        k = os.path.basename(s["im_file"]).split(".")[0]
        assert yolo[k]["cls"].tolist() == coco[k]["cls"].tolist() == s["cls"].tolist()
        np.testing.assert_allclose(yolo[k]["boxes"], s["boxes"], atol=1e-3)  # 6-decimal normalised text
        np.testing.assert_allclose(coco[k]["boxes"], s["boxes"], atol=1e-5)


def test_coco_to_yolo_conversion(tmp_path):
    for n in ("a", "b"):
        write_image(tmp_path / "images" / f"{n}.jpg")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps(coco_dict()))
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(coco_dict()))
    y = convert_dataset(tmp_path / "annotations", "coco", tmp_path / "out")
    samples, names = load_yolo_dataset(y, "val", cache=False)
    assert names == ["x", "y", "z"]
    np.testing.assert_allclose(by_file(samples)["a"]["boxes"], [[1, 2, 11, 22], [30, 5, 34, 11]], atol=1e-3)


def test_soda_conversion_makes_a_seeded_8_1_1_split_and_maps_aliases(tmp_path):
    items = {f"{i:04d}": [("person", (2, 2, 20, 40), 0), ("electric box", (30, 30, 50, 50), 0)] for i in range(20)}
    write_voc(tmp_path / "soda", items)
    y = convert_dataset(tmp_path / "soda", "soda", tmp_path / "out", seed=3)
    cfg = load_data_yaml(y)
    assert cfg["names"] == SODA_CLASSES and len(SODA_CLASSES) == 15
    assert (len(cfg["train"]), len(cfg["val"]), len(cfg["test"])) == (16, 2, 2)
    assert (tmp_path / "out" / "val.txt").read_text().count(".jpg") == 2  # published file lists
    samples, _ = load_yolo_dataset(y, "val", cache=False)
    assert samples[0]["cls"].tolist() == [0, SODA_CLASSES.index("ebox")]
    split = seeded_split([f"{i:04d}" for i in range(20)], seed=3)
    assert sorted(os.path.basename(f)[:4] for f in cfg["val"]) == split["val"]
    assert seeded_split(list(reversed(range(20))), seed=3) == seeded_split(list(range(20)), seed=3)
    assert seeded_split(list(range(20)), seed=4) != seeded_split(list(range(20)), seed=3)


def test_mocs_and_cis_take_classes_from_the_json(tmp_path):
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(MOCS_CLASSES)]
    d = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "categories": cats,
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "bbox": [1, 1, 10, 10],
                "iscrowd": 0,
                "segmentation": [[1, 1, 11, 1, 11, 11]],
            }
        ],
    }
    write_image(tmp_path / "a.jpg")
    (tmp_path / "mocs_train.json").write_text(json.dumps(d))
    y = convert_dataset(tmp_path / "mocs_train.json", "mocs", tmp_path / "out")
    assert load_data_yaml(y)["names"] == MOCS_CLASSES and len(MOCS_CLASSES) == 13
    d["categories"] = [{"id": 7, "name": "worker"}, {"id": 1, "name": "crane"}]
    (tmp_path / "cis_train.json").write_text(json.dumps(d))
    y2 = convert_dataset(tmp_path / "cis_train.json", "cis", tmp_path / "out2")
    assert load_data_yaml(y2)["names"] == ["crane", "worker"]
    assert load_yolo_dataset(y2, "train", cache=False)[0][0]["cls"].tolist() == [1]


def test_convert_unknown_format_says_what_is_supported(tmp_path):
    with pytest.raises(ValueError, match="voc, coco, soda, mocs, cis"):
        convert_dataset(tmp_path, "kitti", tmp_path / "o")


def test_coco_image_info_file_without_annotations_reads_unlabelled(tmp_path):
    import json
    import warnings

    from PIL import Image

    from leanvision.detect.data.formats import read_coco

    (tmp_path / "images").mkdir()
    Image.new("RGB", (20, 10)).save(tmp_path / "images" / "a.jpg")
    f = tmp_path / "test.json"
    f.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 10}],
                             "categories": [{"id": 3, "name": "worker"}]}))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        samples, names = read_coco(f, images_dir=tmp_path / "images")
    assert names == ["worker"] and len(samples) == 1 and len(samples[0]["boxes"]) == 0
    assert any("without labels" in str(x.message) for x in w)
