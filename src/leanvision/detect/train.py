"""``leanvision detect train``: data, detector, DetectionMethod, SGD, the v8 schedule, then the Trainer.

The data may be a YOLO ``data.yaml``, a COCO ``.json`` or a Pascal VOC root (a folder with
``Annotations/``); see :func:`load_detection_data`. The run folder (``project/name``) receives
``config.yaml``, ``metrics.csv``/``metrics.jsonl`` and ``results.png`` (rewritten after every epoch),
``last.pt``/``best.pt``, ``results.json``, and from the final validation of best.pt ``val_batch0_pred.jpg``,
``PR_curve.png``, ``F1_curve.png`` and ``confusion_matrix_normalized.png``.
"""

from __future__ import annotations

import os
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from ..config import ConfigError, to_dict
from ..engine.checkpoint import CheckpointError, load_checkpoint
from ..engine.distributed import DistInfo, broadcast_module, cleanup, init_distributed
from ..engine.resume import NOT_SAVED, check_resume, resume_path, saved_values
from ..engine.run_folder import clear_run, write_config, write_json
from ..engine.seed import seed_everything
from ..engine.trainer import Trainer
from ..methods.replacement import apply_replacement
from .config import DetectConfig
from .data.check import check_dataset, load_yolo_dataset
from .data.convert import seeded_split
from .data.dataset import build_detection_loader, set_loader_epoch
from .data.exports import find_annotation_file, read_export
from .data.formats import DatasetFormatError, MissingSplitError
from .evaluate import format_results
from .method import DetectionMethod
from .plots import CURVES
from .schedule import YoloSchedule
from .val import build_detector, detector_spec, load_detector, resolve_channels_last, scalar_metrics, validate
from .weights import load_start_weights

# ------------------------------------------------------------------------------------------- data


def _split_samples(samples: list[dict], seed: int) -> dict[str, list[dict]]:
    """A dataset without a val split: the seeded 8:1:1 split of :func:`seeded_split` (test folded into val)."""
    by_id = {s["im_file"]: s for s in samples}
    ids = seeded_split(list(by_id), seed=seed)
    return {"train": [by_id[i] for i in ids["train"]], "val": [by_id[i] for i in ids["val"] + ids["test"]]}


def resolve_data_path(data: str | Path) -> Path:
    """``--data`` as a path: an export folder holding its annotation file (``data.yaml``, ``obj.data``, ...)
    becomes that file, with one line saying so; a missing path is a one-line error."""
    path = Path(data)
    if not str(data):
        raise ConfigError("no dataset given; pass --data data.yaml (YOLO), a COCO .json or a VOC folder")
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset not found; pass a data.yaml, a COCO .json or a VOC folder")
    found = find_annotation_file(path) if path.is_dir() else None
    if found is not None:
        print(f"note: {path} is an export folder; reading {found}")
        return found
    return path


def load_detection_data(data: str | Path, on_error: str = "skip", seed: int = 0) -> tuple[dict, list[str]]:
    """Read a detection dataset in the format its path shows: train and val samples, checked (``on_error``).

    * ``*.yaml`` / ``*.yml``: a YOLO data.yaml (``train``/``val``/``names``).
    * anything :func:`~.data.exports.read_export` reads: a COCO ``.json`` (its val json beside it by name or
      in a ``valid/`` folder), a darknet ``obj.data``, a VOC folder, a folder with ``classes.txt``, Roboflow's
      split folders; an export folder holding one of these files is read through it.

    Without a val split, val is the seeded 8:1:1 split's val + test part of train (:func:`_split_samples`).

    Returns:
        ({"train": samples, "val": samples}, class names).
    """
    path = resolve_data_path(data)
    if path.suffix.lower() in (".yaml", ".yml"):
        train, names = load_yolo_dataset(path, "train", on_error=on_error)
        try:
            val, _ = load_yolo_dataset(path, "val", on_error=on_error)
        except MissingSplitError:  # no val split: validate on train, as a last resort, with a warning
            print(f"warning: {path} has no 'val' split; validating on the training images")
            val = train
        return {"train": train, "val": val}, names
    found, names, layout = read_export(path)
    splits = {"train": found["train"], "val": found["val"]} if "val" in found else _split_samples(found["train"], seed)
    if "val" not in found:
        print(f"note: {path} ({layout}) has no val split; validating on a seeded 10 % + 10 % of its images")
    checked = {k: check_dataset(v, len(names), on_error=on_error, what=f"{path} [{k}]")[0] for k, v in splits.items()}
    return checked, names


