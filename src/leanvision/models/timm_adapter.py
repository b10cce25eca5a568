"""Expose timm ResNets and ViTs through the block-list contract, so every method applies to them.

timm is optional: ``pip install leanvision[timm]``. The adapter does not copy weights; the stem,
blocks and head are the timm model's own modules, so a pretrained timm checkpoint loaded into
the timm model before wrapping stays in effect.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..ops.atomic import atomic_write_text
from .base import BlockInfo, BlockModel


class _TimmResNetStem(nn.Module):
    def __init__(self, m: nn.Module):
        super().__init__()
        self.conv1, self.bn1, self.act1, self.maxpool = m.conv1, m.bn1, m.act1, m.maxpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.act1(self.bn1(self.conv1(x))))


class _TimmResNetHead(nn.Module):
    def __init__(self, m: nn.Module):
        super().__init__()
        self.global_pool, self.fc = m.global_pool, m.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.global_pool(x))


class _TimmViTStem(nn.Module):
    def __init__(self, m: nn.Module):
        super().__init__()
        self.vit = [m]  # a list keeps the parent out of this module's children (no duplicate params)
        self.patch_embed, self.norm_pre = m.patch_embed, m.norm_pre
        self.pos_drop, self.patch_drop = m.pos_drop, m.patch_drop
        for name, p in m.named_parameters(recurse=False):  # cls_token, pos_embed, reg_token: same tensors
            self.register_parameter(name, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.vit[0]._pos_embed(self.patch_embed(x))
        return self.norm_pre(self.patch_drop(x))


class _TimmViTHead(nn.Module):
    def __init__(self, m: nn.Module):
        super().__init__()
        self.vit = [m]
        self.norm, self.fc_norm, self.head_drop, self.head = m.norm, m.fc_norm, m.head_drop, m.head
        self.attn_pool = getattr(m, "attn_pool", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit[0].forward_head(self.norm(x))


class TimmBlockModel(BlockModel):
    """A timm ResNet or VisionTransformer seen as stem / blocks / head."""

    def __init__(self, m: nn.Module, image_size: int):
        super().__init__()
        self.num_classes = m.num_classes
        self.num_features = m.num_features
        self.image_size = image_size
        if hasattr(m, "layer1") and hasattr(m, "conv1"):  # timm.models.resnet.ResNet
            self.stem, self.head = _TimmResNetStem(m), _TimmResNetHead(m)
            blocks, infos = [], []
            for s in range(1, 5):
                for i, b in enumerate(getattr(m, f"layer{s}")):
                    down = getattr(b, "downsample", None) is not None
                    cin = b.conv1.in_channels
                    cout = (b.conv3 if hasattr(b, "conv3") else b.conv2).out_channels
                    stride = b.conv2.stride[0] if hasattr(b, "conv3") else b.conv1.stride[0]
                    aa = getattr(b, "aa", None)  # anti-aliased variants (resnetblur, resnetaa) stride in a pool
                    if aa is not None and not isinstance(aa, nn.Identity):
                        aa_stride = getattr(aa, "stride", 1)
                        stride = max(stride, aa_stride[0] if isinstance(aa_stride, tuple | list) else int(aa_stride))
                    infos.append(BlockInfo(f"{s}.{i}", s, i, cin, cout, stride, down))
                    blocks.append(b)
        elif hasattr(m, "blocks") and hasattr(m, "patch_embed"):  # timm VisionTransformer
            self.stem, self.head = _TimmViTStem(m), _TimmViTHead(m)
            blocks = list(m.blocks)
            infos = [BlockInfo(f"1.{i}", 1, i, m.embed_dim, m.embed_dim) for i in range(len(blocks))]
        else:
            raise TypeError(f"timm model {type(m).__name__} is neither a ResNet nor a VisionTransformer")
        self.blocks = nn.ModuleList(blocks)
        self.block_info = infos


def from_timm(name: str, num_classes: int = 1000, pretrained: bool = False, **kwargs) -> TimmBlockModel:
    """Create timm model ``name`` and wrap it as a block-list model.

    ``pretrained=True`` only works where the weights are already in the local cache (no network).
    """
    try:
        import timm
    except ImportError as e:  # pragma: no cover - exercised only without timm
        raise ImportError("timm models need timm: pip install 'leanvision[timm]'") from e
    m = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    size = m.pretrained_cfg.get("input_size", (3, 224, 224))[-1] if hasattr(m, "pretrained_cfg") else 224
    return TimmBlockModel(m, kwargs.get("img_size", size))


# the timm modules whose models the adapter wraps: every entrypoint there builds a timm ResNet or VisionTransformer
TIMM_MODULES = ("resnet", "vision_transformer")


def timm_check_problem(name: str) -> str | None:
    """Why ``timm/<name>`` fails leanvision's block-list check, in one line; None when it passes.

    The check is :func:`check_block_model` with its probe (a forward through stem -> blocks -> head that
    compares every block's channels and stride with its ``block_info`` and the head's output with
    ``num_classes``) on the model :func:`from_timm` builds, at the model's own input size. The model is built
    on the meta device: tensors with shapes and no data, so the probe checks every shape without memory or
    arithmetic (a ViT-gigantic costs about a second, not minutes). ViTs skip timm's weight init
    (``weight_init="skip"``, a timm option): on the meta device it would only fill values that do not exist.
    """
    from timm.models import is_model_in_modules

    from .base import check_block_model

    kwargs = {"weight_init": "skip"} if is_model_in_modules(name, ["vision_transformer"]) else {}
    try:
        with torch.device("meta"):
            model = from_timm(name, num_classes=10, **kwargs)
        check_block_model(model)
    except Exception as e:  # anything that stops the model from being built or checked fails the check
        text = " ".join(str(e).split()) or type(e).__name__
        return text if len(text) <= 300 else text[:297] + "..."
    return None


def _check_key() -> str:
    """What the check's outcome depends on: timm's and torch's versions and the source of the adapter and check."""
    import timm

    from . import base

    h = hashlib.sha1()
    for path in (__file__, base.__file__):
        h.update(Path(path).read_bytes())
    return f"timm {timm.__version__} | torch {torch.__version__} | code {h.hexdigest()[:16]}"


