"""Deprecated: the restricted unpickler moved to :mod:`leanvision.ops.plain_pickle` (the CIFAR reader and the
detector's weight import both use it)."""

from leanvision._deprecated import moved_module

__getattr__, __dir__ = moved_module(__name__, "leanvision.ops.plain_pickle")
