"""ResNets as block lists: CIFAR-style ResNet-20/32/56/110 and ImageNet ResNet-18/34/50/101/152.

Both families reuse torchvision's ``BasicBlock`` and ``Bottleneck`` so the residual block has one
implementation; parameter names (``conv1``, ``bn1``, ``downsample.0``) match torchvision's.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from ._registry import register_model
from .base import BlockInfo, BlockModel


class ClassifierHead(nn.Sequential):
    """Global average pool -> flatten -> linear."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(in_features, num_classes))


def _make_stage(block: type, in_ch: int, width: int, depth: int, stride: int, stage: int):
    blocks, infos = [], []
    for i in range(depth):
        s = stride if i == 0 else 1
        out_ch = width * block.expansion
        downsample = None
        if s != 1 or in_ch != out_ch:
            downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, s, bias=False), nn.BatchNorm2d(out_ch))
        blocks.append(block(in_ch, width, s, downsample))
        infos.append(BlockInfo(f"{stage}.{i}", stage, i, in_ch, out_ch, s, downsample is not None))
        in_ch = out_ch
    return blocks, infos, in_ch


class ResNet(BlockModel):
    """A ResNet whose residual blocks form one flat ``blocks`` list.

    Args:
        block: ``BasicBlock`` or ``Bottleneck`` (torchvision's).
        layers: blocks per stage, e.g. ``(5, 5, 5)`` for CIFAR ResNet-32, ``(3, 4, 6, 3)`` for ResNet-34.
        widths: base width per stage (times ``block.expansion`` at the block output).
        num_classes: classifier outputs.
        cifar_stem: 3x3 stride-1 conv stem (CIFAR, 16 channels) instead of the 7x7/2 conv + max-pool.
        zero_init_residual: zero the last BN gamma of every residual branch (Goyal et al.).
    """

    def __init__(
        self,
        block: type,
        layers: tuple[int, ...],
        widths: tuple[int, ...],
        num_classes: int = 1000,
        cifar_stem: bool = False,
        zero_init_residual: bool = False,
        image_size: int | None = None,
    ):
        super().__init__()
        stem_ch = widths[0] if cifar_stem else 64
        if cifar_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(3, stem_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_ch), nn.ReLU(inplace=True)
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, stem_ch, 7, 2, 3, bias=False),
                nn.BatchNorm2d(stem_ch),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        blocks, self.block_info, ch = [], [], stem_ch
        for stage, (depth, width) in enumerate(zip(layers, widths), start=1):
            stride = 1 if stage == 1 else 2
            b, info, ch = _make_stage(block, ch, width, depth, stride, stage)
            blocks += b
            self.block_info += info
        self.blocks = nn.ModuleList(blocks)
        self.num_features = ch
        self.num_classes = num_classes
        self.image_size = image_size or (32 if cifar_stem else 224)
        self.head = ClassifierHead(ch, num_classes)
        self._init_weights(cifar_stem, zero_init_residual)

    def _init_weights(self, cifar_stem: bool, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if cifar_stem:  # N(0, 2/(k*k*C_out)), the init of the CIFAR ResNet code the papers use
                    n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                    nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for b in self.blocks:
                nn.init.zeros_((b.bn3 if isinstance(b, Bottleneck) else b.bn2).weight)

    @torch.no_grad()
    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = ClassifierHead(self.num_features, num_classes)


def _cifar_resnet(depth: int, num_classes: int = 10, **kwargs) -> ResNet:
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    return ResNet(BasicBlock, (n, n, n), (16, 32, 64), num_classes, cifar_stem=True, **kwargs)


@register_model
def resnet20(**kwargs) -> ResNet:
    """CIFAR ResNet-20 (3 stages of 3 basic blocks, widths 16/32/64)."""
    return _cifar_resnet(20, **kwargs)


@register_model
def resnet32(**kwargs) -> ResNet:
    """CIFAR ResNet-32 (3 stages of 5 basic blocks, widths 16/32/64), ~0.46 M parameters."""
    return _cifar_resnet(32, **kwargs)


@register_model
def resnet56(**kwargs) -> ResNet:
    """CIFAR ResNet-56 (3 stages of 9 basic blocks)."""
    return _cifar_resnet(56, **kwargs)


@register_model
def resnet110(**kwargs) -> ResNet:
    """CIFAR ResNet-110 (3 stages of 18 basic blocks), ~1.73 M parameters."""
    return _cifar_resnet(110, **kwargs)


def _imagenet_resnet(block: type, layers: tuple[int, ...], num_classes: int = 1000, **kwargs) -> ResNet:
    return ResNet(block, layers, (64, 128, 256, 512), num_classes, cifar_stem=False, **kwargs)


@register_model
def resnet18(**kwargs) -> ResNet:
    """ImageNet ResNet-18 (torchvision layout)."""
    return _imagenet_resnet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model
def resnet34(**kwargs) -> ResNet:
    """ImageNet ResNet-34, 21.8 M parameters."""
    return _imagenet_resnet(BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model
def resnet50(**kwargs) -> ResNet:
    """ImageNet ResNet-50, 25.6 M parameters."""
    return _imagenet_resnet(Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model
def resnet101(**kwargs) -> ResNet:
    """ImageNet ResNet-101, 44.5 M parameters."""
    return _imagenet_resnet(Bottleneck, (3, 4, 23, 3), **kwargs)


@register_model
def resnet152(**kwargs) -> ResNet:
    """ImageNet ResNet-152, 60.2 M parameters."""
    return _imagenet_resnet(Bottleneck, (3, 8, 36, 3), **kwargs)
