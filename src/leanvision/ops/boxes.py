"""Box geometry: IoU-family scores and losses (CIoU/DIoU/GIoU/EIoU/AIoU), anchors and DFL distances.

Formats: ``xyxy`` is (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2; ``xywh`` is (cx, cy, w, h); ``ltrb``
is the distances from an anchor point to the left, top, right and bottom sides. Pairwise IoU matrices,
conversions and NMS come from ``torchvision.ops`` (re-exported here); the element-wise scores below
are written out because the loss needs CIoU with a detached α and the EIoU/AIoU penalties, which
torchvision does not have.

This module sits in the bottom layer (ARCHITECTURE.md): the detector's head decodes with it and the
detection task's assigner and loss score with it, so neither imports the other for geometry.
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import batched_nms, box_convert, box_iou

__all__ = [
    "IOU_KINDS",
    "aiou_loss",
    "batched_nms",
    "bbox2dist",
    "bbox_iou",
    "box_convert",
    "box_iou",
    "dist2bbox",
    "eiou_loss",
    "make_anchors",
]

IOU_KINDS = ("iou", "giou", "diou", "ciou", "eiou", "aiou")


def bbox_iou(
    box1: torch.Tensor,
    box2: torch.Tensor,
    kind: str = "ciou",
    xywh: bool = False,
    eps: float = 1e-7,
    aiou_lambda: float = 0.5,
    aiou_mode: str = "weighted",
) -> torch.Tensor:
    """Element-wise IoU-like score of two broadcastable box sets; the matching loss is ``1 - score``.

    With IoU the overlap, ρ² the squared centre distance, C_w, C_h the enclosing box's sides and
    c² = C_w² + C_h²:

    - ``iou``: IoU.  ``giou``: IoU − (enclosing area − union) / enclosing area (Rezatofighi 2019).
    - ``diou``: IoU − ρ²/c².  ``ciou``: IoU − ρ²/c² − α·v, v = 4/π²·(atan(w_gt/h_gt) − atan(w/h))²,
      α = v / (1 − IoU + v) computed without gradient (Zheng et al. 2020, arXiv 1911.08287).
    - ``eiou``: IoU − ρ²/c² − (w − w_gt)²/C_w² − (h − h_gt)²/C_h² (Zhang et al., arXiv 2101.08158).
    - ``aiou``: IoU − ρ²/c² − a·α·v − b·[(w − w_gt)²/C_w² + (h − h_gt)²/C_h²], GSO-YOLO's "combination
      of CIoU and EIoU" (specs/gso_yolo.md §2.2). ``aiou_mode="weighted"`` is λ·CIoU + (1 − λ)·EIoU
      (a = λ, b = 1 − λ, λ = ``aiou_lambda``); ``aiou_mode="union"`` keeps both penalties (a = b = 1).

    ``box1`` is the prediction and ``box2`` the target (only the order of the atan terms differs).

    Args:
        box1, box2: Tensor[..., 4], broadcastable, ``xyxy`` or (``xywh=True``) ``xywh``.
        kind: one of :data:`IOU_KINDS`.
        eps: added to denominators (and to heights inside atan) so degenerate boxes stay finite.

    Returns:
        Tensor[...] of scores, at most 1.
    """
    if kind not in IOU_KINDS:
        raise ValueError(f"unknown IoU kind {kind!r}; choose one of {', '.join(IOU_KINDS)}")
    if aiou_mode not in ("weighted", "union"):
        raise ValueError(f"aiou_mode must be 'weighted' or 'union', got {aiou_mode!r}")
    if xywh:
        box1, box2 = box_convert(box1, "cxcywh", "xyxy"), box_convert(box2, "cxcywh", "xyxy")
    b1x1, b1y1, b1x2, b1y2 = box1.unbind(-1)
    b2x1, b2y1, b2x2, b2y2 = box2.unbind(-1)
    # eps on the heights only: it keeps atan(w/h) finite for flat boxes and barely moves the areas
    w1, h1 = b1x2 - b1x1, b1y2 - b1y1 + eps
    w2, h2 = b2x2 - b2x1, b2y2 - b2y1 + eps

    inter = (torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(min=0) * (
        torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)
    ).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if kind == "iou":
        return iou

    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)  # enclosing box width
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    if kind == "giou":
        c_area = cw * ch + eps
        # the enclosing box holds the union, so the penalty is >= 0; the eps added to the heights can make
        # it negative for zero-area boxes (a point and a flat box scored GIoU 2), hence the clamp
        return iou - ((c_area - union) / c_area).clamp(min=0)

    c2 = cw.pow(2) + ch.pow(2) + eps
    rho2 = ((b2x1 + b2x2 - b1x1 - b1x2).pow(2) + (b2y1 + b2y2 - b1y1 - b1y2).pow(2)) / 4
    score = iou - rho2 / c2
    if kind == "diou":
        return score

    a, b = 1.0, 0.0  # weights of CIoU's α·v and EIoU's side terms
    if kind == "eiou":
        a, b = 0.0, 1.0
    elif kind == "aiou":
        a, b = (aiou_lambda, 1.0 - aiou_lambda) if aiou_mode == "weighted" else (1.0, 1.0)
    if a:
        v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
        with torch.no_grad():  # α is a trade-off weight, not something to optimise (CIoU paper, ultralytics)
            alpha = v / (v - iou + (1 + eps))
        score = score - a * alpha * v
    if b:
        score = score - b * ((w1 - w2).pow(2) / (cw.pow(2) + eps) + (h1 - h2).pow(2) / (ch.pow(2) + eps))
    return score


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    # torchvision's rule: the mean of nothing is a zero that still has a graph, so backward runs
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"invalid reduction {reduction!r}; supported: 'none', 'mean', 'sum'")


def _upcast(t: torch.Tensor) -> torch.Tensor:
    # half precision loses the small penalty terms; compute in float32 like torchvision's box losses
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def eiou_loss(
    boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none", eps: float = 1e-7
) -> torch.Tensor:
    """Efficient IoU loss (Zhang et al., "Focal and Efficient IOU Loss", arXiv 2101.08158).

    L = 1 − IoU + ρ²/c² + (w − w_gt)²/C_w² + (h − h_gt)²/C_h²; the focal weighting IoU^γ is not included.
    Written in the shape of ``torchvision.ops.complete_box_iou_loss``.

    Args:
        boxes1, boxes2: Tensor[N, 4] or Tensor[4], ``(x1, y1, x2, y2)`` with x1 <= x2, y1 <= y2;
            boxes1 is the prediction, boxes2 the target.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        eps: small number to prevent division by zero.

    Returns:
        Tensor[N] (``'none'``) or a scalar.
    """
    loss = 1 - bbox_iou(_upcast(boxes1), _upcast(boxes2), kind="eiou", eps=eps)
    return _reduce(loss, reduction)


def aiou_loss(
    boxes1: torch.Tensor,
    boxes2: torch.Tensor,
    reduction: str = "none",
    eps: float = 1e-7,
    lam: float = 0.5,
    mode: str = "weighted",
) -> torch.Tensor:
    """AIoU loss of GSO-YOLO (arXiv 2407.00906), "combining CIoU and EIoU" (specs/gso_yolo.md §2.2).

    L = 1 − IoU + ρ²/c² + a·α·v + b·[(w − w_gt)²/C_w² + (h − h_gt)²/C_h²] with α detached.
    ``mode="weighted"`` (default): a = λ, b = 1 − λ, i.e. λ·L_CIoU + (1 − λ)·L_EIoU.
    ``mode="union"``: a = b = 1, CIoU plus EIoU's side terms.

    Args:
        boxes1, boxes2: Tensor[N, 4] or Tensor[4], ``(x1, y1, x2, y2)``; boxes1 predicted, boxes2 target.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        eps: small number to prevent division by zero.
        lam: λ of the weighted reading (0 gives EIoU, 1 gives CIoU).
        mode: ``'weighted'`` or ``'union'``.

    Returns:
        Tensor[N] (``'none'``) or a scalar.
    """
    score = bbox_iou(_upcast(boxes1), _upcast(boxes2), kind="aiou", eps=eps, aiou_lambda=lam, aiou_mode=mode)
    return _reduce(1 - score, reduction)


def make_anchors(
    feats: list[torch.Tensor], strides: torch.Tensor | list[float], offset: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid-cell centres of every level, in that level's grid units.

    Args:
        feats: per-level maps (B, ·, H_i, W_i); only their shape, dtype and device are used.
        strides: one stride per level.
        offset: 0.5 puts the point at the cell centre.

    Returns:
        anchor_points: Tensor[A, 2] (x, y), A = Σ H_i·W_i, row-major per level;
        stride_tensor: Tensor[A, 1], the stride of each anchor's level.
    """
    points, stride_list = [], []
    dtype, device = feats[0].dtype, feats[0].device
    for feat, stride in zip(feats, strides):
        h, w = feat.shape[-2:]
        sy, sx = torch.meshgrid(
            torch.arange(h, device=device, dtype=dtype) + offset,
            torch.arange(w, device=device, dtype=dtype) + offset,
            indexing="ij",
        )
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_list.append(torch.full((h * w, 1), float(stride), dtype=dtype, device=device))
    return torch.cat(points), torch.cat(stride_list)


