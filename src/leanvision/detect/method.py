"""YOLOv8 training as a :class:`~leanvision.methods.base.Method`: loss, v8 parameter groups, model EMA.

The trainer owns the loop (schedule, accumulation, AMP, DDP gradient averaging, checkpoints); this
module owns one batch and the weights' moving average, which evaluation and export use.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..methods.base import Backward, Method
from .loss import DetectionLoss


def ema_decay(updates: int, decay: float = 0.9999, tau: float = 2000.0) -> float:
    """YOLOv8's EMA decay after ``updates`` optimizer steps: ``decay · (1 − exp(−updates / tau))``.

    It starts near 0 so the average follows the fast-moving early weights, and tends to ``decay``.
    """
    return decay * (1 - math.exp(-updates / tau))


def yolo_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """v8's three groups: weights with decay, norm-layer weights without, all biases without.

    Each trainable tensor appears once; frozen ones (the DFL projection) are left out. The bias group is
    marked ``warmup_bias`` so :class:`~leanvision.detect.schedule.YoloSchedule` gives it the bias warm-up.
    """
    decay, norm, bias, seen = [], [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if name == "bias":
                bias.append(p)
            elif "Norm" in type(module).__name__ or getattr(p, "_no_weight_decay", False):
                norm.append(p)  # BatchNorm2d, GroupNorm (SCM), LayerNorm, ...; Replacement Learning's a and b
            else:
                decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "weights"},
        {"params": norm, "weight_decay": 0.0, "name": "norm"},
        {"params": bias, "weight_decay": 0.0, "name": "bias", "warmup_bias": True},
    ]


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    """Parameters then buffers, in module order (cheaper than building a state dict every step)."""
    return [*model.parameters(), *model.buffers()]


class DetectionMethod(Method):
    """Train a :class:`~leanvision.models.yolo.DetectionModel` with the v8 loss and a model EMA.

    Args:
        model: the detector.
        box_loss: ``ciou`` | ``eiou`` | ``aiou`` (box term of :class:`DetectionLoss`).
        box, cls, dfl: loss gains.
        ema: keep the exponential moving average of the weights (evaluated and exported instead of the raw
            model).
        ema_tau: the EMA ramp, in optimizer steps.
        min_gt_size: the assigner's small-GT rule, in pixels (see
            :class:`~leanvision.detect.assigner.TaskAlignedAssigner`).

    ``train_step(images, targets, backward)``: ``images`` uint8 (B, 3, H, W) on the device; ``targets`` the
    collated dict (``img_idx``, ``cls``, ``boxes`` xyxy in input pixels). Backpropagates the v8 loss (sum over
    the batch, as v8) and returns ``{"loss", "box_loss", "cls_loss", "dfl_loss"}`` per image.
    """

    name = "yolo"

    def __init__(self, model: nn.Module, box_loss: str = "ciou", box: float = 7.5, cls: float = 0.5,
                 dfl: float = 1.5, ema: bool = True, ema_tau: float = 2000.0, min_gt_size: float = 16.0):
        super().__init__(model)
        self.box_loss = box_loss
        self.criterion = DetectionLoss(model, box_kind=box_loss, box=box, cls=cls, dfl=dfl, min_gt_size=min_gt_size)
        self.ema_tau = ema_tau
        self.ema_model = copy.deepcopy(model).eval().requires_grad_(False) if ema else None
        # a buffer, so the update count is saved and restored with the weights (exact resume)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.ema_model is not None:
            self.ema_model.eval()  # the average is only ever evaluated
        return self

    def train_step(self, images: torch.Tensor, targets: dict, backward: Backward) -> dict[str, torch.Tensor]:
        x = images.float() / 255 if not images.is_floating_point() else images
        if next(self.model.parameters()).is_contiguous(memory_format=torch.channels_last) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        total, items = self.criterion(self.model(x), targets)  # total = (box + cls + dfl) · B
        backward(total)
        out = {f"{k}_loss": v for k, v in items.items()}
        out["loss"] = sum(items.values())
        return out

    def param_groups(self, weight_decay: float) -> list[dict]:
        return yolo_param_groups(self.model, weight_decay)

    def before_optimizer_step(self) -> None:
        # v8 clips the gradient norm at 10 (after AMP unscaling, which the trainer has done)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        if self.ema_model is None:
            return
        self.ema_updates += 1
        d = ema_decay(int(self.ema_updates), tau=self.ema_tau)
        # weights and BN running stats (not num_batches_tracked), paired by position: the EMA is a deep copy
        pairs = [(e, m) for e, m in zip(_tensors(self.ema_model), _tensors(self.model)) if e.dtype.is_floating_point]
        torch._foreach_lerp_([e for e, _ in pairs], [m.detach() for _, m in pairs], 1 - d)  # e = d·e + (1 − d)·m

    def inference_model(self) -> nn.Module:
        return self.ema_model if self.ema_model is not None else self.model

    def describe(self) -> str:
        return f"yolo ({self.box_loss} box loss, EMA {'on' if self.ema_model is not None else 'off'})"
