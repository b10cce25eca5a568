"""``leanvision detect predict``: images -> annotated copies plus a JSON (or YOLO txt) of the detections.

Boxes are reported in the original image's pixels: each image is letterboxed exactly as in validation
(long side resized to ``imgsz``, centred grey padding) and the detections are mapped back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


def resolve_classes(values: Sequence[str] | None, names: Sequence[str], flag: str = "--classes") -> list[int] | None:
    """Class names or ids (each value may hold several, comma-separated) -> sorted class ids; None for None.

    A value is first taken as a class name (exact, then case-insensitive if that is unique), so names with
    spaces and dashes (``NO-Safety Vest``) work; otherwise as an id ``0 .. nc-1``. Anything else is a
    ConfigError that lists the checkpoint's classes.
    """
    if values is None:
        return None
    ids = set()
    for value in values:
        for token in (t.strip() for t in str(value).split(",")):
            if not token:
                continue
            folded = [i for i, n in enumerate(names) if n.casefold() == token.casefold()]
            if token in names:
                ids.add(list(names).index(token))
            elif len(folded) == 1:
                ids.add(folded[0])
            elif token.isdigit() and int(token) < len(names):
                ids.add(int(token))
            else:
                listed = ", ".join(f"{i} {n!r}" for i, n in enumerate(names))
                raise ConfigError(f"{flag}: no class {token!r} in this checkpoint; its classes are {listed} "
                                  "(names or ids, comma-separated)")
    if not ids:
        raise ConfigError(f"{flag}: give at least one class name or id")
    return sorted(ids)


@dataclass
class Detector:
    """A checkpoint made ready to predict: the BN-folded network validation runs, its class names, input size."""

    net: torch.nn.Module
    names: list[str]
    imgsz: int
    device: torch.device
    channels_last: bool


def load_for_predict(weights: str | Path, device: str = "cpu", imgsz: int | None = None) -> Detector:
    """Load ``weights`` (a ``detect train`` checkpoint) for prediction at ``imgsz`` (default: the training size)."""
    dev = resolve_device(device)
    model, cfg = load_detector(weights, dev)
    channels_last = resolve_channels_last(None, dev)
    net = inference_net(model, fuse=True, channels_last=channels_last)  # as validation runs it
    imgsz = imgsz or int(cfg.get("imgsz", 640))
    if imgsz < 32 or imgsz % 32:
        raise ConfigError(f"--imgsz must be a positive multiple of 32, got {imgsz}")
    return Detector(net, list(cfg["detector"]["names"]), imgsz, dev, channels_last)


@torch.no_grad()
def detect_images(
    det: Detector,
    images: Sequence[np.ndarray],
    conf: float = PREDICT_SETTINGS["conf"],
    iou: float = PREDICT_SETTINGS["iou"],
    max_det: int = PREDICT_SETTINGS["max_det"],
    classes: Sequence[int] | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Detections of a batch of (H, W, 3) uint8 RGB images (sizes may differ), each letterboxed by
    :func:`preprocess` and run as one batch.

    Returns:
        per image (boxes (n, 4) xyxy in that image's pixels, class ids (n,), scores (n,)), best first, on CPU;
        with ``classes`` only those classes (filtered before ``max_det``, as the reference does).
    """
    if not len(images):
        return []
    xs, ratio_pads = zip(*(preprocess(img, det.imgsz) for img in images))
    x = to_device(torch.cat(xs), det.device, det.channels_last)
    out = []
    for img, rp, d in zip(images, ratio_pads, non_max_suppression(det.net(x), conf=conf, iou=iou, multi_label=False,
                                                                  max_det=max_det, classes=classes)):
        d = d.cpu()
        out.append((scale_boxes_to_original(d[:, :4], rp, img.shape[:2]), d[:, 5].long(), d[:, 4]))
    return out


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
    classes: Sequence[str] | None = None,
) -> list[dict]:
    """Detect objects in ``source`` (an image or a folder of images) with the detector in ``weights``.

    Writes ``out_dir/<image name>`` with the boxes drawn, ``out_dir/predictions.json`` (one record per box:
    image, class, name, score, box xyxy in original pixels) and with ``save_txt`` ``out_dir/labels/<stem>.txt``
    (YOLO ``cls cx cy w h conf``, normalised). ``classes``: keep only these class names or ids (see
    :func:`resolve_classes`). Returns the records. Video files and frame folders: :mod:`.stream`.
    """
    det = load_for_predict(weights, device, imgsz)
    names, keep = det.names, resolve_classes(classes, det.names)
    files = list_sources(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    for f in files:
        img = load_rgb(str(f))
        [(boxes, cls, scores)] = detect_images(det, [img], conf, iou, max_det, keep)
        records += prediction_records(str(f), boxes, cls, scores, names)
        if save_images:
            save_image(draw_boxes(img, boxes, cls, scores, names), out_dir / f.name)
        if save_txt:
            write_yolo_txt(out_dir / "labels" / f"{f.stem}.txt", boxes, cls, img.shape[:2], scores, save_conf=True)
    if save_json:
        write_predictions_json(records, out_dir / "predictions.json")
    return records
