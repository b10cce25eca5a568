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

import functools

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

    The first conv of the upsampled map is computed by :func:`upsample_conv3x3` (the same linear
    map, 2-8x cheaper); parameters and state dicts are those of the plain layer table.

    Shapes: (B, C, h, w) -> (B, 3, H, W) with (H, W) given at call time.
    """

    def __init__(self, channels: int, widen: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            *_cbr(channels, 12 * widen, 3, bias=True), nn.Conv2d(12 * widen, 3, 3, 1, 1)
        )

    def forward(self, h: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        conv, *rest = self.body  # no Sequential slice (a new module) per call on the training path
        h = upsample_conv3x3(h, conv.weight, conv.bias, tuple(size))
        for layer in rest:
            h = layer(h)
        return h


def upsample_conv3x3(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, size: tuple[int, int]
) -> torch.Tensor:
    """``conv2d(interpolate(x, size, bilinear, align_corners=True), weight, bias, padding=1)`` without
    building the upsampled C-channel map.

    Bilinear upsampling is x -> A x B^T per channel (A: H x h, B: W x w), and a 3x3 conv is a sum
    over its 9 taps of a channel mix followed by a shift by (dy-1, dx-1). Channel mixing commutes
    with A, B, and a shift of A x B^T is (S_dy A) x (S_dx B)^T with rows of A, B moved and zero
    rows at the border (the conv's zero padding at full size). So

        y[o] = sum_dy (S_dy A) [ sum_dx g[o, dy, dx] (S_dx B)^T ],  g = 1x1 conv of x with w[:, :, dy, dx],

    two batched matmuls after a low-resolution 1x1 conv: O(C * 9O * h*w + O * H*W * (3h + 3w))
    instead of O(C * 9O * H*W) multiply-adds, and no full-size C-channel tensor is stored.
    Exact up to float rounding (tests compare with the plain composition in float64).
    """
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):  # align_corners=True to the same size is the identity
        return F.conv2d(x, weight, bias, padding=1)
    n, (out_c, in_c) = x.shape[0], weight.shape[:2]
    height, width = size
    rows = _shifted_taps(h, height, x.dtype, x.device)  # (H, 3h)
    cols = _shifted_taps(w, width, x.dtype, x.device).t()  # (3w, W)
    g = F.conv2d(x, weight.permute(0, 2, 3, 1).reshape(out_c * 9, in_c, 1, 1))  # (n, O*3*3, h, w)
    g = g.reshape(n, out_c, 3, 3, h, w).transpose(3, 4).reshape(n, out_c, 3, h, 3 * w)
    y = rows @ (g @ cols).reshape(n, out_c, 3 * h, width)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


@functools.lru_cache(maxsize=64)
def _shifted_taps(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[S_0 M | S_1 M | S_2 M] for the align_corners=True interpolation matrix M (n_out x n_in):
    (S_d M)[p] = M[p + d - 1], zero where p + d - 1 falls outside (the conv's padding)."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    pos = torch.arange(n_out, dtype=torch.float64) * scale
    lo = pos.floor().long().clamp(max=n_in - 1)
    frac = pos - lo
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m[torch.arange(n_out), lo] += 1 - frac
    m[torch.arange(n_out), (lo + 1).clamp(max=n_in - 1)] += frac
    padded = F.pad(m, (0, 0, 1, 1))  # zero rows at -1 and n_out
    taps = torch.cat([padded[d : d + n_out] for d in range(3)], dim=1)
    return taps.to(device=device, dtype=dtype)
