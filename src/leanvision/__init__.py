"""leanvision: train vision models with less memory, fewer trainable parameters and less time than
end-to-end backpropagation (DGL, InfoPro, MLAAN; Replacement Learning), and detect hazards on
construction sites (YOLOv8, GSO-YOLO)."""

# The one place of the version: pyproject.toml reads it from here (dynamic = ["version"]), and so does the
# installed package's metadata.
__version__ = "0.1.0"


def load(path, device="cpu"):
    """The model of any leanvision checkpoint (classifier or detector) as a plain ``nn.Module`` in eval mode.

    See :func:`leanvision.export.load`; imported on first use, so that ``import leanvision`` stays light.
    """
    from .export import load as _load

    return _load(path, device)


__all__ = ["__version__", "load"]
