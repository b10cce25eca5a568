"""Model registry: named variants built by three-line entrypoints (the timm/torchvision shape)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; a second model of the same name is refused."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard, in natural order."""
    return sorted((n for n in _MODELS if fnmatch.fnmatch(n, pattern)), key=_natural_key)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model. Keyword arguments that are ``None`` mean "the model's default"."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return _MODELS[name](**kwargs)
