"""Which modules each stage trains: balanced by measured cost, or given with ``--pipeline-split``.

The cost of a module is the floating-point work of one training step of it, counted by PyTorch's
``FlopCounterMode`` on a batch of two images: its forward, its auxiliary network(s) (MLAAN: the independent
head, the LAM and the cascaded head) and their backward. Counting is deterministic, so every rank derives the
same assignment without talking to the others, and a run can be repeated exactly; it ignores memory-bound work
(BatchNorm, ReLU), which is why the run prints each stage's share and ``--pipeline-split`` can override it.
"""

from __future__ import annotations

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode

from ...config import ConfigError
from ...methods.local.split import balanced_runs


def module_costs(method, image_size: int) -> list[float]:
    """Training FLOPs of each module of ``method`` (a :class:`LocalLearning`) for a batch of 2; ``method`` is
    not changed (a copy is measured)."""
    m = copy.deepcopy(method)
    m.train()
    param = next(m.parameters())
    k = len(m.split)
    x = torch.randn(2, 3, image_size, image_size, device=param.device, dtype=param.dtype)
    images = x
    targets = torch.zeros(2, dtype=torch.long, device=param.device)
    image = m.target_image(images)
    costs = []
    for j in range(k):
        x = x.detach().requires_grad_(j > 0)
        with FlopCounterMode(display=False) as counter:
            h = x
            for piece in m.pieces(j):
                h = piece(h)
            if j == k - 1:
                loss = m.final_loss(h, targets)[0]
            elif m.mlaan:
                loss = (m.indep[str(j)](h, targets, image) + m.casc[str(j)](m.lams[str(j)](h), targets, image)
                        if str(j) in m.lams else h.float().mean())
            else:
                loss = m.aux[j](h, targets, image)
            if loss.requires_grad:
                loss.backward()
        costs.append(float(max(counter.get_total_flops(), 1)))
        x = h
    return costs


def balance(costs: list[float], stages: int) -> list[int]:
    """Module counts per stage (contiguous runs) minimising the costliest stage; ties keep earlier stages
    lighter (they also send)."""
    return balanced_runs(costs, stages)


def parse_split(text: str, stages: int, k: int) -> list[int]:
    """``--pipeline-split 3,5``: modules per stage, in order; ConfigError naming what is wrong."""
    try:
        counts = [int(t) for t in str(text).replace(" ", "").split(",") if t]
    except ValueError:
        raise ConfigError(f"--pipeline-split {text!r}: expected the number of modules of each stage, e.g. "
                          f"'3,5' for 2 stages") from None
    if len(counts) != stages or any(c < 1 for c in counts) or sum(counts) != k:
        example = ",".join(map(str, balance([1.0] * k, stages))) if stages <= k else "one per stage"
        raise ConfigError(f"--pipeline-split {text!r}: give {stages} positive module counts (one per stage) "
                          f"that add up to the method's {k} modules, e.g. {example}")
    return counts


def stage_modules(counts: list[int]) -> tuple[tuple[int, ...], ...]:
    out, start = [], 0
    for c in counts:
        out.append(tuple(range(start, start + c)))
        start += c
    return tuple(out)


def assign(method, stages: int, split: str | None, image_size: int) -> tuple[tuple[tuple[int, ...], ...], str]:
    """(modules of each stage, a description with each stage's blocks and expected share of the work)."""
    k = len(method.split)
    if stages > k:
        raise ConfigError(f"--pipeline {stages}: {method.name} has {k} module(s) here (--modules), and every stage "
                          f"needs at least one; use --pipeline {k} or fewer, or more --modules")
    costs = module_costs(method, image_size)
    counts = parse_split(split, stages, k) if split else balance(costs, stages)
    mods = stage_modules(counts)
    total = sum(costs)
    names = method.split.names
    lines = [f"pipeline: {stages} stage(s), modules {'from --pipeline-split' if split else 'balanced by FLOPs'}:"]
    for p, ms in enumerate(mods):
        pieces = [q for j in ms for q in method.split.modules[j]]
        share = sum(costs[j] for j in ms) / total
        lines.append(f"  stage {p}: modules {ms[0]}-{ms[-1]} (blocks {names[pieces[0] + 1]}..{names[pieces[-1] + 1]}"
                     f"{', head' if p == stages - 1 else ''}), expected share {100 * share:.1f} %")
    return mods, "\n".join(lines)
