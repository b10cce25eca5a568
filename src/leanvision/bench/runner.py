"""Run bench rows in one process on the same data: real training, or resource-only random batches."""

from __future__ import annotations

import tempfile
from dataclasses import replace

import torch

from ..config import TrainConfig
from ..engine.distributed import DistInfo
from ..engine.run import build_method, build_optimizer, recipe_defaults, seed_everything, train
from ..engine.schedule import WarmupCosine
from ..engine.trainer import Trainer
from ..models import create_model
from .rows import BenchRow


def row_config(row: BenchRow, base: TrainConfig) -> TrainConfig:
    return replace(base, model=row.model, method=row.method, method_options=dict(row.options), **row.train)


def measure_resources(row: BenchRow, base: TrainConfig, steps: int, device: torch.device,
                      num_classes: int = 10, image_size: int | None = None) -> dict:
    """Train ``steps`` steps on one fixed random batch and return the meter's figures.

    The step is the trainer's own (:meth:`Trainer.train_step`), so bench and train measure the
    same work: the method's passes, the optimizer step and any EMA update.
    """
    cfg = row_config(row, base)
    seed_everything(cfg.seed)
    model = create_model(cfg.model, num_classes=num_classes)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    method = build_method(cfg, model).to(device)
    hp = recipe_defaults(cfg, model)
    opt = build_optimizer(method, hp["optimizer"], hp["lr"], hp["weight_decay"], cfg.momentum)
    size = image_size or getattr(model, "image_size", 32)
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.batch_size, 3, size, size, generator=g).to(device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (cfg.batch_size,), generator=g).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(method, opt, WarmupCosine(hp["lr"], 1, 0), [], evaluate=lambda m: {}, run_dir=tmp,
                          epochs=1, config={}, device=device, amp=cfg.amp, channels_last=cfg.channels_last,
                          dist=DistInfo(), progress=False, meter_warmup=1, meter_track_steps=1)
        method.train()
        for _ in range(trainer.meter.warmup + trainer.meter.track_steps + steps):
            trainer.meter.measure(lambda: trainer.train_step(x, y), cfg.batch_size, opt)
    stats = trainer.meter.stats().__dict__
    return {"accuracy": None, **stats, "describe": method.describe()}


def train_row(row: BenchRow, base: TrainConfig, out_dir: str) -> dict:
    """Really train the row with ``leanvision train`` machinery; returns last-epoch accuracy and resources."""
    cfg = row_config(row, base)
    cfg = replace(cfg, project=out_dir, name=row.label.replace(":", "_").replace("/", "_").replace(",", "_"),
                  overwrite=True)
    res = train(cfg)
    return {"accuracy": res["final"].get("val_acc"), "best_epoch_accuracy": res.get("best_epoch_acc"),
            **res["resources"]}


def run_rows(rows: list[BenchRow], base: TrainConfig, steps: int | None, out_dir: str,
             device: torch.device | None = None, on_row=None) -> list[dict]:
    """Run every row; ``steps`` set -> resource-only rows, else real training for ``base.epochs``."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    for row in rows:
        if steps:
            r = measure_resources(row, base, steps, device)
        else:
            r = train_row(row, base, out_dir)
        r = {"model": row.model, "method": row.method, "settings": row.settings, **r}
        results.append(r)
        if on_row is not None:
            on_row(r)
    return results
