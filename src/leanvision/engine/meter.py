"""The resource meter: parameters, peak memory and step time, one implementation for train and bench.

Peak memory is measured where it is real:
- on CUDA, ``torch.cuda.max_memory_allocated`` over the measured steps (after warm-up);
- on CPU, which has no allocator statistics, the peak bytes of tensors saved for backward
  (tracked with saved-tensor hooks, each storage counted once while it is alive) plus the bytes
  of parameters, gradients and optimizer state. This is the quantity local learning and
  Replacement Learning change, so the CPU ratios are comparable to the GPU ones.

Beside it, :meth:`ResourceMeter.stats` reports the outside view, what ``top`` shows: the process's peak
resident memory (``VmHWM``) and that peak above the resident memory just after importing torch and
leanvision (:func:`leanvision.ops.memory.mark_import_rss`); on CUDA also ``max_memory_reserved``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from ..ops.counting import count_parameters  # noqa: F401  (re-exported: the meter's callers import it from here)
from ..ops.memory import import_rss_bytes, peak_rss_bytes
from ..ops.saved_tensors import SavedTensorMeter, state_bytes  # noqa: F401  (re-exported: callers import them here)


@dataclass
class StepStats:
    """What one measured window of training steps cost."""

    trainable_params: int
    total_params: int
    peak_memory_bytes: int
    activation_peak_bytes: int  # CPU: saved-for-backward peak; CUDA: 0 (included in the allocator peak)
    state_bytes: int  # params + buffers + grads + optimizer state
    ms_per_step: float
    images_per_s: float
    device: str
    memory_source: str  # "cuda.max_memory_allocated" or "saved-tensors+state"
    # The outside view (None where the platform does not tell): the process's peak resident memory so far,
    # the resident memory just after importing torch and leanvision, and the difference.
    peak_rss_bytes: int | None = None
    import_rss_bytes: int | None = None
    peak_rss_above_import_bytes: int | None = None
    cuda_max_reserved_bytes: int | None = None  # CUDA: torch.cuda.max_memory_reserved (allocator cache included)


def describe_memory(stats: StepStats) -> str:
    """One line for logs: the meter's peak and the process's peak above import, in MB."""
    mb = 2**20
    parts = [f"peak memory: meter {stats.peak_memory_bytes / mb:.1f} MB ({stats.memory_source})"]
    if stats.peak_rss_bytes is not None:
        above = (f", {stats.peak_rss_above_import_bytes / mb:.1f} MB above import"
                 if stats.peak_rss_above_import_bytes is not None else "")
        parts.append(f"process peak resident {stats.peak_rss_bytes / mb:.1f} MB{above}")
    if stats.cuda_max_reserved_bytes is not None:
        parts.append(f"CUDA max reserved {stats.cuda_max_reserved_bytes / mb:.1f} MB")
    return "; ".join(parts)


class ResourceMeter:
    """Measure a training loop: pass each step to :meth:`measure`.

    Steps fall into three phases: ``warmup`` steps are ignored (lazy optimizer state, allocator
    and autotuning warm-up); on CPU the next ``track_steps`` steps run under
    :class:`SavedTensorMeter` for the activation peak and are not timed (the hooks cost a little
    Python time); every later step is timed. On CUDA the peak is ``torch.cuda.max_memory_allocated``
    over all steps after warm-up and every step after warm-up is timed. State bytes (weights, buffers,
    gradients, optimizer state) are read on the tracked steps and the first timed one only: they are
    settled once every parameter has had its gradient and optimizer state, and reading them costs
    a walk over all tensors (about 1 % of a small detector's CPU step).

    Args:
        method: the method (or model) being trained, for parameter and state bytes.
        device: where training runs.
        warmup: initial steps left out of time and memory figures.
        track_steps: CPU steps measured for activation memory.
    """

    def __init__(self, method: nn.Module, device: torch.device | str, warmup: int = 2, track_steps: int = 2):
        self.method, self.device, self.warmup = method, torch.device(device), warmup
        self.track_steps = 0 if self.device.type == "cuda" else track_steps
        self.timed_steps = self.timed_images = 0
        self.seconds = 0.0
        self.activation_peak = 0
        self.state_peak = 0
        self._seen = 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def measure(self, fn, batch_size: int, optimizer: torch.optim.Optimizer | None = None):
        """Run ``fn()`` (one full training step, optimizer step included); returns its result."""
        phase = self._seen - self.warmup
        self._seen += 1
        if phase < 0:
            return fn()
        if phase == 0 and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        if phase < self.track_steps:
            with SavedTensorMeter(self.method) as m:
                out = fn()
            self.activation_peak = max(self.activation_peak, m.peak_bytes)
        else:
            self._sync()
            t0 = time.perf_counter()
            out = fn()
            self._sync()
            self.seconds += time.perf_counter() - t0
            self.timed_steps += 1
            self.timed_images += batch_size
        if phase <= self.track_steps:  # state (weights, grads, optimizer) is settled after the first steps
            self.state_peak = max(self.state_peak, sum(state_bytes(self.method, optimizer).values()))
        return out

    def stats(self) -> StepStats:
        cuda = self.device.type == "cuda"
        if cuda:
            peak = torch.cuda.max_memory_allocated(self.device) if self._seen > self.warmup else 0
        else:
            peak = self.activation_peak + self.state_peak
        rss, base = peak_rss_bytes(), import_rss_bytes()
        return StepStats(
            trainable_params=count_parameters(self.method, trainable_only=True),
            total_params=count_parameters(self.method),
            peak_memory_bytes=int(peak),
            activation_peak_bytes=int(self.activation_peak),
            state_bytes=int(self.state_peak),
            ms_per_step=1000 * self.seconds / self.timed_steps if self.timed_steps else float("nan"),
            images_per_s=self.timed_images / self.seconds if self.seconds else float("nan"),
            device=torch.cuda.get_device_name(self.device) if cuda else "cpu",
            memory_source="cuda.max_memory_allocated" if cuda else "saved-tensors+state",
            peak_rss_bytes=rss,
            import_rss_bytes=base,
            peak_rss_above_import_bytes=rss - base if rss is not None and base is not None else None,
            cuda_max_reserved_bytes=torch.cuda.max_memory_reserved(self.device) if cuda else None,
        )
