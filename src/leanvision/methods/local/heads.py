"""Auxiliary heads of local learning (spec §2): classifiers that turn a module's output into a
local loss, and InfoPro's reconstruction decoder.

Conv heads take feature maps (B, C, H, W); ViT blocks give tokens (B, N, D), for which every
classifier kind becomes :class:`TokenHead` (LayerNorm, mean over tokens, optional MLP, Linear).

Kinds:
    "linear"  GAP -> Linear: greedy SL ("0c1f") and the released DGL+MLAAN heads (§2.3).
    "1c2f"    InfoPro's auxiliary classifier, also the MLAAN repo's "DGL" head (§2.1, §2.2).
    "mlp_sr"  the official DGL CIFAR auxiliary net MLP-SR (§2.1).
    "dgl_mlp" the heavier head of MLAAN's deleted ``auxDGL.py`` (§2.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HEAD_KINDS = ("linear", "1c2f", "mlp_sr", "dgl_mlp")


def _cbr(cin: int, cout: int, k: int = 1, stride: int = 1, bias: bool = False) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class TokenHead(nn.Sequential):
    """Tokens (B, N, D) -> LayerNorm -> mean over tokens -> [Linear -> ReLU] -> Linear(out)."""

    def __init__(self, dim: int, out: int, hidden: int | None = None):
        mlp = (
            [nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out)]
            if hidden
            else [nn.Linear(dim, out)]
        )
        super().__init__(nn.LayerNorm(dim), _TokenMean(), *mlp)


class _TokenMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)


def infopro_1c2f(
    channels: int, out: int, final_width: int, widen: int = 1, feature_dim: int = 128
) -> nn.Sequential:
    """InfoPro's ``1c2f`` head: 3x3 conv -> BN -> ReLU -> GAP -> Linear -> ReLU -> Linear(out).

    The conv is C->2C with stride 2 below the final stage width (16->32, 32->64 on CIFAR) and C->C
    with stride 1 at it (64->64), as in the table of §2.2; wider ImageNet stages are capped at 256
    conv channels so a head stays far smaller than the blocks it trains (our choice).
    """
    final = channels >= final_width
    conv_out = min(channels if final else 2 * channels, 256) * widen
    return nn.Sequential(
        *_cbr(channels, conv_out, 3, 1 if final else 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(conv_out, feature_dim * widen),
        nn.ReLU(inplace=True),
        nn.Linear(feature_dim * widen, out),
    )


def mlp_sr(channels: int, size: int, out: int) -> nn.Sequential:
    """DGL's MLP-SR: pool to ceil(S/4), three 1x1 conv-BN-ReLU, pool to 2x2,
    three Linear-BN1d-ReLU, Linear."""
    c4 = 4 * channels
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(-(-size // 4))]
    for _ in range(3):
        layers += _cbr(channels, channels)
    layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(1)]
    for _ in range(3):
        layers += [nn.Linear(c4, c4), nn.BatchNorm1d(c4), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Linear(c4, out))


def dgl_mlp(channels: int, out: int, feature_dim: int = 128) -> nn.Sequential:
    """``auxDGL.py``: three 1x1 conv-BN-ReLU to ``feature_dim``, GAP,
    three Linear-BN1d-ReLU of 4x width, Linear."""
    d, d4 = feature_dim, 4 * feature_dim
    layers = [*_cbr(channels, d), *_cbr(d, d), *_cbr(d, d), nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    for cin in (d, d4, d4):
        layers += [nn.Linear(cin, d4), nn.BatchNorm1d(d4), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Linear(d4, out))


def make_head(
    kind: str, shape: tuple[int, ...], out: int, final_width: int, feature_dim: int = 128, widen: int = 1
):
    """Build a classifier head of ``kind`` for one feature shape (C, H, W) or tokens (N, D)."""
    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head {kind!r}; valid heads: {', '.join(HEAD_KINDS)}")
    if len(shape) == 2:  # tokens
        return TokenHead(shape[1], out, None if kind == "linear" else feature_dim * widen)
    c, h = shape[0], shape[1]
    if kind == "linear":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(c, out))
    if kind == "1c2f":
        return infopro_1c2f(c, out, final_width, widen, feature_dim)
    if kind == "mlp_sr":
        return mlp_sr(c, h, out)
    return dgl_mlp(c, out, feature_dim)


class Decoder(nn.Module):
    """InfoPro's decoder (§2.2): bilinear upsample to the image size, conv3x3 C->12w -> BN -> ReLU ->
    conv3x3 12w->3. Returns logits; the sigmoid is folded into the BCE-with-logits loss, which is
    the same function and safe under autocast.

    Shapes: (B, C, h, w) -> (B, 3, H, W) with (H, W) given at call time.
    """

    def __init__(self, channels: int, widen: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            *_cbr(channels, 12 * widen, 3, bias=True), nn.Conv2d(12 * widen, 3, 3, 1, 1)
        )

    def forward(self, h: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.body(F.interpolate(h, size=size, mode="bilinear", align_corners=True))
