"""The two attention blocks GSO-YOLO adds to YOLOv8: GOM (before SPPF) and SCM (after SPPF).

GSO-YOLO (Zhang et al. 2024, arXiv 2407.00906) names a Global Optimization Module built on the
Global Attention Mechanism and a Steady Capture Module built on "EMA". The paper's text is not
available here, so both follow their upstream definitions (specs/gso_yolo.md §1.3):

- :class:`GOM` is GAM (Liu, Shao & Hoffmann 2021, arXiv 2112.05561).
- :class:`SCM` is Efficient Multi-scale Attention (Ouyang et al., ICASSP 2023, arXiv 2305.13563),
  read as an attention layer rather than a moving average because it sits in the layer table and the
  datasets are still images.

Both keep the input shape (B, C, H, W) and are not residual.
"""

from __future__ import annotations

import torch
from torch import nn


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups (ShuffleNet), so grouped convs can mix groups.

    Args:
        x: (B, C, H, W) with C divisible by ``groups``.
    """
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class GOM(nn.Module):
    """Global Optimization Module: the GAM block (arXiv 2112.05561), F3 = Ms(F2)·F2, F2 = Mc(F1)·F1.

    Channel attention Mc runs a two-layer MLP (C -> C/r -> C, ReLU) over each pixel's channel vector;
    spatial attention Ms is 7×7 conv C -> C/r, BN, ReLU, 7×7 conv C/r -> C, BN, sigmoid. There is no
    pooling anywhere (GAM drops it on purpose to keep the information) and no residual.

    Args:
        channels: C, in and out.
        reduction: r, the bottleneck ratio of both submodules (4 in GAM and every YOLO port).
        groups: groups of the two 7×7 convs. 1 (default) is the dense GAM used in the spec's cost
            estimate (~1.64 M params at C=256). GAM's ResNet-50 variant uses grouped convs with a channel
            shuffle to cut that cost; with ``groups > 1`` the hidden map is shuffled between the convs.
        channel_sigmoid: keep the sigmoid on the channel map (GAM's figure has it, the popular blog code
            drops it). Kept by default because it bounds the rescaling.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, reduction: int = 4, groups: int = 1, channel_sigmoid: bool = True):
        super().__init__()
        hidden = channels // reduction
        if hidden < 1 or channels % reduction:
            raise ValueError(f"GOM: channels={channels} must be a positive multiple of reduction={reduction}")
        if hidden % groups or channels % groups:
            raise ValueError(f"GOM: groups={groups} must divide channels={channels} and C/r={hidden}")
        self.groups = groups
        self.channel_sigmoid = channel_sigmoid
        self.channel_attention = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )
        self.spatial_in = nn.Sequential(
            nn.Conv2d(channels, hidden, 7, padding=3, groups=groups),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.spatial_out = nn.Sequential(
            nn.Conv2d(hidden, channels, 7, padding=3, groups=groups), nn.BatchNorm2d(channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mc = self.channel_attention(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, H, W)
        if self.channel_sigmoid:
            mc = mc.sigmoid()
        x = x * mc
        s = self.spatial_in(x)  # (B, C/r, H, W)
        if self.groups > 1:
            s = channel_shuffle(s, self.groups)
        return x * self.spatial_out(s).sigmoid()


class SCM(nn.Module):
    """Steady Capture Module: Efficient Multi-scale Attention (EMA, Ouyang et al. 2023, arXiv 2305.13563).

    Channels are split into G groups that share all weights, x_g: (B·G, C/G, H, W). A 1×1 branch pools
    along each axis, runs one shared 1×1 conv over the concatenated (H+W) strip and gates x_g by both
    directions before a per-channel GroupNorm; a 3×3 branch convolves x_g. Cross-spatial learning
    weights each branch's pixels by the other branch's softmaxed channel descriptor, W = a1·x2 + a2·x1,
    and the output is x_g·σ(W).

    Args:
        channels: C, in and out; must be divisible by ``groups``.
        groups: G. The official code defaults to 32; many YOLO ports, and this project (spec §1.3), use 8.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, groups: int = 8):
        super().__init__()
        assert channels % groups == 0, f"SCM: channels={channels} must be divisible by groups={groups}"
        self.groups = groups
        cg = channels // groups
        self.conv1x1 = nn.Conv2d(cg, cg, 1)
        self.conv3x3 = nn.Conv2d(cg, cg, 3, padding=1)
        self.gn = nn.GroupNorm(cg, cg)  # one group per channel: per-channel normalisation with affine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        xg = x.reshape(b * self.groups, c // self.groups, h, w)  # (BG, Cg, H, W)
        pool_h = xg.mean(dim=3, keepdim=True)  # (BG, Cg, H, 1)
        pool_w = xg.mean(dim=2, keepdim=True).transpose(2, 3)  # (BG, Cg, W, 1)
        hw = self.conv1x1(torch.cat([pool_h, pool_w], dim=2))  # (BG, Cg, H+W, 1)
        gate_h, gate_w = hw.split([h, w], dim=2)
        x1 = self.gn(xg * gate_h.sigmoid() * gate_w.transpose(2, 3).sigmoid())
        x2 = self.conv3x3(xg)
        a1 = x1.mean(dim=(2, 3)).softmax(dim=-1).unsqueeze(1)  # (BG, 1, Cg)
        a2 = x2.mean(dim=(2, 3)).softmax(dim=-1).unsqueeze(1)
        weights = a1 @ x2.flatten(2) + a2 @ x1.flatten(2)  # (BG, 1, H·W)
        return (xg * weights.view(-1, 1, h, w).sigmoid()).reshape(b, c, h, w)
