"""Training methods. Each registers itself by name; build one with :func:`create_method`."""

from . import e2e, local, replacement  # noqa: F401  (register e2e, the local methods and replacement)
from ._registry import create_method, list_methods, register_method
from .base import Method, no_weight_decay
from .e2e import EndToEnd
from .local import LocalLearning
from .replacement import ReplacementLearning, apply_replacement

__all__ = [
    "EndToEnd", "LocalLearning", "Method", "ReplacementLearning", "apply_replacement", "create_method",
    "list_methods", "no_weight_decay", "register_method",
]
