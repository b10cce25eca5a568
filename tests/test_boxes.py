"""Box IoU scores and losses, anchors, DFL encode/decode, NMS."""

import math

import pytest
import torch
from torchvision.ops import (
    box_iou,
    complete_box_iou_loss,
    distance_box_iou_loss,
    generalized_box_iou_loss,
)

from leanvision.detect.postprocess import non_max_suppression
from leanvision.models.yolo import DFL
from leanvision.ops.boxes import (
    IOU_KINDS,
    aiou_loss,
    bbox2dist,
    bbox_iou,
    dist2bbox,
    eiou_loss,
    make_anchors,
)


def random_boxes(n, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 50
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * 30 + 0.5
    return torch.cat((xy, xy + wh), 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("kind", "reference"),
    [("ciou", complete_box_iou_loss), ("diou", distance_box_iou_loss), ("giou", generalized_box_iou_loss)],
)
def test_iou_losses_match_torchvision(kind, reference, dtype):
    p, g = random_boxes(200, dtype, 0), random_boxes(200, dtype, 1)
    ours = 1 - bbox_iou(p, g, kind=kind)
    torch.testing.assert_close(ours, reference(p, g), atol=1e-5, rtol=1e-5)


def test_plain_iou_matches_box_iou_diagonal():
    p, g = random_boxes(50, torch.float64, 2), random_boxes(50, torch.float64, 3)
    torch.testing.assert_close(bbox_iou(p, g, kind="iou"), box_iou(p, g).diagonal(), atol=1e-6, rtol=1e-6)


def test_xywh_input_gives_the_same_score():
    p, g = random_boxes(20, torch.float64, 4), random_boxes(20, torch.float64, 5)
    to_xywh = lambda b: torch.cat(((b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]), 1)  # noqa: E731
    torch.testing.assert_close(bbox_iou(to_xywh(p), to_xywh(g), "eiou", xywh=True), bbox_iou(p, g, "eiou"))


# Two hand-placed pairs (prediction first):
# pair 1: pred (0,0,2,2), gt (0,0,4,2). inter 4, union 4+8-4 = 8, IoU 0.5. Enclosing box (0,0,4,2):
#   C_w = 4, C_h = 2, c² = 20; centres (1,1) and (2,1): ρ² = 1, ρ²/c² = 0.05.
#   EIoU sides: (2-4)²/4² = 0.25 and (2-2)²/2² = 0      -> L_EIoU = 1 - 0.5 + 0.05 + 0.25 = 0.8
#   v = 4/π²·(atan(4/2) - atan(2/2))² = 0.405285·0.321751² = 0.0419565, α = v/(0.5 + v) = 0.0774167,
#   α·v = 0.0032481                                     -> L_CIoU = 0.5532481
#   AIoU (A) λ=0.5: 0.55 + 0.5·0.0032481 + 0.5·0.25 = 0.6766241
#   AIoU (B) union: 0.55 + 0.0032481 + 0.25 = 0.8032481
# pair 2: pred (0,0,1,1), gt (2,0,4,2), no overlap. Enclosing (0,0,4,2): c² = 20; centres (0.5,0.5) and
#   (3,1): ρ² = 6.25 + 0.25 = 6.5, ρ²/c² = 0.325. Both square -> v = 0.
#   sides: (1-2)²/16 + (1-2)²/4 = 0.3125                -> L_EIoU = 1 + 0.325 + 0.3125 = 1.6375
#   L_CIoU = 1.325; AIoU (A): 1.325 + 0.5·0.3125 = 1.48125; (B): 1.6375
PRED = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1]])
GT = torch.tensor([[0.0, 0, 4, 2], [2, 0, 4, 2]])


def test_eiou_loss_hand_computed():
    torch.testing.assert_close(eiou_loss(PRED, GT), torch.tensor([0.8, 1.6375]), atol=1e-5, rtol=0)


def test_aiou_loss_hand_computed_both_readings():
    torch.testing.assert_close(aiou_loss(PRED, GT), torch.tensor([0.6766241, 1.48125]), atol=1e-5, rtol=0)
    union = aiou_loss(PRED, GT, mode="union")
    torch.testing.assert_close(union, torch.tensor([0.8032481, 1.6375]), atol=1e-5, rtol=0)


def test_ciou_hand_computed_and_aiou_endpoints():
    ciou = 1 - bbox_iou(PRED, GT, "ciou")
    torch.testing.assert_close(ciou, torch.tensor([0.5532481, 1.325]), atol=1e-5, rtol=0)
    # λ = 1 is CIoU, λ = 0 is EIoU
    torch.testing.assert_close(aiou_loss(PRED, GT, lam=1.0), 1 - bbox_iou(PRED, GT, "ciou"))
    torch.testing.assert_close(aiou_loss(PRED, GT, lam=0.0), eiou_loss(PRED, GT))


def test_identical_boxes_have_zero_loss_for_every_kind():
    b = torch.tensor([[1.0, 1, 3, 5]])
    for kind in IOU_KINDS:
        assert abs(1 - bbox_iou(b, b, kind).item()) < 1e-5, kind


@pytest.mark.parametrize("kind", IOU_KINDS)
def test_gradients_finite_for_degenerate_boxes(kind):
    pred = torch.tensor(
        [
            [1.0, 1, 1, 3],  # zero width
            [0.0, 2, 4, 2],  # zero height
            [0.0, 0, 2, 2],  # identical to its target
            [10.0, 10, 12, 12],  # no overlap
            [5.0, 5, 5, 5],  # a point
        ],
        requires_grad=True,
    )
    gt = torch.tensor([[0.0, 0, 2, 2], [0, 0, 4, 4], [0, 0, 2, 2], [0, 0, 2, 2], [5, 5, 5, 5]])
    loss = 1 - bbox_iou(pred, gt, kind)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("fn", [eiou_loss, aiou_loss])
