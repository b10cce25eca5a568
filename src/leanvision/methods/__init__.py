"""Training methods. Each registers itself by name; build one with :func:`create_method`."""

from . import e2e  # noqa: F401  (registers "e2e")
from ._registry import create_method, list_methods, register_method
from .base import Method, no_weight_decay
from .e2e import EndToEnd

__all__ = ["EndToEnd", "Method", "create_method", "list_methods", "no_weight_decay", "register_method"]
