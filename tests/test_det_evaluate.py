"""COCO mAP via faster-coco-eval against pycocotools; P/R at best F1 on a hand-made case; writers."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from leanvision.detect.draw import draw_boxes, prediction_records, write_predictions_json, write_yolo_txt
from leanvision.detect.evaluate import DetectionEvaluator, format_results, match_predictions, pr_at_best_f1

NAMES = ["person", "helmet", "vest"]


def random_case(seed, n_images=25, k=3):
    """GT boxes and noisy predictions (jittered true boxes, misses, wrong classes, random false positives)."""
    rng = np.random.default_rng(seed)
    preds, targets, shapes = [], [], []
    for _ in range(n_images):
        h, w = int(rng.integers(100, 300)), int(rng.integers(100, 300))
        n = int(rng.integers(0, 7))
        xy = rng.uniform(0, 0.7, (n, 2)) * [w, h]
        wh = rng.uniform(8, 80, (n, 2))
        gt = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1)
        gcls = rng.integers(0, k, n)
        keep = rng.random(n) < 0.8
        jit = gt[keep] + rng.normal(0, 4, (keep.sum(), 4))
        pcls = np.where(rng.random(keep.sum()) < 0.9, gcls[keep], rng.integers(0, k, keep.sum()))
        m = int(rng.integers(0, 5))
        fxy = rng.uniform(0, 0.8, (m, 2)) * [w, h]
        fp = np.concatenate([fxy, fxy + rng.uniform(5, 60, (m, 2))], 1)
        boxes = np.concatenate([jit, fp], 0)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        scores = rng.uniform(0.01, 1, len(boxes))
        cls = np.concatenate([pcls, rng.integers(0, k, m)])
        preds.append(torch.tensor(np.concatenate([boxes, scores[:, None], cls[:, None]], 1), dtype=torch.float32))
        targets.append({"cls": torch.tensor(gcls), "boxes": torch.tensor(gt, dtype=torch.float32)})
        shapes.append((h, w))
    return preds, targets, shapes


def pycocotools_reference(preds, targets, shapes, k):
    """COCO dicts built here from the raw arrays, evaluated by pycocotools (the original implementation)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for i, (p, t, (h, w)) in enumerate(zip(preds, targets, shapes), start=1):
        images.append({"id": i, "width": w, "height": h})
        for c, b in zip(t["cls"].tolist(), t["boxes"].double().tolist()):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": c + 1,
                    "iscrowd": 0,
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "area": (b[2] - b[0]) * (b[3] - b[1]),
                }
            )
        for x1, y1, x2, y2, s, c in p.double().tolist():
            dets.append({"image_id": i, "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c + 1} for c in range(k)]}
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"][:, :, :, 0, -1]
    per_class = []
    for c in range(k):
        pc = prec[:, :, c]
        per_class.append((pc[0][pc[0] > -1].mean(), pc[pc > -1].mean()) if (pc > -1).any() else (np.nan, np.nan))
    return ev.stats[1], ev.stats[0], per_class


def test_perfect_predictions_give_map_one():
    _, targets, shapes = random_case(0)
    preds = [
        torch.cat([t["boxes"], torch.full((len(t["cls"]), 1), 0.9), t["cls"][:, None].float()], 1) for t in targets
    ]
    ev = DetectionEvaluator(NAMES)
    ev.update(preds, targets, shapes=shapes)
    r = ev.compute()
    assert r["map50"] == pytest.approx(1.0) and r["map"] == pytest.approx(1.0)
    assert r["precision"] == pytest.approx(1.0) and r["recall"] == pytest.approx(1.0)
    assert all(c["ap"] == pytest.approx(1.0) for c in r["per_class"] if c["instances"])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_map_matches_pycocotools_on_random_predictions(seed):
    preds, targets, shapes = random_case(seed)
    ev = DetectionEvaluator(NAMES)
    for i in range(0, len(preds), 4):  # several update calls, as in a validation loop
        ev.update(preds[i : i + 4], targets[i : i + 4], shapes=shapes[i : i + 4])
    r = ev.compute()
    map50, map_, per_class = pycocotools_reference(preds, targets, shapes, len(NAMES))
    assert 0.05 < r["map"] < 0.95  # a non-trivial case
    assert r["map50"] == pytest.approx(map50, abs=1e-6)
    assert r["map"] == pytest.approx(map_, abs=1e-6)
    for c, (ap50, ap) in zip(r["per_class"], per_class):
        assert c["ap50"] == pytest.approx(ap50, abs=1e-6, nan_ok=True)
        assert c["ap"] == pytest.approx(ap, abs=1e-6, nan_ok=True)


def test_precision_recall_at_best_f1_hand_case():
    # one class, 4 GT boxes; predictions by score: TP 0.9, TP 0.8, FP 0.7, TP 0.6, FP 0.3.
    # counting down the scores: F1 = .40, .67, .57, .75 (P = R = 3/4), .67 -> best at P = R = 0.75
    gt = torch.tensor([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]], dtype=torch.float32)
    pred = torch.tensor(
        [
            [0, 0, 10, 10, 0.9, 0],
            [20, 0, 30, 10, 0.8, 0],
            [80, 80, 90, 90, 0.7, 0],
            [40, 0, 50, 10, 0.6, 0],
            [85, 85, 95, 95, 0.3, 0],
        ]
    )
    for smooth in (True, False):
        ev = DetectionEvaluator(["a"], smooth_f1=smooth)
        ev.update([pred], [{"cls": torch.zeros(4, dtype=torch.long), "boxes": gt}], shapes=[(100, 100)])
        r = ev.compute()
        assert r["precision"] == pytest.approx(0.75) and r["recall"] == pytest.approx(0.75)
        assert 0.3 < r["conf_threshold"] <= 0.6


def test_pr_curve_means_over_classes_with_ground_truth_only():
    tp = np.array([True, False])
    p, r, _ = pr_at_best_f1(tp, np.array([0.9, 0.8]), np.array([0, 2]), np.array([1, 0, 0]), smooth_f1=False)
    assert p[0] == 1.0 and r[0] == 1.0 and np.isnan(p[1]) and np.isnan(r[2])


def test_class_never_predicted_has_zero_precision():
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    ev = DetectionEvaluator(["a", "b"], smooth_f1=False)
    ev.update([torch.tensor([[0.0, 0, 10, 10, 0.9, 0]])], [{"cls": torch.tensor([0, 1]), "boxes": gt}])
    r = ev.compute()
    assert [c["precision"] for c in r["per_class"]] == [1.0, 0.0]
    assert r["precision"] == pytest.approx(0.5) and r["recall"] == pytest.approx(0.5)
    assert r["map50"] == pytest.approx(0.5)  # COCO: AP 1 for "a", 0 for "b"


def test_matching_goes_by_confidence_then_by_highest_iou():
    # one GT; prediction 0 (IoU 90/110 = 0.82) is more confident than prediction 1 (an exact copy): 0 keeps the GT
    # and 1 is a false positive, as COCO counts it (a greedy match by IoU alone would flip them)
    gt = np.array([[0, 0, 10, 10]], float)
    preds = np.array([[1, 0, 11, 10], [0, 0, 10, 10], [0, 0, 10, 10]], float)
    conf = np.array([0.9, 0.5, 0.4])
    assert match_predictions(preds, np.zeros(3), gt, np.zeros(1), conf=conf).tolist() == [True, False, False]
    assert match_predictions(preds, np.zeros(3), gt, np.zeros(1), conf=conf[::-1]).tolist() == [False, False, True]
    assert match_predictions(preds, np.ones(3), gt, np.zeros(1), conf=conf).tolist() == [False, False, False]
    # two GTs: the confident prediction takes the one it overlaps most, the next one falls back to the other
    gts = np.array([[0, 0, 10, 10], [4, 0, 14, 10]], float)
    preds = np.array([[1, 0, 11, 10], [2, 0, 12, 10]], float)
    # p0: IoU with g0 90/110 = 0.82, with g1 70/130 = 0.54 -> g0; p1 (0.67 with both) then takes g1
    assert match_predictions(preds, np.zeros(2), gts, np.zeros(2), conf=np.array([0.8, 0.7])).tolist() == [True, True]


@pytest.mark.parametrize("seed", [6, 7])
def test_tp_flags_match_pycocotools_at_iou_0_5(seed):
    # pycocotools' own per-detection matches (evalImgs dtMatches at IoU 0.5, area "all") on noisy predictions
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    preds, targets, shapes = random_case(seed)
    rng = np.random.default_rng(seed)
    for i, p in enumerate(preds):  # a second, closer copy of every prediction at another score: duplicates that
        dup = p.clone()  # COCO's rule and a match by IoU alone assign differently
        dup[:, :4] += torch.tensor(rng.normal(0, 1, (len(p), 4)), dtype=torch.float32)
        dup[:, 4] = torch.tensor(rng.uniform(0.01, 1, len(p)), dtype=torch.float32)
        preds[i] = torch.cat([p, dup])
    images, anns, dets, ours = [], [], [], []
    for i, (p, t, (h, w)) in enumerate(zip(preds, targets, shapes), start=1):
        images.append({"id": i, "width": w, "height": h})
        for c, b in zip(t["cls"].tolist(), t["boxes"].double().tolist()):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c + 1, "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        for x1, y1, x2, y2, s, c in p.double().tolist():
            dets.append({"image_id": i, "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
        pn = p.double().numpy()
        ours += match_predictions(pn[:, :4], pn[:, 5], t["boxes"].double().numpy(), t["cls"].numpy(),
                                  conf=pn[:, 4]).tolist()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c + 1} for c in range(3)]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.params.maxDets = [1000]
        ev.evaluate()
    theirs = np.zeros(len(dets), bool)
    for e in ev.evalImgs:
        if e is not None and e["aRng"] == ev.params.areaRng[0]:
            for det_id, m in zip(e["dtIds"], e["dtMatches"][0]):
                theirs[det_id - 1] = m > 0  # loadRes numbers the detections from 1 in list order
    assert 0 < theirs.sum() < len(theirs)
    assert ours == theirs.tolist()


def test_no_predictions_and_class_without_labels():
    _, targets, shapes = random_case(4, n_images=5)
    ev = DetectionEvaluator(NAMES + ["unused"])
    ev.update([torch.zeros(0, 6)] * 5, targets, shapes=shapes)
    r = ev.compute()
    assert r["map"] == 0.0 and r["map50"] == 0.0 and r["recall"] == 0.0
    assert np.isnan(r["per_class"][3]["ap"]) and r["per_class"][3]["instances"] == 0


def test_class_id_outside_names_is_a_clear_error():
    ev = DetectionEvaluator(["a"])
    with pytest.raises(ValueError, match="outside 0..0"):
        ev.update([torch.tensor([[0, 0, 1, 1, 0.5, 3]])], [{"cls": torch.zeros(0), "boxes": torch.zeros(0, 4)}])


def test_results_table_lists_all_and_each_class():
    preds, targets, shapes = random_case(5)
    ev = DetectionEvaluator(NAMES)
    ev.update(preds, targets, shapes=shapes)
    r = ev.compute()
    table = format_results(r)
    lines = table.splitlines()
    assert "mAP50-95" in lines[0] and lines[1].split()[0] == "all"
    assert [ln.split()[0] for ln in lines[2:]] == [c["name"] for c in r["per_class"] if c["instances"]]
    assert f"{r['map']:.3f}" in lines[1]


# ------------------------------------------------------------------------------------ plotting


def test_draw_and_write_predictions(tmp_path):
    img = np.full((60, 80, 3), 200, np.uint8)
    boxes = torch.tensor([[10.0, 20.0, 40.0, 50.0]])
    out = draw_boxes(img, boxes, torch.tensor([1]), torch.tensor([0.87]), names=NAMES)
    arr = np.asarray(out)
    assert out.size == (80, 60) and (arr[35, 10] != 200).any()  # the left edge of the box is drawn
    assert (img == 200).all()  # the input is untouched
    out.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").size == (80, 60)
    recs = prediction_records("a.jpg", boxes, [1], [0.87], NAMES)
    write_predictions_json(recs, tmp_path / "preds.json")
    loaded = json.loads((tmp_path / "preds.json").read_text())
    assert loaded == [{"image": "a.jpg", "class": 1, "name": "helmet", "score": 0.87, "box": [10.0, 20.0, 40.0, 50.0]}]
    write_yolo_txt(tmp_path / "a.txt", boxes, [1], (60, 80), scores=[0.87], save_conf=True)
    assert (tmp_path / "a.txt").read_text() == "1 0.312500 0.583333 0.375000 0.500000 0.87000\n"
