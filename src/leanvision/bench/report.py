"""Bench output: a markdown table with ratios to the E2E row, JSON rows, a PNG plot, the environment."""

from __future__ import annotations

import math
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

from ..engine.checkpoint import atomic_write_text
from ..engine.run_folder import write_json

_RATIO_KEYS = ("peak_memory_bytes", "activation_peak_bytes", "peak_rss_above_import_bytes", "ms_per_step",
               "images_per_s", "trainable_params", "train_flops_per_image")


def environment() -> dict:
    env = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def busy_warning(share: float = 0.5) -> str | None:
    """One line when the machine is already busy (1-minute load average above ``share`` of the cores), since
    timings measured then, and their ratios, swing from run to run; None when idle or where load is unknown."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average on this platform
        return None
    cores = os.cpu_count() or 1
    if load <= share * cores:
        return None
    return (f"warning: this machine is busy (load average {load:.1f} on {cores} cores): times and their ratios may "
            "swing from run to run; measure on an idle machine, or time rows in turns with leanvision bench --rounds")


def add_ratios(rows: list[dict]) -> list[dict]:
    """Add ``<key>_vs_e2e`` for each row, against the e2e row of the same model (if present)."""
    base = {r["model"]: r for r in rows if r["method"] == "e2e" and not r.get("settings")}
    for r in rows:
        b = base.get(r["model"])
        for k in _RATIO_KEYS:
            v, bv = r.get(k), (b or {}).get(k)
            ok = b is not None and v is not None and bv and not (isinstance(v, float) and math.isnan(v))
            r[f"{k}_vs_e2e"] = v / bv if ok else None
        acc, bacc = r.get("accuracy"), (b or {}).get("accuracy")
        r["accuracy_vs_e2e"] = acc - bacc if acc is not None and bacc is not None else None
    return rows


def _mb(v):
    return None if v is None else v / 2**20


def _fmt(v, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec)


def render_markdown(rows: list[dict], title: str = "", env: dict | None = None, command: str = "") -> str:
    rows = add_ratios(rows)
    lines = [f"### {title}" if title else "", ""]
    if command:
        lines += [f"`{command}`", ""]
    if env:
        lines += ["; ".join(f"{k}: {v}" for k, v in env.items()), ""]
    lines += [
        "| model | method | settings | accuracy | peak memory (MB) | × E2E | activations (MB) | × E2E | "
        "process peak above import (MB) | × E2E | ms/step | "
        "× E2E | images/s | trainable params | × E2E | train GFLOP/image | × E2E |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        acc = r.get("accuracy")
        lines.append(
            f"| {r['model']} | {r['method']} | {r.get('settings') or ''} | "
            f"{_fmt(acc * 100 if acc is not None else None, '.2f')} | "
            f"{_fmt(r['peak_memory_bytes'] / 2**20, '.1f')} | {_fmt(r['peak_memory_bytes_vs_e2e'], '.2f')} | "
            f"{_fmt(r.get('activation_peak_bytes', 0) / 2**20 or None, '.1f')} | "
            f"{_fmt(r.get('activation_peak_bytes_vs_e2e'), '.2f')} | "
            f"{_fmt(_mb(r.get('peak_rss_above_import_bytes')), '.1f')} | "
            f"{_fmt(r.get('peak_rss_above_import_bytes_vs_e2e'), '.2f')} | "
            f"{_fmt(r['ms_per_step'], '.1f')} | {_fmt(r['ms_per_step_vs_e2e'], '.2f')} | "
            f"{_fmt(r['images_per_s'], '.1f')} | {r['trainable_params']:,} | "
            f"{_fmt(r['trainable_params_vs_e2e'], '.2f')} | "
            f"{_fmt(r['train_flops_per_image'] / 1e9 if r.get('train_flops_per_image') else None, '.3g')} | "
            f"{_fmt(r['train_flops_per_image_vs_e2e'], '.2f')} |"
        )
    src = rows[0].get("memory_source") if rows else ""
    reserved = [r for r in rows if r.get("cuda_max_reserved_bytes") is not None]
    if reserved:
        lines += ["", "| model | method | settings | CUDA max allocated (MB) | CUDA max reserved (MB) |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['model']} | {r['method']} | {r.get('settings') or ''} | "
                  f"{_fmt(_mb(r['peak_memory_bytes']), '.1f')} | {_fmt(_mb(r['cuda_max_reserved_bytes']), '.1f')} |"
                  for r in reserved]
    lines += ["", f"Peak memory source: {src} (activations: peak bytes saved for backward, CPU only). "
              "Process peak above import: the process's peak resident memory (VmHWM) minus its resident memory "
              "just after importing torch and leanvision (each resource row in its own process unless "
              "--same-process). "
              "Accuracy: last-epoch test top-1 (%). "
              "Train GFLOP/image: forward + backward of one training step (resource rows; torch.utils.flop_counter)."]
    return "\n".join(lines).strip() + "\n"


def bar_label(key: str, value: float | None, vs_e2e: float | None, scale: float) -> str:
    """A bar's label: its value and, against E2E, the ratio (``×0.43``) or, for accuracy, the difference in points."""
    text = "–" if value is None else f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    if vs_e2e is None:
        return text
    if key == "accuracy":  # accuracy_vs_e2e is a difference (add_ratios), not a ratio
        return text + f"\n{vs_e2e * scale:+.1f} pts"
    return text + f"\n×{vs_e2e:.2f}"


