"""Run bench rows: real training, or resource-only random batches, each resource row in its own process.

A resource row runs in a fresh process by default (:mod:`.child`), so its peak resident memory is its own:
a process keeps its high-water mark, and freed memory the C allocator has not returned, from one row to the
next. ``same_process=True`` runs the rows here, one after the other (the high-water mark is reset between
rows where the kernel allows it).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..classify.train import build_method, build_model, build_optimizer, recipe_defaults, train
from ..config import ConfigError, TrainConfig, to_dict
from ..engine.distributed import DistInfo
from ..engine.schedule import WarmupCosine
from ..engine.seed import seed_everything
from ..engine.trainer import Trainer
from ..ops.memory import reset_peak_rss
from .rows import BenchRow


def row_config(row: BenchRow, base: TrainConfig) -> TrainConfig:
    return replace(base, model=row.model, method=row.method, method_options=dict(row.options), **row.train)


def _build_row(row: BenchRow, base: TrainConfig, device: torch.device, num_classes: int, image_size: int | None,
               tmp: str, **meter_phases) -> tuple[Trainer, object, tuple[torch.Tensor, torch.Tensor]]:
    """Trainer (model, method, optimizer) of one resource row, its metered step, and its fixed random batch."""
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

    return trainer, step, (x, y)


def measure_resources(row: BenchRow, base: TrainConfig, steps: int, device: torch.device,
                      num_classes: int = 10, image_size: int | None = None, profile: bool = False) -> dict:
    """Train ``steps`` steps on one fixed random batch and return the meter's figures and the outside view.

    The step is the trainer's own (:meth:`Trainer.train_step`) under the trainer's own meter, so bench and
    train measure the same work: the method's passes, the optimizer step and any EMA update. The process's
    peak resident memory (``peak_rss_*``) is read right after those steps, before the instruments run:
    ``train_flops_per_image`` then counts one more step's forward and backward FLOPs
    (``torch.utils.flop_counter``: convolutions and matrix products, 2 per multiply-add), a
    machine-independent measure of the work, and with ``profile`` one more step is recorded by
    :func:`~.memory_profile.profile_step` (``memory_profile``).
    """
    reset_peak_rss()  # where the kernel allows it; else this process's earlier peaks show (see run_rows)
    with tempfile.TemporaryDirectory() as tmp:
        trainer, step, batch = _build_row(row, base, device, num_classes, image_size, tmp,
                                          meter_warmup=1, meter_track_steps=1)
        images = batch[0].shape[0]
        for _ in range(trainer.meter.warmup + trainer.meter.track_steps + steps):
            step()
        result = {"accuracy": None, **trainer.meter.stats().__dict__, "describe": trainer.method.describe()}
        with FlopCounterMode(display=False) as flops:  # instruments from here on: the peak is read
            trainer.train_step(*batch)
        result["train_flops_per_image"] = flops.get_total_flops() / images
        if profile:
            from .memory_profile import profile_step

            result["memory_profile"] = profile_step(trainer, *batch)
        return result


def measure_in_subprocess(row: BenchRow, base: TrainConfig, steps: int, device: torch.device,
                       profile: bool = False) -> dict:
    """:func:`measure_resources` in a fresh Python process (:mod:`.child`); errors in the row's settings come
    back as a :class:`ConfigError` with the child's one-line message."""
    src = str(Path(__file__).resolve().parents[2])  # the folder holding this leanvision package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "row.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"row": asdict(row), "base": to_dict(base), "steps": steps, "device": str(device),
                                    "threads": torch.get_num_threads(), "profile": profile}))
        proc = subprocess.run([sys.executable, "-m", "leanvision.bench.child", str(spec), str(out)], env=env)
        result = json.loads(out.read_text()) if out.is_file() else {}
    if "error" in result:
        raise ConfigError(result["error"])
    if proc.returncode != 0 or not result:
        raise RuntimeError(f"bench row {row.label}: its process exited with status {proc.returncode} "
                           "(its error is printed above)")
    return result


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
    for (_, _, (x, _)), times in zip(built, per_round):
        ms = statistics.median(times)
        out.append({"ms_per_step": ms, "images_per_s": 1000 * x.shape[0] / ms, "ms_per_step_rounds": times})
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
             device: torch.device | None = None, on_row=None, rounds: int = 1, same_process: bool = False,
             profile: bool = False) -> list[dict]:
    """Run every row; ``steps`` set -> resource-only rows, else real training for ``base.epochs``.

    Resource rows run each in its own process (:func:`measure_in_subprocess`) unless ``same_process``; with
    ``profile`` each also records one step's memory over time. With ``rounds`` > 1 (resource rows), memory
    is measured row by row as usual and step time by :func:`interleaved_times`.
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    times = interleaved_times(rows, base, steps, rounds, device) if steps and rounds > 1 else None
    measure = measure_resources if same_process else measure_in_subprocess
    results = []
    for i, row in enumerate(rows):
        if steps:
            r = measure(row, base, 1 if times else steps, device, profile=profile)
            if times:
                r.update(times[i], time_rounds=rounds)
        else:
            r = train_row(row, base, out_dir)
        r = {"model": row.model, "method": row.method, "settings": row.settings, **r}
        results.append(r)
        if on_row is not None:
            on_row(r)
    return results