def dist2bbox(
    distance: torch.Tensor, anchor_points: torch.Tensor, xywh: bool = True, dim: int = -1
) -> torch.Tensor:
    """Decode ltrb distances around anchor points into boxes.

    Args:
        distance: (..., 4, ...) ltrb along ``dim``, same units as ``anchor_points``.
        anchor_points: (..., 2, ...) (x, y) along ``dim``, broadcastable with ``distance``.
        xywh: return (cx, cy, w, h) instead of (x1, y1, x2, y2).
    """
    lt, rb = distance.chunk(2, dim)
    x1y1, x2y2 = anchor_points - lt, anchor_points + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


def bbox2dist(anchor_points: torch.Tensor, bbox: torch.Tensor, max_dist: float | None = None) -> torch.Tensor:
    """Encode ``xyxy`` boxes as ltrb distances from anchor points (inverse of :func:`dist2bbox`).

    Args:
        anchor_points: Tensor[..., 2] (x, y).
        bbox: Tensor[..., 4] ``xyxy``, same units.
        max_dist: if given, clamp the distances to [0, max_dist]; the DFL passes reg_max − 1 − 0.01 so
            that the upper of the two neighbouring bins stays a valid index.

    Returns:
        Tensor[..., 4] (l, t, r, b).
    """
    x1y1, x2y2 = bbox.chunk(2, -1)
    dist = torch.cat((anchor_points - x1y1, x2y2 - anchor_points), -1)
    return dist if max_dist is None else dist.clamp(0, max_dist)