# -------------------------------------------------------------------------------------------- run


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto``: bf16 on CUDA (no loss scaling needed; the loss runs in float32 anyway), none on CPU."""
    if amp != "auto":
        return amp
    if device.type != "cuda":
        return "none"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def model_overrides(cfg: DetectConfig) -> dict:
    """GOM/SCM switches for GSO-YOLO; a clear error when asked of a model that has no such module."""
    over = {k: getattr(cfg, k) for k in ("gom", "scm") if getattr(cfg, k) is not None}
    if over and not cfg.model.lower().replace("_", "-").startswith("gso-yolo"):
        raise ConfigError(f"--gom/--scm apply to gso-yolo-* models only; {cfg.model} has neither module")
    return over


def run_dir_for(cfg: DetectConfig) -> Path:
    """``project/name``; without an explicit name an existing run gets a number (train, train2, ...).

    A resumed run's folder is its checkpoint's.
    """
    if cfg.resume:
        return resume_path(cfg.resume).resolve().parent
    base = Path(cfg.project) / (cfg.name or "train")
    if cfg.overwrite or not (base.exists() and any(base.iterdir())):
        return base
    if cfg.name:
        raise ConfigError(f"{base} already holds a run; pass --overwrite, --resume {base} or another --name")
    n = 2
    while (Path(cfg.project) / f"train{n}").exists():
        n += 1
    return Path(cfg.project) / f"train{n}"


def upgrade_saved_config(saved: dict) -> dict:
    """A checkpoint's config as this version saves it: earlier versions wrote the method's internal name
    ("yolo") over ``method`` (which made their runs impossible to resume) and kept the amp and memory
    format the run used under ``resolved``."""
    saved = dict(saved)
    resolved = saved.get("resolved") or {}
    if saved.get("amp") == "auto" and "amp" in resolved:
        saved["amp"] = resolved["amp"]
    if saved.get("channels_last") is None and "channels_last" in resolved:
        saved["channels_last"] = resolved["channels_last"]
    if saved.get("method") not in ("e2e", "replacement"):
        saved["method"] = "replacement" if (saved.get("detector") or {}).get("replacement") else "e2e"
    return saved


def train_detector(cfg: DetectConfig) -> dict:
    """Train according to ``cfg`` (one process, or one rank under ``torchrun``); returns the result dict.

    The result is the Trainer's (``final`` epoch row, ``best_epoch_map``, ``resources``) plus ``val``: the
    final evaluation of ``best.pt`` (P, R, mAP50, mAP50-95, per class, speed) and ``run_dir``.
    """
    dist, device = init_distributed(cfg.device)
    try:
        return _train(cfg, dist, device)
    finally:
        cleanup()


def _train(cfg: DetectConfig, dist: DistInfo, device: torch.device) -> dict:
    if cfg.batch % dist.world_size:
        raise ConfigError(f"batch {cfg.batch} is not divisible by {dist.world_size} processes")
    overrides = model_overrides(cfg)  # fail on a bad switch before reading the data
    run_dir, ckpt = run_dir_for(cfg), None
    if cfg.resume:
        ckpt = load_checkpoint(resume_path(cfg.resume), map_location=device)
        ckpt["config"] = upgrade_saved_config(ckpt.get("config") or {})
    seed_everything(cfg.seed)
    splits, names = load_detection_data(cfg.data, cfg.on_error, cfg.seed)
    if not splits["train"]:
        raise DatasetFormatError(f"{cfg.data}: the training split has no images")
    per_rank = cfg.batch // dist.world_size
    workers = min(cfg.workers, os.cpu_count() or 1)  # more processes than cores only thrash
    amp = resolve_amp(cfg.amp, device)
    aug = dict(mosaic=cfg.augment and cfg.mosaic > 0, mosaic_p=cfg.mosaic, degrees=cfg.degrees,
               translate=cfg.translate, scale=cfg.scale, shear=cfg.shear, perspective=cfg.perspective,
               hsv_h=cfg.hsv_h, hsv_s=cfg.hsv_s, hsv_v=cfg.hsv_v, fliplr=cfg.fliplr, mosaic_buffer=cfg.mosaic_buffer)
    train_loader = build_detection_loader(splits["train"], cfg.imgsz, per_rank, augment=cfg.augment, shuffle=True,
                                          workers=workers, seed=cfg.seed, drop_last=False,
                                          pin_memory=device.type == "cuda", **aug)
    val_loader = build_detection_loader(splits["val"], cfg.imgsz, per_rank * 2, augment=False, workers=workers,
                                        distributed=False, rect=cfg.rect)

    spec = detector_spec(cfg.model, names, overrides)
    try:
        model = build_detector(spec)
        if cfg.weights and ckpt is None:  # pretrained start (before replacement rebuilds blocks); a resume has its own
            loaded = load_start_weights(model, cfg.weights)
            if dist.is_main:
                print(loaded)
        if cfg.method == "replacement":  # the backbone's Bottlenecks are the detector's block list (models/yolo.py)
            report = apply_replacement(model, cfg.replace_interval, adapter=cfg.replace_adapter, allow_none=False)
            if dist.is_main:
                print(report)
            spec["replacement"] = report.rebuild_options  # saved so load_detector can rebuild and materialise it
    except CheckpointError:
        raise
    except ValueError as e:  # an unknown detector name, or Bottlenecks that cannot be replaced
        raise ConfigError(f"--model {cfg.model} (--method {cfg.method}): {e}") from None
    channels_last = resolve_channels_last(cfg.channels_last, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    method = DetectionMethod(model, cfg.box_loss, cfg.box, cfg.cls, cfg.dfl, min_gt_size=cfg.tal_min_gt_size).to(device)
    broadcast_module(method)

    accumulate = max(round(cfg.nbs / cfg.batch), 1)
    weight_decay = cfg.weight_decay * cfg.batch * accumulate / cfg.nbs  # v8's scaling to the nominal batch
    optimizer = torch.optim.SGD(method.param_groups(weight_decay), lr=cfg.lr0, momentum=cfg.momentum, nesterov=True)
    schedule = YoloSchedule(cfg.lr0, cfg.lrf, cfg.epochs, cfg.warmup_epochs, cfg.warmup_momentum, cfg.momentum,
                            cfg.warmup_bias_lr, cfg.warmup_min_iters)

    def on_epoch_start(epoch: int) -> None:
        set_loader_epoch(train_loader, epoch)
        if cfg.close_mosaic and epoch >= cfg.epochs - cfg.close_mosaic and train_loader.dataset.mosaic:
            train_loader.dataset.close_mosaic()
            if dist.is_main:
                print(f"closing mosaic for the last {cfg.close_mosaic} epochs")

    def evaluate(m) -> dict:
        if not cfg.val:
            return {}
        return scalar_metrics(validate(m, val_loader, names, device, amp, channels_last=channels_last,
                                       progress=cfg.progress))

    effective = {k: v for k, v in to_dict(replace(cfg, amp=amp, channels_last=channels_last, name=run_dir.name)).items()
                 if k not in NOT_SAVED}
    if ckpt is not None:  # a resume from Python is held to the same word as one from the command line
        path = resume_path(cfg.resume)
        saved = saved_values(DetectConfig, ckpt, path)
        check_resume(saved, {k: v for k, v in effective.items() if k not in ("project", "name")},
                     int(ckpt["epoch"]), path, where=lambda k: f"config value {k}")
        effective.update(project=saved["project"], name=saved["name"])
    config = {**effective, "detector": spec,
              "resolved": {"accumulate": accumulate, "weight_decay": weight_decay, "world_size": dist.world_size}}
    trainer = Trainer(method, optimizer, schedule, train_loader, evaluate, run_dir, cfg.epochs, config, device,
                      fitness="map", amp=amp, channels_last=channels_last, dist=dist,
                      patience=cfg.patience if cfg.val else None,
                      steps_per_epoch=cfg.steps_per_epoch, progress=cfg.progress, on_epoch_start=on_epoch_start,
                      accumulate=partial(schedule.accumulate, nominal=accumulate),  # ramps up over the warm-up
                      plots=cfg.plots, curves=CURVES)
    if ckpt is not None:
        trainer.load_state(ckpt, cfg.resume)
    if dist.is_main:
        if ckpt is None and cfg.overwrite:
            clear_run(run_dir)  # the old run's rows and checkpoints must not mix with this one's
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, effective)
        print(f"{cfg.model} ({method.describe()}) on {cfg.data}: {len(splits['train'])} train / "
              f"{len(splits['val'])} val images, {len(names)} classes | {device} x{dist.world_size}, amp {amp}, "
              f"batch {cfg.batch} x accumulate {accumulate} | run: {run_dir}")
    result = trainer.fit()
    if not dist.is_main:
        return result
    best = run_dir / ("best.pt" if (run_dir / "best.pt").is_file() else "last.pt")
    final_model, _ = load_detector(best, device)
    res = validate(final_model, val_loader, names, device, amp, keep_predictions=16, curves=cfg.plots)
    print(f"validating {best}:")
    print(format_results(res))
    sp = res["speed"]
    print(f"speed: {sp['preprocess']:.1f} ms preprocess, {sp['inference']:.1f} ms inference, "
          f"{sp['nms']:.1f} ms NMS per image at {cfg.imgsz}")
    if cfg.plots:  # results.png is the trainer's, redrawn every epoch
        from .plots import plot_val_batch, write_val_plots

        plot_val_batch(res["predictions"], names, run_dir / "val_batch0_pred.jpg")
        write_val_plots(res, names, run_dir)
    val = {k: v for k, v in res.items() if k not in ("predictions", "curves")}
    result.update(val=val, run_dir=str(run_dir))
    write_json(run_dir / "results.json", result)
    return result

