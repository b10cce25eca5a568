"""Training configuration: a dataclass with commented defaults; YAML sets it, flags override.

``None`` means "the default of the model/dataset recipe" (resolved in ``classify/train.py``). Every value is
checked where it enters, by one small layer used by both config dataclasses (this one and
``detection.config.DetectConfig``): a value read from a YAML file is refused with the file and key, a flag
with the flag's name, and a config built in Python checks itself in ``__post_init__``. The type comes
from the field's annotation, the range from the class's ``RULES``. A file's keys are the flags' spellings
(:func:`leanvision.flags.key_spellings`: ``batch`` or ``batch_size``, ``lr`` or ``lr0``, in both tasks); two
spellings of one key, or an unknown key, are an error naming the file and key. YAML is loaded with
``yaml.safe_load`` (no code execution).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, ClassVar

import yaml

from .flags import key_spellings


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message names the file, key or flag."""


# ------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """What a value must be beyond its type: ``text`` completes "must be an integer ...", ``ok`` tests it."""

    text: str
    ok: Callable[[Any], bool]


def at_least(lo: float) -> Rule:
    return Rule(f">= {lo}", lambda v: v >= lo)


def positive() -> Rule:
    return Rule("> 0", lambda v: v > 0)


def between(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Rule:
    text = f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    return Rule(text, lambda v: (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi))


def one_of(*choices: str) -> Rule:
    return Rule(f"one of {', '.join(choices)}", lambda v: v in choices)


def multiple_of(k: int) -> Rule:
    return Rule(f"(a positive multiple of {k})", lambda v: v >= k and v % k == 0)


def is_run_name(name: str) -> bool:
    """A plain folder name: not empty, no path separator, not ``.``/``..``, not absolute (runs stay in --project)."""
    return (bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name
            and not PurePosixPath(name).is_absolute() and not PureWindowsPath(name).drive)


NONEMPTY = Rule("a non-empty string", lambda v: len(v) > 0)
RUN_NAME = Rule("a folder name without path separators or '..' (runs stay inside --project)", is_run_name)
DEVICE = Rule("auto, cpu, mps, cuda or cuda:N",
              lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None)
SEED = between(0, 2**32 - 1)  # numpy's legacy seed range


_KIND_TEXT = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
              "dict": "a mapping (key: value)", "list": "a list"}


@functools.cache
def _kinds(cls, key: str) -> tuple[tuple[str, ...], bool]:
    """(kinds, optional) of a field from its annotation, e.g. ``"int | None"`` -> ``(("int",), True)``."""
    ann = {f.name: f.type for f in dataclasses.fields(cls)}[key]
    parts = [p.strip() for p in str(ann).split("|")]
    return tuple(p for p in parts if p != "None"), "None" in parts


def _convert(kind: str, value):
    """``value`` as ``kind``, or None when it is not one (bool is never an int; YAML's ``1e-3`` is a float)."""
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if kind == "int":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == "float":
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
            return value if math.isfinite(value) else None
        return None
    if kind == "str":
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # `name: 7` means the folder "7"
        return value if isinstance(value, str) else None
    if kind == "dict":
        return value if isinstance(value, dict) and all(isinstance(k, str) for k in value) else None
    if kind == "list":
        return value if isinstance(value, list) else None
    raise TypeError(f"unsupported config field type {kind!r}")


def check_value(cls, key: str, value):
    """``value`` of field ``key`` of ``cls`` converted to the field's type; ValueError saying what is expected."""
    kinds, optional = _kinds(cls, key)
    rule = cls.RULES.get(key)
    if rule is not None and kinds == ("str",):  # "one of sgd, adamw" says it all
        expected = rule.text
    else:
        expected = " or ".join(_KIND_TEXT[k] for k in kinds) + (f" {rule.text}" if rule else "")
    expected = expected.replace("a number", "a finite number")
    if value is None:
        if optional:
            return None
        raise ValueError(f"must be {expected}, got null")
    for kind in kinds:
        got = _convert(kind, value)
        if got is not None:
            if rule is None or rule.ok(got):
                return got
            break
    shown = repr(value)
    raise ValueError(f"must be {expected}, got {shown if len(shown) <= 60 else shown[:57] + '...'}")


def check_values(cls, values: dict, where: Callable[[str], str]) -> dict:
    """Every ``key: value`` checked and converted; a ConfigError starting with ``where(key)`` otherwise."""
    out = {}
    for key, value in values.items():
        try:
            out[key] = check_value(cls, key, value)
        except ValueError as e:
            raise ConfigError(f"{where(key)} {e}") from None
    return out


def argtype(kind: type, rule: Rule | None = None) -> Callable[[str], Any]:
    """An argparse ``type=`` for a flag outside the config dataclasses: converts to ``kind`` (finite for float)
    and checks ``rule``; argparse prints the refusal as one line naming the flag (exit code 2)."""

    def convert(text: str):
        expected = f"{_KIND_TEXT[kind.__name__]}{' ' + rule.text if rule else ''}"
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
        if (kind is float and not math.isfinite(value)) or (rule is not None and not rule.ok(value)):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value

    return convert


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


