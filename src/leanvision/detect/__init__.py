"""Detection pieces: box ops and IoU losses, the task-aligned assigner, the v8 loss, NMS."""

from leanvision.detect.assigner import TaskAlignedAssigner
from leanvision.detect.loss import DetectionLoss, pad_targets
from leanvision.detect.postprocess import PREDICT_SETTINGS, VAL_SETTINGS, non_max_suppression
from leanvision.ops.boxes import (
    IOU_KINDS,
    aiou_loss,
    bbox2dist,
    bbox_iou,
    dist2bbox,
    eiou_loss,
    make_anchors,
)

__all__ = [
    "IOU_KINDS",
    "PREDICT_SETTINGS",
    "VAL_SETTINGS",
    "DetectionLoss",
    "TaskAlignedAssigner",
    "aiou_loss",
    "bbox2dist",
    "bbox_iou",
    "dist2bbox",
    "eiou_loss",
    "make_anchors",
    "non_max_suppression",
    "pad_targets",
]
