"""Which blocks of a block-list model are replaced (spec §2.2).

Block i is eligible when (a) it has both neighbours, (b) it is not a stage-transition block
(stride 1, equal in/out width, no projection shortcut) and (c) both neighbours have the same tensor
names and shapes (with the adapter, §2.4: same names and ranks). A neighbour that does not feed the
block directly (``BlockInfo.chained`` False: other layers run between them, as between the
Bottlenecks of two C2f rows of a detector's backbone) is borrowed from only with the adapter. From
the eligible blocks of each stage, every k-th is replaced, starting at the stage's first eligible
block; a candidate next to an already replaced block is skipped. This per-stage reading is the one
that reproduces the spec's tables (ResNet-32: 1.1, 1.3, 2.2, 3.2; counting k over the whole network
would pick 3.3 instead).

Classifier block names are our "s.l" labels (a detector's are "row.m.j", see ``BlockInfo.name``):
stage s (1-based), block l (0-based) in the stage; the spec's prose counts blocks from 1, so its
"stage 1: blocks 2 and 4" is our 1.1 and 1.3.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from .block import ReplacedBlock, shape_mismatch


def ineligibility(model: nn.Module, adapter: bool = False) -> list[str | None]:
    """For every block of ``model.blocks``: None if it may be replaced, else the reason why not."""
    blocks, infos = model.blocks, model.block_info
    out: list[str | None] = []
    for i, (block, info) in enumerate(zip(blocks, infos)):
        if isinstance(block, ReplacedBlock):
            out.append("it is already replaced")
        elif i == 0:
            out.append("it is the first block (no previous neighbour; the stem is never fused into a block)")
        elif i == len(blocks) - 1:
            out.append("it is the last block (no next neighbour)")
        elif info.transition or info.stride != 1 or info.in_channels != info.out_channels:
            shortcut = ", projection shortcut" if info.transition else ""
            out.append(
                f"it is a stage-transition block (stride {info.stride}, "
                f"{info.in_channels}->{info.out_channels} channels{shortcut}); "
                "transition blocks keep their weights"
            )
        elif not adapter and (gap := _gap(infos, i)):
            out.append(gap)
        else:
            out.append(shape_mismatch(blocks[i - 1], block, blocks[i + 1], adapter))
    return out


def _gap(infos, i: int) -> str | None:
    """Why block i's neighbour is not its direct neighbour in the forward pass (None when both are)."""
    for role, j, info in (("previous", i - 1, infos[i]), ("next", i + 1, infos[i + 1])):
        if not info.chained:
            return (f"its {role} neighbour {infos[j].name} does not feed into it directly (other layers run "
                    "between them); pass adapter=True (--replace-adapter) to borrow across them")
    return None


def _resolve(model: nn.Module, ids: Iterable[int | str]) -> list[int]:
    """Block ids as 0-based positions in ``model.blocks`` (ints, block names, or digit strings)."""
    names = [info.name for info in model.block_info]
    out = []
    for raw in ids:
        key = raw.strip() if isinstance(raw, str) else raw
        if isinstance(key, str) and key in names:
            out.append(names.index(key))
            continue
        try:
            idx = int(key)
        except (TypeError, ValueError):
            raise ValueError(
                f"unknown block {raw!r}; give 0-based positions in model.blocks (0..{len(names) - 1}) "
                f"or block names such as {names[min(1, len(names) - 1)]!r}"
            ) from None
        if not 0 <= idx < len(names):
            raise ValueError(f"block {idx} is out of range; this model has blocks 0..{len(names) - 1}")
        out.append(idx)
    return sorted(set(out))


def select_blocks(
    model: nn.Module, interval: int | None = 2, ids: Iterable[int | str] | None = None, adapter: bool = False
) -> list[int]:
    """0-based positions in ``model.blocks`` to replace.

    Args:
        model: a block-list model (``blocks`` and ``block_info``), a classifier or a detector.
        interval: k >= 2, replace every k-th eligible block of each stage (ignored when ``ids`` is given).
        ids: explicit blocks (0-based positions or names: "s.l" for classifiers, "row.m.j" for detectors).
            Every one must be eligible and no two may be adjacent; otherwise a ``ValueError`` lists each
            offending block and why.
        adapter: relax condition (c) to "same names and ranks" (spec §2.4).
    """
    why = ineligibility(model, adapter)
    names = [info.name for info in model.block_info]
    if ids is not None:
        chosen = _resolve(model, ids)
        errors = [f"block {i} ({names[i]}): {why[i]}" for i in chosen if why[i]]
        errors += [
            f"blocks {i} ({names[i]}) and {j} ({names[j]}) are adjacent: two replaced blocks are never "
            "neighbours (spec §2.2); drop one of them"
            for i, j in zip(chosen, chosen[1:])
            if j == i + 1
        ]
        if errors:
            eligible = ", ".join(f"{i} ({names[i]})" for i, w in enumerate(why) if w is None) or "none"
            raise ValueError(
                "cannot replace the requested blocks:\n  "
                + "\n  ".join(errors)
                + f"\neligible blocks: {eligible}"
            )
        return chosen
    if interval is None or int(interval) < 2:
        raise ValueError(f"replace interval must be an integer >= 2 (spec §2.2), got {interval}")
    k = int(interval)
    chosen: list[int] = []
    stage_start: dict[int, int] = {}  # stage -> its first eligible position
    for i, info in enumerate(model.block_info):
        if why[i] is not None:
            continue
        first = stage_start.setdefault(info.stage, i)
        if (i - first) % k:
            continue
        neighbours_free = all(
            j not in chosen and not isinstance(model.blocks[j], ReplacedBlock) for j in (i - 1, i + 1)
        )
        if neighbours_free:
            chosen.append(i)
    return chosen
