"""The detector part of ``leanvision demo`` (``make demo``): a small YOLOv8n trained on synthetic scenes, on CPU.

Writes 48 synthetic construction-site images (128 px), trains yolov8n for 10 epochs at imgsz 128
without mosaic (too few steps for mosaic to pay off), prints the validation table and writes one
annotated prediction image. Budget: about a minute on two CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .config import DetectConfig
from .predict import predict
from .synth import generate_synthetic_dataset
from .train import train_detector

# no warm-up and a higher LR than v8's 0.01: 50 steps are far fewer than the 100-iteration warm-up alone
DEMO = dict(model="yolov8n", epochs=10, batch=8, nbs=8, imgsz=128, lr0=0.04, warmup_epochs=0, close_mosaic=0,
            mosaic=0.0, workers=0, patience=100, device="cpu", progress=False, overwrite=True, name="train",
            plots=True)


def run_detect_demo(out_dir: str | Path = "runs/demo/detect", images: int = 48, epochs: int | None = None) -> dict:
    """Synthesize, train, validate and predict; returns the training result (with ``prediction_image``)."""
    out = Path(out_dir)
    t0 = time.perf_counter()
    data = generate_synthetic_dataset(out / "data", images=images, imgsz=128, seed=0, val_fraction=0.25)
    print(f"leanvision demo (detect): {images} synthetic construction-site images in {out / 'data'}; "
          f"training yolov8n on CPU ({torch.get_num_threads()} threads)")
    cfg = DetectConfig(data=str(data), project=str(out), **{**DEMO, **({"epochs": epochs} if epochs else {})})
    res = train_detector(cfg)
    run = Path(res["run_dir"])
    first_val = sorted((out / "data" / "images" / "val").glob("*.jpg"))[0]
    recs = predict(run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt", first_val, out / "predict",
                   conf=0.25, device="cpu")
    image = out / "predict" / first_val.name
    print(f"{len(recs)} detections drawn on {image} (boxes also in {out / 'predict' / 'predictions.json'}); "
          f"curves in {run / 'results.png'}; {time.perf_counter() - t0:.0f} s in all")
    res["prediction_image"] = str(image)
    return res
