"""A detector with its confidence filter and NMS inside the exported graph (``leanvision export --nms``).

Why ``torchvision.ops.nms``: one PyTorch module then runs eagerly, traces to TorchScript (torchvision's own
op) and exports to ONNX's standard ``NonMaxSuppression`` operator, which runtimes implement natively (tested
with onnxruntime); a hand-written NMS of tensor ops would be slower and need its own proof of equality. It keeps
what :func:`leanvision.detect.postprocess.non_max_suppression` keeps with ``multi_label=False`` (prediction):
each box's best class above ``conf``, greedy NMS per image and class, the ``max_det`` best per image.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import box_convert, nms


class DetectorWithNMS(nn.Module):
    """``detector`` followed by confidence filtering and class-aware NMS.

    Args:
        detector: a ``DetectionModel`` in eval mode ((B, 3, H, W) in [0, 1] -> (B, 4 + nc, A) decoded).
        conf: keep boxes whose best class scores above this.
        iou: NMS IoU threshold (a box overlapping a better one of its image and class by more is dropped).
        max_det: detections kept per image, best first.

    Forward:
        images (B, 3, H, W) -> detections (K, 7): image index, x1, y1, x2, y2 (input pixels), score, class;
        all images' detections together, by descending score.
    """

    def __init__(self, detector: nn.Module, conf: float = 0.25, iou: float = 0.7, max_det: int = 300):
        super().__init__()
        self.detector, self.conf, self.iou, self.max_det = detector, float(conf), float(iou), int(max_det)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        preds = self.detector(images)  # (B, 4 + nc, A)
        b, a = preds.shape[0], preds.shape[2]
        p = preds.transpose(1, 2)  # (B, A, 4 + nc)
        boxes = box_convert(p[..., :4], "cxcywh", "xyxy").reshape(-1, 4)  # (B·A, 4)
        score, cls = p[..., 4:].max(-1)
        score, cls = score.reshape(-1), cls.reshape(-1)
        image = torch.arange(b, device=images.device)[:, None].expand(b, a).reshape(-1)
        # groups (image, class) moved apart so that one NMS call never compares two of them (torchvision's
        # batched_nms does the same); the span covers every decoded box, also those past the image border
        span = boxes.max() - boxes.min() + 1
        keep = score > self.conf
        boxes, score, cls, image = boxes[keep], score[keep], cls[keep], image[keep]
        shift = (image * (preds.shape[1] - 4) + cls).to(boxes.dtype) * span
        kept = nms(boxes + shift[:, None], score, self.iou)  # by descending score
        # at most max_det per image: a detection's rank among the kept ones of its image
        same = (image[kept][:, None] == torch.arange(b, device=images.device)[None]).long()
        rank = (same.cumsum(0) * same).sum(1) - 1
        kept = kept[rank < self.max_det]
        return torch.cat((image[kept, None].to(boxes.dtype), boxes[kept], score[kept, None],
                          cls[kept, None].to(boxes.dtype)), 1)
