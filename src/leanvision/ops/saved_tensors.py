"""Bytes of tensors: module and optimizer state, and the peak of tensors saved for backward.

Layer 0, so that a method (the memory-balanced split of local learning) and the engine's resource meter
measure with the same code.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def state_bytes(module: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes held by parameters, buffers, gradients and optimizer state (each tensor once)."""
    params = {id(p): p for p in module.parameters()}
    out = {
        "params": sum(_nbytes(p) for p in params.values()),
        "buffers": sum(_nbytes(b) for b in module.buffers()),
        "grads": sum(_nbytes(p.grad) for p in params.values() if p.grad is not None),
        "optimizer": 0,
    }
    if optimizer is not None:
        for st in optimizer.state.values():
            out["optimizer"] += sum(_nbytes(v) for v in st.values() if torch.is_tensor(v) and v.dim() > 0)
    return out


class _Saved:
    """Stand-in that autograd keeps instead of the saved tensor; releases its bytes when freed."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


class SavedTensorMeter:
    """Track the peak bytes of tensors alive for backward inside a ``with`` block.

    Storages are counted once however many graph nodes save them (a ReLU output saved by the
    next conv is the same memory). Parameters saved by a layer are not activations and are
    excluded (they are counted in :func:`state_bytes`).

    Example::

        with SavedTensorMeter() as m:
            loss = model(x).sum(); loss.backward()
        m.peak_bytes
    """

    def __init__(self, exclude: nn.Module | None = None):
        self.current = 0
        self.peak_bytes = 0
        self._refs: dict[int, list] = {}  # storage key -> [bytes, live count]
        # Parameters are often saved as views (``weight.t()``), so exclude them by storage.
        self._exclude = {p.untyped_storage().data_ptr() for p in exclude.parameters()} if exclude is not None else set()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _release(self, key: int) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._refs[key]

    def _pack(self, t: torch.Tensor):
        if isinstance(t, nn.Parameter) or t.device.type == "meta":
            return t
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self._exclude:
            return t
        entry = self._refs.get(key)
        if entry is None:
            nbytes = storage.nbytes()
            self._refs[key] = [nbytes, 1]
            self.current += nbytes
            self.peak_bytes = max(self.peak_bytes, self.current)
        else:
            entry[1] += 1
        box = _Saved(t)
        weakref.finalize(box, self._release, key)
        return box

    @staticmethod
    def _unpack(box):
        return box.tensor if isinstance(box, _Saved) else box

    def __enter__(self) -> SavedTensorMeter:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