def _read_cache(path: Path, key: str) -> dict[str, str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("results"), dict):
        return {}  # another timm, torch or leanvision: check again
    return data["results"]


def _write_cache(path: Path, key: str, results: dict[str, str | None]) -> None:
    try:
        atomic_write_text(path, json.dumps({"key": key, "results": results}, indent=0, sort_keys=True))
    except OSError as e:  # a read-only disk costs time on the next listing, not correctness
        warnings.warn(f"could not write {path} ({e}); the timm models will be checked again next time", stacklevel=3)


def list_timm_models(pattern: str = "*", check: bool = True, cache_file: str | os.PathLike | None = None,
                     progress: Callable | None = None) -> list[str]:
    """``timm/<name>`` for the timm models :func:`from_timm` wraps (timm's ResNet and ViT families) that match the
    shell-style ``pattern`` and pass the block-list check (:func:`timm_check_problem`); empty when timm is not
    installed.

    Args:
        pattern: e.g. ``"resnet*"`` or ``"timm/vit_*"``.
        check: False lists timm's names without checking them.
        cache_file: a JSON file keeping each name's outcome, valid for one timm version, torch version and
            version of the adapter and check code (any change checks again). None: check every time (about a
            second per name on one CPU core).
        progress: wraps the iterable of names still to check (``progress(names, total=n)``), e.g. a progress bar.
    """
    try:
        import timm
    except ImportError:
        return []
    pattern = pattern.removeprefix("timm/")
    names = sorted({n for m in TIMM_MODULES for n in timm.list_models(pattern, module=m)})
    if not check:
        return [f"timm/{n}" for n in names]
    key = _check_key()
    path = Path(cache_file) if cache_file is not None else None
    results = _read_cache(path, key) if path is not None else {}
    todo = [n for n in names if n not in results]
    try:
        for n in (progress(todo, total=len(todo)) if progress and todo else todo):
            results[n] = timm_check_problem(n)
    finally:  # an interrupted first listing keeps what it checked
        if path is not None and todo:
            _write_cache(path, key, results)
    return [f"timm/{n}" for n in names if results.get(n, "") is None]
