"""`leanvision train`: build data, model, method, optimizer and schedule from a config, then fit."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, TrainConfig, field_names, to_dict
from ..data import DataSpec, build_dataset, build_loader
from ..engine.checkpoint import load_checkpoint
from ..engine.distributed import DistInfo, broadcast_module, cleanup, init_distributed
from ..engine.pipeline import data_ways, fit_pipeline
from ..engine.resume import NOT_SAVED, check_resume, resume_path, saved_values
from ..engine.run_folder import clear_run, write_config
from ..engine.schedule import build_schedule
from ..engine.seed import seed_everything
from ..engine.trainer import Trainer, evaluate_classifier
from ..methods import Method, create_method
from ..models import create_model


def is_transformer(model: nn.Module) -> bool:
    """Transformer blocks (ours and timm's) have an ``attn`` sub-module; residual conv blocks do not."""
    blocks = getattr(model, "blocks", None)
    return bool(blocks) and hasattr(blocks[0], "attn")


def recipe_defaults(cfg: TrainConfig, model: nn.Module) -> dict:
    """Fill the ``None`` optimisation fields from the published recipes (spec local_learning §4)."""
    vit = is_transformer(model)
    opt = cfg.optimizer or ("adamw" if vit else "sgd")
    large = getattr(model, "image_size", 32) >= 160
    if opt == "sgd":  # 0.8 at batch 1024 on CIFAR (0.1 per 128); ImageNet 0.1 per 256
        lr = cfg.lr if cfg.lr is not None else 0.1 * cfg.batch_size / (256 if large else 128)
        wd = cfg.weight_decay if cfg.weight_decay is not None else 1e-4
    elif opt == "adamw":
        lr = cfg.lr if cfg.lr is not None else 1e-3
        wd = cfg.weight_decay if cfg.weight_decay is not None else 0.05
    else:
        raise ConfigError(f"optimizer must be sgd or adamw, got {opt!r}")
    warmup = cfg.warmup_epochs if cfg.warmup_epochs is not None else (10 if cfg.epochs >= 50 else cfg.epochs // 5)
    return {"optimizer": opt, "lr": lr, "weight_decay": wd, "warmup_epochs": warmup,
            "lr_schedule": cfg.lr_schedule or "cosine"}


def method_defaults(cfg: TrainConfig, method: Method) -> TrainConfig:
    """``cfg`` with the method's :meth:`~leanvision.methods.Method.recipe_defaults` where ``cfg`` has None."""
    wanted = method.recipe_defaults()
    unknown = sorted(set(wanted) - field_names())
    if unknown:  # a method's bug, not the user's
        raise TypeError(f"{type(method).__name__}.recipe_defaults() names unknown config keys {unknown}")
    return replace(cfg, **{k: v for k, v in wanted.items() if getattr(cfg, k) is None})


def upgrade_saved_config(saved: dict) -> dict:
    """A checkpoint's config as this version saves it: runs saved before the effective values were recorded
    kept them under ``resolved``, and trained with the per-epoch release schedule. (A field added later whose
    default is the old behaviour, like ``micro_batches``, needs nothing here: resume reads a missing field as its
    default, :func:`leanvision.engine.resume.saved_values`.)"""
    saved = dict(saved)
    for k, v in (saved.get("resolved") or {}).items():
        if saved.get(k) is None:
            saved[k] = v
    saved.setdefault("lr_schedule", "release")
    return saved


def build_optimizer(method: Method, opt: str, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    groups = method.param_groups(weight_decay)
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The classifier ``cfg.model``; a name that is not one is a ConfigError listing the valid ones."""
    try:
        return create_model(cfg.model, num_classes=num_classes)
    except (ValueError, TypeError) as e:  # an unknown name, or a timm model that is not a block list
        raise ConfigError(f"--model {cfg.model}: {e}") from None


def build_method(cfg: TrainConfig, model: nn.Module, mean=None, std=None, dataset: str | None = None) -> Method:
    """The method of ``cfg`` (options that do not fit it or the model: ConfigError); with another method,
    Replacement Learning is applied to the model first.

    ``mean``/``std`` (the data's normalisation) and ``dataset`` (the training set's name, for the
    published loss weights) go to InfoPro, unless the user set them as method options.
    """
    try:
        return _build_method(cfg, model, mean, std, dataset)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # the builders' checks of the options a user gave
        raise ConfigError(f"--method {cfg.method}: {e}") from None


def _build_method(cfg: TrainConfig, model: nn.Module, mean=None, std=None, dataset: str | None = None) -> Method:
    options = dict(cfg.method_options)
    if cfg.method == "replacement":
        options = {"interval": cfg.replace_interval, "blocks": cfg.replace_blocks, **cfg.replace_options, **options}
    elif cfg.replace_interval is not None or cfg.replace_blocks:
        from ..methods.replacement import apply_replacement

        ids = cfg.replace_blocks
        if isinstance(ids, str):  # "3,5,7" positions or "1.1,2.2" names
            ids = [int(t) if t.strip().isdigit() else t.strip() for t in ids.split(",") if t.strip()]
        report = apply_replacement(model, interval=cfg.replace_interval or 2, ids=ids, **cfg.replace_options)
        print(report)
    if cfg.method in ("infopro", "infopro+mlaan"):
        if mean is not None:
            options.setdefault("mean", tuple(mean))
            options.setdefault("std", tuple(std))
        options.setdefault("dataset", dataset)
    return create_method(cfg.method, model, **options)


def classifier_spec(classes: list[str], spec: DataSpec) -> dict:
    """What ``leanvision val``/``predict``/``export`` and ``leanvision.load`` read to use a trained classifier
    without its training flags; saved in every checkpoint's config under ``"classifier"`` (plain data).

    Args:
        classes: class names, index = label.
        spec: the dataset's recipe: its normalisation and evaluation resize/crop are the model's input.
    """
    return {"num_classes": len(classes), "classes": [str(c) for c in classes],
            "data_spec": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()}}


def run_dir_for(cfg: TrainConfig) -> Path:
    """``project/name`` (default name MODEL-METHOD-DATA); a resumed run's folder is its checkpoint's."""
    if cfg.resume:
        return resume_path(cfg.resume).resolve().parent
    name = cfg.name or f"{cfg.model.replace('/', '_')}-{cfg.method}-{Path(cfg.data).stem}"
    return Path(cfg.project) / name


def train(cfg: TrainConfig) -> dict:
    """Train according to ``cfg`` (single process, or one rank under ``torchrun``); returns the result.

    With ``cfg.resume`` (a run folder or its last.pt) the run continues in that folder, and every value of
    ``cfg`` must agree with the saved run except those :mod:`.resume` allows to change.
    """
    dist, device = init_distributed(cfg.device)
    try:
        return _train(cfg, dist, device)
    finally:
        cleanup()


def _train(cfg: TrainConfig, dist: DistInfo, device: torch.device) -> dict:
    run_dir, ckpt = run_dir_for(cfg), None
    if cfg.micro_batches > 1 and not cfg.pipeline:
        raise ConfigError(f"--micro-batches {cfg.micro_batches} needs --pipeline P: micro-batches are how a "
                          "pipelined stage keeps less activation memory; one process trains on whole batches")
    if cfg.resume:
        path = resume_path(cfg.resume)
        ckpt = load_checkpoint(path, map_location=device)
        ckpt["config"] = upgrade_saved_config(ckpt.get("config") or {})
    elif dist.is_main and run_dir.exists() and any(run_dir.iterdir()) and not cfg.overwrite:
        raise ConfigError(f"{run_dir} already holds a run; pass --overwrite, --resume {run_dir} or another --name")
    seed_everything(cfg.seed)
    train_set = build_dataset(cfg.data, train=True, root=cfg.data_dir)
    test_set = build_dataset(cfg.data, train=False, root=cfg.data_dir)
    if cfg.subset:
        idx = np.random.default_rng(cfg.seed).permutation(len(train_set))[: cfg.subset]
        train_set = train_set.subset(np.sort(idx))
    ways, way = data_ways(cfg.pipeline, dist.rank, dist.world_size)  # data-parallel shards (pipeline: replicas)
    if cfg.batch_size % ways:
        raise ConfigError(f"batch size {cfg.batch_size} is not divisible by {ways} data-parallel processes")
    if len(train_set) < cfg.batch_size:  # the last incomplete batch is dropped: no step at all
        what = f"--subset {cfg.subset} keeps" if cfg.subset else f"{cfg.data} has"
        raise ConfigError(f"{what} {len(train_set)} training images, fewer than one batch (--batch-size "
                          f"{cfg.batch_size}); give a larger --subset or a smaller --batch-size")
    per_rank = cfg.batch_size // ways
    model = build_model(cfg, train_set.num_classes)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    spec = train_set.spec
    method = build_method(cfg, model, spec.mean, spec.std, train_set.name).to(device)
    broadcast_module(method)
    if cfg.compile:
        for block in method.model.blocks:
            block.compile()
    cfg = method_defaults(cfg, method)
    hp = recipe_defaults(cfg, model)
    effective = {k: v for k, v in to_dict(replace(cfg, **hp, name=run_dir.name)).items() if k not in NOT_SAVED}
    if ckpt is not None:  # a resume from Python is held to the same word as one from the command line
        path = resume_path(cfg.resume)
        saved = saved_values(TrainConfig, ckpt, path)
        check_resume(saved, {k: v for k, v in effective.items() if k not in ("project", "name")},
                     int(ckpt["epoch"]), path, where=lambda k: f"config value {k}")
        effective.update(project=saved["project"], name=saved["name"])
    optimizer = build_optimizer(method, hp["optimizer"], hp["lr"], hp["weight_decay"], cfg.momentum)
    schedule = build_schedule(hp["lr_schedule"], hp["lr"], cfg.epochs, hp["warmup_epochs"])
    train_loader = build_loader(train_set, batch_size=per_rank, train=True, device=device, drop_last=True,
                                seed=cfg.seed, rank=way, world_size=ways, workers=cfg.workers)
    test_loader = build_loader(test_set, batch_size=max(per_rank, 256), train=False, device=device,
                               drop_last=False, seed=cfg.seed, workers=cfg.workers)
    config = {**effective, "world_size": dist.world_size, "method_description": method.describe(),
              "classifier": classifier_spec(train_set.classes, spec)}
    if cfg.pipeline:  # local learning pipelined over the processes: engine/pipeline
        return fit_pipeline(cfg, method, lambda m: build_optimizer(m, hp["optimizer"], hp["lr"], hp["weight_decay"],
                            cfg.momentum), hp["weight_decay"], schedule, train_loader, test_loader, run_dir, config,
                            effective, ckpt, device, dist)
    trainer = Trainer(
        method, optimizer, schedule, train_loader,
        evaluate=lambda m: evaluate_classifier(m, test_loader, device, cfg.amp, cfg.channels_last, cfg.progress),
        run_dir=run_dir, epochs=cfg.epochs, config=config, device=device, amp=cfg.amp,
        channels_last=cfg.channels_last, dist=dist, patience=cfg.patience, steps_per_epoch=cfg.steps_per_epoch,
        progress=cfg.progress,
    )
    if ckpt is not None:
        trainer.load_state(ckpt, cfg.resume)
    if dist.is_main:
        if ckpt is None and cfg.overwrite:
            clear_run(run_dir)  # the old run's rows and checkpoints must not mix with this one's
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, effective)
        print(f"{method.describe()} | {cfg.model} on {cfg.data} | {device} x{dist.world_size} | run: {run_dir}")
    return trainer.fit()
