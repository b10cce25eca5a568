"""The one contract every classifier keeps: a stem, an ordered list of body blocks, a head.

Training methods work on this list only (E2E runs it, local learning cuts it into modules,
Replacement Learning swaps entries of it); they never look at the model's class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class BlockInfo:
    """What a method may need to know about one body block, without inspecting it.

    Attributes:
        name: the label reports, ``--replace-blocks`` and split end points use. Classifiers write
            "s.l": stage s (1-based) and block l (0-based) within the stage, as the papers' split tables
            do (e.g. "2.0" is the first block of stage 2). A detector uses the block's state_dict path
            inside its layer table ("4.m.1": row 4's Bottleneck 1).
        stage: the block's stage (classifiers count from 1; a detector's is its feature level, P3 -> 3).
            Stages never decrease along the list.
        index: 0-based position within the stage.
        in_channels / out_channels: channel (or embedding) width in and out.
        stride: spatial stride of the block (1 for ViT blocks).
        transition: True where the block changes width or resolution (projection shortcut).
        chained: True when the block's input is the previous block's output. False where other layers sit
            between the two (in a detector's backbone, the strided Conv and the C2f convs between the
            Bottlenecks of two C2f rows): such neighbours are borrowed from only with the shape adapter.
    """

    name: str
    stage: int
    index: int
    in_channels: int
    out_channels: int
    stride: int = 1
    transition: bool = False
    chained: bool = True


class BlockSlots(Sequence):
    """A block list whose blocks live inside other modules: the seam for models that are not one chain.

    Entry i is ``owner[position]`` for the i-th (owner ``nn.ModuleList``, position) pair: reading gives that
    module and assigning swaps it in place, so a method that replaces ``blocks[i]`` changes the model itself,
    as it does with a classifier's ``nn.ModuleList``. The view registers nothing (the modules stay where the
    model keeps them, with their state_dict keys).

    Args:
        slots: (owner, position) per block, in forward order.
        where: one phrase that says where the blocks live and what runs between them; error messages of
            methods that need a chain quote it.
    """

    def __init__(self, slots: list[tuple[nn.ModuleList, int]], where: str):
        self._slots, self.where = list(slots), where

    def __len__(self) -> int:
        return len(self._slots)

    def __getitem__(self, i: int) -> nn.Module:
        owner, position = self._slots[i]
        return owner[position]

    def __setitem__(self, i: int, module: nn.Module) -> None:
        owner, position = self._slots[i]
        owner[position] = module

    def __repr__(self) -> str:
        return f"BlockSlots({len(self)} blocks: {self.where})"


class BlockModel(nn.Module):
    """Base class of block-list classifiers.

    Subclasses set ``stem`` (image -> first feature map), ``blocks`` (an ``nn.ModuleList`` run in
    order), ``head`` (last feature map -> logits, pooling included), ``num_features`` (head input
    width), ``block_info`` (one :class:`BlockInfo` per block), ``image_size`` and ``num_classes``.
    """

    stem: nn.Module
    blocks: nn.ModuleList
    head: nn.Module
    num_features: int
    block_info: list[BlockInfo]
    num_classes: int
    image_size: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def block_names(self) -> list[str]:
        return [b.name for b in self.block_info]


_HOW = ("subclass leanvision.models.BlockModel as the README's \"Use a method on your own model\" shows, "
        "or wrap a timm model with leanvision.models.from_timm")


class ContractError(TypeError):
    """A model does not expose what a method reads; the message lists each missing piece and how to add it."""


def _raise(model: nn.Module, needs: str, problems: list[str]) -> None:
    if problems:
        raise ContractError(f"{type(model).__name__} is not a block-list model that {needs} can use:\n  - "
                            + "\n  - ".join(problems) + f"\n({_HOW})")


def _block_list_problems(model: nn.Module) -> list[str]:
    """What Replacement Learning reads: ``blocks`` (indexed and assigned) and one BlockInfo per block."""
    name = type(model).__name__
    problems = []
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        problems.append("no `blocks`: set self.blocks = nn.ModuleList([...]) with the body blocks in the order "
                        "forward runs them")
    elif not isinstance(blocks, nn.ModuleList | BlockSlots):
        problems.append(f"{name}.blocks is a {type(blocks).__name__}, not an nn.ModuleList: write "
                        "self.blocks = nn.ModuleList(blocks) (methods index it and swap entries; a plain list "
                        "would also hide the blocks' parameters from the optimizer)")
    elif not len(blocks):
        problems.append(f"{name}.blocks is empty: put the body blocks in it")
    infos = getattr(model, "block_info", None)
    if infos is None:
        problems.append("no `block_info`: set self.block_info = [BlockInfo(name, stage, index, in_channels, "
                        "out_channels, stride, transition) for each block] (leanvision.models.BlockInfo)")
        return problems
    bad = [f"{i} ({type(b).__name__})" for i, b in enumerate(infos) if not isinstance(b, BlockInfo)]
    if bad:
        problems.append(f"block_info entries {', '.join(bad)} are not leanvision.models.BlockInfo")
        return problems
    if isinstance(blocks, nn.ModuleList | BlockSlots) and len(infos) != len(blocks):
        problems.append(f"block_info has {len(infos)} entries for {len(blocks)} blocks: give one BlockInfo per "
                        "block, in the same order")
    names = [b.name for b in infos]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        problems.append(f"block_info names {', '.join(map(repr, twice))} appear more than once: names must be "
                        "unique (--replace-blocks and split end points refer to blocks by name)")
    for i, b in enumerate(infos):
        ints = {"stage": b.stage, "index": b.index, "in_channels": b.in_channels, "out_channels": b.out_channels,
                "stride": b.stride}
        wrong = [f"{k}={v!r}" for k, v in ints.items() if not isinstance(v, int) or v < (0 if k == "index" else 1)]
        if wrong:
            problems.append(f"block_info[{i}] ({b.name}): {', '.join(wrong)}; stage, channels and stride are "
                            "positive integers, index a 0-based integer")
    return problems


def check_block_list(model: nn.Module) -> nn.Module:
    """Check what Replacement Learning reads: ``blocks`` and ``block_info`` (see :class:`BlockInfo`).

    Classifiers keep their blocks in an ``nn.ModuleList``; a detector exposes the Bottlenecks of its
    backbone as a :class:`BlockSlots` view. Returns ``model``; raises :class:`ContractError` (a
    ``TypeError``) listing every missing or malformed piece and how to add it.
    """
    _raise(model, "Replacement Learning", _block_list_problems(model))
    return model


def check_block_model(model: nn.Module) -> BlockModel:
    """Raise a clear error when ``model`` does not expose the stem/blocks/head contract."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, BlockSlots):
        _raise(model, "local learning", [
            f"{type(model).__name__}.blocks are not one chain run by forward in order but a view of blocks that "
            f"live inside other layers ({blocks.where}); local learning cuts a chain stem -> blocks -> head into "
            "gradient-isolated modules, which this model is not (Replacement Learning applies to it: "
            "leanvision.methods.replacement.apply_replacement)"])
    missing = [a for a in ("stem", "blocks", "head", "block_info") if not hasattr(model, a)]
    if missing or not isinstance(getattr(model, "blocks", None), nn.ModuleList):
        raise TypeError(
            f"{type(model).__name__} is not a block-list model (missing {', '.join(missing) or 'ModuleList blocks'}); "
            "build it with leanvision.models.create_model or wrap it with leanvision.models.from_timm"
        )
    if len(model.block_info) != len(model.blocks):
        n_info, n_blocks = len(model.block_info), len(model.blocks)
        raise TypeError(f"{type(model).__name__}: block_info has {n_info} entries for {n_blocks} blocks")
    return model  # type: ignore[return-value]
