"""Decoded predictions -> per-image detections: confidence filter and class-aware NMS (YOLOv8 §5.5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import batched_nms, box_convert

# YOLOv8 settings: validation keeps almost everything (mAP integrates over confidence), prediction does not
VAL_SETTINGS = {"conf": 0.001, "iou": 0.7, "multi_label": True, "max_det": 300}
PREDICT_SETTINGS = {"conf": 0.25, "iou": 0.7, "multi_label": False, "max_det": 300}


def non_max_suppression(
    preds: torch.Tensor,
    conf: float = 0.001,
    iou: float = 0.7,
    multi_label: bool = True,
    max_det: int = 300,
    max_nms: int = 30000,
    agnostic: bool = False,
    classes: Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """Filter decoded predictions and run NMS per class (torchvision ``batched_nms``).

    Args:
        preds: (B, 4 + nc, A), the model's eval output: (cx, cy, w, h) in pixels then per-class scores.
        conf: keep (box, class) pairs scoring above this.
        iou: NMS IoU threshold.
        multi_label: one box may be kept once per class above ``conf`` (validation); otherwise only its
            best class is considered (prediction).
        max_det: detections kept per image, best first.
        max_nms: candidates passed to NMS per image, best first.
        agnostic: suppress across classes.
        classes: keep only these class ids (before NMS and ``max_det``, as the reference's ``classes``).

    Returns:
        list of B tensors (n, 6): x1, y1, x2, y2 (pixels), score, class — sorted by score.
    """
    out = []
    for p in preds.float():  # (4 + nc, A)
        p = p.T
        boxes, scores = box_convert(p[:, :4], "cxcywh", "xyxy"), p[:, 4:]
        if multi_label:
            idx, cls = (scores > conf).nonzero(as_tuple=True)
            boxes, score = boxes[idx], scores[idx, cls]
        else:
            score, cls = scores.max(1)
            keep = score > conf
            boxes, score, cls = boxes[keep], score[keep], cls[keep]
        if classes is not None:
            keep = torch.isin(cls, torch.as_tensor(list(classes), device=cls.device))
            boxes, score, cls = boxes[keep], score[keep], cls[keep]
        if score.numel() > max_nms:
            top = score.topk(max_nms).indices
            boxes, score, cls = boxes[top], score[top], cls[top]
        keep = batched_nms(boxes, score, torch.zeros_like(cls) if agnostic else cls, iou)[:max_det]
        out.append(torch.cat((boxes[keep], score[keep, None], cls[keep, None].float()), 1))
    return out
