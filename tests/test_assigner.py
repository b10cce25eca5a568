"""TaskAlignedAssigner on hand-built cases.

Layout: one 32×32 image, one level with stride 8, so 16 anchors at centres (4 + 8i, 4 + 8j); anchor
index = 4·row + col. GT A = (0, 0, 16, 16) strictly contains anchors 0 (4,4), 1 (12,4), 4 (4,12), 5 (12,12).
"""

import pytest
import torch

from leanvision.detect.assigner import TaskAlignedAssigner

ANCHORS = torch.tensor([[4.0 + 8 * c, 4.0 + 8 * r] for r in range(4) for c in range(4)])  # (16, 2) x, y
GT_A = [0.0, 0, 16, 16]


def make_preds(boxes: dict[int, list[float]], scores: dict[int, float], nc: int = 2, cls: int = 0):
    """Predicted boxes default to a far-away 1×1 box (IoU 0), scores to 0.25 on class ``cls``."""
    pd_bboxes = torch.tensor([[30.0, 30, 31, 31]]).repeat(16, 1)
    pd_scores = torch.full((16, nc), 0.01)
    pd_scores[:, cls] = 0.25
    for i, b in boxes.items():
        pd_bboxes[i] = torch.tensor(b)
    for i, s in scores.items():
        pd_scores[i, cls] = s
    return pd_scores[None], pd_bboxes[None]


def gts(boxes, labels):
    return (torch.tensor(labels).view(1, -1, 1), torch.tensor(boxes).view(1, -1, 4), torch.ones(1, len(boxes), 1))


def test_one_gt_positives_and_soft_targets():
    # Predictions (all concentric with GT A and square, so CIoU = IoU):
    #   anchor 0: exactly A, u = 1,                score 0.25 -> t0 = 0.25^0.5 · 1 = 0.5
    #   anchor 1: (2,2,14,14), u = 144/256 = 0.5625, score 0.64 -> t1 = 0.8 · 0.5625^6 = 0.0253411
    #   anchor 4: (4,4,12,12), u = 64/256 = 0.25,   score 0.25 -> t4 = 0.5 · 0.25^6 = 1.2207e-4
    #   anchor 5: far away, u = 0                               -> t5 = 0
    # max_u = 1, max_t = 0.5, so t̂ = t · 1 / 0.5: 1, 0.0506823, 2.4414e-4, 0.
    pd_scores, pd_bboxes = make_preds({0: GT_A, 1: [2, 2, 14, 14], 4: [4, 4, 12, 12]}, {1: 0.64})
    labels, boxes, scores, fg, gt_idx = TaskAlignedAssigner(2)(pd_scores, pd_bboxes, ANCHORS, *gts([GT_A], [0]))
    assert fg[0].nonzero().flatten().tolist() == [0, 1, 4, 5]  # fewer candidates than topk: all of them
    expected = torch.zeros(16)
    expected[[0, 1, 4]] = torch.tensor([1.0, 0.0506823, 2.4414e-4])
    torch.testing.assert_close(scores[0, :, 0], expected, atol=1e-6, rtol=1e-4)
    assert scores[0, :, 1].abs().max() == 0  # other class stays 0
    assert labels[0, 0] == 0 and labels[0, 2] == 2  # background anchors get label nc
    torch.testing.assert_close(boxes[0, fg[0]], torch.tensor([GT_A] * 4))


def test_topk_keeps_the_best_aligned_candidates():
    pd_scores, pd_bboxes = make_preds({0: GT_A, 1: [2, 2, 14, 14], 4: [4, 4, 12, 12]}, {1: 0.64})
    _, _, _, fg, _ = TaskAlignedAssigner(2, topk=2)(pd_scores, pd_bboxes, ANCHORS, *gts([GT_A], [0]))
    assert fg[0].nonzero().flatten().tolist() == [0, 1]


def test_conflicting_anchor_keeps_the_gt_with_highest_iou():
    # GT B = (8, 0, 24, 16) also contains anchors 1 (12,4) and 5 (12,12); anchor 1 predicts exactly B and
    # anchor 5 exactly A, so anchor 1 goes to B (label 1) and anchor 5 to A (label 0), whatever the GT order.
    gt_b = [8.0, 0, 24, 16]
    pd_scores, pd_bboxes = make_preds({1: gt_b, 5: GT_A}, {})
    pd_scores[0, :, 1] = 0.25
    for order in ([GT_A, gt_b], [gt_b, GT_A]):
        labels_in = [0, 1] if order[0] == GT_A else [1, 0]
        labels, boxes, _, fg, _ = TaskAlignedAssigner(2)(pd_scores, pd_bboxes, ANCHORS, *gts(order, labels_in))
        assert fg[0, 1] and fg[0, 5]
        assert labels[0, 1].item() == 1 and boxes[0, 1].tolist() == gt_b
        assert labels[0, 5].item() == 0 and boxes[0, 5].tolist() == GT_A


