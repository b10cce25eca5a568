"""Rectangular validation batches: shapes, the letterbox round trip, and results that stay on their images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from leanvision.detect import val as val_module
from leanvision.detect.data.augment import scale_boxes_to_original
from leanvision.detect.data.dataset import DetectionDataset, build_detection_loader, rect_batch_shapes
from leanvision.detect.data.formats import make_sample
from leanvision.detect.evaluate import DetectionEvaluator
from leanvision.detect.val import validate

NAMES = ["person", "helmet"]


def test_batch_shapes_match_hand_computed_values():
    # h/w: 1.333, 0.5625, 1.499, 0.75, 1, 1 -> sorted 0.5625 (1), 0.75 (3), 1 (4), 1 (5), 1.333 (0), 1.499 (2)
    shapes = [(640, 480), (360, 640), (640, 427), (480, 640), (500, 500), (100, 100)]
    order, bs = rect_batch_shapes(shapes, imgsz=640, batch_size=2)
    assert order.tolist() == [1, 3, 4, 5, 0, 2]
    # wide batch: maxi 0.75 -> h = ceil(480/32 + 0.5)·32 = 16·32, w = ceil(640/32 + 0.5)·32 = 21·32
    # square batch -> 672 x 672; tall batch: mini 4/3 -> w = ceil(480/32 + 0.5)·32 = 512
    assert bs.tolist() == [[512, 672], [672, 672], [672, 512]]
    # 320 px, batches of 3 with a short last batch. Wide batch: maxi 0.7 -> 224/32 = 7 -> ceil(7.5)·32 = 256 (the
    # 0.54 and 0.6 images do not matter); tall batch: mini 1.25 -> 320/1.25 = 256 -> ceil(8.5)·32 = 288
    shapes = [(600, 1000), (540, 1000), (700, 1000), (1000, 800), (1000, 500)]
    order, bs = rect_batch_shapes(shapes, imgsz=320, batch_size=3)
    assert order.tolist() == [1, 0, 2, 3, 4]
    assert bs.tolist() == [[256, 352], [352, 288]]
    # maxi 0.61 -> 195.2/32 = 6.1 -> ceil(6.6)·32 = 224; mini 5/3 -> 192/32 = 6 -> ceil(6.5)·32 = 224
    _, bs = rect_batch_shapes([(1000, 600), (600, 1000), (610, 1000)], imgsz=320, batch_size=2)
    assert bs.tolist() == [[224, 352], [352, 224]]
    # a batch mixing wide and tall images stays square: ceil(320/32 + 0.5)·32 = 352
    _, bs = rect_batch_shapes([(600, 1000), (1000, 600)], imgsz=320, batch_size=2)
    assert bs.tolist() == [[352, 352]]


def colour(i: int) -> tuple[int, int, int]:
    """A background colour per image (no channel is the 114 of the padding) that names the image."""
    return (10 + 20 * i, 200, 60)


@pytest.fixture
def samples(tmp_path):
    """Images of several aspect ratios, each a solid colour naming it, with 1-3 non-overlapping boxes."""
    out = []
    sizes = [(60, 80), (90, 60), (64, 64), (40, 100), (70, 50), (50, 90), (80, 64)]
    for i, (h, w) in enumerate(sizes):
        f = tmp_path / f"{i}.png"
        Image.fromarray(np.full((h, w, 3), colour(i), np.uint8)).save(f)
        n = 1 + i % 3
        boxes = [(2 + k * w / n, 3 + (k * 7) % (h // 3), (k + 1) * w / n - 2, h - 4 - k) for k in range(n)]
        out.append(make_sample(f, (h, w), [(i + k) % 2 for k in range(n)], boxes))
    return out


def test_rect_items_letterbox_into_the_batch_shape_and_map_back_exactly(samples):
    ds = DetectionDataset(samples, imgsz=64, augment=False, rect=True, batch_size=2)
    ids = []
    for pos in range(len(ds)):
        image, t = ds[pos]
        s = samples[t["image_id"] - 1]
        ids.append(t["image_id"])
        assert tuple(image.shape[1:]) == tuple(ds.batch_shapes[pos // 2])
        assert t["ori_shape"] == s["shape"] and t["im_file"] == s["im_file"]
        back = scale_boxes_to_original(t["boxes"], t["ratio_pad"], t["ori_shape"])
        np.testing.assert_allclose(back.numpy(), s["boxes"], atol=1e-3)
        # the image's pixels sit where ratio_pad says: the content block is the original scaled by r, shifted by pad
        (r, _), (pw, ph) = t["ratio_pad"]
        h, w = s["shape"]
        content = (image != 114).any(0).nonzero()
        assert content[:, 1].min() == pw and content[:, 0].min() == ph
        assert content[:, 1].max() + 1 == pw + round(w * r) and content[:, 0].max() + 1 == ph + round(h * r)
        assert tuple(image[:, int(ph), int(pw)].tolist()) == colour(t["image_id"] - 1)
    assert sorted(ids) == list(range(1, len(samples) + 1)) and ids != sorted(ids)  # reordered, none lost


def test_rect_needs_validation_settings(samples):
    with pytest.raises(ValueError, match="validation"):
        DetectionDataset(samples, imgsz=64, augment=True, rect=True)
    with pytest.raises(ValueError, match="shuffle=False"):
        build_detection_loader(samples, imgsz=64, batch_size=2, rect=True, shuffle=True, workers=0)


class OracleDetector(nn.Module):
    """A "network" that recognises each image by its colour and returns boxes in letterboxed input pixels.

    It finds the letterbox itself from the pixels (the non-grey block), independently of the dataset's
    ratio_pad, and returns the image's boxes (optionally perturbed in original pixels) as (B, 4 + nc, A).
    """

    def __init__(self, samples, nc: int, jitter: bool = False):
        super().__init__()
        self.samples, self.nc, self.jitter = samples, nc, jitter

    def boxes_for(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.samples[i]
        boxes, cls = s["boxes"].astype(np.float64), s["cls"]
        scores = np.linspace(0.9, 0.5, len(boxes))
        if self.jitter:  # a fixed imperfect detector: shifted boxes, one swapped class, a false positive
            boxes = boxes + np.array([1.5, -1.0, 2.5, 0.5]) * (1 + np.arange(len(boxes)))[:, None]
            cls = np.where(np.arange(len(cls)) == 1, 1 - cls, cls)
            boxes = np.concatenate([boxes, [[0, 0, 12, 9]]])
            cls, scores = np.append(cls, i % 2), np.append(scores, 0.7 - 0.05 * i)
        return boxes, cls, scores

    def forward(self, x):
        b, _, hh, ww = x.shape
        out = torch.zeros(b, 4 + self.nc, 8)
        for j in range(b):
            px = (x[j] * 255).round().to(torch.int64)
            content = (px != 114).any(0).nonzero()
            top, left = content.min(0).values.tolist()
            i = (int(px[0, top, left]) - 10) // 20
            h0, w0 = self.samples[i]["shape"]
            r = (content.max(0).values + 1 - content.min(0).values).max().item() / max(h0, w0)  # long side
            boxes, cls, scores = self.boxes_for(i)
            xyxy = torch.as_tensor(boxes, dtype=torch.float32) * r + torch.tensor([left, top, left, top])
            n = len(xyxy)
            out[j, 0:2, :n] = ((xyxy[:, :2] + xyxy[:, 2:]) / 2).T
            out[j, 2:4, :n] = (xyxy[:, 2:] - xyxy[:, :2]).T
            out[j, 4 + torch.as_tensor(cls), torch.arange(n)] = torch.as_tensor(scores, dtype=torch.float32)
        return out


def _validate(samples, rect, jitter=False):
    loader = build_detection_loader(samples, imgsz=64, batch_size=3, augment=False, workers=0, rect=rect)
    return validate(OracleDetector(samples, len(NAMES), jitter), loader, NAMES)


def test_perfect_predictions_score_one_with_rect_and_stay_on_their_image_ids(samples, monkeypatch):
    made = []

    class Recording(DetectionEvaluator):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(val_module, "DetectionEvaluator", Recording)
    res = _validate(samples, rect=True)
    assert res["map50"] == 1.0 and res["map"] > 0.999 and res["images"] == len(samples)
    images = made[0].images
    assert [im["id"] for im in images] != sorted(im["id"] for im in images)  # really served out of order
    assert sorted(im["id"] for im in images) == list(range(1, len(samples) + 1))
    for im in images:
        s = samples[im["id"] - 1]
        assert im["shape"] == s["shape"]
        np.testing.assert_allclose(im["gt_boxes"], s["boxes"], atol=1e-3)
        order = np.argsort(-im["pred"][:, 4], kind="stable")
        np.testing.assert_allclose(im["pred"][order, :4], s["boxes"], atol=1e-3)
        assert im["pred"][order, 5].tolist() == s["cls"].tolist()
    coco = made[0].coco_predictions()
    assert {p["image_id"] for p in coco} == set(range(1, len(samples) + 1))


def test_rect_and_square_validation_give_the_same_map_for_a_fixed_detector(samples):
    rect = _validate(samples, rect=True, jitter=True)
    square = _validate(samples, rect=False, jitter=True)
    assert 0.2 < rect["map"] < 0.95  # an imperfect detector, so the comparison means something
    for k in ("precision", "recall", "map50", "map"):
        assert rect[k] == pytest.approx(square[k], abs=1e-6), k
