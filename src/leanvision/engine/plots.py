"""Run plots shared by the tasks: the per-epoch curves of a run (``results.png``) and the atomic PNG writer.

matplotlib runs with the Agg backend (no display needed); every PNG is rendered into memory and written with
:func:`~.checkpoint.atomic_write_bytes`, so a kill never leaves half a picture.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from .checkpoint import atomic_write_bytes

# columns of metrics.csv that are bookkeeping, not curves (timings swing with the machine's load)
NOT_CURVES = frozenset({"epoch", "data_s", "epoch_s", "val_ms_per_img"})
# headline names of the columns the trainers write
TITLES = {"val_map": "val mAP50-95", "val_map50": "val mAP50", "val_acc": "val accuracy (top-1)",
          "train_acc": "train accuracy", "lr": "learning rate"}


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def curve_keys(history: Sequence[dict], curves: Sequence[str] | None = None) -> list[str]:
    """The columns of ``history`` to draw: ``curves`` (those present), else every numeric one but bookkeeping."""
    seen = list(dict.fromkeys(k for row in history for k in row))
    if curves is not None:
        return [k for k in curves if k in seen]
    numeric = {k for row in history for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    keys = [k for k in seen if k in numeric and k not in NOT_CURVES]
    return sorted(keys, key=lambda k: (k == "lr", not k.startswith("train_")))  # train, then val, the LR last


def plot_results(history: Sequence[dict], out: str | Path, curves: Sequence[str] | None = None) -> Path | None:
    """``results.png``: one small panel per metric of ``history`` (rows of metrics.csv) against the epoch.

    Args:
        history: one dict per epoch with ``epoch`` and the metrics (the trainer's history).
        curves: the columns to draw, in order (default: every numeric column but epoch and timings).

    Returns:
        The path, or None when there is nothing to draw.
    """
    keys = curve_keys(history, curves)
    if not history or not keys:
        return None
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        pts = [(row["epoch"], row[k]) for row in history
               if isinstance(row.get(k), int | float) and math.isfinite(row[k])]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
        ax.set_title(TITLES.get(k, k.replace("_", " ")), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, out)
