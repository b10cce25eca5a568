"""``leanvision val``: top-1, top-5 and per-class accuracy of a classifier checkpoint, and its confusion matrix.

Everything about the model comes from the checkpoint (:mod:`.model`); the dataset is the one the run was
trained on unless ``--data`` names another with the same classes. Images go through the same loader and
normalisation as the trainer's evaluation, so top-1 on the training run's test set equals its ``val_acc``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import torch

from ..config import ConfigError
from ..data import build_dataset, build_loader
from ..engine.checkpoint import atomic_write_bytes, atomic_write_text
from ..engine.distributed import resolve_device
from ..engine.progress import progress_bar
from ..engine.run_folder import write_json
from .model import classes_and_spec, classifier_from_checkpoint, read_classifier_checkpoint


@torch.no_grad()
def collect_logits(net: torch.nn.Module, loader, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``net`` (normalised images -> logits) over ``loader``; returns (N, C) float logits and (N,) labels, CPU."""
    logits, labels = [], []
    for images, targets in progress_bar(loader, show=progress, desc="val"):
        logits.append(net(images).float().cpu())
        labels.append(targets.cpu())
    return torch.cat(logits), torch.cat(labels)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int = 5) -> dict:
    """Top-1, top-k and per-class accuracy, and the confusion matrix.

    Args:
        logits: (N, C) scores; labels: (N,) int64 in [0, C).
        k: the second accuracy's k (capped at C).

    Returns:
        ``{"images", "top1", "topk", "k", "per_class": [accuracy or None per class], "support": [images per
        class], "confusion": (C, C) int64 tensor, rows = true class, columns = predicted class}``.
    """
    k = min(k, num_classes)
    pred = logits.argmax(1)
    confusion = torch.bincount(labels * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)
    topk = (logits.topk(k, 1).indices == labels[:, None]).any(1)
    support = confusion.sum(1)
    n = max(len(labels), 1)
    return {
        "images": len(labels),
        "top1": float((pred == labels).sum()) / n,
        "topk": float(topk.sum()) / n,
        "k": k,
        "per_class": [float(confusion[c, c] / support[c]) if support[c] else None for c in range(num_classes)],
        "support": support.tolist(),
        "confusion": confusion,
    }


def confusion_csv(confusion: torch.Tensor, classes: Sequence[str]) -> str:
    """CSV text: a header ``true\\predicted,<class>...``, then one row of counts per true class."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["true\\predicted", *classes])
    for name, row in zip(classes, confusion.tolist()):
        w.writerow([name, *row])
    return buf.getvalue()


def confusion_png(confusion: torch.Tensor, classes: Sequence[str], title: str) -> bytes:
    """A heat map of the row-normalised confusion matrix (each true class sums to 1), counts written in the cells
    up to 30 classes; PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = len(classes)
    rows = confusion.double()
    norm = (rows / rows.sum(1, keepdim=True).clamp(min=1)).numpy()
    side = min(max(4.0, 0.45 * c + 2.5), 30.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if c <= 60:
        ax.set_xticks(range(c), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(c), classes, fontsize=8)
    if c <= 30:
        for i in range(c):
            for j in range(c):
                if confusion[i, j]:
                    ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def format_metrics(res: dict, classes: Sequence[str]) -> str:
    """The report ``leanvision val`` prints: top-1, top-k, then one line per class."""
    width = max(12, *(len(c) for c in classes))
    lines = [f"{res['images']} images: top-1 {100 * res['top1']:.2f} %, top-{res['k']} {100 * res['topk']:.2f} %",
             f"{'class':<{width}} {'images':>7} {'accuracy':>9}"]
    for name, n, acc in zip(classes, res["support"], res["per_class"]):
        lines.append(f"{name:<{width}} {n:>7} {'-' if acc is None else f'{100 * acc:8.2f}%':>9}")
    return "\n".join(lines)


def validate_classifier(weights: str | Path, out_dir: str | Path, data: str | None = None,
                        data_dir: str | None = None, split: str = "test", batch_size: int = 256,
                        device: str = "auto", workers: int | None = None, progress: bool = True) -> dict:
    """Evaluate the classifier in ``weights`` and write ``confusion_matrix.csv``, ``confusion_matrix.png`` and
    ``metrics.json`` into ``out_dir``.

    Args:
        weights: a ``leanvision train`` checkpoint.
        data, data_dir: the dataset (default: the one the run trained on); its classes must be the checkpoint's.
        split: ``test`` (the test split, or ``val/`` of a folder tree without ``test/``) or ``train``.

    Returns:
        :func:`classification_metrics` plus ``"classes"``, ``"weights"``, ``"data"`` and ``"split"``.
    """
    if split not in ("test", "train"):
        raise ConfigError(f"--split must be test or train, got {split!r}")
    dev = resolve_device(device)
    ckpt, cfg = read_classifier_checkpoint(weights)  # before the data: a wrong file is refused at once
    data, data_dir = (data, data_dir) if data else (cfg.data, data_dir or cfg.data_dir)
    # the checkpoint's recipe normalises the images; a checkpoint of an earlier version takes the dataset's own
    spec = classes_and_spec(ckpt, cfg, weights)[1] if ckpt["config"].get("classifier") is not None else None
    ds = build_dataset(data, train=split == "train", root=data_dir, spec=spec)
    model = classifier_from_checkpoint(ckpt, cfg, weights, dataset=ds).to(dev)
    if list(ds.classes) != model.classes:
        raise ConfigError(f"{data}: its classes ({', '.join(ds.classes[:12])}{', ...' if len(ds.classes) > 12 else ''})"
                          f" are not those {weights} was trained on ({', '.join(model.classes[:12])}"
                          f"{', ...' if model.num_classes > 12 else ''}), in that order")
    loader = build_loader(ds, batch_size=batch_size, train=False, device=dev, drop_last=False, workers=workers)
    logits, labels = collect_logits(model.net, loader, progress)
    res = classification_metrics(logits, labels, model.num_classes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "confusion_matrix.csv", confusion_csv(res["confusion"], model.classes))
    title = f"{Path(weights).name} on {Path(str(data)).name} ({split}): top-1 {100 * res['top1']:.2f} %"
    atomic_write_bytes(out_dir / "confusion_matrix.png", confusion_png(res["confusion"], model.classes, title))
    res.update(classes=model.classes, weights=str(weights), data=str(data), split=split)
    write_json(out_dir / "metrics.json", {**res, "confusion": res["confusion"].tolist()})
    return res
