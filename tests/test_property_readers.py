"""Property-based tests (hypothesis) of the detection readers and the box operations (issue 12).

Readers: random and broken input either parses into valid samples (after the dataset check with
``on_error="skip"``: int64 class ids in range, finite float32 xyxy boxes inside the image) or raises
:class:`DatasetFormatError` whose message starts with the file's path, never any other exception.
Boxes: the element-wise scores of ``ops/boxes.py`` equal torchvision.ops' pairwise IoU, GIoU,
DIoU and CIoU loss on random valid boxes (float64), and satisfy the IoU family's invariants.
Examples are kept few (the suite's time budget); deadline None because the first call warms caches.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.ops import box_iou, complete_box_iou_loss, distance_box_iou, generalized_box_iou

from leanvision.detect.data.check import check_dataset
from leanvision.detect.data.exports import read_export
from leanvision.detect.data.formats import (
    DatasetFormatError,
    load_data_yaml,
    read_coco,
    read_voc_xml,
    read_yolo_label,
)
from leanvision.ops.boxes import bbox2dist, bbox_iou, box_convert, dist2bbox

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
W, H = 64, 48  # every image written here


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("prop_images")
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (W, H), (90, 120, 150)).save(d / name)
    return d


def assert_valid(samples: list[dict], nc: int) -> None:
    """What every reader + check must give: the canonical sample format, nothing out of range."""
    for s in samples:
        h, w = s["shape"]
        assert s["cls"].dtype == np.int64 and s["boxes"].dtype == np.float32
        assert s["boxes"].shape == (len(s["cls"]), 4)
        assert ((s["cls"] >= 0) & (s["cls"] < nc)).all()
        b = s["boxes"]
        assert np.isfinite(b).all()
        assert (b[:, 0] < b[:, 2]).all() and (b[:, 1] < b[:, 3]).all()
        assert (b[:, [0, 2]] >= 0).all() and (b[:, [0, 2]] <= w).all()
        assert (b[:, [1, 3]] >= 0).all() and (b[:, [1, 3]] <= h).all()


def checked(samples: list[dict], nc: int) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skip summary; what was skipped is not under test here
        kept, _ = check_dataset(samples, nc, on_error="skip", verify_images=False)
    assert_valid(kept, nc)
    return kept


def assert_names_file(err: DatasetFormatError, path: Path) -> None:
    assert str(err).startswith(str(path)), str(err)
    assert "\n" not in str(err)


# ------------------------------------------------------------------------------------------ YOLO labels

number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-5, 10).map(str),
    st.sampled_from(["0.5", "1", "0", "-0", "1e400", "nan", "inf", "-inf", "1.0", "0x10", "1_0", "½", "", "abc"]),
)
label_line = st.one_of(st.lists(number, min_size=0, max_size=7).map(" ".join), st.text(max_size=40))


@SETTINGS
@given(lines=st.lists(label_line, max_size=8), nc=st.integers(1, 4))
@example(lines=["9.223372036854776e+18 0.0 0.0 0.0 0.0"], nc=1)  # found by hypothesis: 2**63 overflowed int64
def test_yolo_label_text_parses_or_reports_each_line(tmp_path_factory, lines, nc):
    f = tmp_path_factory.mktemp("yolo") / "x.txt"
    text = "\n".join(lines)
    f.write_bytes(text.encode("utf-8", "surrogatepass"))  # hypothesis text may hold lone surrogates
    cls, boxes, problems = read_yolo_label(f, (H, W))
    assert cls.dtype == np.int64 and boxes.dtype == np.float32 and boxes.shape == (len(cls), 4)
    try:
        n_lines = sum(1 for ln in f.read_text(encoding="utf-8").splitlines() if ln.split())
        assert len(cls) + len(problems) == n_lines  # every non-empty line is a box or a named problem
        assert all(p.startswith("line ") for p in problems)
    except UnicodeDecodeError:  # lone surrogates: the whole file is reported unreadable
        assert len(cls) == 0 and problems and problems[0].startswith("label file unreadable")
    checked([{"im_file": "x.jpg", "shape": (H, W), "cls": cls, "boxes": boxes, "problems": problems}], nc)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_yolo_label_random_bytes_never_raise(tmp_path_factory, data):
    f = tmp_path_factory.mktemp("yolo") / "x.txt"
    f.write_bytes(data)
    cls, boxes, problems = read_yolo_label(f, (H, W))
    checked([{"im_file": "x.jpg", "shape": (H, W), "cls": cls, "boxes": boxes, "problems": problems}], 3)


# -------------------------------------------------------------------------------------------- data.yaml

scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.floats(allow_nan=True),
                   st.text(alphabet="abcxyz -", max_size=8))
path_str = st.sampled_from(["images", "images/train", "missing", "list.txt", "a.jpg", "images/a.jpg", "",
                            "F://drive//x//images//train", "C:\\data\\images\\train", "/nonexistent/images/train"])
entry = st.one_of(path_str, scalar, st.lists(path_str, max_size=3), st.dictionaries(st.text("ab", max_size=2),
                                                                                       scalar, max_size=2))
names_value = st.one_of(st.lists(scalar, max_size=4), st.dictionaries(st.one_of(st.integers(-1, 4),
                                                                               st.text("0123a", max_size=2)),
                                                                      scalar, max_size=4), scalar)
yaml_cfg = st.fixed_dictionaries({}, optional={"names": names_value, "nc": scalar, "path": st.one_of(path_str, scalar),
                                               "train": entry, "val": entry, "test": entry})


def _yolo_tree(root: Path, image_dir: Path) -> None:
    (root / "images" / "train").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    for n in ("a.jpg", "b.jpg"):
        if not (root / "images" / "train" / n).exists():
            os.link(image_dir / n, root / "images" / "train" / n)
        (root / "labels" / "train" / n.replace(".jpg", ".txt")).write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "list.txt").write_text("images/train/a.jpg\n")


@SETTINGS
@given(cfg=yaml_cfg)
def test_data_yaml_reads_or_fails_naming_the_file(tmp_path_factory, image_dir, cfg):
    root = tmp_path_factory.mktemp("yaml")
    _yolo_tree(root, image_dir)
    y = root / "data.yaml"
    y.write_text(yaml.safe_dump(cfg))
    try:
        out = load_data_yaml(y)
    except DatasetFormatError as e:
        assert_names_file(e, y if "list.txt:" not in str(e) else root / "list.txt")
        return
    assert out["names"] and all(isinstance(n, str) and n for n in out["names"])
    for split in ("train", "val", "test"):
        assert all(isinstance(f, str) for f in out[split])


@SETTINGS
@given(data=st.binary(max_size=300))
def test_data_yaml_random_bytes_fail_naming_the_file(tmp_path_factory, data):
    y = tmp_path_factory.mktemp("yaml") / "data.yaml"
    y.write_bytes(data)
    try:
        load_data_yaml(y)
    except DatasetFormatError as e:
        assert_names_file(e, y)


# ------------------------------------------------------------------------------------------------- COCO

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.floats(allow_nan=True, allow_infinity=True),
                        st.text(alphabet="ab.jpg\x00", max_size=6))
coord = st.one_of(st.floats(-10, 80), st.sampled_from([math.nan, math.inf, -math.inf]))
bbox = st.one_of(st.lists(coord, min_size=0, max_size=5), json_scalar)
coco_image = st.fixed_dictionaries({"id": st.one_of(st.integers(0, 3), json_scalar)},
                                   optional={"file_name": st.one_of(st.sampled_from(["a.jpg", "b.jpg", "zz.jpg"]),
                                                                    json_scalar),
                                             "width": json_scalar, "height": json_scalar})
coco_ann = st.one_of(json_scalar, st.fixed_dictionaries(
    {"image_id": st.one_of(st.integers(0, 3), json_scalar), "category_id": st.one_of(st.integers(0, 3), json_scalar),
     "bbox": bbox}, optional={"iscrowd": json_scalar, "id": json_scalar}))
coco_cat = st.one_of(json_scalar, st.fixed_dictionaries({"id": st.one_of(st.integers(0, 3), json_scalar)},
                                                        optional={"name": json_scalar}))
coco = st.one_of(json_scalar, st.fixed_dictionaries(
    {}, optional={"images": st.one_of(st.lists(coco_image, max_size=3), json_scalar),
                  "annotations": st.one_of(st.lists(coco_ann, max_size=5), json_scalar),
                  "categories": st.one_of(st.lists(coco_cat, max_size=3), json_scalar)}))


@SETTINGS
@given(doc=coco)
# inputs that raised OverflowError / TypeError / KeyError / ValueError before (found reading the code; the random
# search did not reach them in 40 examples, so they are pinned here)
@example(doc={"images": [{"id": math.inf, "file_name": "a.jpg"}], "categories": []})
@example(doc={"images": [{"id": 1, "file_name": "a.jpg", "height": math.inf}], "categories": [], "annotations": []})
@example(doc={"images": [], "categories": [], "annotations": 5})
@example(doc={"images": [{"id": 1}], "categories": []})
@example(doc={"images": [{"id": 1, "file_name": "a\x00.jpg"}], "categories": []})
@example(doc={"images": [{"id": 1, "file_name": 7}], "categories": []})
@example(doc={"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "x"}],
              "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "iscrowd": 0}, [1]]})
def test_coco_json_reads_or_fails_naming_the_file(image_dir, doc):
    f = image_dir / "ann.json"
    f.write_text(json.dumps(doc))  # json.dumps writes NaN/Infinity, which json.loads (and COCO tools) accept
    try:
        samples, names = read_coco(f, images_dir=image_dir)
    except DatasetFormatError as e:
        assert_names_file(e, f)
        return
    assert all(isinstance(n, str) for n in names)
    kept = checked(samples, max(len(names), 1))
    assert all(Path(s["im_file"]).parent == image_dir for s in kept)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_coco_random_bytes_fail_naming_the_file(tmp_path_factory, data):
    f = tmp_path_factory.mktemp("coco") / "ann.json"
    f.write_bytes(data)
    with pytest.raises(DatasetFormatError) as e:
        read_coco(f)
    assert_names_file(e.value, f)


@SETTINGS
@given(doc=coco)
@example(doc={"images": [], "categories": [{"id": 0, "name": "p", "supercategory": "none"},
                                          {"id": 1, "name": "x", "supercategory": "p"}],
              "annotations": [{"image_id": 1, "category_id": [0], "bbox": [1, 2, 3, 4]}]})
def test_coco_export_folder_reads_or_fails_naming_a_file(tmp_path_factory, image_dir, doc):
    """The same documents as Roboflow's split folders (train/ and valid/ holding _annotations.coco.json)."""
    root = tmp_path_factory.mktemp("roboflow")
    for split in ("train", "valid"):
        (root / split).mkdir()
        (root / split / "_annotations.coco.json").write_text(json.dumps(doc))
    try:
        splits, names, _ = read_export(root)
    except DatasetFormatError as e:
        assert str(root) in str(e) and "\n" not in str(e)
        return
    assert set(splits) == {"train", "val"} and all(isinstance(n, str) for n in names)


