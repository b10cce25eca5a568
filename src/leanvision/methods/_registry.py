"""Registry of training methods, so that the CLI and bench build them by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .base import Method

_METHODS: dict[str, Callable[..., Method]] = {}


def register_method(name: str) -> Callable[[Callable[..., Method]], Callable[..., Method]]:
    """Register a builder ``fn(model, **options) -> Method`` under ``name`` (refuses duplicates)."""

    def deco(fn: Callable[..., Method]) -> Callable[..., Method]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is already registered")
        _METHODS[name] = fn
        return fn

    return deco


def list_methods() -> list[str]:
    return sorted(_METHODS)


def create_method(name: str, model: nn.Module, **options) -> Method:
    """Build method ``name`` around ``model``. Options that are ``None`` mean "method default"."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(list_methods())}")
    return _METHODS[name](model, **{k: v for k, v in options.items() if v is not None})
