"""Checkpoints in ultralytics' pickled layout, written without ultralytics (for the suite that runs without it).

ultralytics pickles whole modules: ``torch.save({"model": DetectionModel, ...})`` with classes named
``ultralytics.nn.tasks.DetectionModel``, ``ultralytics.nn.modules.conv.Conv``, ``...block.C2f`` and so on, the
layer table an ``nn.Sequential`` under ``model.model``, the weights in half precision (its ``Model.save`` and its
trainer's ``save_model``). leanvision's YOLOv8 has the same modules under the same attribute names, so a copy of
it whose classes are renamed into fake ``ultralytics.*`` modules (in ``sys.modules`` only while the file is
written) pickles as ultralytics' own would: the same globals, in the same places (checked against a file of
ultralytics 8.4.190). ``rename`` swaps class names to fake other families (``{"C2f": "C3k2"}`` is YOLO11's) and
tasks (``{"DetectionModel": "SegmentationModel"}``); ``home`` moves classes to other modules.
"""

from __future__ import annotations

import copy
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from leanvision.models import yolo

HOME = {"Conv": "ultralytics.nn.modules.conv", "Concat": "ultralytics.nn.modules.conv",
        "C2f": "ultralytics.nn.modules.block", "Bottleneck": "ultralytics.nn.modules.block",
        "SPPF": "ultralytics.nn.modules.block", "DFL": "ultralytics.nn.modules.block",
        "Detect": "ultralytics.nn.modules.head", "DetectionModel": "ultralytics.nn.tasks"}


def save_ultralytics_checkpoint(path: Path, models: dict[str, yolo.DetectionModel],
                                rename: dict[str, str] | None = None, home: dict[str, str] | None = None,
                                yaml_file: str = "yolov8n.yaml", version: str = "8.4.190") -> Path:
    """Write ``models`` (e.g. ``{"model": m}`` as ``Model.save`` does, ``{"ema": m}`` as the trainer does) the
    way ultralytics does: ``torch.save({key: half-precision model, ...metadata})``."""
    rename, home = rename or {}, {**HOME, **(home or {})}
    fakes: dict[str, types.ModuleType] = {n: types.ModuleType(n) for n in ("ultralytics", "ultralytics.nn",
                                                                            "ultralytics.nn.modules")}
    made: dict[type, type] = {}
    ckpt = {"epoch": -1, "best_fitness": None, "model": None, "ema": None, "updates": 0, "optimizer": None,
            "train_args": {"imgsz": 640, "model": yaml_file}, "date": "2026-12-02T11:00:00+00:00",
            "version": version, "license": "AGPL-3.0 License (https://ultralytics.com/license)"}
    for key, model in models.items():
        fake = copy.deepcopy(model).half()
        fake.model.__class__ = nn.Sequential  # ultralytics keeps the layer table in a Sequential
        fake.yaml = {"nc": model.nc, "scale": model.scale, "yaml_file": yaml_file}
        fake.names = dict(model.names)
        for m in fake.modules():
            cls = type(m)
            if cls.__module__ != yolo.__name__:
                continue
            if cls not in made:
                name, where = rename.get(cls.__name__, cls.__name__), home.get(cls.__name__, HOME["C2f"])
                made[cls] = type(name, (cls,), {"__module__": where, "__qualname__": name})
                for parent in (where.rsplit(".", k)[0] for k in range(where.count("."), -1, -1)):
                    fakes.setdefault(parent, types.ModuleType(parent))
                setattr(fakes[where], name, made[cls])
            m.__class__ = made[cls]
        ckpt[key] = fake
    with pytest.MonkeyPatch.context() as mp:  # pickle checks that each class is importable under its name
        for name, mod in fakes.items():
            mp.setitem(sys.modules, name, mod)
        torch.save(ckpt, path)
    return path  # the fake modules are gone again: the reader must not need them (nor real ultralytics)