darknet_line = st.one_of(st.sampled_from(["names = obj.names", "train = train.txt", "valid = valid.txt",
                                          "classes = 2", "classes = x", "names = missing.names", "backup = b/",
                                          "# comment", "", "train=", "= x", "names = data/obj.names"]),
                         st.text(alphabet="=#ab. /\x00", max_size=12))


@SETTINGS
@given(lines=st.lists(darknet_line, max_size=6), listed=st.lists(
    st.sampled_from(["a.jpg", "data/b.jpg", "zz.jpg", "../a.jpg", "", "a.txt"]), max_size=4))
def test_darknet_obj_data_reads_or_fails_naming_the_file(tmp_path_factory, image_dir, lines, listed):
    root = tmp_path_factory.mktemp("darknet")
    for name in ("a.jpg", "b.jpg"):
        (root / name).write_bytes((image_dir / name).read_bytes())
    (root / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 2 2\n")
    (root / "obj.names").write_text("p\nq\n")
    (root / "train.txt").write_text("\n".join(listed))
    (root / "obj.data").write_text("\n".join(lines))
    try:
        splits, names, _ = read_export(root / "obj.data")
    except DatasetFormatError as e:
        assert str(root) in str(e) and "\n" not in str(e)
        return
    assert names == ["p", "q"]
    for samples in splits.values():
        checked(samples, 2)


# -------------------------------------------------------------------------------------------------- VOC

voc_num = st.one_of(st.floats(-10, 100).map(repr),
                    st.sampled_from(["", "12", "1e400", "nan", "abc", "-3"]))
voc_obj = st.fixed_dictionaries({"name": st.sampled_from(["a", "B", "c", "", "  a "]),
                                 "difficult": st.sampled_from(["0", "1", "true", "x"]),
                                 "box": st.lists(voc_num, min_size=0, max_size=4)})


def _voc_xml(width: str, height: str, objects: list[dict], filename: str) -> str:
    objs = ""
    for o in objects:
        tags = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), o["box"]))
        objs += f"<object><name>{o['name']}</name><difficult>{o['difficult']}</difficult><bndbox>{tags}</bndbox>" \
                "</object>"
    return (f"<annotation><filename>{filename}</filename><size><width>{width}</width><height>{height}</height>"
            f"</size>{objs}</annotation>")


