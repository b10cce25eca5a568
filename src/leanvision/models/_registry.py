"""The classifier registry: named variants built by three-line entrypoints (the timm/torchvision shape).

One :class:`~leanvision.registry.Registry` holds them; detectors have their own in :mod:`.yolo`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import Registry

MODELS: Registry[nn.Module] = Registry("model")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; a second model of the same name is refused."""
    return MODELS.register(fn)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard, in natural order."""
    return MODELS.names(pattern)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model. Keyword arguments that are ``None`` mean "the model's default"."""
    return MODELS.create(name, **kwargs)
