"""YOLOv8 detection loss: BCE on task-aligned soft targets, an IoU-family box term and the DFL.

Follows specs/gso_yolo.md §5.4. With T = max(Σ target scores, 1) and w_i the summed soft target of a
positive anchor i:

- cls = Σ BCE-with-logits(logits, soft targets) / T over all anchors and classes;
- box = Σ_fg (1 − score_kind(pred_i, gt_i))·w_i / T, boxes in grid units; ``box_kind`` picks the score
  (``"ciou"`` for YOLOv8, ``"aiou"`` for GSO-YOLO, ``"eiou"``, ...);
- dfl = Σ_fg DFL(pred distribution, ltrb target clamped to [0, reg_max − 1 − 0.01])·w_i / T, the DFL
  (Li et al., Generalized Focal Loss, arXiv 2006.04388) being the two-bin cross-entropy averaged over
  the four sides;
- total = (box_gain·box + cls_gain·cls + dfl_gain·dfl) × batch size.

Targets come as a dict (the batch format of this package)::

    {"img_idx": LongTensor[N],   # which image of the batch each box belongs to
     "cls": LongTensor[N],       # class index
     "boxes": Tensor[N, 4]}      # xyxy in input-image pixels (after letterbox/augmentation)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from leanvision.detect.assigner import TaskAlignedAssigner
from leanvision.ops.boxes import bbox2dist, bbox_iou, dist2bbox, make_anchors


def pad_targets(
    batch: dict, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat targets -> padded per-image lists.

    Args:
        batch: dict with ``img_idx`` (N,), ``cls`` (N,), ``boxes`` (N, 4) xyxy pixels.
        batch_size: B.

    Returns:
        gt_labels (B, M, 1) long, gt_bboxes (B, M, 4), mask_gt (B, M, 1) bool, M the most boxes in one image.
    """
    img_idx = batch["img_idx"].to(device).long()
    boxes = batch["boxes"].to(device).float()
    cls = batch["cls"].to(device).long()
    if img_idx.numel() and (img_idx.min() < 0 or img_idx.max() >= batch_size):
        raise ValueError(
            f"targets name image indices {img_idx.unique().tolist()} outside the batch of {batch_size}; "
            "img_idx must index the images of this batch"
        )
    counts = torch.bincount(img_idx, minlength=batch_size)
    m = int(counts.max()) if img_idx.numel() else 0
    gt_labels = torch.zeros(batch_size, m, 1, dtype=torch.long, device=device)
    gt_bboxes = torch.zeros(batch_size, m, 4, device=device)
    mask_gt = torch.zeros(batch_size, m, 1, dtype=torch.bool, device=device)
    if m:
        order = torch.argsort(img_idx, stable=True)
        img_sorted = img_idx[order]
        starts = torch.cumsum(counts, 0) - counts  # first slot of each image in the sorted list
        slot = torch.arange(img_idx.numel(), device=device) - starts[img_sorted]
        gt_labels[img_sorted, slot, 0] = cls[order]
        gt_bboxes[img_sorted, slot] = boxes[order]
        mask_gt[img_sorted, slot, 0] = True
    return gt_labels, gt_bboxes, mask_gt


