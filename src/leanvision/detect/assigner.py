"""Task-aligned assignment of anchors to ground-truth boxes (TOOD, Feng et al. 2021, arXiv 2108.07755).

YOLOv8 settings (specs/gso_yolo.md §5.3): candidates are anchors whose centre lies strictly inside a GT;
each GT takes its top-k candidates by alignment t = s^α·u^β (s the predicted score of the GT's class,
u the clamped CIoU of the predicted box with the GT); an anchor claimed by several GTs keeps the one it
overlaps most; class targets are one-hot scaled by t·max_u/max_t per GT.

Small GTs: with ``min_gt_size`` s > 0 a GT side shorter than s counts as s (about the box centre) when
candidates are chosen, as the reference (ultralytics 8.4, s = the second stride, 16 px); the IoU and the
targets still use the real box. Without it (original YOLOv8, s = 0) a GT narrower than a stride may hold
no anchor centre at all and is never learned: at 320 px a fifth of the Construction Site Safety boxes
have a side under 8 px.
"""

from __future__ import annotations

import torch
from torch import nn

from leanvision.ops.boxes import bbox_iou


class TaskAlignedAssigner(nn.Module):
    """Assign every anchor to at most one GT and build soft class targets.

    Args:
        num_classes: nc.
        topk: positives kept per GT.
        alpha, beta: exponents of the score and the IoU in the alignment metric.
        eps: an anchor centre must be more than ``eps`` inside each side of a GT to be a candidate.
        iou_kind: overlap measure u (``"ciou"`` as in YOLOv8; ``"aiou"`` tests GSO-YOLO's "AIoU
            throughout"); any kind of :func:`~leanvision.ops.boxes.bbox_iou`, clamped at 0.
        iou_kwargs: extra arguments for ``bbox_iou`` (e.g. ``aiou_lambda``).
        min_gt_size: GT sides shorter than this (pixels) count as this long, about the box centre, when
            candidates are chosen (0: off, original YOLOv8; 16: the reference's 8.4 rule at strides 8/16/32).
    """

    def __init__(self, num_classes: int, topk: int = 10, alpha: float = 0.5, beta: float = 6.0,
                 eps: float = 1e-9, iou_kind: str = "ciou", iou_kwargs: dict | None = None,
                 min_gt_size: float = 0.0):
        super().__init__()
        self.num_classes, self.topk, self.alpha, self.beta, self.eps = num_classes, topk, alpha, beta, eps
        self.iou_kind, self.iou_kwargs = iou_kind, dict(iou_kwargs or {})
        self.min_gt_size = float(min_gt_size)

    @torch.no_grad()
    def forward(self, pd_scores: torch.Tensor, pd_bboxes: torch.Tensor, anc_points: torch.Tensor,
                gt_labels: torch.Tensor, gt_bboxes: torch.Tensor, mask_gt: torch.Tensor):
        """Assign.

        Args:
            pd_scores: (B, A, nc) predicted class probabilities (after sigmoid).
            pd_bboxes: (B, A, 4) predicted boxes, ``xyxy``, same units as the GTs (pixels).
            anc_points: (A, 2) anchor centres (x, y), same units.
            gt_labels: (B, M, 1) class indices of the padded GT list.
            gt_bboxes: (B, M, 4) ``xyxy`` GT boxes.
            mask_gt: (B, M, 1) 1 for real GTs, 0 for padding.

        Returns:
            target_labels (B, A) long, target_bboxes (B, A, 4), target_scores (B, A, nc) soft targets,
            fg_mask (B, A) bool, target_gt_idx (B, A) long (index into M; 0 for background anchors).
        """
        b, a = pd_scores.shape[:2]
        m = gt_bboxes.shape[1]
        device = pd_scores.device
        if m == 0:
            return (torch.full((b, a), self.num_classes, dtype=torch.long, device=device),
                    torch.zeros_like(pd_bboxes), torch.zeros_like(pd_scores),
                    torch.zeros(b, a, dtype=torch.bool, device=device),
                    torch.zeros(b, a, dtype=torch.long, device=device))

        # candidates: anchor centre strictly inside the GT box, real GTs only: (B, M, A). Four comparisons
        # instead of a (B, M, A, 4) distance tensor and its min: the same test at a fraction of the memory traffic
        ax, ay = anc_points[:, 0], anc_points[:, 1]
        x1, y1, x2, y2 = (gt_bboxes[..., i, None] for i in range(4))  # (B, M, 1) each
        if self.min_gt_size > 0:  # short sides grow to min_gt_size about the centre, for this test only
            half = self.min_gt_size / 2
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            narrow, flat = (x2 - x1) < self.min_gt_size, (y2 - y1) < self.min_gt_size
            x1, x2 = torch.where(narrow, cx - half, x1), torch.where(narrow, cx + half, x2)
            y1, y2 = torch.where(flat, cy - half, y1), torch.where(flat, cy + half, y2)
        candidates = (ax - x1 > self.eps) & (ay - y1 > self.eps) & (x2 - ax > self.eps) & (y2 - ay > self.eps)
        candidates &= mask_gt.bool()

        # alignment metric on candidate pairs only (the rest stay 0 and never become positive)
        labels = gt_labels.long().squeeze(-1).clamp(0, self.num_classes - 1)  # (B, M)
        bi, mi, ai = candidates.nonzero(as_tuple=True)
        u = bbox_iou(pd_bboxes[bi, ai], gt_bboxes[bi, mi], kind=self.iou_kind, **self.iou_kwargs).clamp_(0)
        overlaps = torch.zeros(b, m, a, dtype=pd_bboxes.dtype, device=device)
        align = torch.zeros_like(overlaps)
        overlaps[bi, mi, ai] = u
        align[bi, mi, ai] = pd_scores[bi, ai, labels[bi, mi]].pow(self.alpha) * u.pow(self.beta)

        # top-k per GT; non-candidates rank below every candidate, so a GT with < k candidates keeps all
        ranked = align.masked_fill(~candidates, -1.0)
        top_idx = ranked.topk(min(self.topk, a), dim=-1).indices  # (B, M, k)
        mask_pos = torch.zeros_like(candidates).scatter_(-1, top_idx, True) & candidates  # (B, M, A)

        # an anchor claimed by several GTs keeps, among those claimants, the GT with the highest overlap
        # (first one on ties); only those few anchors are looked at, not a (B, M, A) argmax
        cb, ca = (mask_pos.sum(1) > 1).nonzero(as_tuple=True)
        if len(cb):
            best = overlaps[cb, :, ca].masked_fill(~mask_pos[cb, :, ca], -1.0).argmax(-1)  # (K,)
            mask_pos[cb, :, ca] = False
            mask_pos[cb, best, ca] = True
        pb, pm, pa = mask_pos.nonzero(as_tuple=True)  # one entry per positive anchor now
        fg_mask = torch.zeros(b, a, dtype=torch.bool, device=device)
        fg_mask[pb, pa] = True
        target_gt_idx = torch.zeros(b, a, dtype=torch.long, device=device)
        target_gt_idx[pb, pa] = pm

        batch_idx = torch.arange(b, device=device)[:, None]
        target_labels = labels[batch_idx, target_gt_idx]  # (B, A)
        target_bboxes = gt_bboxes[batch_idx, target_gt_idx]  # (B, A, 4)

        # soft targets: t̂ = t · max_u / max_t per GT, so each GT's best anchor gets its best IoU
        align = align * mask_pos
        max_t = align.amax(-1)  # (B, M)
        max_u = (overlaps * mask_pos).amax(-1)
        norm = torch.zeros(b, a, dtype=pd_scores.dtype, device=device)
        norm[pb, pa] = (align[pb, pm, pa] * max_u[pb, pm] / (max_t[pb, pm] + self.eps)).to(norm.dtype)
        target_scores = torch.zeros_like(pd_scores)
        target_scores[pb, pa, target_labels[pb, pa]] = norm[pb, pa]
        target_labels = torch.where(fg_mask, target_labels, torch.full_like(target_labels, self.num_classes))
        return target_labels, target_bboxes, target_scores, fg_mask, target_gt_idx
