"""Resume keeps its word: a resumed run is the saved run, continued in its own folder.

``--resume RUN`` or ``--resume RUN/last.pt`` restores the configuration saved in the checkpoint entirely.
Flags given with it may only repeat the saved values, except the few in :data:`MAY_CHANGE`: where and
how visibly the run goes on (``--device``, ``--no-progress``, ``--no-plots``) and its length
(``--epochs``, to extend a run; the LR schedule is then planned over the new total, so the epochs after
the change differ from both the old plan and a run started with the new total). Anything else that
differs from the saved run (``--data``, ``--lr``, ``--name`` ...) is refused with the flag's name:
a different run is a new run (``--config RUN/config.yaml --name NEW``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from ..config import ConfigError, check_values, field_names, flag_name
from .checkpoint import CheckpointError, load_checkpoint

MAY_CHANGE = frozenset({"epochs", "device", "progress", "plots"})
_SHOWN = {"epochs": "--epochs (more)", "device": "--device", "progress": "--[no-]progress", "plots": "--[no-]plots"}
# per-invocation switches: never saved with a run, never compared
NOT_SAVED = frozenset({"resume", "overwrite"})


def resume_path(resume: str | Path) -> Path:
    """``RUN`` (a run folder) or ``RUN/last.pt`` -> the checkpoint path; CheckpointError when it is missing."""
    path = Path(resume)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; --resume takes a run folder or its last.pt")
    return path


def saved_values(cls, ckpt: dict, path: Path) -> dict:
    """The config fields saved in ``ckpt``, checked; ``project``/``name`` are where the checkpoint lies now.

    A field the checkpoint lacks (added to the config after the run was saved) has its default: that is what
    the resumed run gets, so a flag that contradicts it is refused like any other, not silently ignored
    (``upgrade`` functions set the fields whose old behaviour was not today's default).
    """
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: the checkpoint holds no run config; it cannot be resumed")
    values = {f.name: f.default for f in dataclasses.fields(cls)
              if f.default is not dataclasses.MISSING and f.name not in NOT_SAVED}
    values.update({k: v for k, v in saved.items() if k in field_names(cls) and k not in NOT_SAVED})
    run_dir = path.resolve().parent
    values.update(project=str(run_dir.parent), name=run_dir.name)
    return check_values(cls, values, lambda k: f"{path}: saved config value {k}")


def _differs(key: str, saved, given) -> bool:
    if key == "project":
        return Path(given).resolve() != Path(saved).resolve()
    if isinstance(given, dict) and isinstance(saved, dict):  # option mappings: the keys given must agree
        return any(saved.get(k) != v for k, v in given.items())
    return saved != given


def check_resume(saved: dict, given: dict, completed: int, path: Path,
                 where: Callable[[str], str] = flag_name) -> None:
    """Refuse a ``given`` value that contradicts the ``saved`` run (naming it with ``where``), or nothing left to train.

    Args:
        saved: the run's effective config values.
        given: values asked for now (flags, or a whole config for a resume from Python).
        completed: epochs the checkpoint has finished.
        path: the checkpoint, for messages.
    """
    for key, value in given.items():
        if key in NOT_SAVED or key not in saved or key in MAY_CHANGE:
            continue
        if _differs(key, saved[key], value):
            allowed = ", ".join(_SHOWN[k] for k in sorted(MAY_CHANGE) if k in saved)
            raise ConfigError(
                f"{where(key)} {value!r} contradicts the run being resumed ({path} has {key}={saved[key]!r}); "
                f"a resumed run keeps its config (only {allowed} may change); start a new run with "
                f"--config {path.parent / 'config.yaml'} --name NEW")
    epochs = given.get("epochs", saved.get("epochs"))
    if epochs is not None and epochs <= completed:
        raise ConfigError(f"{path} has already finished {completed} epochs; pass {where('epochs')} N with N > "
                          f"{completed} to train longer")


def config_for_resume(cls, resume: str | Path, flags: dict, upgrade: Callable[[dict], dict] | None = None,
                      where: Callable[[str], str] = flag_name):
    """``cls`` restored from the checkpoint at ``resume`` (a run folder or its last.pt), with the allowed flags.

    Args:
        cls: TrainConfig or DetectConfig.
        resume: the ``--resume`` value.
        flags: flag values by field name, ``None`` = not given.
        upgrade: fills in what older checkpoints saved differently (applied to the raw saved config).
        where: the flag that sets a field, for messages.
    """
    path = resume_path(resume)
    ckpt = load_checkpoint(path)
    if upgrade is not None and isinstance(ckpt.get("config"), dict):
        ckpt["config"] = upgrade(ckpt["config"])
    saved = saved_values(cls, ckpt, path)
    given = check_values(cls, {k: v for k, v in flags.items() if v is not None and k not in NOT_SAVED}, where)
    check_resume(saved, given, int(ckpt.get("epoch", 0)), path, where)
    allowed = {k: v for k, v in given.items() if k in MAY_CHANGE}
    return cls(**{**saved, **allowed, "resume": str(path)})
