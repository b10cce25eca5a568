"""The two writers of ``leanvision export``: ONNX (``torch.onnx.export``, the torch.export-based exporter) and
TorchScript (``torch.jit.trace``). Each writes one file atomically and stores a small JSON description (task,
class names, input size, what the input and output are) inside it: ONNX ``metadata_props``, TorchScript
``extra_files["leanvision.json"]``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ..config import ConfigError
from ..engine.checkpoint import atomic_write_bytes

METADATA_FILE = "leanvision.json"  # the TorchScript extra file with the description


def require_onnx() -> None:
    """ConfigError saying how to install them when the packages ONNX export needs are missing."""
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"--format onnx needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}: "
                          "pip install 'leanvision[export]' (onnx, onnxscript; onnxruntime to run the file)")


def write_onnx(module: nn.Module, example: torch.Tensor, path: str | Path, input_name: str, output_name: str,
               dynamic: dict[int, str] | None, metadata: dict, opset: int | None = None) -> Path:
    """Export ``module(example)`` to ONNX at ``path``.

    Args:
        module: in eval mode; one tensor in, one tensor out.
        example: an input of the shape to export (and, for the dynamic axes, a representative one).
        input_name, output_name: the graph's input and output names.
        dynamic: input axes that may vary, by index, with their names (e.g. ``{0: "batch"}``); None: all fixed.
        metadata: stored as the model's ``metadata_props`` (values as strings, lists and dicts as JSON).
        opset: the ONNX opset (None: the exporter's default).
    """
    require_onnx()
    shapes = ({axis: torch.export.Dim(name) for axis, name in dynamic.items()},) if dynamic else None
    with warnings.catch_warnings():  # the exporter's notes on its own internals are not the user's business
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, verbose=False, input_names=[input_name],
                                    output_names=[output_name], dynamic_shapes=shapes, opset_version=opset,
                                    external_data=False)
    proto = program.model_proto
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    atomic_write_bytes(path, proto.SerializeToString())
    return Path(path)


def write_torchscript(module: nn.Module, example: torch.Tensor, path: str | Path, metadata: dict) -> Path:
    """Trace ``module(example)`` (``torch.jit.trace``) and save it at ``path`` with ``metadata`` as JSON in the
    extra file ``leanvision.json``. PyTorch deprecates TorchScript in favour of torch.export; it still loads
    with ``torch.jit.load`` without leanvision, which is what this format is for."""
    with warnings.catch_warnings():  # the deprecation and the tracer's notes on shape-dependent Python values
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={METADATA_FILE: json.dumps(metadata)})
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
