"""``--weights FILE`` of ``detect train|val|predict`` and ``leanvision.load``: which weights a detector accepts.

- a ``best.pt``/``last.pt`` of ``leanvision detect train`` (read with ``weights_only``, as always);
- a YOLOv8 checkpoint written by ultralytics (``yolov8n.pt``), read by a restricted unpickler that runs
  nothing from the file, without ultralytics installed (:mod:`leanvision.models.yolo_import`);
- a ``.safetensors`` file or a torch-saved bare state dict named ``model.N.xxx`` (leanvision's or ultralytics').

``val`` and ``predict`` rebuild the detector the file describes and load it exactly; ``train`` builds its
``--model`` and copies what fits by structure, listing what it re-initialised (:func:`load_start_weights`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..engine.checkpoint import CheckpointError, describe_checkpoint, load_checkpoint
from ..models.yolo import DetectionModel
from ..models.yolo_import import (
    LoadReport,
    WeightsError,
    YoloWeights,
    detector_from_weights,
    load_yolo_weights,
    read_yolo_weights,
    weights_from_state_dict,
)

EXPECTED = ("a best.pt/last.pt of leanvision, an ultralytics YOLOv8 detection checkpoint (yolov8n.pt) "
            "or a .safetensors of a YOLOv8 state dict")


def open_weights(path: str | Path) -> dict | YoloWeights:
    """A leanvision checkpoint dict (any task), or the :class:`YoloWeights` of another tool's file.

    Raises:
        CheckpointError: one line naming the file and what it holds: neither kind, another YOLO family or task,
            damaged, or refused by the restricted unpickler (nothing from the file is run).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights not found; pass {EXPECTED}")
    try:
        if path.suffix.lower() == ".safetensors":
            return read_yolo_weights(path)
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError:  # weights_only refuses pickled modules: ultralytics' layout, read by our own reader
            return read_yolo_weights(path)
        task, what = describe_checkpoint(ckpt)
        if task is not None:
            return ckpt
        if ckpt and all(isinstance(k, str) and k.startswith("model.") and torch.is_tensor(v) for k, v in ckpt.items()):
            return weights_from_state_dict(ckpt, path, "a state dict saved with torch.save")  # a detector's, by name
    except WeightsError as e:
        raise CheckpointError(str(e)) from None
    raise CheckpointError(f"{path}: {what}; expected {EXPECTED}")


def foreign_detector(weights: YoloWeights, device: torch.device | str = "cpu") -> tuple[DetectionModel, dict]:
    """The detector another tool's file describes, loaded exactly, and a config as ``load_detector`` returns.

    The config has no ``data`` (the file's dataset is not leanvision's to read): ``detect val`` asks for ``--data``.
    """
    from .val import detector_spec

    try:
        model, _ = detector_from_weights(weights)
    except WeightsError as e:
        raise CheckpointError(str(e)) from None
    cfg = {"detector": detector_spec(weights.model_name, weights.names, weights.overrides),
           "imgsz": weights.imgsz or 640, "data": "", "weights": str(weights.path), "weights_source": weights.source}
    return model.to(device).eval(), cfg


def load_start_weights(model: DetectionModel, path: str | Path) -> LoadReport:
    """``detect train --weights``: copy what fits of any accepted file into ``model`` (see the module docstring).

    Raises:
        CheckpointError: the file is not usable, or less than half of its weights fit ``model`` (another scale).
    """
    opened = open_weights(path)
    if isinstance(opened, dict):  # a leanvision checkpoint: its EMA weights, as val measured them
        from .val import load_detector

        task, what = describe_checkpoint(opened)
        if task != "detect":
            raise CheckpointError(f"{path}: {what}; expected {EXPECTED}")
        source, cfg = load_detector(path)
        opened = weights_from_state_dict(source.state_dict(), path, "a leanvision detector checkpoint",
                                         cfg["detector"]["names"])
    try:
        return load_yolo_weights(model, opened)
    except WeightsError as e:
        raise CheckpointError(str(e)) from None
