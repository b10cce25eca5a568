"""Deprecated: box geometry moved to :mod:`leanvision.ops.boxes` (models and tasks both use it)."""

from leanvision._deprecated import moved_module

__getattr__, __dir__ = moved_module(__name__, "leanvision.ops.boxes")
