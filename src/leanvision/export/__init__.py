"""Use any leanvision checkpoint outside training: :func:`load` it as a plain module, or export it to ONNX or
TorchScript (``leanvision export``).

This package sits above both tasks (ARCHITECTURE.md, layer 5 beside ``bench/``): it reads classifier and
detector checkpoints alike and leaves each task's own code to rebuild its model.
"""

from .loader import LoadedModel, load, load_model

__all__ = ["LoadedModel", "load", "load_model"]
