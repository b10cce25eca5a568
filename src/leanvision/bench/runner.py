"""Run bench rows in one process on the same data: real training, or resource-only random batches."""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..classify.train import build_method, build_model, build_optimizer, recipe_defaults, train
from ..config import TrainConfig
from ..engine.distributed import DistInfo
from ..engine.schedule import WarmupCosine
from ..engine.seed import seed_everything
from ..engine.trainer import Trainer
from .rows import BenchRow


def row_config(row: BenchRow, base: TrainConfig) -> TrainConfig:
    return replace(base, model=row.model, method=row.method, method_options=dict(row.options), **row.train)


def _build_row(row: BenchRow, base: TrainConfig, device: torch.device, num_classes: int, image_size: int | None,
               tmp: str, **meter_phases) -> tuple[Trainer, object, int]:
    """Model, method, optimizer and trainer of one resource row, plus its fixed random batch."""
    cfg = row_config(row, base)
    seed_everything(cfg.seed)
    model = build_model(cfg, num_classes)
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
    trainer = Trainer(method, opt, WarmupCosine(hp["lr"], 1, 0), [], evaluate=lambda m: {}, run_dir=tmp,
                      epochs=1, config={}, device=device, amp=cfg.amp, channels_last=cfg.channels_last,
                      dist=DistInfo(), progress=False, **meter_phases)
    method.train()

    def step():
        trainer.meter.measure(lambda: trainer.train_step(x, y), cfg.batch_size, opt)

    return trainer, step, cfg.batch_size


def measure_resources(row: BenchRow, base: TrainConfig, steps: int, device: torch.device,
                      num_classes: int = 10, image_size: int | None = None) -> dict:
    """Train ``steps`` steps on one fixed random batch and return the meter's figures.

    The step is the trainer's own (:meth:`Trainer.train_step`), so bench and train measure the
    same work: the method's passes, the optimizer step and any EMA update. ``train_flops_per_image``
    counts that step's forward and backward FLOPs (``torch.utils.flop_counter``: convolutions and
    matrix products, 2 per multiply-add), a machine-independent measure of the work.
    """
    with tempfile.TemporaryDirectory() as tmp:
        trainer, step, batch = _build_row(row, base, device, num_classes, image_size, tmp,
                                          meter_warmup=1, meter_track_steps=1)
        with FlopCounterMode(display=False) as flops:  # the warm-up step, which the meter leaves out
            step()
        for _ in range(trainer.meter.warmup - 1 + trainer.meter.track_steps + steps):
            step()
        stats = trainer.meter.stats().__dict__
        return {"accuracy": None, **stats, "train_flops_per_image": flops.get_total_flops() / batch,
                "describe": trainer.method.describe()}


def interleaved_times(rows: list[BenchRow], base: TrainConfig, steps: int, rounds: int, device: torch.device,
                      num_classes: int = 10) -> list[dict]:
    """Step time of every row, timed in ``rounds`` rounds of ``steps`` steps per row, the rows taking
    turns (the order rotates each round) so that load changes on a shared machine hit all rows alike.

    Returns per row the median over rounds of ms/step, the spread (min, max) and the per-round times.
    All rows are alive at once: memory figures come from :func:`measure_resources`, not from here.
    """
    with tempfile.TemporaryDirectory() as tmp:
        built = [_build_row(row, base, device, num_classes, None, tmp, meter_warmup=0, meter_track_steps=0)
                 for row in rows]
        for _, step, _ in built:  # warm-up: lazy optimizer state, allocator, autotuning
            step()
        per_round: list[list[float]] = [[] for _ in rows]
        for r in range(rounds):
            order = [(r + i) % len(rows) for i in range(len(rows))]
            for i in order:
                trainer, step, _ = built[i]
                before = trainer.meter.seconds
                for _ in range(steps):
                    step()
                per_round[i].append(1000 * (trainer.meter.seconds - before) / steps)
    out = []
    for (_, _, batch), times in zip(built, per_round):
        ms = statistics.median(times)
        out.append({"ms_per_step": ms, "images_per_s": 1000 * batch / ms, "ms_per_step_rounds": times})
    return out


def train_row(row: BenchRow, base: TrainConfig, out_dir: str) -> dict:
    """Really train the row with ``leanvision train`` machinery; returns last-epoch accuracy and resources."""
    cfg = row_config(row, base)
    cfg = replace(cfg, project=out_dir, name=row.label.replace(":", "_").replace("/", "_").replace(",", "_"),
                  overwrite=True)
    res = train(cfg)
    return {"accuracy": res["final"].get("val_acc"), "best_epoch_accuracy": res.get("best_epoch_acc"),
            **res["resources"]}


def run_rows(rows: list[BenchRow], base: TrainConfig, steps: int | None, out_dir: str,
             device: torch.device | None = None, on_row=None, rounds: int = 1) -> list[dict]:
    """Run every row; ``steps`` set -> resource-only rows, else real training for ``base.epochs``.

    With ``rounds`` > 1 (resource rows), memory is measured row by row as usual and step time by
    :func:`interleaved_times`.
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    times = interleaved_times(rows, base, steps, rounds, device) if steps and rounds > 1 else None
    results = []
    for i, row in enumerate(rows):
        if steps:
            r = measure_resources(row, base, 1 if times else steps, device)
            if times:
                r.update(times[i], time_rounds=rounds)
        else:
            r = train_row(row, base, out_dir)
        r = {"model": row.model, "method": row.method, "settings": row.settings, **r}
        results.append(r)
        if on_row is not None:
            on_row(r)
    return results
