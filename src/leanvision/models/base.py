"""The one contract every classifier keeps: a stem, an ordered list of body blocks, a head.

Training methods work on this list only (E2E runs it, local learning cuts it into modules,
Replacement Learning swaps entries of it); they never look at the model's class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class BlockInfo:
    """What a method may need to know about one body block, without inspecting it.

    Attributes:
        name: "s.l" label, stage s (1-based) and block l (0-based) within the stage, as the
            papers' split tables write it (e.g. "2.0" is the first block of stage 2).
        stage: 1-based stage index.
        index: 0-based index within the stage.
        in_channels / out_channels: channel (or embedding) width in and out.
        stride: spatial stride of the block (1 for ViT blocks).
        transition: True where the block changes width or resolution (projection shortcut).
    """

    name: str
    stage: int
    index: int
    in_channels: int
    out_channels: int
    stride: int = 1
    transition: bool = False


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


def check_block_model(model: nn.Module) -> BlockModel:
    """Raise a clear error when ``model`` does not expose the stem/blocks/head contract."""
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