class Checked:
    """Base of the config dataclasses: a config built in Python checks every value (and converts ints to floats)."""

    RULES: ClassVar[dict[str, Rule]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_values(type(self), {f.name: getattr(self, f.name)}, lambda k: k)[f.name])


# ----------------------------------------------------------------------------------------- config


@dataclass
class TrainConfig(Checked):
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
    lr_schedule: str | None = None  # cosine (per step, LR > 0 to the last step) | release (authors' per-epoch rule)
    patience: int | None = None  # stop after N epochs without a better evaluation accuracy (None: never)
    # execution
    amp: str = "none"  # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False  # torch.compile each block
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int = 4  # loader processes for streamed (large-image) datasets
    seed: int = 0
    steps_per_epoch: int | None = None  # cap on batches per epoch (smoke tests, quick looks)
    subset: int | None = None  # use only the first N training images (after a seeded shuffle)
    pipeline: int | None = None  # local learning: P pipeline stages over torchrun's processes (None: no pipeline)
    pipeline_split: str | None = None  # modules per stage, e.g. "3,5" (None: balanced by measured FLOPs)
    pipeline_schedule: str = "overlap"  # overlap (stages at once, bounded queue) | sync (exact single-process updates)
    micro_batches: int = 1  # --pipeline: each replica's batch flows through the stages as M micro-batches (1: whole)
    # output
    project: str = "runs/train"  # runs are written to project/name
    name: str | None = None  # default: model-method-data
    resume: str | None = None  # a run folder or its last.pt to continue from
    overwrite: bool = False  # allow writing into an existing run folder
    progress: bool = True  # progress bar

    RULES: ClassVar[dict[str, Rule]] = {
        "model": NONEMPTY, "data": NONEMPTY, "method": NONEMPTY, "replace_interval": at_least(2),
        "epochs": at_least(1), "batch_size": at_least(1), "optimizer": one_of("sgd", "adamw"), "lr": positive(),
        "weight_decay": at_least(0), "momentum": between(0, 1, lo_open=True, hi_open=True),
        "warmup_epochs": at_least(0), "lr_schedule": one_of("cosine", "release"), "patience": at_least(1),
        "amp": one_of("none", "bf16", "fp16"), "device": DEVICE, "workers": at_least(0), "seed": SEED,
        "steps_per_epoch": at_least(1), "subset": at_least(1), "pipeline": at_least(1),
        "micro_batches": at_least(1), "pipeline_schedule": one_of("sync", "overlap"), "project": NONEMPTY,
        "name": RUN_NAME,
    }


def field_names(cls=TrainConfig) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def sort_spellings(items, fields, where: str) -> tuple[dict, dict, dict]:
    """``(key, value)`` pairs written with any spelling the flags take (``batch`` or ``batch_size``, ``-`` or ``_``:
    :func:`~leanvision.flags.key_spellings`) -> (field -> value, field -> the key as written, unknown key -> value).

    Raises:
        ConfigError: two spellings of one field, naming both and ``where``.
    """
    spellings = key_spellings(fields)
    values, given_as, unknown = {}, {}, {}
    for key, value in items:
        name = spellings.get(str(key).replace("-", "_"))
        if name is None:
            unknown[key] = value
        elif name in given_as:
            raise ConfigError(f"{where}: {given_as[name]!r} and {key!r} both set {name}; keep one of them")
        else:
            values[name], given_as[name] = value, key
    return values, given_as, unknown


def load_yaml(path: str | Path, cls=TrainConfig) -> dict:
    """Read a YAML config file into checked values; errors name the file and key (unknown keys list the valid ones)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: e.g. a date out of range
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value, found {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{path}: keys must be option names, found {bad[0]!r}")
    # the flags' vocabulary: batch and batch_size, lr and lr0 ...
    values, given_as, unknown = sort_spellings(data.items(), field_names(cls), str(path))
    if unknown:
        aliases = {}
        for spelling, name in key_spellings(field_names(cls)).items():
            if spelling != name:
                aliases.setdefault(name, []).append(spelling)
        valid = ", ".join(n + (f" (or {'/'.join(aliases[n])})" if n in aliases else "")
                          for n in sorted(field_names(cls)))
        raise ConfigError(f"{path}: unknown key(s) {', '.join(map(str, unknown))}; valid keys: {valid}")
    return check_values(cls, values, lambda k: f"{path}: {given_as[k]}")


def build_config(cls, config_path: str | Path | None = None, flags: dict | None = None):
    """``cls`` from a YAML file (optional) overridden by the flags given (``None`` = not given), all checked."""
    values = load_yaml(config_path, cls) if config_path else {}
    given = check_values(cls, {k: v for k, v in (flags or {}).items() if v is not None}, flag_name)
    for key, value in given.items():  # option mappings (method_options, ...) merge key by key
        values[key] = {**values[key], **value} if isinstance(value, dict) and key in values else value
    try:
        return cls(**values)
    except ConfigError as e:  # a rule over several values
        raise ConfigError(f"{config_path or 'flags'}: {e}") from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
