"""``leanvision detect predict``: images -> annotated copies plus a JSON (or YOLO txt) of the detections.

Boxes are reported in the original image's pixels: each image is letterboxed exactly as in validation
(long side resized to ``imgsz``, centred grey padding) and the detections are mapped back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..engine.distributed import resolve_device
from ..engine.trainer import to_device
from .data.augment import letterbox, resize_long_side, scale_boxes_to_original
from .data.dataset import load_rgb
from .data.formats import IMG_EXTS
from .draw import draw_boxes, prediction_records, save_image, write_predictions_json, write_yolo_txt
from .postprocess import PREDICT_SETTINGS, non_max_suppression
from .val import inference_net, load_detector, resolve_channels_last


def list_sources(source: str | Path) -> list[Path]:
    """An image file, or the images of a folder (sorted, not recursive)."""
    src = Path(source)
    if src.is_dir():
        files = sorted(f for f in src.iterdir() if f.suffix.lower() in IMG_EXTS)
        if not files:
            raise FileNotFoundError(f"{src}: no images ({', '.join(IMG_EXTS)}) in this folder")
        return files
    if src.is_file():
        if src.suffix.lower() not in IMG_EXTS:
            raise ConfigError(f"{src}: not an image file ({', '.join(IMG_EXTS)})")
        return [src]
    raise FileNotFoundError(f"{src}: no such image or folder")


def preprocess(img: np.ndarray, imgsz: int) -> tuple[torch.Tensor, tuple]:
    """(H, W, 3) uint8 -> ((1, 3, imgsz, imgsz) float in [0, 1], ratio_pad for the way back)."""
    small, r0 = resize_long_side(img, imgsz, antialias=True)
    boxed, r, pad = letterbox(small, imgsz, scaleup=False)
    x = torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1))).float().div_(255).unsqueeze(0)
    return x, ((r0 * r, r0 * r), pad)


@torch.no_grad()
def predict(
    weights: str | Path,
    source: str | Path,
    out_dir: str | Path,
    imgsz: int | None = None,
    conf: float = PREDICT_SETTINGS["conf"],
    iou: float = PREDICT_SETTINGS["iou"],
    max_det: int = PREDICT_SETTINGS["max_det"],
    save_txt: bool = False,
    save_json: bool = True,
    save_images: bool = True,
    device: str = "cpu",
) -> list[dict]:
    """Detect objects in ``source`` with the detector in ``weights``.

    Writes ``out_dir/<image name>`` with the boxes drawn, ``out_dir/predictions.json`` (one record per box:
    image, class, name, score, box xyxy in original pixels) and with ``save_txt`` ``out_dir/labels/<stem>.txt``
    (YOLO ``cls cx cy w h conf``, normalised). Returns the records.
    """
    dev = resolve_device(device)
    model, cfg = load_detector(weights, dev)
    channels_last = resolve_channels_last(None, dev)
    net = inference_net(model, fuse=True, channels_last=channels_last)  # as validation runs it
    names: Sequence[str] = cfg["detector"]["names"]
    imgsz = imgsz or int(cfg.get("imgsz", 640))
    if imgsz < 32 or imgsz % 32:
        raise ConfigError(f"--imgsz must be a positive multiple of 32, got {imgsz}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    for f in list_sources(source):
        img = load_rgb(str(f))
        x, ratio_pad = preprocess(img, imgsz)
        x = to_device(x, dev, channels_last)
        det = non_max_suppression(net(x), conf=conf, iou=iou, multi_label=False, max_det=max_det)[0].cpu()
        boxes = scale_boxes_to_original(det[:, :4], ratio_pad, img.shape[:2])
        cls, scores = det[:, 5].long(), det[:, 4]
        records += prediction_records(str(f), boxes, cls, scores, names)
        if save_images:
            save_image(draw_boxes(img, boxes, cls, scores, names), out_dir / f.name)
        if save_txt:
            write_yolo_txt(out_dir / "labels" / f"{f.stem}.txt", boxes, cls, img.shape[:2], scores, save_conf=True)
    if save_json:
        write_predictions_json(records, out_dir / "predictions.json")
    return records
