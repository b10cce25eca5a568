"""Detector run plots: the metric curves (results.png), a validation batch with its detections, and the
validation plots ultralytics users look at: PR_curve.png, F1_curve.png and confusion_matrix_normalized.png.

Every PNG is written atomically through :func:`leanvision.engine.plots.save_figure` (matplotlib, Agg backend).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..engine.plots import plot_results as plot_history
from ..engine.plots import pyplot, save_figure
from .draw import draw_boxes, save_image

CURVES = ["train_box_loss", "train_cls_loss", "train_dfl_loss", "val_precision", "val_recall", "val_map50",
          "val_map", "lr"]
VAL_PLOTS = ("PR_curve.png", "F1_curve.png", "confusion_matrix_normalized.png")
_LEGEND_MAX = 20  # classes named in a legend; more make it unreadable (ultralytics' limit too)


def plot_results(metrics_csv: str | Path, out: str | Path) -> Path | None:
    """``results.png`` from a run's ``metrics.csv`` (the trainer draws it from its history after every epoch)."""
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        return None
    with open(metrics_csv, newline="") as f:
        rows = [{k: float(v) for k, v in r.items() if v not in (None, "")} for r in csv.DictReader(f)]
    return plot_history(rows, out, CURVES)


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


def _per_class_lines(ax, x, ys, names, labels):
    """Thin grey lines per class (named in the legend when there are few classes)."""
    few = len(names) <= _LEGEND_MAX
    for c, y in enumerate(ys):
        if np.isnan(y).all():  # no ground truth: nothing to draw
            continue
        ax.plot(x, y, lw=1, label=labels[c] if few else None, color=None if few else "grey")


def plot_pr_curve(curves: dict, names: Sequence[str], out: str | Path) -> Path:
    """Precision against recall per class at IoU 0.5 (COCO's 101-point interpolated curve), and the class mean
    (its area is mAP50)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    r, pr = curves["recall"], curves["pr"]
    ap = [np.nan if np.isnan(row).all() else float(row.mean()) for row in pr]
    _per_class_lines(ax, r, pr, names, [f"{n} {a:.3f}" for n, a in zip(names, ap)])
    valid = ~np.isnan(pr).all(1)
    if valid.any():
        mean = pr[valid].mean(0)
        ax.plot(r, mean, lw=3, color="blue", label=f"all classes {mean.mean():.3f} mAP@0.5")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01), title="Precision-Recall Curve")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out)


def plot_f1_curve(curves: dict, names: Sequence[str], out: str | Path) -> Path:
    """F1 against the confidence threshold per class, and the class mean (box-filtered, as P and R are chosen)
    with its best value and threshold."""
    from .evaluate import smooth

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    px, f1 = curves["px"], curves["f1"]
    _per_class_lines(ax, px, f1, names, list(names))
    valid = ~np.isnan(f1).all(1)
    if valid.any():
        mean = smooth(f1[valid].mean(0))
        i = int(np.argmax(mean))
        ax.plot(px, mean, lw=3, color="blue", label=f"all classes {mean[i]:.2f} at {px[i]:.3f}")
    ax.set(xlabel="Confidence", ylabel="F1", xlim=(0, 1), ylim=(0, 1.01), title="F1-Confidence Curve")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out)


def normalise_columns(matrix: np.ndarray) -> np.ndarray:
    """Each true class's column divided by its total (a column of zeros stays zeros)."""
    m = np.asarray(matrix, np.float64)
    return m / np.maximum(m.sum(0, keepdims=True), 1e-9)


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], out: str | Path) -> Path:
    """The column-normalised detection confusion matrix (each true class, background included, sums to 1), with
    the fractions written in the cells up to 30 classes; cells under 0.005 are left blank."""
    plt = pyplot()
    labels = [*names, "background"]
    k = len(labels)
    norm = normalise_columns(matrix)
    shown = np.where(norm < 0.005, np.nan, norm)
    side = min(max(6.0, 0.5 * k + 3), 30.0)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if k <= 60:
        ax.set_xticks(range(k), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(k), labels, fontsize=8)
    if k <= 31:
        for i in range(k):
            for j in range(k):
                if not np.isnan(shown[i, j]):
                    ax.text(j, i, f"{shown[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > 0.5 else "black")
    ax.set(xlabel="True", ylabel="Predicted", title="Confusion Matrix Normalized (conf 0.25, IoU 0.45)")
    fig.tight_layout()
    return save_figure(fig, out)


def write_val_plots(res: dict, names: Sequence[str], out_dir: str | Path) -> list[Path]:
    """PR_curve.png, F1_curve.png and confusion_matrix_normalized.png of a :func:`~.val.validate` result run with
    ``curves=True``, into ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    c = res["curves"]
    return [plot_pr_curve(c, names, out_dir / VAL_PLOTS[0]), plot_f1_curve(c, names, out_dir / VAL_PLOTS[1]),
            plot_confusion_matrix(c["confusion"], names, out_dir / VAL_PLOTS[2])]
