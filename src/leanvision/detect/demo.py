"""The detector part of ``leanvision demo`` (``make demo``): the whole detection pipeline on CPU in about a minute.

A detector needs hours of training to generalise, which a demo on two CPU cores cannot give. So the demo
shows the pipeline, not generalisation, and says so: it writes 8 synthetic construction-site images
(128 px), trains yolov8n on them (each image 10 times per epoch, no mosaic, no warm-up, lr0 0.04, the
recipe of the overfitting test), validates on the same images, and draws the predictions on one of them.
For real training, run ``leanvision detect synth`` with hundreds of images and ``leanvision detect train``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import yaml

from .config import DetectConfig
from .data.synth import generate_synthetic_dataset
from .predict import predict
from .train import train_detector

DEMO = dict(model="yolov8n", epochs=16, batch=8, nbs=8, imgsz=128, lr0=0.04, warmup_epochs=0, close_mosaic=0,
            augment=False, workers=0, patience=100, device="cpu", progress=False, overwrite=True, name="train",
            plots=True)
MIN_SIDE = 12  # px: a box under ~1.5 strides covers no anchor centre, so the assigner can never learn it


def _demo_data(root: Path, images: int, repeat: int) -> Path:
    data = generate_synthetic_dataset(root, images=images, imgsz=128, seed=0, val_fraction=0.0)
    for f in (root / "labels" / "train").glob("*.txt"):
        keep = [ln for ln in f.read_text().splitlines() if min(float(v) for v in ln.split()[3:5]) * 128 >= MIN_SIDE]
        f.write_text("".join(k + "\n" for k in keep))
    cfg = yaml.safe_load(data.read_text())
    cfg["train"] = ["images/train"] * repeat  # each image several times per epoch: fewer per-epoch overheads
    cfg["val"] = "images/train"  # the demo validates on its training images (stated in the output)
    data.write_text(yaml.safe_dump(cfg))
    return data


def run_detect_demo(out_dir: str | Path = "runs/demo/detect", images: int = 8, repeat: int = 10,
                    epochs: int | None = None, progress: bool = False) -> dict:
    """Synthesize, train, validate and predict; returns the training result (with ``prediction_image``)."""
    out = Path(out_dir)
    t0 = time.perf_counter()
    data = _demo_data(out / "data", images, repeat)
    print(f"leanvision demo (detect): {images} synthetic construction-site images in {out / 'data'}; training "
          f"yolov8n on them on CPU ({torch.get_num_threads()} threads). This shows the pipeline, not generalisation: "
          "validation and prediction use the training images.", flush=True)
    cfg = DetectConfig(data=str(data), project=str(out),
                       **{**DEMO, "progress": progress, **({"epochs": epochs} if epochs else {})})
    res = train_detector(cfg)
    run = Path(res["run_dir"])
    first = sorted((out / "data" / "images" / "train").glob("*.jpg"))[0]
    recs = predict(run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt", first, out / "predict",
                   conf=0.25, device="cpu")
    image = out / "predict" / first.name
    print(f"{len(recs)} detections drawn on {image} (boxes also in {out / 'predict' / 'predictions.json'}); "
          f"curves in {run / 'results.png'}; {time.perf_counter() - t0:.0f} s in all", flush=True)
    res["prediction_image"] = str(image)
    return res
