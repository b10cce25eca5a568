"""Deprecated: moved to :mod:`leanvision.detect.loss`."""

from leanvision._deprecated import moved_module

__getattr__, __dir__ = moved_module(__name__, "leanvision.detect.loss")
