"""Drawing detections and writing prediction files (for ``leanvision detect predict``).

Boxes are xyxy pixels of the image they are drawn on / written for; classes are 0-based.
Only PIL's built-in font is used, so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..engine.checkpoint import atomic_write_text

# 20 distinct colours (a public "tab20"-like palette), cycled by class id
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
]


def _as_numpy(x, shape):
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x).reshape(shape)


def to_pil(image) -> Image.Image:
    """PIL image from a PIL image, an (H, W, 3) uint8 array or a (3, H, W) uint8/float[0,1] tensor."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if hasattr(image, "detach"):
        t = image.detach().cpu()
        if t.dtype.is_floating_point:
            t = (t.clamp(0, 1) * 255).round()
        image = t.byte().permute(1, 2, 0).numpy()
    return Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")


def draw_boxes(image, boxes, cls, scores=None, names: Sequence[str] | None = None, width: int | None = None):
    """Draw labelled boxes on a copy of ``image``.

    Args:
        image: see :func:`to_pil`.
        boxes: (N, 4) xyxy pixels. cls: (N,) class ids. scores: optional (N,) confidences.
        names: class names (ids are printed when missing).
        width: line width (default scales with the image size).

    Returns:
        A new PIL RGB image.
    """
    im = to_pil(image).copy()
    boxes = _as_numpy(boxes, (-1, 4))
    cls = _as_numpy(cls, (-1,)).astype(int)
    scores = _as_numpy(scores, (-1,))
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    width = width or max(1, round(sum(im.size) / 600))
    for i, (b, c) in enumerate(zip(boxes.tolist(), cls.tolist())):
        col = PALETTE[c % len(PALETTE)]
        d.rectangle(b, outline=col, width=width)
        label = names[c] if names is not None and 0 <= c < len(names) else str(c)
        if scores is not None:
            label += f" {scores[i]:.2f}"
        tx0, ty0, tx1, ty1 = d.textbbox((0, 0), label, font=font)
        tw, th = tx1 - tx0, ty1 - ty0 + 2
        y = b[1] - th if b[1] - th >= 0 else b[1]  # above the box, inside it at the top edge
        d.rectangle([b[0], y, b[0] + tw + 2, y + th], fill=col)
        d.text((b[0] + 1, y), label, fill=(255, 255, 255), font=font)
    return im


def save_image(image, path: str | os.PathLike, quality: int = 95) -> Path:
    """Save PNG or JPEG by suffix (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = to_pil(image)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, quality=quality)
    else:
        im.save(path)
    return path


def prediction_records(im_file: str, boxes, cls, scores, names: Sequence[str] | None = None) -> list[dict]:
    """JSON-ready records: ``{"image", "class", "name", "score", "box": [x1, y1, x2, y2]}`` per box."""
    boxes = _as_numpy(boxes, (-1, 4))
    cls = _as_numpy(cls, (-1,)).astype(int)
    scores = _as_numpy(scores, (-1,))
    return [
        {
            "image": str(im_file),
            "class": int(c),
            "name": names[c] if names is not None else str(c),
            "score": round(float(s), 5),
            "box": [round(float(v), 2) for v in b],
        }
        for b, c, s in zip(boxes.tolist(), cls.tolist(), scores.tolist())
    ]


def write_predictions_json(records: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write prediction records (a list) as JSON, via a temporary file and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(list(records), indent=1))
    return path


def write_yolo_txt(
    path: str | os.PathLike, boxes, cls, shape: tuple[int, int], scores=None, save_conf: bool = False
) -> Path:
    """YOLO label file ``cls cx cy w h [conf]`` normalised by ``shape`` = (h, w) of the image."""
    h, w = shape
    boxes = _as_numpy(boxes, (-1, 4)).astype(float)
    cls = _as_numpy(cls, (-1,)).astype(int)
    scores = _as_numpy(scores, (-1,))
    lines = []
    for i, ((x1, y1, x2, y2), c) in enumerate(zip(boxes.tolist(), cls.tolist())):
        line = f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
        if save_conf and scores is not None:
            line += f" {scores[i]:.5f}"
        lines.append(line)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return path
