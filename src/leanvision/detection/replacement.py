"""Deprecated: Replacement Learning on a detector goes through the block-list seam now.

A detector's block list is its backbone's Bottlenecks (``DetectionModel.blocks`` / ``block_info``), so
:func:`leanvision.methods.replacement.apply_replacement` replaces them as it replaces a classifier's blocks,
with the same selection as this module had (every k-th eligible Bottleneck of each backbone C2f; the
first/last Bottleneck of a C2f only with ``adapter=True``). These names forward to it for one release and
warn; the report they return is the shared :class:`~leanvision.methods.replacement.ReplacementReport`
(replaced names in ``.names``, the options to save in ``.rebuild_options``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from torch import nn

from ..methods.replacement import ReplacementReport, apply_replacement, export_model, ineligibility
from ..methods.replacement import load_replaced_state as _load_replaced_state


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"leanvision.detection.replacement.{old} is deprecated; use {new} (the detector's backbone "
                  "Bottlenecks are its block list)", DeprecationWarning, stacklevel=3)


def apply_detector_replacement(model: nn.Module, interval: int | None = 2, adapter: bool = False,
                               ids: Iterable[str] | None = None, init: tuple[float, float] = (0.5, 0.5),
                               detach_neighbors: bool = False, convex: bool = False,
                               verbose: bool = True) -> ReplacementReport:
    """Deprecated: ``apply_replacement(model, interval, ids, ..., adapter=adapter, allow_none=False)``."""
    _deprecated("apply_detector_replacement", "leanvision.methods.replacement.apply_replacement")
    report = apply_replacement(model, interval, ids, init, detach_neighbors, convex, adapter, allow_none=False)
    if verbose:
        print(report)
    return report


def detector_candidates(model: nn.Module, adapter: bool = False) -> list[tuple[str, str | None]]:
    """Deprecated: (name, None if eligible else why) per backbone Bottleneck, from ``ineligibility``."""
    _deprecated("detector_candidates", "leanvision.methods.replacement.ineligibility")
    return [(info.name, why) for info, why in zip(model.block_info, ineligibility(model, adapter))]


def export_detector(model: nn.Module) -> nn.Module:
    """Deprecated: :func:`leanvision.methods.replacement.export_model`."""
    _deprecated("export_detector", "leanvision.methods.replacement.export_model")
    return export_model(model)


def load_replaced_state(model: nn.Module, state_dict: dict, options: dict) -> nn.Module:
    """Deprecated: :func:`leanvision.methods.replacement.load_replaced_state`."""
    _deprecated("load_replaced_state", "leanvision.methods.replacement.load_replaced_state")
    return _load_replaced_state(model, state_dict, options)