@SETTINGS
@given(width=voc_num, height=voc_num, objects=st.lists(voc_obj, max_size=4),
       filename=st.sampled_from(["a.jpg", "b.jpg", "none.jpg", ""]), known=st.booleans(), keep_difficult=st.booleans())
def test_voc_xml_reads_into_valid_samples(tmp_path_factory, image_dir, width, height, objects, filename, known,
                                          keep_difficult):
    x = tmp_path_factory.mktemp("voc") / "a.xml"
    x.write_text(_voc_xml(width, height, objects, filename))
    names = ["a", "b"] if known else None
    sample, seen = read_voc_xml(x, names, image_dir, keep_difficult=keep_difficult)
    nc = len(names) if known else max(len(seen), 1)
    checked([sample], nc)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_voc_random_bytes_are_a_problem_not_an_exception(tmp_path_factory, image_dir, data):
    x = tmp_path_factory.mktemp("voc") / "a.xml"
    x.write_bytes(data)
    sample, _ = read_voc_xml(x, ["a"], image_dir)
    assert checked([sample], 1) == [] or sample["problems"] == [] or sample["cls"].size == 0


# ------------------------------------------------------------------------------------------------ boxes


@st.composite
def xyxy(draw, n: int | None = None, min_side: float = 0.0):
    """Valid boxes (x1 <= x2, y1 <= y2) as float64 Tensor[n, 4]."""
    n = draw(st.integers(1, 6)) if n is None else n
    coord = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)
    side = st.floats(min_side, 80, allow_nan=False, allow_infinity=False, width=32)
    rows = [draw(st.tuples(coord, coord, side, side)) for _ in range(n)]
    return torch.tensor([[x, y, x + w, y + h] for x, y, w, h in rows], dtype=torch.float64)


