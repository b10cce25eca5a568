"""Per-stage checkpoints -> one ordinary checkpoint (what ``leanvision train`` writes without ``--pipeline``).

Each stage writes ``stages/stageP.pt`` (and ``stageP-best.pt``): its own weights and its optimizer state keyed
by parameter name. Rank 0 merges them into ``last.pt`` / ``best.pt``: the method's full state dict and the
optimizer state dict of the single-process optimizer (its groups and parameter order), plus the usual epoch,
history, RNG and config. So ``leanvision.load``, ``val``, ``predict``, ``export`` and ``--resume`` read it like
any other run; ``ckpt["pipeline"]`` keeps the stage layout and each stage's RNG state for an exact resume.
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import CheckpointError, load_checkpoint


def stage_path(run_dir: Path, stage: int, best: bool = False) -> Path:
    return Path(run_dir) / "stages" / f"stage{stage}{'-best' if best else ''}.pt"


def consolidate(run_dir: Path, stages: int, layout: list[list[str]], best: bool = False) -> dict:
    """The ordinary checkpoint dict merged from the ``stages`` stage files of ``run_dir``.

    Args:
        layout: parameter names of each group of the single-process optimizer, in order.
    """
    parts = [load_checkpoint(stage_path(run_dir, p, best)) for p in range(stages)]
    epochs = {int(c["epoch"]) for c in parts}
    if len(epochs) != 1:
        raise CheckpointError(f"{run_dir / 'stages'}: the stage checkpoints are of different epochs {sorted(epochs)}")
    method, by_name, hyper = {}, {}, {}
    for c in parts:
        overlap = set(method) & set(c["method"])
        if overlap:
            raise CheckpointError(f"{run_dir / 'stages'}: {sorted(overlap)[0]} is saved by two stages")
        method.update(c["method"])
        by_name.update(c["optimizer"]["state"])
        for i, g in enumerate(c["optimizer"]["param_groups"]):  # every stage's groups follow Method.param_groups
            hyper.setdefault(i, g)
    state, groups, index = {}, [], 0
    for gi, names in enumerate(layout):
        params = list(range(index, index + len(names)))
        for i, n in zip(params, names):
            if n in by_name:
                state[i] = by_name[n]
        groups.append({**hyper.get(gi, hyper[0]), "params": params})
        index += len(names)
    first, last = parts[0], parts[-1]
    return {
        "method": method,
        "optimizer": {"state": state, "param_groups": groups},
        "scaler": None,
        "epoch": int(last["epoch"]),
        "best": last["best"],
        "best_epoch": last["best_epoch"],
        "stale": last["stale"],
        "history": last["history"],
        "rng": first["rng"],
        "config": last["config"],
        "pipeline": {"stages": stages, "modules": last["modules"], "schedule": last["schedule"],
                     "rng": [c["rng"] for c in parts]},
    }