def test_empty_input_mean_runs_backward(fn):
    p = torch.zeros(0, 4, requires_grad=True)
    loss = fn(p, torch.zeros(0, 4), reduction="mean")
    loss.backward()
    assert loss.item() == 0.0 and p.grad.shape == (0, 4)


@pytest.mark.parametrize("fn", [eiou_loss, aiou_loss])
def test_reductions_and_half_upcast(fn):
    none = fn(PRED, GT)
    torch.testing.assert_close(fn(PRED, GT, reduction="sum"), none.sum())
    torch.testing.assert_close(fn(PRED, GT, reduction="mean"), none.mean())
    assert fn(PRED.half(), GT.half()).dtype == torch.float32
    with pytest.raises(ValueError, match="reduction"):
        fn(PRED, GT, reduction="avg")


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown IoU kind"):
        bbox_iou(PRED, GT, kind="siou")


def test_make_anchors_cell_centres_and_strides():
    feats = [torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 1, 2)]
    points, strides = make_anchors(feats, [8, 16])
    level0 = [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5]]  # 2×3 grid, row-major
    expected = level0 + [[0.5, 0.5], [1.5, 0.5]]
    torch.testing.assert_close(points, torch.tensor(expected))
    torch.testing.assert_close(strides.squeeze(1), torch.tensor([8.0] * 6 + [16.0] * 2))


def test_bbox2dist_dist2bbox_round_trip():
    anchors = torch.tensor([[5.0, 5.0], [2.5, 7.5]])
    boxes = torch.tensor([[1.0, 2.0, 9.0, 6.0], [0.0, 4.0, 3.0, 12.0]])
    dist = bbox2dist(anchors, boxes)
    torch.testing.assert_close(dist, torch.tensor([[4.0, 3, 4, 1], [2.5, 3.5, 0.5, 4.5]]))
    torch.testing.assert_close(dist2bbox(dist, anchors, xywh=False), boxes)
    xywh = torch.tensor([[5.0, 4, 8, 4], [1.5, 8, 3, 8]])
    torch.testing.assert_close(dist2bbox(dist, anchors, xywh=True), xywh)
    assert bbox2dist(anchors, boxes, max_dist=3.99).max().item() == pytest.approx(3.99)


def test_dfl_expectation_of_one_and_two_hot_distributions():
    reg_max = 16
    targets = [4.7, 0.0, 14.99, 9.0]  # two-hot, one-hot at 0, the clamp ceiling, one-hot at 9
    probs = torch.full((4, reg_max), 1e-12)
    for side, t in enumerate(targets):
        lo = int(math.floor(t))
        probs[side, lo] = lo + 1 - t
        if lo + 1 < reg_max:
            probs[side, lo + 1] = t - lo
    logits = probs.clamp(min=1e-12).log().reshape(1, 4 * reg_max, 1)  # (B, 4·reg_max, A = 1)
    decoded = DFL(reg_max)(logits).view(4)
    torch.testing.assert_close(decoded, torch.tensor(targets), atol=1e-4, rtol=0)


def brute_force_nms(boxes, scores, classes, iou_thr):
    """Greedy per-class NMS written with python loops: keep the best, drop same-class boxes above iou_thr."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    kept = []
    for i in order:
        overlap = [box_iou(boxes[i : i + 1], boxes[k : k + 1]).item() for k in kept]
        if all(int(classes[i]) != int(classes[k]) or o <= iou_thr for k, o in zip(kept, overlap)):
            kept.append(i)
    return kept


@pytest.mark.parametrize("multi_label", [True, False])
def test_nms_matches_brute_force(multi_label):
    g = torch.Generator().manual_seed(0)
    nc, a = 3, 60
    xy = torch.rand(a, 2, generator=g) * 40 + 10
    wh = torch.rand(a, 2, generator=g) * 20 + 4
    scores = torch.rand(a, nc, generator=g)
    preds = torch.cat((xy, wh, scores), 1).T[None]  # (1, 4 + nc, A), cxcywh
    conf = 0.3
    out = non_max_suppression(preds, conf=conf, iou=0.5, multi_label=multi_label, max_det=300)[0]

    boxes = torch.cat((xy - wh / 2, xy + wh / 2), 1)
    cand = []  # (anchor, class) pairs above conf
    for i in range(a):
        classes = [c for c in range(nc) if scores[i, c] > conf] if multi_label else [int(scores[i].argmax())]
        cand += [(i, c) for c in classes if scores[i, c] > conf]
    cb = torch.stack([boxes[i] for i, _ in cand])
    cs = torch.stack([scores[i, c] for i, c in cand])
    cc = torch.tensor([c for _, c in cand])
    kept = brute_force_nms(cb, cs, cc, 0.5)
    expected = torch.cat((cb[kept], cs[kept, None], cc[kept, None].float()), 1)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected)


def test_nms_max_det_and_empty():
    preds = torch.zeros(2, 4 + 2, 10)
    preds[:, 2:4] = 5  # boxes of size 5 at the origin, all scores 0
    assert [o.shape for o in non_max_suppression(preds)] == [(0, 6), (0, 6)]
    preds[0, 0] = torch.arange(10) * 100.0  # far apart: nothing suppressed
    preds[0, 4] = 0.9
    assert non_max_suppression(preds, max_det=4)[0].shape == (4, 6)
