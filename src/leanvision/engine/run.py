"""`leanvision train`: build data, model, method, optimizer and schedule from a config, then fit."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, TrainConfig, save_yaml, to_dict
from ..data import build_dataset, build_loader
from ..methods import Method, create_method
from ..models import create_model
from .distributed import DistInfo, broadcast_module, cleanup, init_distributed
from .schedule import WarmupCosine
from .trainer import Trainer, evaluate_classifier


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    return {"optimizer": opt, "lr": lr, "weight_decay": wd, "warmup_epochs": warmup}


def build_optimizer(method: Method, opt: str, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    groups = method.param_groups(weight_decay)
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


def build_method(cfg: TrainConfig, model: nn.Module, mean=None, std=None, dataset: str | None = None) -> Method:
    """The method of ``cfg``; with another method, Replacement Learning is applied to the model first.

    ``mean``/``std`` (the data's normalisation) and ``dataset`` (the training set's name, for the
    published loss weights) go to InfoPro, unless the user set them as method options.
    """
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


def run_dir_for(cfg: TrainConfig) -> Path:
    name = cfg.name or f"{cfg.model.replace('/', '_')}-{cfg.method}-{Path(cfg.data).stem}"
    return Path(cfg.project) / name


def train(cfg: TrainConfig) -> dict:
    """Train according to ``cfg`` (single process, or one rank under ``torchrun``); returns the result."""
    dist, device = init_distributed(cfg.device)
    try:
        return _train(cfg, dist, device)
    finally:
        cleanup()


def _train(cfg: TrainConfig, dist: DistInfo, device: torch.device) -> dict:
    run_dir = run_dir_for(cfg)
    if dist.is_main and run_dir.exists() and any(run_dir.iterdir()) and not (cfg.overwrite or cfg.resume):
        raise ConfigError(f"{run_dir} already holds a run; pass --overwrite, --resume {run_dir / 'last.pt'} or --name")
    seed_everything(cfg.seed)
    train_set = build_dataset(cfg.data, train=True, root=cfg.data_dir)
    test_set = build_dataset(cfg.data, train=False, root=cfg.data_dir)
    if cfg.subset:
        idx = np.random.default_rng(cfg.seed).permutation(len(train_set))[: cfg.subset]
        train_set = train_set.subset(np.sort(idx))
    if cfg.batch_size % dist.world_size:
        raise ConfigError(f"batch size {cfg.batch_size} is not divisible by {dist.world_size} processes")
    per_rank = cfg.batch_size // dist.world_size
    model = create_model(cfg.model, num_classes=train_set.num_classes)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    spec = train_set.spec
    method = build_method(cfg, model, spec.mean, spec.std, train_set.name).to(device)
    broadcast_module(method)
    if cfg.compile:
        for block in method.model.blocks:
            block.compile()
    hp = recipe_defaults(cfg, model)
    optimizer = build_optimizer(method, hp["optimizer"], hp["lr"], hp["weight_decay"], cfg.momentum)
    schedule = WarmupCosine(hp["lr"], cfg.epochs, hp["warmup_epochs"])
    train_loader = build_loader(train_set, batch_size=per_rank, train=True, device=device, drop_last=True,
                                seed=cfg.seed, rank=dist.rank, world_size=dist.world_size, workers=cfg.workers)
    test_loader = build_loader(test_set, batch_size=max(per_rank, 256), train=False, device=device,
                               drop_last=False, seed=cfg.seed, workers=cfg.workers)
    config = {**to_dict(cfg), "resolved": hp, "world_size": dist.world_size, "method_description": method.describe()}
    trainer = Trainer(
        method, optimizer, schedule, train_loader,
        evaluate=lambda m: evaluate_classifier(m, test_loader, device, cfg.amp, cfg.channels_last),
        run_dir=run_dir, epochs=cfg.epochs, config=config, device=device, amp=cfg.amp,
        channels_last=cfg.channels_last, dist=dist, steps_per_epoch=cfg.steps_per_epoch, progress=cfg.progress,
    )
    if cfg.resume:
        trainer.resume(cfg.resume)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, run_dir / "config.yaml")
        print(f"{method.describe()} | {cfg.model} on {cfg.data} | {device} x{dist.world_size} | run: {run_dir}")
    return trainer.fit()
