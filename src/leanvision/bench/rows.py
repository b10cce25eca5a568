"""Bench rows: ``MODEL:METHOD[:key=value,...]`` strings or a YAML list of the same fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import ConfigError, field_names, sort_spellings

# Row settings that are training options (TrainConfig fields) rather than method options.
_TRAIN_KEYS = field_names() - {"model", "method", "method_options", "name", "project", "resume", "data", "data_dir"}


@dataclass
class BenchRow:
    model: str
    method: str = "e2e"
    options: dict = field(default_factory=dict)  # method options (modules=16, interval=2, ...)
    train: dict = field(default_factory=dict)  # TrainConfig overrides (amp, replace_interval, ...)

    @property
    def label(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in {**self.options, **self.train}.items())
        return f"{self.model}:{self.method}" + (f":{opts}" if opts else "")

    @property
    def settings(self) -> str:
        return ",".join(f"{k}={v}" for k, v in {**self.options, **self.train}.items())


def _split_settings(settings: dict, where: str) -> tuple[dict, dict]:
    """Method options and training options of one row; a training option may take any spelling its flag takes
    (``batch`` or ``batch_size``, ``lr0`` or ``lr``: :func:`~leanvision.flags.key_spellings`)."""
    train, _, options = sort_spellings(settings.items(), _TRAIN_KEYS, where)
    return {str(k).replace("-", "_"): v for k, v in options.items()}, train


def parse_row(text: str) -> BenchRow:
    """``"resnet110:dgl+mlaan:modules=55,span=2"`` -> BenchRow (values are read as YAML scalars)."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ConfigError(f"bench row {text!r}: expected MODEL:METHOD[:key=value,...], e.g. resnet32:e2e")
    settings = {}
    if len(parts) == 3 and parts[2]:
        for item in parts[2].split(","):
            if "=" not in item:
                raise ConfigError(f"bench row {text!r}: setting {item!r} is not key=value")
            k, v = item.split("=", 1)
            settings[k.strip()] = yaml.safe_load(v)
    options, train = _split_settings(settings, f"bench row {text!r}")
    return BenchRow(parts[0], parts[1], options, train)


def parse_rows(items: list[str]) -> list[BenchRow]:
    """Rows from strings; an item ending in .yaml/.yml is a file with a ``rows:`` list."""
    rows: list[BenchRow] = []
    for item in items:
        if item.endswith((".yaml", ".yml")):
            path = Path(item)
            if not path.is_file():
                raise ConfigError(f"{path}: bench rows file not found")
            data = yaml.safe_load(path.read_text()) or {}
            entries = data.get("rows") if isinstance(data, dict) else data
            if not isinstance(entries, list):
                raise ConfigError(f"{path}: expected a list of rows (or a mapping with a 'rows' list)")
            for e in entries:
                if isinstance(e, str):
                    rows.append(parse_row(e))
                elif isinstance(e, dict) and "model" in e:
                    settings = dict(e.get("settings") or {})
                    options, train = _split_settings(settings, f"{path}: row {e['model']!r}")
                    rows.append(BenchRow(e["model"], e.get("method", "e2e"), options, train))
                else:
                    raise ConfigError(f"{path}: row {e!r} needs at least a 'model' key")
        else:
            rows.append(parse_row(item))
    return rows