def test_padded_gts_are_ignored():
    pd_scores, pd_bboxes = make_preds({0: GT_A}, {})
    pd_scores, pd_bboxes = pd_scores.repeat(2, 1, 1), pd_bboxes.repeat(2, 1, 1)
    # image 0: GT A plus a padding row; image 1: only padding. The padding rows hold a box covering the
    # whole image, so they would claim every anchor if the mask were not honoured.
    gt_labels = torch.tensor([[[0], [1]], [[1], [1]]])
    gt_bboxes = torch.tensor([[GT_A, [0.0, 0, 32, 32]], [[0.0, 0, 32, 32], [0.0, 0, 32, 32]]])
    mask_gt = torch.tensor([[[1.0], [0.0]], [[0.0], [0.0]]])
    labels, _, scores, fg, _ = TaskAlignedAssigner(2)(pd_scores, pd_bboxes, ANCHORS, gt_labels, gt_bboxes, mask_gt)
    alone = TaskAlignedAssigner(2)(pd_scores[:1], pd_bboxes[:1], ANCHORS, *gts([GT_A], [0]))
    assert not fg[1].any() and scores[1].abs().max() == 0
    assert torch.equal(fg[0], alone[3][0]) and torch.equal(scores[0], alone[2][0])
    assert (labels[0][fg[0]] == 0).all()


def test_no_gt_at_all():
    pd_scores, pd_bboxes = make_preds({}, {})
    empty = (torch.zeros(1, 0, 1), torch.zeros(1, 0, 4), torch.zeros(1, 0, 1))
    labels, boxes, scores, fg, _ = TaskAlignedAssigner(2)(pd_scores, pd_bboxes, ANCHORS, *empty)
    assert not fg.any() and scores.abs().max() == 0 and (labels == 2).all()


def test_aiou_switch_changes_the_overlap_measure():
    # AIoU (λ = 0.5) adds 0.5·[(w - w_gt)²/C_w² + (h - h_gt)²/C_h²] to the loss of concentric squares:
    #   anchor 1 (12×12 in 16×16): 0.5·2·(4/16)² = 0.0625 -> u = 0.5625 - 0.0625 = 0.5
    #   t1 = 0.8 · 0.5^6 = 0.0125, max_t = 0.5 (anchor 0 is exact), t̂1 = 0.025 (CIoU gave 0.0507)
    pd_scores, pd_bboxes = make_preds({0: GT_A, 1: [2, 2, 14, 14]}, {1: 0.64})
    assigner = TaskAlignedAssigner(2, iou_kind="aiou")
    _, _, scores, _, _ = assigner(pd_scores, pd_bboxes, ANCHORS, *gts([GT_A], [0]))
    assert scores[0, 1, 0].item() == pytest.approx(0.025, rel=1e-4)
    assert scores[0, 0, 0].item() == pytest.approx(1.0, rel=1e-6)


def test_small_gt_is_enlarged_for_candidate_selection_only():
    # GT S = (13, 13, 19, 19), 6 px wide, holds no anchor centre (they sit at 4, 12, 20, 28): never assigned
    # under original YOLOv8's rule. With min_gt_size 16 (the reference's 8.4 rule) it counts as (8, 8, 24, 24)
    # for the candidate test, which holds anchors 5 (12,12), 6 (20,12), 9 (12,20) and 10 (20,20); the targets
    # stay the real 6 px box. Anchor 6 predicts S exactly (u = 1), the rest predict a far box (u = 0).
    small = [13.0, 13, 19, 19]
    pd_scores, pd_bboxes = make_preds({6: small}, {})
    off = TaskAlignedAssigner(2)(pd_scores, pd_bboxes, ANCHORS, *gts([small], [1]))
    assert not off[3].any()
    labels, boxes, scores, fg, _ = TaskAlignedAssigner(2, min_gt_size=16)(pd_scores, pd_bboxes, ANCHORS,
                                                                         *gts([small], [1]))
    assert fg[0].nonzero().flatten().tolist() == [5, 6, 9, 10]
    torch.testing.assert_close(boxes[0, fg[0]], torch.tensor([small] * 4))
    assert labels[0, 6] == 1
    # scores on class 1 are 0.01 everywhere: t6 = 0.1 · 1, the others 0; max_u = 1, so t̂6 = 1
    assert scores[0, 6, 1] == pytest.approx(1.0) and scores[0, [5, 9, 10]].abs().max() == 0
    # a GT wider than min_gt_size is unchanged: GT A keeps exactly its 4 anchors
    pd_scores, pd_bboxes = make_preds({0: GT_A}, {})
    fg_a = TaskAlignedAssigner(2, min_gt_size=16)(pd_scores, pd_bboxes, ANCHORS, *gts([GT_A], [0]))[3]
    assert fg_a[0].nonzero().flatten().tolist() == [0, 1, 4, 5]
