"""Registry of training methods, so that the CLI and bench build them by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import Registry
from .base import Method

METHODS: Registry[Method] = Registry("method")


def register_method(name: str) -> Callable[[Callable[..., Method]], Callable[..., Method]]:
    """Register a builder ``fn(model, **options) -> Method`` under ``name`` (refuses duplicates)."""
    return METHODS.register(name)


def list_methods() -> list[str]:
    return METHODS.names()


def create_method(name: str, model: nn.Module, **options) -> Method:
    """Build method ``name`` around ``model``. Options that are ``None`` mean "method default"."""
    return METHODS.create(name, model, **options)
