"""YOLOv8-style detection augmentations on numpy images, with OpenCV (as the reference implementation).

Conventions: images are ``np.ndarray`` uint8 (H, W, 3) RGB; boxes are float32 (N, 4) xyxy in
pixels of the image they come with, pixel ``i`` covering [i, i + 1); ``cls`` is int64 (N,). Every function
returns new arrays. Randomness comes from an explicit ``np.random.Generator`` so a sample is reproducible
from (seed, epoch, index) whatever the number of loader workers.

Defaults are the YOLOv8 ones (spec §5.6): mosaic p 1.0, affine (degrees 0, translate 0.1,
scale 0.5, shear 0, perspective 0), HSV (h 0.015, s 0.7, v 0.4), fliplr 0.5, grey 114 padding.
Warps use ``cv2.warpAffine``/``cv2.warpPerspective`` (bilinear) with the matrix conjugated to OpenCV's
pixel-centre convention, so pixels and boxes move by exactly the same map.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

PAD_VALUE = 114


def resize_long_side(img: np.ndarray, size: int, antialias: bool = False) -> tuple[np.ndarray, float]:
    """Resize so the long side equals ``size`` (aspect kept). Returns (image, ratio new/old).

    ``antialias`` shrinks by area averaging (validation and prediction, as YOLOv8); otherwise bilinear.
    """
    h, w = img.shape[:2]
    r = size / max(h, w)
    if r == 1:
        return img, 1.0
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    interp = cv2.INTER_AREA if antialias and r < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, (nw, nh), interpolation=interp), r


def letterbox(
    img: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    auto: bool = False,
    stride: int = 32,
    scaleup: bool = True,
    color: int = PAD_VALUE,
) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize keeping aspect and pad (centred) to ``new_shape``.

    Args:
        img: (H, W, 3) uint8.
        new_shape: target (h, w) or an int for a square.
        auto: pad only up to the next multiple of ``stride`` (rectangular inference) instead of
            to ``new_shape``.
        scaleup: allow enlarging (off for validation so small images are not blown up).

    Returns:
        (image, r, (padw, padh)): a point maps as ``x_new = x * r + padw``, ``y_new = y * r + padh``.
    """
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    h, w = img.shape[:2]
    r = min(new_shape[0] / h, new_shape[1] / w)
    if not scaleup:
        r = min(r, 1.0)
    nw, nh = round(w * r), round(h * r)
    dw, dh = new_shape[1] - nw, new_shape[0] - nh
    if auto:
        dw, dh = dw % stride, dh % stride
    if (nw, nh) != (w, h):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    left, top = dw // 2, dh // 2  # integer offsets keep the inverse map exact
    out = cv2.copyMakeBorder(img, top, dh - top, left, dw - left, cv2.BORDER_CONSTANT, value=(color,) * 3)
    return out, r, (float(left), float(top))


def apply_ratio_pad(boxes: np.ndarray, r: float, pad: tuple[float, float]) -> np.ndarray:
    """Map xyxy boxes into a letterboxed image (see :func:`letterbox`)."""
    out = boxes.astype(np.float32) * r
    out[:, [0, 2]] += pad[0]
    out[:, [1, 3]] += pad[1]
    return out


def scale_boxes_to_original(boxes, ratio_pad, ori_shape):
    """Inverse letterbox: boxes in network-input pixels -> original image pixels, clipped.

    Args:
        boxes: (N, 4) xyxy, numpy array or tensor (a tensor is returned as a new tensor).
        ratio_pad: ``((r, r), (padw, padh))`` from the batch metadata.
        ori_shape: (h, w) of the original image.
    """
    (r, _), (pw, ph) = ratio_pad
    out = boxes.clone() if hasattr(boxes, "clone") else np.array(boxes, dtype=np.float32, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - pw) / r
    out[:, [1, 3]] = (out[:, [1, 3]] - ph) / r
    h, w = ori_shape
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


