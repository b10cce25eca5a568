"""Vision Transformers as block lists (stem = patch embedding + tokens, blocks = encoder blocks).

Parameter names and sizes follow timm's ``VisionTransformer`` (``qkv``, ``proj``, ``fc1``, ``fc2``,
``norm1``, ``norm2``), so ViT-B/16 at 224 px has 86.6 M parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .base import BlockInfo, BlockModel


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, N, head_dim)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchStem(nn.Module):
    """Image (B, 3, H, W) -> tokens (B, 1 + N, D): patch conv, class token, learned positions."""

    def __init__(self, image_size: int, patch_size: int, dim: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of patch size {patch_size}")
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (image_size // patch_size) ** 2 + 1, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos_embed


class TokenHead(nn.Module):
    """Final LayerNorm, class token, linear classifier."""

    def __init__(self, dim: int, num_classes: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x)[:, 0])


class VisionTransformer(BlockModel):
    """ViT classifier.

    Args:
        image_size: input side in pixels.
        patch_size: patch side (4 for 32 px, 8 for 96 px, 16 for 224 px in our registry).
        dim / depth / num_heads / mlp_ratio: encoder width, number of blocks, heads, MLP expansion.
        num_classes: classifier outputs.
    """

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
    ):
        super().__init__()
        self.stem = PatchStem(image_size, patch_size, dim)
        self.blocks = nn.ModuleList(EncoderBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.block_info = [BlockInfo(f"1.{i}", 1, i, dim, dim) for i in range(depth)]
        self.head = TokenHead(dim, num_classes)
        self.num_features, self.num_classes, self.image_size = dim, num_classes, image_size
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head.fc = nn.Linear(self.num_features, num_classes)


_SIZES = {
    "mini": (128, 6, 4), "tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)
}


def _vit(size: str, patch: int, image_size: int, num_classes: int, **kwargs) -> VisionTransformer:
    dim, depth, heads = _SIZES[size]
    args = dict(image_size=image_size, patch_size=patch, dim=dim, depth=depth, num_heads=heads)
    return VisionTransformer(**{**args, **kwargs}, num_classes=num_classes)


@register_model
def vit_mini_patch4_32(num_classes: int = 10, **kwargs) -> VisionTransformer:
    """ViT-Mini (128 wide, 6 blocks, 4 heads), patch 4 on 32 px images: our size for CPU budgets
    (about ResNet-32's FLOPs), not a published ViT."""
    return _vit("mini", 4, 32, num_classes, **kwargs)


@register_model
def vit_tiny_patch4_32(num_classes: int = 10, **kwargs) -> VisionTransformer:
    """ViT-Ti (192 wide, 12 blocks, 3 heads), patch 4 on 32 px images (64 tokens)."""
    return _vit("tiny", 4, 32, num_classes, **kwargs)


@register_model
def vit_small_patch4_32(num_classes: int = 10, **kwargs) -> VisionTransformer:
    """ViT-S (384 wide, 12 blocks, 6 heads), patch 4 on 32 px images."""
    return _vit("small", 4, 32, num_classes, **kwargs)


@register_model
def vit_base_patch4_32(num_classes: int = 10, **kwargs) -> VisionTransformer:
    """ViT-B (768 wide, 12 blocks, 12 heads), patch 4 on 32 px images."""
    return _vit("base", 4, 32, num_classes, **kwargs)


@register_model
def vit_tiny_patch8_96(num_classes: int = 10, **kwargs) -> VisionTransformer:
    """ViT-Ti, patch 8 on 96 px images (STL-10, 144 tokens)."""
    return _vit("tiny", 8, 96, num_classes, **kwargs)


@register_model
def vit_small_patch8_96(num_classes: int = 10, **kwargs) -> VisionTransformer:
    """ViT-S, patch 8 on 96 px images (STL-10)."""
    return _vit("small", 8, 96, num_classes, **kwargs)


@register_model
def vit_base_patch16_224(num_classes: int = 1000, **kwargs) -> VisionTransformer:
    """ViT-B/16 at 224 px, 86.6 M parameters."""
    return _vit("base", 16, 224, num_classes, **kwargs)


@register_model
def vit_large_patch16_224(num_classes: int = 1000, **kwargs) -> VisionTransformer:
    """ViT-L/16 at 224 px, 304 M parameters."""
    return _vit("large", 16, 224, num_classes, **kwargs)
