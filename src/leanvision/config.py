"""Training configuration: a dataclass with commented defaults; YAML sets it, flags override.

``None`` means "the default of the model/dataset recipe" (resolved in :func:`resolve`). Unknown
keys in a YAML file are an error; YAML is loaded with ``yaml.safe_load`` (no code execution).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A configuration file or value that cannot be used."""


@dataclass
class TrainConfig:
    # what to train
    model: str = "resnet32"  # a name from `leanvision models` or timm/<name>
    data: str = "digits"  # cifar10 | cifar100 | svhn | stl10 | imagenet | digits | a path
    data_dir: str | None = None  # root of the official files for named datasets
    method: str = "e2e"  # e2e | dgl | infopro | dgl+mlaan | infopro+mlaan | greedy | replacement
    method_options: dict = field(default_factory=dict)  # e.g. {modules: 16} or {interval: 2}
    replace_interval: int | None = None  # Replacement Learning: every k-th eligible block (also inside another method)
    replace_blocks: str | list | None = None  # explicit replaced blocks: "3,5,7" positions or "1.1,2.2" names
    replace_options: dict = field(default_factory=dict)  # init, detach_neighbors, convex, adapter
    # optimisation (None = recipe default: SGD-Nesterov for CNNs, AdamW for ViTs)
    epochs: int = 400  # the published protocol; the demo and bench use fewer
    batch_size: int = 128  # global batch (split over processes)
    optimizer: str | None = None  # sgd | adamw
    lr: float | None = None  # SGD: 0.1 per 128 images (0.8 at 1024); AdamW: 1e-3
    weight_decay: float | None = None  # SGD 1e-4 on all parameters; AdamW 0.05
    momentum: float = 0.9
    warmup_epochs: int | None = None  # 10 for >= 50 epochs, else epochs // 5
    # execution
    amp: str = "none"  # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False  # torch.compile each block
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int = 4  # loader processes for streamed (large-image) datasets
    seed: int = 0
    steps_per_epoch: int | None = None  # cap on batches per epoch (smoke tests, quick looks)
    subset: int | None = None  # use only the first N training images (after a seeded shuffle)
    # output
    project: str = "runs/train"  # runs are written to project/name
    name: str | None = None  # default: model-method-data
    resume: str | None = None  # path of last.pt to continue from
    overwrite: bool = False  # allow writing into an existing run folder
    progress: bool = True  # progress bar


def field_names(cls=TrainConfig) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def load_yaml(path: str | Path, cls=TrainConfig) -> dict:
    """Read a YAML config file; unknown keys are an error that lists the valid ones."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value, found {type(data).__name__}")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - field_names(cls))
    if unknown:
        valid = ", ".join(sorted(field_names(cls)))
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {valid}")
    return data


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def save_yaml(cfg, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