def hflip(img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right; pixel column c goes to w-1-c, so box edge x goes to w-x."""
    w = img.shape[1]
    out = boxes.copy()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return cv2.flip(img, 1), out


def augment_hsv(
    img: np.ndarray, rng: np.random.Generator, hgain: float = 0.015, sgain: float = 0.7, vgain: float = 0.4
) -> np.ndarray:
    """Random hue rotation and saturation/value gains (YOLOv8's HSV augmentation).

    Draws ``(dh, ds, dv) = uniform(-1, 1, 3) * (hgain, sgain, vgain)`` and applies :func:`shift_hsv`
    with hue turned by ``dh`` of a full circle and saturation and value multiplied by ``1 + ds``, ``1 + dv``.
    """
    if not (hgain or sgain or vgain):
        return img
    dh, ds, dv = rng.uniform(-1, 1, 3) * np.array([hgain, sgain, vgain])
    return shift_hsv(img, dh, 1 + ds, 1 + dv)


def shift_hsv(img: np.ndarray, hue_turn: float, sat_gain: float, val_gain: float) -> np.ndarray:
    """Turn the hue by ``hue_turn`` circles and scale saturation and value, clipped, in OpenCV's 8-bit HSV.

    OpenCV stores hue in 0..179 (2 degrees a step), so the turn becomes ``hue_turn * 180`` steps modulo 180;
    saturation and value are 0..255. One lookup table per channel, as YOLOv8.
    """
    x = np.arange(256, dtype=np.float64)
    lut = np.stack(
        [(x + hue_turn * 180) % 180, np.clip(x * sat_gain, 0, 255), np.clip(x * val_gain, 0, 255)], -1
    ).astype(np.uint8)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    return cv2.cvtColor(cv2.LUT(hsv, lut.reshape(1, 256, 3)), cv2.COLOR_HSV2RGB)


def box_candidates(
    before: np.ndarray,
    after: np.ndarray,
    wh_thr: float = 2,
    ar_thr: float = 100,
    area_thr: float = 0.1,
    eps: float = 1e-16,
) -> np.ndarray:
    """YOLOv8 keep rule after a warp: sides > wh_thr px, area kept > area_thr of the (scaled)
    original, aspect ratio < ar_thr. ``before``/``after`` are (N, 4) xyxy; returns a bool mask."""
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def random_affine(
    img: np.ndarray,
    boxes: np.ndarray,
    cls: np.ndarray,
    rng: np.random.Generator,
    degrees: float = 0.0,
    translate: float = 0.1,
    scale: float = 0.5,
    shear: float = 0.0,
    perspective: float = 0.0,
    border: tuple[int, int] = (0, 0),
):
    """Random rotation/scale/shear/translation/perspective, as YOLOv8's random perspective.

    Args:
        border: (bh, bw) added to each side of the output; negative crops (mosaic uses -s/2 to
            turn its 2s canvas into an s image).

    Returns:
        (image of shape (H + 2*bh, W + 2*bw, 3), boxes, cls) with boxes transformed through the
        4 corners, clipped to the output and filtered by :func:`box_candidates`.
    """
    h_in, w_in = img.shape[:2]
    h, w = h_in + 2 * border[0], w_in + 2 * border[1]
    C = np.eye(3)
    C[0, 2], C[1, 2] = -w_in / 2, -h_in / 2  # centre the input at the origin
    P = np.eye(3)
    P[2, 0], P[2, 1] = rng.uniform(-perspective, perspective), rng.uniform(-perspective, perspective)
    R = np.eye(3)
    a, s = rng.uniform(-degrees, degrees), rng.uniform(1 - scale, 1 + scale)
    ca, sa = math.cos(math.radians(a)) * s, math.sin(math.radians(a)) * s
    R[:2, :2] = [[ca, sa], [-sa, ca]]
    S = np.eye(3)
    S[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
    S[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    T = np.eye(3)
    T[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * w
    T[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * h
    M = T @ S @ R @ P @ C  # applied right to left

    # OpenCV puts pixel i's centre at coordinate i, our boxes at i + 0.5: conjugate by that half-pixel shift
    half = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    Mc = np.linalg.inv(half) @ M @ half
    fill = (PAD_VALUE,) * 3
    if perspective:
        out = cv2.warpPerspective(img, Mc, (w, h), flags=cv2.INTER_LINEAR, borderValue=fill)
    else:
        out = cv2.warpAffine(img, Mc[:2], (w, h), flags=cv2.INTER_LINEAR, borderValue=fill)

    n = len(boxes)
    if n == 0:
        return out, boxes.reshape(0, 4).astype(np.float32), cls
    xy = np.ones((n * 4, 3))
    xy[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # the 4 corners
    xy = xy @ M.T
    xy = (xy[:, :2] / xy[:, 2:3] if perspective else xy[:, :2]).reshape(n, 8)
    new = np.stack([xy[:, 0::2].min(1), xy[:, 1::2].min(1), xy[:, 0::2].max(1), xy[:, 1::2].max(1)], 1)
    new[:, [0, 2]] = new[:, [0, 2]].clip(0, w)
    new[:, [1, 3]] = new[:, [1, 3]].clip(0, h)
    keep = box_candidates(boxes * s, new)
    return out, new[keep].astype(np.float32), cls[keep]


def mosaic4(
    items: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    size: int,
    rng: np.random.Generator,
    center: tuple[float, float] | None = None,
):
    """Tile 4 images around a random centre on a (2*size, 2*size) grey canvas.

    Args:
        items: 4 tuples (image resized so its long side is ``size``, boxes xyxy, cls).
        center: (xc, yc); default uniform in [size/2, 3*size/2] per axis.

    Returns:
        (canvas (2s, 2s, 3), boxes clipped to the canvas, cls). Boxes cut to zero width are kept
        (the following affine's candidate rule removes them).
    """
    s = size
    xc, yc = center if center is not None else (rng.uniform(s / 2, 3 * s / 2), rng.uniform(s / 2, 3 * s / 2))
    xc, yc = int(xc), int(yc)
    canvas = np.full((2 * s, 2 * s, 3), PAD_VALUE, np.uint8)
    all_boxes, all_cls = [], []
    for i, (img, boxes, cls) in enumerate(items):
        h, w = img.shape[:2]
        if i == 0:  # top-left: the image's bottom-right corner sits on the centre
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
        elif i == 1:  # top-right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
            x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
        elif i == 2:  # bottom-left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
            x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
        else:  # bottom-right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
            x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
        canvas[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
        b = boxes.astype(np.float32).copy()
        b[:, [0, 2]] += x1a - x1b
        b[:, [1, 3]] += y1a - y1b
        all_boxes.append(b)
        all_cls.append(cls)
    boxes = np.concatenate(all_boxes, 0).reshape(-1, 4).clip(0, 2 * s)
    return canvas, boxes, np.concatenate(all_cls, 0).astype(np.int64)