def plot_bars(rows: list[dict], labels: list[str], panels: list[tuple[str, str, float]], path: Path,
              title: str = "") -> Path | None:
    """A PNG of bars: one panel per main column of a bench table, one bar per row, each bar's value written on it
    (and ``×`` its E2E ratio where the row has ``<key>_vs_e2e``). Panels whose column is empty are left out.

    Args:
        panels: ``(key, title, scale)``: the row key, the panel title with its unit, the factor to that unit.
    """
    from ..engine.plots import pyplot, save_figure

    def value(r, key, scale):
        v = r.get(key)
        return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v * scale

    panels = [p for p in panels if any(value(r, p[0], p[2]) is not None for r in rows)]
    if not rows or not panels:
        return None
    plt = pyplot()
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(max(4.0, 0.9 * len(rows) + 1.5) * cols, 3.6 * nrows),
                             squeeze=False)
    for ax, (key, name, scale) in zip(axes.flat, panels):
        vals = [value(r, key, scale) for r in rows]
        bars = ax.bar(range(len(rows)), [v or 0 for v in vals], color=[f"C{i % 10}" for i in range(len(rows))])
        for b, v, r in zip(bars, vals, rows):
            text = bar_label(key, v, r.get(f"{key}_vs_e2e"), scale)
            ax.annotate(text, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.margins(y=0.25)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


# the main columns of the classifier bench table, drawn by bench.png
PANELS = [("accuracy", "test accuracy (%)", 100.0), ("peak_memory_bytes", "peak memory (MB)", 2.0**-20),
          ("ms_per_step", "ms / step", 1.0), ("trainable_params", "trainable params (M)", 1e-6),
          ("train_flops_per_image", "train GFLOP / image", 1e-9)]


def plot(rows: list[dict], path: Path, title: str = "") -> Path | None:
    """``bench.png``: the table's main columns as bars, with each row's ratio to the E2E row of its model."""
    rows = add_ratios(rows)
    labels = [f"{r['model']}\n{r['method']}" + (f"\n{r['settings']}" if r.get("settings") else "") for r in rows]
    return plot_bars(rows, labels, PANELS, path, title)


def write_outputs(rows: list[dict], out_dir: str | Path, title: str, command: str,
                  json_path: str | Path | None = None) -> str:
    """Write ``bench.md``, ``bench.json`` (or ``json_path``) and ``bench.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    md = render_markdown(rows, title, env, command)
    atomic_write_text(out / "bench.md", md)
    payload = {"title": title, "command": command, "environment": env, "rows": rows}
    write_json(json_path or out / "bench.json", payload, default=str)
    if rows:
        plot(rows, out / "bench.png", title)
    return md
