"""Checkpoints in ultralytics' pickled layout, written without ultralytics (for the suite that runs without it).

ultralytics pickles whole modules: ``torch.save({"model": DetectionModel, ...})`` with classes named
``ultralytics.nn.tasks.DetectionModel``, ``ultralytics.nn.modules.conv.Conv``, ``...block.C2f`` and so on, the
layer table an ``nn.Sequential`` under ``model.model``, and the weights in half precision. leanvision's YOLOv8
has the same modules under the same attribute names, so a copy of it whose classes are renamed into fake
``ultralytics.*`` modules (registered in ``sys.modules`` only while the file is written) pickles exactly as
ultralytics' own would. ``rename`` swaps class names to fake other families (``{"C2f": "C3k2"}`` is YOLO11's)
and tasks (``{"DetectionModel": "SegmentationModel"}``).
"""

from __future__ import annotations

import copy
import sys
import types
from pathlib import Path

import torch
from torch import nn

from leanvision.models import yolo

HOME = {"Conv": "ultralytics.nn.modules.conv", "Concat": "ultralytics.nn.modules.conv",
        "C2f": "ultralytics.nn.modules.block", "Bottleneck": "ultralytics.nn.modules.block",
        "SPPF": "ultralytics.nn.modules.block", "DFL": "ultralytics.nn.modules.block",
        "Detect": "ultralytics.nn.modules.head", "DetectionModel": "ultralytics.nn.tasks"}


def ultralytics_layout(model: yolo.DetectionModel, rename: dict[str, str] | None = None,
                       home: dict[str, str] | None = None) -> tuple[nn.Module, dict[str, types.ModuleType]]:
    """A half-precision copy of ``model`` whose classes live in fake ultralytics modules; and those modules."""
    rename, home = rename or {}, {**HOME, **(home or {})}
    fake = copy.deepcopy(model).half()
    fake.model.__class__ = nn.Sequential  # ultralytics keeps the layer table in a Sequential
    modules: dict[str, types.ModuleType] = {}
    for name in ("ultralytics", "ultralytics.nn", "ultralytics.nn.modules"):
        modules[name] = types.ModuleType(name)
    made: dict[type, type] = {}
    for m in fake.modules():
        cls = type(m)
        if cls.__module__ != yolo.__name__:
            continue
        if cls not in made:
            new_name = rename.get(cls.__name__, cls.__name__)
            where = home.get(cls.__name__, "ultralytics.nn.modules.block")
            mod = modules.setdefault(where, types.ModuleType(where))
            made[cls] = type(new_name, (cls,), {"__module__": where, "__qualname__": new_name})
            setattr(mod, new_name, made[cls])
        m.__class__ = made[cls]
    return fake, modules


def save_ultralytics_checkpoint(model: yolo.DetectionModel, path: Path, monkeypatch, key: str = "model",
                                rename: dict[str, str] | None = None, home: dict[str, str] | None = None,
                                yaml_file: str = "yolov8n.yaml", extra: dict | None = None) -> Path:
    """Write ``model`` as ultralytics' trainer and ``Model.save`` do: ``torch.save({key: half model, ...})``."""
    fake, modules = ultralytics_layout(model, rename, home)
    fake.yaml = {"nc": model.nc, "scale": model.scale, "yaml_file": yaml_file}
    fake.names = dict(model.names)
    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    ckpt = {"epoch": -1, "best_fitness": None, "model": None, "ema": None, "updates": 0, "optimizer": None,
            "train_args": {"imgsz": 640, "model": yaml_file}, "date": "2026-12-02T11:00:00", "version": "8.3.0",
            "license": "AGPL-3.0 License (https://ultralytics.com/license)", **(extra or {})}
    ckpt[key] = fake
    torch.save(ckpt, path)
    for name in modules:
        monkeypatch.delitem(sys.modules, name)  # the reader must not find these (nor real ultralytics) at all
    return path
