"""Synthetic construction-site scenes: deterministic, valid YOLO labels, labels on the drawn objects."""

from __future__ import annotations

import time

import numpy as np

from leanvision.detect.data.check import load_yolo_dataset
from leanvision.detect.data.formats import load_data_yaml
from leanvision.detect.data.synth import SYNTH_CLASSES, generate_synthetic_dataset, render_scene


def read_tree(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in (".jpg", ".txt")
    }


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    generate_synthetic_dataset(tmp_path / "a", images=6, imgsz=96, seed=7)
    generate_synthetic_dataset(tmp_path / "b", images=6, imgsz=96, seed=7)
    generate_synthetic_dataset(tmp_path / "c", images=6, imgsz=96, seed=8)
    a, b, c = read_tree(tmp_path / "a"), read_tree(tmp_path / "b"), read_tree(tmp_path / "c")
    assert a == b and len(a) == 12
    assert a != c


def test_dataset_is_valid_yolo_with_labels_inside_the_images(tmp_path):
    y = generate_synthetic_dataset(tmp_path, images=30, imgsz=128, seed=0, val_fraction=0.2)
    cfg = load_data_yaml(y)
    assert cfg["names"] == SYNTH_CLASSES
    assert (len(cfg["train"]), len(cfg["val"])) == (24, 6)
    n_boxes, seen = 0, set()
    for split in ("train", "val"):
        samples, _ = load_yolo_dataset(y, split, on_error="fail", cache=False)  # the full dataset check passes
        for s in samples:
            assert s["shape"] == (128, 128)
            b = s["boxes"]
            assert (b >= 0).all() and (b <= 128).all() and (b[:, 2:] > b[:, :2]).all()
            n_boxes += len(b)
            seen.update(s["cls"].tolist())
    assert n_boxes > 60 and seen == set(range(len(SYNTH_CLASSES)))


def test_parts_lie_inside_their_worker_and_boxes_cover_non_background_pixels():
    found_part = False
    for i in range(20):
        img, cls, boxes = render_scene(np.random.default_rng((3, i)), 160)
        assert img.size == (160, 160) and len(cls) == len(boxes)
        persons = boxes[cls == 0]
        for part in boxes[(cls == 1) | (cls == 2)]:
            # a visible helmet/vest belongs to a person whose (visible) box contains it, unless the person
            # itself is mostly hidden and so not labelled
            inside = ((persons[:, :2] <= part[:2] + 1e-3) & (persons[:, 2:] >= part[2:] - 1e-3)).all(1)
            found_part |= bool(inside.any())
        for b in boxes:
            assert b[2] - b[0] >= 3 and b[3] - b[1] >= 3
    assert found_part


def test_generation_is_fast(tmp_path):
    t = time.perf_counter()
    generate_synthetic_dataset(tmp_path, images=40, imgsz=320, seed=1)
    # ~30 ms per 320 px scene on one core; the bound leaves room for a loaded shared CI machine
    assert time.perf_counter() - t < 20


def test_synthetic_val_loader_round_trip_gives_map_one(tmp_path):
    """Data side end to end: synth -> checked samples -> val loader -> boxes mapped back -> evaluator.

    Ground-truth boxes in network-input pixels, mapped back with the batch metadata and scored as
    predictions against the original labels, must give mAP 1 (this is the path a validator takes).
    """
    import torch

    from leanvision.detect.data.augment import scale_boxes_to_original
    from leanvision.detect.data.dataset import build_detection_loader
    from leanvision.detect.evaluate import DetectionEvaluator

    y = generate_synthetic_dataset(tmp_path, images=10, imgsz=120, seed=2, val_fraction=0.5)
    samples, names = load_yolo_dataset(y, "val")
    loader = build_detection_loader(samples, imgsz=96, batch_size=3, augment=False, workers=2)
    ev = DetectionEvaluator(names)
    seen = 0
    for images, batch in loader:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 96, 96)
        preds, targets = [], []
        for j in range(len(images)):
            m = batch["img_idx"] == j
            back = scale_boxes_to_original(batch["boxes"][m], batch["ratio_pad"][j], batch["ori_shape"][j])
            preds.append(torch.cat([back, torch.ones(len(back), 1), batch["cls"][m, None].float()], 1))
            s = samples[seen + j]
            assert s["im_file"] == batch["im_file"][j]
            targets.append({"cls": torch.from_numpy(s["cls"]), "boxes": torch.from_numpy(s["boxes"])})
        ev.update(preds, targets, shapes=batch["ori_shape"])
        seen += len(images)
    r = ev.compute()
    assert seen == 5 and r["instances"] > 5
    assert r["map"] > 0.999 and r["map50"] == 1.0


def test_rerun_with_fewer_images_leaves_no_stale_scenes(tmp_path):
    generate_synthetic_dataset(tmp_path, images=8, imgsz=64, seed=0)
    y = generate_synthetic_dataset(tmp_path, images=4, imgsz=64, seed=0)
    cfg = load_data_yaml(y)
    assert len(cfg["train"]) + len(cfg["val"]) == 4
    assert len(list((tmp_path / "labels").rglob("*.txt"))) == 4