class DetectionLoss:
    """The v8 detection loss with a selectable box IoU.

    Args:
        model: a :class:`~leanvision.models.yolo.DetectionModel` (uses ``nc``, ``reg_max``, ``stride``).
        box_kind: IoU used in the box term: ``"ciou"`` (YOLOv8), ``"aiou"`` (GSO-YOLO), ``"eiou"``,
            ``"diou"``, ``"giou"``, ``"iou"``.
        box, cls, dfl: loss gains (7.5, 0.5, 1.5 in YOLOv8).
        aiou_lambda, aiou_mode: AIoU reading (see :func:`~leanvision.ops.boxes.bbox_iou`).
            ``aiou_lambda`` may be changed between steps for a λ(epoch) schedule (assigner included).
        assigner_iou_kind: overlap measure of the assigner (``"ciou"``; ``box_kind`` for "AIoU throughout").
        topk, alpha, beta, min_gt_size: TaskAlignedAssigner settings. ``min_gt_size`` (pixels, default 16 as
            the reference, ultralytics 8.4; 0 for original YOLOv8): GT sides shorter than this count as this long
            when candidate anchors are chosen, so that boxes narrower than a stride are learned at all (see
            :class:`~leanvision.detect.assigner.TaskAlignedAssigner`).

    Call ``loss(preds, batch)`` with ``preds`` the model's train-mode output (list of
    (B, 4·reg_max + nc, H, W)) and ``batch`` the target dict of this module's docstring. Returns
    (total × B, {"box", "cls", "dfl"}), the items being the gained, detached per-image terms.
    """

    def __init__(self, model: nn.Module, box_kind: str = "ciou", box: float = 7.5, cls: float = 0.5,
                 dfl: float = 1.5, aiou_lambda: float = 0.5, aiou_mode: str = "weighted",
                 assigner_iou_kind: str = "ciou", topk: int = 10, alpha: float = 0.5, beta: float = 6.0,
                 min_gt_size: float = 16.0):
        self.nc, self.reg_max = model.nc, model.reg_max
        self.strides = [float(s) for s in model.stride]
        self.box_kind, self.gains = box_kind, {"box": box, "cls": cls, "dfl": dfl}
        self.aiou_lambda, self.aiou_mode = aiou_lambda, aiou_mode
        bbox_iou(torch.zeros(4), torch.ones(4), kind=box_kind, aiou_mode=aiou_mode)  # fail early on bad names
        self.assigner = TaskAlignedAssigner(self.nc, topk, alpha, beta, iou_kind=assigner_iou_kind,
                                            iou_kwargs={"aiou_lambda": aiou_lambda, "aiou_mode": aiou_mode},
                                            min_gt_size=min_gt_size)

    def _iou(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kw = {"aiou_lambda": self.aiou_lambda, "aiou_mode": self.aiou_mode}
        return bbox_iou(pred, target, kind=self.box_kind, **kw)

    def __call__(self, preds: list[torch.Tensor], batch: dict) -> tuple[torch.Tensor, dict]:
        # float32 throughout, also inside an AMP region: the small IoU penalty terms, the DFL softmax and the
        # assigner's s^α·u^β lose too much in half precision
        with torch.autocast(preds[0].device.type, enabled=False):
            return self._loss([p.float() for p in preds], batch)

    def _loss(self, preds: list[torch.Tensor], batch: dict) -> tuple[torch.Tensor, dict]:
        b = preds[0].shape[0]
        device = preds[0].device
        x = torch.cat([p.view(b, self.nc + 4 * self.reg_max, -1) for p in preds], 2)  # (B, no, A)
        pred_distri, pred_logits = x.split((4 * self.reg_max, self.nc), 1)
        pred_distri = pred_distri.permute(0, 2, 1).contiguous()  # (B, A, 4·reg_max)
        pred_logits = pred_logits.permute(0, 2, 1).contiguous()  # (B, A, nc)
        anchors, stride_t = make_anchors(preds, self.strides, 0.5)  # (A, 2), (A, 1) grid units

        # predicted boxes in grid units from the expected bin of each side
        bins = torch.arange(self.reg_max, device=device, dtype=pred_distri.dtype)
        dist = pred_distri.view(b, -1, 4, self.reg_max).softmax(3) @ bins  # (B, A, 4)
        pred_bboxes = dist2bbox(dist, anchors, xywh=False)  # (B, A, 4) xyxy

        gt_labels, gt_bboxes, mask_gt = pad_targets(batch, b, device)
        self.assigner.iou_kwargs["aiou_lambda"] = self.aiou_lambda  # follows a λ(epoch) schedule
        _, target_bboxes, target_scores, fg, _ = self.assigner(
            pred_logits.detach().sigmoid(), pred_bboxes.detach() * stride_t,
            anchors * stride_t, gt_labels, gt_bboxes, mask_gt)
        t_sum = target_scores.sum().clamp(min=1)

        loss_cls = F.binary_cross_entropy_with_logits(pred_logits, target_scores, reduction="sum") / t_sum
        loss_box = loss_dfl = pred_distri.sum() * 0.0  # keeps a graph when there are no positives
        if fg.any():
            weight = target_scores.sum(-1)[fg][:, None]  # (P, 1)
            target_grid = target_bboxes / stride_t  # (B, A, 4) grid units
            iou = self._iou(pred_bboxes[fg], target_grid[fg])[:, None]
            loss_box = ((1.0 - iou) * weight).sum() / t_sum
            target_ltrb = bbox2dist(anchors, target_grid, self.reg_max - 1 - 0.01)[fg]  # (P, 4)
            loss_dfl = (self.dfl(pred_distri[fg].view(-1, self.reg_max), target_ltrb) * weight).sum() / t_sum

        items = {"box": loss_box * self.gains["box"], "cls": loss_cls * self.gains["cls"],
                 "dfl": loss_dfl * self.gains["dfl"]}
        total = (items["box"] + items["cls"] + items["dfl"]) * b
        return total, {k: v.detach() for k, v in items.items()}

    def dfl(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Two-bin cross-entropy: (P·4, reg_max) logits, (P, 4) distances in bins -> (P, 1), mean of sides."""
        left = target.long()
        w_left = left + 1 - target
        t = target.view(-1)
        ce_left = F.cross_entropy(logits, left.view(-1), reduction="none")
        ce_right = F.cross_entropy(logits, left.view(-1) + 1, reduction="none")
        loss = ce_left * w_left.view(-1) + ce_right * (t - left.view(-1))
        return loss.view(target.shape).mean(-1, keepdim=True)
