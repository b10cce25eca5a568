"""Leap Augmented Modules (spec §2.4, §3.2): an auxiliary network made of copies of deeper backbone
blocks, whose first block (or every block, ``ema_blocks="all"``) is paired with an EMA copy that
tracks the backbone block at the same position."""

from __future__ import annotations

import copy

import torch
from torch import nn

# Leap configs (configAuxPlus_new.py, ImageNet configAux_new.py), by architecture and code key:
# (module end blocks, LAM blocks). "s.*" is a whole stage, "s.a-b" a range within stage s.
_LAM_TABLES: dict[tuple[str, int], list[tuple[str, str]]] = {
    ("resnet32", 8): [
        ("1.0 1.2", "2.0 3.0 3.2 3.4"),
        ("1.4", "2.0 3.0 3.3 3.4"),
        ("2.1 2.3", "3.0 3.2 3.3 3.4"),
        ("3.0", "3.2 3.3 3.4"),
        ("3.2", "3.3 3.4"),
    ],
    ("resnet32", 15): [
        ("1.0 1.1 1.3", "2.0 3.0 3.2 3.4"),
        ("1.2 1.4", "2.0 3.0 3.3 3.4"),
        ("2.*", "3.0 3.2 3.3 3.4"),
        ("3.0", "3.1 3.2 3.4"),
        ("3.1", "3.2 3.3 3.4"),
        ("3.2", "3.3 3.4"),
        ("3.3", "3.4"),
    ],
    ("resnet110", 32): [
        ("1.*", "2.0 3.0 3.2 3.17"),
        ("2.0-16", "3.0 3.2 3.3 3.17"),
        ("2.17", "3.0 3.3 3.4 3.17"),
        ("3.0-6", "3.8 3.17"),
        ("3.7 3.9", "3.14 3.17"),
        ("3.11", "3.15 3.17"),
        ("3.13", "3.16 3.17"),
        ("3.15", "3.17"),
    ],
    ("resnet110", 54): [
        ("1.*", "2.0 3.0 3.2 3.17"),
        ("2.0-16", "3.0 3.2 3.3 3.17"),
        ("2.17", "3.0 3.3 3.4 3.17"),
        ("3.0-6", "3.8 3.17"),
        ("3.7-10", "3.14 3.17"),
        ("3.11-12", "3.15 3.17"),
        ("3.13-15", "3.16 3.17"),
        ("3.16", "3.17"),
    ],
    ("resnet34", 16): [
        ("1.*", "2.0 2.1 3.0 4.0 4.2"),
        ("2.*", "2.1 3.0 4.0 4.2"),
        ("3.*", "3.1 4.0 4.1"),
        ("4.0", "4.1 4.1 4.2"),
        ("4.1", "4.1 4.2"),
    ],
    ("resnet101", 33): [
        ("1.*", "2.0 3.0 4.0 4.2"),
        ("2.*", "3.0 4.0 4.1"),
        ("3.*", "4.0 4.1"),
        ("4.*", "4.1 4.2"),
    ],
}


def _matches(selector: str, name: str) -> bool:
    stage, idx = (int(v) for v in name.split("."))
    for tok in selector.split():
        s, rest = tok.split(".")
        if int(s) != stage:
            continue
        if rest == "*":
            return True
        lo, _, hi = rest.partition("-")
        if int(lo) <= idx <= int(hi or lo):
            return True
    return False


def table_chain(arch: str | None, key: int | None, end_name: str, names: list[str]) -> list[int] | None:
    """Block indices of the published LAM for the module ending at ``end_name``, or None."""
    for selector, chain in _LAM_TABLES.get((arch, key), []):
        if _matches(selector, end_name):
            return [names.index(n) for n in chain.split()]
    return None


def general_chain(block_info, end: int) -> list[int]:
    """LAM for a module ending at block ``end`` (-1 = stem) on a model without a table.

    Follows the tables' pattern: the first block of every later stage (so the output has the final
    stage's shape), then evenly spaced final-stage blocks up to the last block, 4 blocks at most
    (3 once the module is in the final stage), sparser the earlier the module (Figure 3, §3.2).
    """
    n = len(block_info)
    stage = block_info[end].stage if end >= 0 else 0
    last_stage = block_info[-1].stage
    firsts = [i for i in range(end + 1, n) if block_info[i].index == 0 and block_info[i].stage > stage]
    rest = [i for i in range(end + 1, n) if block_info[i].stage == last_stage and i not in firsts]
    want = (4 if stage < last_stage else 3) - len(firsts)
    if want <= 0 or not rest:
        return firsts or [n - 1]
    want = min(want, len(rest))
    picks = sorted({rest[len(rest) - 1 - round(j * len(rest) / want)] for j in range(want)})
    return firsts + picks


class LeapModule(nn.Module):
    """Trainable copies of later blocks; the first ``n_ema`` are paired with frozen EMA copies.

    forward(z) = aug[j](z) + ema[j](z) for j < n_ema, then aug[j](z): gradients reach z through the
    EMA branch, and its weights only when ``ema_trainable`` (§3.2, §3.3 C).

    Args:
        blocks: the backbone blocks to copy (copied now, after the backbone's init: §8.12).
        sources: their indices in the backbone's block list (EMA targets; not registered here so
            the backbone is not saved twice).
        n_ema: how many leading blocks carry an EMA branch (1 = "first", len(blocks) = "all").
        ema_trainable: False: the EMA copies are frozen (no gradient, no optimizer state). True: as
            the InfoPro+MLAAN release, they also get gradients, so SGD trains them too.
    """

    def __init__(self, blocks: list[nn.Module], sources: list[int], n_ema: int = 1, ema_trainable: bool = False):
        super().__init__()
        self.sources = list(sources)
        self.aug = nn.ModuleList(copy.deepcopy(b) for b in blocks)
        self.ema = nn.ModuleList(copy.deepcopy(b) for b in blocks[:n_ema])
        for p in self.ema.parameters():
            p.requires_grad_(ema_trainable)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.aug):
            z = block(z) + self.ema[j](z) if j < len(self.ema) else block(z)
        return z

    @torch.no_grad()
    def update_ema(self, backbone_blocks: nn.ModuleList, momentum: float) -> None:
        """theta_ema <- m * theta_ema + (1 - m) * theta_backbone, parameters only (BN buffers excluded)."""
        for j, ema in enumerate(self.ema):
            src = list(backbone_blocks[self.sources[j]].parameters())
            dst = list(ema.parameters())
            torch._foreach_mul_(dst, momentum)
            torch._foreach_add_(dst, [p.detach() for p in src], alpha=1.0 - momentum)
