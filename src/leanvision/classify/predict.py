"""``leanvision predict``: the top-k classes of images (a file, a folder or a glob) with names and scores.

The model, class names, input size and normalisation come from the checkpoint (:mod:`.model`). Writes
``predictions.csv`` (one row per image: ``image, class_1, score_1, ..., class_k, score_k``) and
``predictions.json`` (one record per image: ``{"image", "top": [{"class", "name", "score"}, ...]}``), each
file whole or not at all. Scores are softmax probabilities.
"""

from __future__ import annotations

import csv
import glob
import io
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from ..config import ConfigError
from ..data import DatasetError
from ..data.folder import IMG_EXTENSIONS
from ..engine.checkpoint import atomic_write_text
from ..engine.distributed import resolve_device
from ..engine.progress import progress_bar
from ..engine.run_folder import json_text
from .model import Classifier, load_classifier


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMG_EXTENSIONS and not path.name.startswith(".")


def list_images(source: str | Path) -> list[Path]:
    """The images ``source`` names: one image file, the images of a folder (sorted, not recursive), or those a
    glob pattern matches (sorted; ``**`` recurses). A source that yields no image is a ConfigError naming it."""
    text, path = str(source), Path(source)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if is_image_file(f))
        if not files:
            raise ConfigError(f"--source {text}: no images ({', '.join(IMG_EXTENSIONS)}) in this folder; use a glob "
                              f"such as '{path / '**' / '*.jpg'}' for sub-folders")
        return files
    if path.is_file():
        if not is_image_file(path):
            raise ConfigError(f"--source {text}: not an image file ({', '.join(IMG_EXTENSIONS)})")
        return [path]
    if any(c in text for c in "*?["):  # a glob pattern
        files = sorted(Path(f) for f in glob.glob(text, recursive=True) if is_image_file(Path(f)))
        if not files:
            raise ConfigError(f"--source {text}: the pattern matches no image ({', '.join(IMG_EXTENSIONS)})")
        return files
    raise ConfigError(f"--source {text}: no such image, folder or glob pattern")


def read_image(path: Path, model: Classifier) -> torch.Tensor:
    """``path`` decoded and transformed for ``model``; DatasetError naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as im:
            return model.transform(im)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DatasetError(f"image {path} cannot be decoded ({type(e).__name__}: {e}); remove or replace it") from e


@torch.no_grad()
def classify_images(model: Classifier, files: list[Path], top_k: int = 5, batch_size: int = 32,
                    progress: bool = True) -> list[dict]:
    """Top-``top_k`` classes of every image in ``files`` (k capped at the number of classes).

    Returns:
        one ``{"image": str, "top": [{"class": int, "name": str, "score": float}, ...]}`` per image, in order.
    """
    device = next(model.parameters()).device
    k = min(top_k, model.num_classes)
    records = []
    with progress_bar(total=len(files), show=progress, desc="predict", unit="img") as bar:
        for start in range(0, len(files), batch_size):
            batch = files[start:start + batch_size]
            x = torch.stack([read_image(f, model) for f in batch]).to(device)
            scores, idx = model(x).float().softmax(1).topk(k, 1)
            for f, s, i in zip(batch, scores.tolist(), idx.tolist()):
                records.append({"image": str(f), "top": [{"class": c, "name": model.classes[c], "score": p}
                                                         for c, p in zip(i, s)]})
            bar.update(len(batch))
    return records


def predictions_csv(records: list[dict]) -> str:
    k = max((len(r["top"]) for r in records), default=0)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image", *(f"{what}_{j}" for j in range(1, k + 1) for what in ("class", "score"))])
    for r in records:
        w.writerow([r["image"], *(v for t in r["top"] for v in (t["name"], f"{t['score']:.6f}"))])
    return buf.getvalue()


def predict_classes(weights: str | Path, source: str | Path, out_dir: str | Path, top_k: int = 5,
                    batch_size: int = 32, device: str = "auto", progress: bool = True) -> list[dict]:
    """Classify the images of ``source`` with the classifier in ``weights``; writes ``predictions.csv`` and
    ``predictions.json`` into ``out_dir`` and returns the records (see :func:`classify_images`)."""
    files = list_images(source)
    model = load_classifier(weights, resolve_device(device))
    records = classify_images(model, files, top_k, batch_size, progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "predictions.csv", predictions_csv(records))
    atomic_write_text(out_dir / "predictions.json", json_text(records) + "\n")
    return records
