"""Run plots: the metric curves of metrics.csv (results.png) and a validation batch with its detections."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from .draw import draw_boxes, save_image

CURVES = ["train_box_loss", "train_cls_loss", "train_dfl_loss", "val_precision", "val_recall", "val_map50",
          "val_map", "lr"]


def plot_results(metrics_csv: str | Path, out: str | Path) -> Path | None:
    """One small panel per curve of ``metrics.csv`` against the epoch; None if there is nothing to plot."""
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        return None
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in CURVES if rows and k in rows[0]]
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    fig, axes = plt.subplots(math.ceil(len(keys) / cols), cols, figsize=(3.2 * cols, 2.6 * math.ceil(len(keys) / cols)))
    for ax, k in zip(axes.flat, keys):
        pts = [(float(r["epoch"]), float(r[k])) for r in rows if r.get(k) not in (None, "")]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
        ax.set_title(k.replace("val_map", "val_mAP50-95").replace("mAP50-9550", "mAP50"), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


def plot_val_batch(predictions: Sequence[dict], names: Sequence[str], out: str | Path, conf: float = 0.25,
                   cols: int = 4) -> Path | None:
    """Tile up to 16 letterboxed validation images with their detections above ``conf`` into one image."""
    if not predictions:
        return None
    tiles = []
    for p in predictions[:16]:
        d = p["pred"]
        d = d[d[:, 4] > conf]
        tiles.append(draw_boxes(p["image"], d[:, :4], d[:, 5].long(), d[:, 4], names))
    w, h = max(t.size[0] for t in tiles), max(t.size[1] for t in tiles)  # rect val batches differ in shape
    rows = math.ceil(len(tiles) / cols)
    sheet = Image.new("RGB", (w * min(cols, len(tiles)), h * rows), (114, 114, 114))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * w, (i // cols) * h))
    return save_image(sheet, out)
