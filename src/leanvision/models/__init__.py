"""Block-list classifiers (registry :func:`list_models`) and detectors (:mod:`.yolo`, :func:`list_detectors`)."""

from . import resnet, vit  # noqa: F401  (registers the entrypoints)
from ._registry import create_model as _create_registered
from ._registry import list_models, register_model
from .base import BlockInfo, BlockModel, BlockSlots, ContractError, check_block_list, check_block_model
from .resnet import ResNet
from .timm_adapter import TimmBlockModel, from_timm, list_timm_models
from .vit import VisionTransformer
from .yolo import DetectionModel, create_detector, list_detectors, register_detector

__all__ = [
    "BlockInfo", "BlockModel", "BlockSlots", "ContractError", "DetectionModel", "ResNet", "TimmBlockModel",
    "VisionTransformer", "check_block_list", "check_block_model", "create_detector", "create_model", "from_timm",
    "list_timm_models",
    "list_detectors", "list_models", "register_detector", "register_model",
]


def create_model(name: str, **kwargs):
    """Build a registered model, or a timm model wrapped as a block list with ``timm/<name>``."""
    if name.startswith("timm/"):
        return from_timm(name.removeprefix("timm/"), **{k: v for k, v in kwargs.items() if v is not None})
    return _create_registered(name, **kwargs)
