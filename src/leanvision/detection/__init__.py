"""Deprecated: moved to :mod:`leanvision.detect`."""

from leanvision._deprecated import moved_module

__getattr__, __dir__ = moved_module(__name__, "leanvision.detect")