@SETTINGS
@given(data=st.data())
def test_iou_family_equals_torchvision(data):
    """Element-wise bbox_iou == the diagonal of torchvision's pairwise IoU, GIoU, DIoU, and 1 - CIoU loss."""
    a = data.draw(xyxy(min_side=0.5))
    b = data.draw(xyxy(n=len(a), min_side=0.5))
    eps = 1e-7
    for kind, ref in (("iou", box_iou(a, b).diagonal()), ("giou", generalized_box_iou(a, b).diagonal()),
                      ("diou", distance_box_iou(a, b, eps=eps).diagonal()),
                      ("ciou", 1 - complete_box_iou_loss(a, b, eps=eps))):
        got = bbox_iou(a, b, kind=kind, eps=eps)
        # our eps sits on the heights and the union, torchvision's only in the enclosing diagonal: 1e-6 covers it
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6, msg=kind)


@SETTINGS
@given(data=st.data(), kind=st.sampled_from(["iou", "giou", "diou", "ciou", "eiou", "aiou"]))
def test_iou_family_invariants(data, kind):
    a = data.draw(xyxy())
    b = data.draw(xyxy(n=len(a)))
    s = bbox_iou(a, b, kind=kind)
    assert torch.isfinite(s).all()  # also for zero-width / zero-height boxes
    assert (s <= 1 + 1e-6).all()
    if kind == "iou":
        assert (s >= 0).all()
    if kind in ("iou", "giou", "diou"):
        torch.testing.assert_close(s, bbox_iou(b, a, kind=kind))  # symmetric
    shift = torch.tensor([13.5, -7.25, 13.5, -7.25], dtype=torch.float64)
    torch.testing.assert_close(bbox_iou(a + shift, b + shift, kind=kind), s, atol=1e-9, rtol=1e-9)
    big = data.draw(xyxy(n=len(a), min_side=1.0))
    self_score = bbox_iou(big, big, kind=kind)
    torch.testing.assert_close(self_score, torch.ones_like(self_score), atol=1e-6, rtol=0)
    if kind in ("diou", "ciou", "giou"):
        assert (s <= bbox_iou(a, b, kind="iou") + 1e-9).all()  # penalties only subtract


@SETTINGS
@given(data=st.data())
def test_box_conversions_round_trip(data):
    a = data.draw(xyxy())
    c = box_convert(a, "xyxy", "cxcywh")
    torch.testing.assert_close(box_convert(c, "cxcywh", "xyxy"), a, atol=1e-9, rtol=0)
    torch.testing.assert_close(c[:, 2:], a[:, 2:] - a[:, :2])
    # ltrb distances from any point inside the box decode back to it, in both output formats
    t = data.draw(st.floats(0, 1))
    pts = a[:, :2] + t * (a[:, 2:] - a[:, :2])
    d = bbox2dist(pts, a)
    assert (d >= -1e-9).all()
    torch.testing.assert_close(dist2bbox(d, pts, xywh=False), a, atol=1e-9, rtol=0)
    torch.testing.assert_close(dist2bbox(d, pts, xywh=True), c, atol=1e-9, rtol=0)
