"""``leanvision.load(path)``: any leanvision checkpoint -> a ready ``nn.Module`` in eval mode.

- a classifier of ``leanvision train``: a :class:`~leanvision.classify.Classifier`, RGB images in [0, 1]
  (B, 3, S, S) -> logits (B, classes), its normalisation inside; Replacement Learning's replaced blocks are
  materialised into plain weights and local learning's auxiliary networks are dropped;
- a detector of ``leanvision detect train``: its ``DetectionModel`` (EMA weights), RGB images in [0, 1]
  (B, 3, H, W), H and W multiples of 32 -> decoded predictions (B, 4 + classes, anchors): boxes
  (cx, cy, w, h) in input pixels, then sigmoid class scores; NMS is left to the caller. The same for a YOLOv8
  checkpoint of ultralytics (``yolov8n.pt``) or a ``.safetensors`` of one (:mod:`leanvision.detect.weights`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..classify.model import classifier_from_checkpoint, read_classifier_checkpoint
from ..detect.val import load_detector
from ..detect.weights import foreign_detector, open_weights
from ..engine.checkpoint import CheckpointError, describe_checkpoint
from ..models.yolo_import import YoloWeights


@dataclass
class LoadedModel:
    """A checkpoint's model and what using it needs.

    Attributes:
        task: ``"classify"`` or ``"detect"``.
        model: the module, eval mode (see the module docstring for its input and output).
        names: class names, index = class id.
        imgsz: the square input side it was trained at.
        path: the checkpoint.
    """

    task: str
    model: nn.Module
    names: list[str]
    imgsz: int
    path: Path


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Read any leanvision checkpoint (``weights_only``: no code runs), or an ultralytics YOLOv8 ``.pt`` or a
    ``.safetensors`` (a restricted reader: no code runs either); CheckpointError naming the file and what it holds
    when it is none of these."""
    ckpt = open_weights(path)
    if isinstance(ckpt, YoloWeights):  # ultralytics' YOLOv8 .pt or a .safetensors: the detector it describes
        model, cfg = foreign_detector(ckpt, device)
        return LoadedModel("detect", model, list(cfg["detector"]["names"]), int(cfg["imgsz"]), Path(path))
    task, what = describe_checkpoint(ckpt)
    if task == "classify":
        ckpt, cfg = read_classifier_checkpoint(path, ckpt)
        model = classifier_from_checkpoint(ckpt, cfg, path).to(device)
        return LoadedModel("classify", model, model.classes, model.image_size, Path(path))
    if task == "detect":
        model, cfg = load_detector(path, device)
        names = list(cfg["detector"]["names"])
        return LoadedModel("detect", model, names, int(cfg.get("imgsz", 640)), Path(path))
    raise CheckpointError(f"{path}: {what}; expected the best.pt or last.pt of `leanvision train` or "
                          "`leanvision detect train`")


def load(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The model of any leanvision checkpoint as a plain ``nn.Module`` in eval mode (see the module docstring).

    Example::

        model = leanvision.load("runs/train/resnet32-e2e-cifar10/best.pt")
        probs = model(model.transform(Image.open("cat.jpg"))[None]).softmax(1)
    """
    return load_model(path, device).model
