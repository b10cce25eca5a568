"""Synthetic construction-site scenes in YOLO format, for tests, demos and smoke training.

Each scene is a sky/ground (or facade) background with noise textures, then objects placed on the
ground with perspective (farther = higher and smaller), drawn far-to-near so near objects occlude
far ones, plus unlabelled clutter, then a lighting gradient, colour cast, blur and sensor noise.

Classes (``SYNTH_CLASSES``): person (workers; a helmet and a vest are separate boxes inside the
person box, each present with some probability), helmet, vest, machinery (excavator, mobile or
tower crane, truck), material (brick, rebar and board piles), barrier (striped panels, mesh fences).

Labels are exact: every object is also painted with its own id into a mask, and the label is the
tight box of the object's *visible* pixels in the final mask (a person's box includes its helmet
and vest). Objects less than 30 % visible, or under 3 px on a side, are not labelled.
Everything is drawn with PIL + numpy and derived from ``np.random.default_rng((seed, index))``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter

from ...engine.checkpoint import atomic_write_text

SYNTH_CLASSES = ["person", "helmet", "vest", "machinery", "material", "barrier"]
PERSON, HELMET, VEST, MACHINERY, MATERIAL, BARRIER = range(6)

_HIVIS = [(255, 120, 0), (200, 255, 0), (255, 200, 0), (255, 80, 40)]
_HELMET = [(255, 220, 0), (250, 250, 250), (255, 130, 0), (220, 30, 30), (30, 90, 220)]
_MACHINE = [(240, 180, 0), (250, 140, 20), (235, 235, 230), (200, 40, 40), (40, 80, 180)]
_SKIN = [(241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172)]


def _col(rng, palette, jitter=18):
    c = np.asarray(palette[rng.integers(len(palette))], float) + rng.uniform(-jitter, jitter, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _ordered(xy):
    """PIL refuses x1 < x0; tiny far-away shapes can round that way, so clamp to a point."""
    x0, y0, x1, y1 = xy
    return [x0, y0, max(x0, x1), max(y0, y1)]


class _Canvas:
    """Image + id mask drawn in lockstep, so labels can be read off the visible pixels."""

    def __init__(self, img: Image.Image):
        self.img = img
        self.mask = Image.new("L", img.size, 0)
        self.d, self.m = ImageDraw.Draw(img), ImageDraw.Draw(self.mask)
        self.next_id = 1

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1  # ids 1..255; 0 is background / unlabelled clutter

    def rect(self, xy, fill, oid, outline=None):
        xy = _ordered(xy)
        self.d.rectangle(xy, fill=fill, outline=outline)
        self.m.rectangle(xy, fill=oid if fill is not None else None, outline=oid)

    def ellipse(self, xy, fill, oid):
        xy = _ordered(xy)
        self.d.ellipse(xy, fill=fill)
        self.m.ellipse(xy, fill=oid)

    def poly(self, pts, fill, oid):
        self.d.polygon(pts, fill=fill)
        self.m.polygon(pts, fill=oid)

    def line(self, pts, fill, width, oid):
        width = max(1, int(round(width)))
        self.d.line(pts, fill=fill, width=width)
        self.m.line(pts, fill=oid, width=width)

    def pie(self, xy, start, end, fill, oid):
        xy = _ordered(xy)
        self.d.pieslice(xy, start, end, fill=fill)
        self.m.pieslice(xy, start, end, fill=oid)


# ------------------------------------------------------------------------------------ background


def _noise_field(rng, h, w, cells, amp):
    """Smooth noise: a coarse random grid upsampled bicubically (cheap "texture")."""
    small = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    im = Image.fromarray(((small + 1) * 127.5).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    return (np.asarray(im, np.float32) / 127.5 - 1) * amp


def _background(rng, size) -> tuple[np.ndarray, int]:
    h = w = size
    horizon = int(rng.uniform(0.25, 0.6) * h)
    img = np.empty((h, w, 3), np.float32)  # float32 throughout: this runs for every synthetic image
    top, bot = (
        np.array([rng.uniform(60, 140), rng.uniform(120, 190), rng.uniform(190, 255)]),
        np.array([rng.uniform(170, 235)] * 3),
    )
    if rng.random() < 0.3:  # overcast or dusk sky
        top = np.array([rng.uniform(90, 200)] * 3) + rng.uniform(-20, 20, 3)
    t = np.linspace(0, 1, max(horizon, 1))[:, None, None]
    img[:horizon] = top * (1 - t) + bot * t
    ground = np.array([[150, 120, 85], [130, 130, 125], [115, 95, 70], [165, 150, 120]][rng.integers(4)], float)
    ground = ground + rng.uniform(-20, 20, 3)
    gh = h - horizon
    if gh > 0:
        tex = _noise_field(rng, gh, w, int(rng.integers(4, 16)), 25)[..., None]
        shade = np.linspace(0.8, 1.1, gh)[:, None, None]  # the near ground is lit more evenly
        img[horizon:] = ground * shade + tex
    if rng.random() < 0.35:  # a building facade with windows behind the site
        x0, x1 = sorted(rng.integers(0, w, 2))
        y0 = int(rng.uniform(0.05, 0.8) * horizon)
        img[y0:horizon, x0:x1] = np.array([rng.uniform(120, 210)] * 3) + rng.uniform(-15, 15, 3)
        step = int(rng.integers(8, 20))
        for yy in range(y0 + 4, horizon - 4, step):
            for xx in range(x0 + 3, x1 - 6, step):
                img[yy : yy + step // 2, xx : xx + step // 2] = rng.uniform(40, 110)
    img += rng.standard_normal((h, w, 1), dtype=np.float32) * rng.uniform(2, 8)
    return np.clip(img, 0, 255).astype(np.uint8), horizon


# ------------------------------------------------------------------------------------- objects


def _worker(c: _Canvas, rng, cx, bottom, hgt, labels):
    pid = c.new_id()
    ids = [pid]
    head_r = 0.085 * hgt
    top = bottom - hgt
    shirt, pants = (
        _col(rng, [(40, 60, 140), (200, 200, 200), (90, 90, 90), (150, 40, 40)]),
        _col(rng, [(40, 40, 60), (60, 70, 90), (90, 80, 60)]),
    )
    tw = 0.3 * hgt
    ty0, ty1 = top + 0.2 * hgt, top + 0.58 * hgt
    spread = rng.uniform(0.02, 0.12) * hgt
    for s in (-1, 1):  # legs
        c.line([(cx + s * 0.07 * hgt, ty1), (cx + s * (0.07 * hgt + spread), bottom)], pants, 0.11 * hgt, pid)
    arm_up = rng.random() < 0.3
    for s in (-1, 1):  # arms, one raised sometimes
        end = (cx + s * 0.25 * hgt, ty0 - 0.15 * hgt) if (arm_up and s == 1) else (cx + s * 0.2 * hgt, ty1)
        c.line([(cx + s * tw / 2, ty0 + 0.03 * hgt), end], shirt, 0.07 * hgt, pid)
    c.rect([cx - tw / 2, ty0, cx + tw / 2, ty1], shirt, pid)
    c.ellipse([cx - head_r, top + 0.02 * hgt, cx + head_r, top + 0.02 * hgt + 2 * head_r], _col(rng, _SKIN), pid)
    if rng.random() < 0.65:
        hid = c.new_id()
        ids.append(hid)
        hr = head_r * 1.2
        c.pie([cx - hr, top - 0.02 * hgt, cx + hr, top - 0.02 * hgt + 2 * hr], 180, 360, _col(rng, _HELMET), hid)
        c.rect(
            [cx - hr * 1.1, top - 0.02 * hgt + hr - 0.015 * hgt, cx + hr * 1.1, top - 0.02 * hgt + hr + 0.01 * hgt],
            _col(rng, _HELMET),
            hid,
        )
        labels.append((HELMET, [hid]))
    if rng.random() < 0.55:
        vid = c.new_id()
        ids.append(vid)
        col = _col(rng, _HIVIS)
        c.rect([cx - tw / 2 - 1, ty0, cx + tw / 2 + 1, ty0 + 0.85 * (ty1 - ty0)], col, vid)
        for f in (0.35, 0.65):  # reflective stripes
            y = ty0 + f * (ty1 - ty0)
            c.d.line([(cx - tw / 2, y), (cx + tw / 2, y)], fill=(215, 215, 215), width=max(1, int(0.02 * hgt)))
        labels.append((VEST, [vid]))
    labels.append((PERSON, ids))


def _machine(c: _Canvas, rng, cx, bottom, hgt, labels):
    oid = c.new_id()
    col = _col(rng, _MACHINE)
    dark = (45, 45, 45)
    kind = rng.integers(4)
    s = -1 if rng.random() < 0.5 else 1
    if kind == 0:  # excavator: tracks, body, cab, two-segment arm, bucket
        w = 1.6 * hgt
        c.rect([cx - w / 2, bottom - 0.22 * hgt, cx + w / 2, bottom], dark, oid)
        c.rect([cx - 0.4 * w, bottom - 0.55 * hgt, cx + 0.3 * w, bottom - 0.22 * hgt], col, oid)
        c.rect([cx - 0.35 * w, bottom - 0.9 * hgt, cx - 0.05 * w, bottom - 0.55 * hgt], col, oid)
        c.rect([cx - 0.31 * w, bottom - 0.85 * hgt, cx - 0.1 * w, bottom - 0.62 * hgt], (120, 160, 190), oid)
        elbow = (cx + s * 0.55 * w, bottom - hgt)
        tip = (cx + s * 0.8 * w, bottom - 0.3 * hgt)
        c.line([(cx + 0.1 * w * s, bottom - 0.5 * hgt), elbow, tip], col, 0.09 * hgt, oid)
        c.poly([tip, (tip[0] + s * 0.15 * w, tip[1]), (tip[0] + s * 0.05 * w, tip[1] + 0.22 * hgt)], dark, oid)
    elif kind == 1:  # truck: cab, bed, wheels
        w = 2.0 * hgt
        x0 = cx - w / 2
        cab = (x0, x0 + 0.28 * w) if s > 0 else (x0 + 0.72 * w, x0 + w)
        c.rect([cab[0], bottom - 0.9 * hgt, cab[1], bottom - 0.2 * hgt], col, oid)
        c.rect([cab[0] + 0.03 * w, bottom - 0.85 * hgt, cab[1] - 0.03 * w, bottom - 0.55 * hgt], (120, 160, 190), oid)
        bed = (x0 + 0.3 * w, x0 + w) if s > 0 else (x0, x0 + 0.7 * w)
        c.rect([bed[0], bottom - 0.75 * hgt, bed[1], bottom - 0.2 * hgt], _col(rng, _MACHINE), oid, outline=dark)
        r = 0.15 * hgt
        for fx in (0.15, 0.5, 0.85):
            x = x0 + fx * w
            c.ellipse([x - r, bottom - 2 * r, x + r, bottom], dark, oid)
    elif kind == 2:  # mobile crane: carrier, cab, long boom and hook rope
        w = 1.8 * hgt
        c.rect([cx - w / 2, bottom - 0.35 * hgt, cx + w / 2, bottom - 0.1 * hgt], col, oid)
        for fx in (-0.35, 0, 0.35):
            c.ellipse([cx + fx * w - 0.1 * hgt, bottom - 0.2 * hgt, cx + fx * w + 0.1 * hgt, bottom], dark, oid)
        c.rect([cx - 0.1 * w, bottom - 0.6 * hgt, cx + 0.15 * w, bottom - 0.35 * hgt], col, oid)
        tip = (cx + s * 0.5 * w, bottom - 1.6 * hgt)
        c.line([(cx, bottom - 0.5 * hgt), tip], col, 0.06 * hgt, oid)
        c.line([tip, (tip[0], bottom - 0.7 * hgt)], dark, 0.015 * hgt, oid)
    else:  # tower crane: lattice mast and jib
        mw = 0.12 * hgt
        top = bottom - 2.2 * hgt
        c.rect([cx - mw / 2, top, cx + mw / 2, bottom], None, oid, outline=col)
        step = max(3.0, mw)
        y = bottom
        while y > top:
            c.line([(cx - mw / 2, y), (cx + mw / 2, y - step)], col, 0.02 * hgt, oid)
            y -= step
        c.line([(cx - s * 0.5 * hgt, top), (cx + s * 1.6 * hgt, top)], col, 0.06 * hgt, oid)
        c.rect([cx - s * 0.5 * hgt - 0.1 * hgt, top, cx - s * 0.5 * hgt + 0.1 * hgt, top + 0.15 * hgt], dark, oid)
    labels.append((MACHINERY, [oid]))


def _material(c: _Canvas, rng, cx, bottom, hgt, labels):
    oid = c.new_id()
    kind = rng.integers(3)
    if kind == 0:  # brick pile: staggered rows of bricks, narrower towards the top
        bw, bh = 0.28 * hgt, 0.14 * hgt
        rows = int(rng.integers(3, 7))
        for r in range(rows):
            n = max(1, rows - r + int(rng.integers(0, 2)))
            y1 = bottom - r * bh
            x_start = cx - n * bw / 2 + (bw / 2 if r % 2 else 0) * 0.5
            for k in range(n):
                c.rect(
                    [x_start + k * bw, y1 - bh, x_start + (k + 1) * bw - 1, y1 - 1],
                    _col(rng, [(170, 70, 45), (150, 60, 40), (190, 100, 70)], 12),
                    oid,
                    outline=(110, 50, 35),
                )
    elif kind == 1:  # rebar bundle: many parallel thin bars
        w = rng.uniform(1.2, 2.5) * hgt
        n = int(rng.integers(6, 14))
        for k in range(n):
            y = bottom - k * hgt / n
            off = rng.uniform(-0.05, 0.05) * w
            c.line(
                [(cx - w / 2 + off, y), (cx + w / 2 + off, y - rng.uniform(-0.05, 0.05) * hgt)],
                _col(rng, [(110, 60, 40), (80, 70, 65)], 15),
                max(1.0, 0.6 * hgt / n),
                oid,
            )
    else:  # board / wood pile: stacked planks
        w = rng.uniform(1.2, 2.2) * hgt
        n = int(rng.integers(3, 8))
        ph = hgt / n
        for k in range(n):
            off = rng.uniform(-0.06, 0.06) * w
            c.rect(
                [cx - w / 2 + off, bottom - (k + 1) * ph, cx + w / 2 + off, bottom - k * ph - 1],
                _col(rng, [(200, 160, 100), (180, 140, 90), (160, 120, 70)], 15),
                oid,
                outline=(110, 80, 40),
            )
    labels.append((MATERIAL, [oid]))


def _barrier(c: _Canvas, rng, cx, bottom, hgt, labels):
    oid = c.new_id()
    w = rng.uniform(2.0, 5.0) * hgt
    x0, x1 = cx - w / 2, cx + w / 2
    if rng.random() < 0.5:  # striped panel barrier on two feet
        a, b = [((230, 30, 30), (245, 245, 245)), ((250, 210, 0), (30, 30, 30))][rng.integers(2)]
        y0, y1 = bottom - hgt, bottom - 0.45 * hgt
        n = max(2, int(w / (0.35 * hgt)))
        for k in range(n):
            xa, xb = x0 + k * w / n, x0 + (k + 1) * w / n
            c.poly([(xa, y1), (xa + 0.3 * hgt, y0), (xb + 0.3 * hgt, y0), (xb, y1)], a if k % 2 else b, oid)
        for fx in (0.1, 0.9):
            x = x0 + fx * w
            c.line([(x, y1), (x, bottom)], (60, 60, 60), 0.06 * hgt, oid)
    else:  # mesh fence: posts and a wire grid
        col = _col(rng, [(90, 110, 90), (150, 150, 150), (40, 120, 60)])
        for k in range(int(rng.integers(2, 5)) + 1):
            x = x0 + k * w / max(1, int(w / hgt))
            if x > x1:
                break
            c.line([(x, bottom - hgt), (x, bottom)], (70, 70, 70), 0.07 * hgt, oid)
        step = max(3.0, 0.15 * hgt)
        y = bottom - hgt
        while y <= bottom:
            c.line([(x0, y), (x1, y)], col, 1, oid)
            y += step
        x = x0
        while x <= x1:
            c.line([(x, bottom - hgt), (x, bottom)], col, 1, oid)
            x += step
    labels.append((BARRIER, [oid]))


def _clutter(c: _Canvas, rng, size):
    """Unlabelled distractors (puddles, poles, debris, stray planks); drawn as background in the mask."""
    kind = rng.integers(4)
    x, y = rng.uniform(0, size, 2)
    s = rng.uniform(0.03, 0.2) * size
    col = tuple(int(v) for v in rng.uniform(40, 200, 3))
    if kind == 0:
        c.ellipse([x - s, y - s / 4, x + s, y + s / 4], col, 0)
    elif kind == 1:
        c.line([(x, y), (x + rng.uniform(-0.1, 0.1) * s, y - 2 * s)], col, max(1, s / 10), 0)
    elif kind == 2:
        pts = [(x + rng.uniform(-s, s), y + rng.uniform(-s, s)) for _ in range(int(rng.integers(3, 7)))]
        c.poly(pts, col, 0)
    else:
        c.line([(x - s, y), (x + s, y + rng.uniform(-0.3, 0.3) * s)], col, max(1, s / 12), 0)


_DRAW = {"person": _worker, "machinery": _machine, "material": _material, "barrier": _barrier}
_BASE_H = {"person": 0.42, "machinery": 0.42, "material": 0.16, "barrier": 0.16}  # of the image, nearest
_FREQ = ["person"] * 5 + ["machinery"] * 2 + ["material"] * 3 + ["barrier"] * 2


def render_scene(rng: np.random.Generator, size: int = 320, max_objects: int = 14):
    """Draw one scene.

    Returns:
        (PIL RGB image of size x size, cls int64 [N], boxes float32 [N, 4] xyxy pixels).
    """
    bg, horizon = _background(rng, size)
    c = _Canvas(Image.fromarray(bg))
    objs = []
    for _ in range(int(rng.integers(2, max_objects + 1))):
        kind = _FREQ[rng.integers(len(_FREQ))]
        bottom = rng.uniform(horizon + 0.03 * size, size * 1.08)
        depth = (bottom - horizon) / (size - horizon + 1e-6)  # 0 at the horizon, 1 at the bottom edge
        hgt = _BASE_H[kind] * size * max(depth, 0.08) * rng.uniform(0.7, 1.3)
        objs.append((bottom, kind, rng.uniform(-0.05, 1.05) * size, hgt))
    clutter_at = set(rng.integers(0, len(objs) + 1, int(rng.integers(1, 7))).tolist())
    labels, initial = [], {}
    for i, (bottom, kind, cx, hgt) in enumerate(sorted(objs, key=lambda o: o[0])):  # far to near
        if i in clutter_at:
            _clutter(c, rng, size)
        n_before = len(labels)
        _DRAW[kind](c, rng, cx, bottom, hgt, labels)
        counts = np.bincount(np.asarray(c.mask).reshape(-1), minlength=256)
        for _cls, ids in labels[n_before:]:
            initial[tuple(ids)] = int(counts[ids].sum())
    mask = np.asarray(c.mask)
    counts = np.bincount(mask.reshape(-1), minlength=256)
    cls, boxes = [], []
    for k, ids in labels:
        vis = int(counts[ids].sum())
        if vis == 0 or vis < 0.3 * initial[tuple(ids)]:
            continue
        m = np.isin(mask, ids) if len(ids) > 1 else mask == ids[0]
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        box = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]  # pixel edges: the box encloses every pixel
        if box[2] - box[0] < 3 or box[3] - box[1] < 3:
            continue
        cls.append(k)
        boxes.append(box)

    img = np.array(c.img, np.float32)
    gain = rng.uniform(0.6, 1.3)
    ramp = np.linspace(rng.uniform(0.75, 1.0), rng.uniform(1.0, 1.25), size, dtype=np.float32)
    light = ramp[None, :, None] if rng.random() < 0.5 else ramp[:, None, None]  # sun from one side
    img *= light * (gain * rng.uniform(0.9, 1.1, 3)).astype(np.float32)  # brightness, gradient, colour cast
    img += rng.standard_normal((size, size, 1), dtype=np.float32) * np.float32(rng.uniform(0, 6))
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < 0.4:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    return out, np.asarray(cls, np.int64), np.asarray(boxes, np.float32).reshape(-1, 4)


def generate_synthetic_dataset(
    out_dir: str | os.PathLike,
    images: int = 200,
    imgsz: int = 320,
    seed: int = 0,
    val_fraction: float = 0.2,
    quality: int = 92,
) -> Path:
    """Write ``images`` scenes as a YOLO dataset and return its ``data.yaml`` path.

    Layout: ``images/{train,val}/NNNNNN.jpg``, ``labels/{train,val}/NNNNNN.txt``, ``data.yaml``
    (names = :data:`SYNTH_CLASSES`). Scene ``i`` depends only on ``(seed, i)``; the val split is
    the first ``round(images * val_fraction)`` indices of a seeded permutation.
    """
    out = Path(out_dir)
    n_val = int(round(images * val_fraction))
    val = set(np.random.default_rng(seed).permutation(images)[:n_val].tolist())
    for split in ("train", "val"):
        for kind, ext in (("images", ".jpg"), ("labels", ".txt")):
            d = out / kind / split
            d.mkdir(parents=True, exist_ok=True)
            # a rerun with fewer images must not leave the old scenes in the split folders
            for old in d.glob(f"[0-9][0-9][0-9][0-9][0-9][0-9]{ext}"):
                old.unlink()
    for i in range(images):
        img, cls, boxes = render_scene(np.random.default_rng((seed, i)), imgsz)
        split = "val" if i in val else "train"
        img.save(out / "images" / split / f"{i:06d}.jpg", quality=quality)
        lines = [
            f"{c} {(b[0] + b[2]) / 2 / imgsz:.6f} {(b[1] + b[3]) / 2 / imgsz:.6f} "
            f"{(b[2] - b[0]) / imgsz:.6f} {(b[3] - b[1]) / imgsz:.6f}"
            for c, b in zip(cls.tolist(), boxes.tolist())
        ]
        (out / "labels" / split / f"{i:06d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    cfg = {
        "path": str(out.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": {i: n for i, n in enumerate(SYNTH_CLASSES)},
    }
    path = out / "data.yaml"
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))
    return path
