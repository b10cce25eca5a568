"""``leanvision export``: a checkpoint -> an ONNX or TorchScript file of the model :func:`~.loader.load` returns.

Both take RGB images in [0, 1], (B, 3, H, W). A classifier's graph holds its normalisation and ends in logits
(B, classes). A detector's graph ends in decoded predictions (B, 4 + classes, anchors): boxes (cx, cy, w, h) in
input pixels, then sigmoid scores; with ``nms`` it ends in detections (K, 7): image index, x1, y1, x2, y2,
score, class (:class:`.nms.DetectorWithNMS`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import __version__
from ..config import ConfigError
from .formats import require_onnx, write_onnx, write_torchscript
from .loader import load_model
from .nms import DetectorWithNMS

SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript"}


def export_checkpoint(weights: str | Path, fmt: str = "onnx", imgsz: int | None = None, dynamic: bool = False,
                      batch: int = 1, nms: bool = False, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                      out: str | Path | None = None, opset: int | None = None) -> tuple[Path, dict]:
    """Export the model of ``weights``; returns the file written and its metadata.

    Args:
        fmt: ``onnx`` or ``torchscript``.
        imgsz: square input side (default: the training size; detectors: a multiple of 32).
        dynamic: a variable batch size (classifiers) or batch, height and width (detectors). TorchScript traces
            shape-generic code either way.
        batch: the batch size of the exported (fixed) input.
        nms, conf, iou, max_det: detectors only: confidence filter and NMS in the graph (prediction settings).
        out: the file (default: ``weights`` with the format's suffix).
        opset: ONNX opset (default: the exporter's).
    """
    if fmt not in SUFFIX:
        raise ConfigError(f"--format must be onnx or torchscript, got {fmt!r}")
    if fmt == "onnx":
        require_onnx()  # before the model is built: say it at once
    loaded = load_model(weights, "cpu")
    size = imgsz or loaded.imgsz
    if loaded.task == "detect" and (size < 32 or size % 32):
        raise ConfigError(f"--imgsz must be a positive multiple of 32 for a detector, got {size}")
    if nms and loaded.task != "detect":
        raise ConfigError(f"--nms applies to detectors; {weights} holds a classifier")
    module = DetectorWithNMS(loaded.model, conf, iou, max_det).eval() if nms else loaded.model
    example = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            module(example)  # a model that cannot run at this size fails here, with its own words
    except RuntimeError as e:
        raise ConfigError(f"--imgsz {size}: the model of {weights} does not run at this size "
                          f"({str(e).splitlines()[0]})") from None
    meta = metadata(loaded, size, batch, dynamic, nms, conf, iou, max_det)
    path = Path(out) if out else Path(weights).with_suffix(SUFFIX[fmt])
    if fmt == "onnx":
        axes = {0: "batch"} if loaded.task == "classify" else {0: "batch", 2: "height", 3: "width"}
        write_onnx(module, example, path, "images", meta["output_name"], axes if dynamic else None, meta, opset)
    else:
        write_torchscript(module, example, path, meta)
    return path, meta


def metadata(loaded, size: int, batch: int, dynamic: bool, nms: bool, conf: float, iou: float,
             max_det: int) -> dict:
    """What the exported file says about itself (stored inside it)."""
    if not dynamic:
        shape = f"({batch}, 3, {size}, {size})"
    elif loaded.task == "classify":
        shape = f"(batch, 3, {size}, {size})"
    else:
        shape = "(batch, 3, height, width), sides multiples of 32"
    meta = {"producer": f"leanvision {__version__}", "task": loaded.task, "source": loaded.path.name,
            "names": loaded.names, "imgsz": size, "dynamic": dynamic,
            "input": f"images {shape}: RGB float32 in [0, 1]"}
    if loaded.task == "classify":
        meta.update(output_name="logits", output="logits (batch, classes); softmax gives probabilities",
                    normalisation=f"inside the graph: mean {list(loaded.model.data_spec.mean)}, std "
                                  f"{list(loaded.model.data_spec.std)}")
    elif nms:
        meta.update(output_name="detections", output="detections (K, 7): image index, x1, y1, x2, y2 (input "
                    "pixels), score, class; by descending score", nms={"conf": conf, "iou": iou, "max_det": max_det})
    else:
        meta.update(output_name="predictions", output="predictions (batch, 4 + classes, anchors): cx, cy, w, h "
                    "(input pixels), then sigmoid class scores; apply NMS")
    return meta
