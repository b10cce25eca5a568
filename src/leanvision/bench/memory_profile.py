"""Memory over time within one training step, by module: ``leanvision bench ... --memory-profile OUT.png``.

After every PyTorch operation of one step (forward, backward, optimizer) the recorder reads the memory a
user sees (CPU: the process's resident memory; CUDA: ``torch.cuda.memory_allocated``) and the meter's view
(bytes saved for backward), and notes which part of the model is running: the local-learning module (or,
for other methods, the block) whose forward or backward last started. E2E's memory climbs through the
forward pass to one peak; local learning's rises and falls once per module (a saw-tooth).
"""

from __future__ import annotations

import gc
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..engine.plots import pyplot, save_figure
from ..ops.memory import import_rss_bytes, rss_bytes, trim_host_memory
from ..ops.saved_tensors import SavedTensorMeter


class _Recorder(TorchDispatchMode):
    """Sample (time, memory, saved bytes, group) after each dispatched operation."""

    def __init__(self, read, meter: SavedTensorMeter):
        super().__init__()
        self.read, self.meter = read, meter
        self.group = -1  # -1: before any block ran (data, stem)
        self.t0 = time.perf_counter()
        self.samples: list[tuple[float, int, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.samples.append((time.perf_counter() - self.t0, self.read(), self.meter.current, self.group))
        return out


def _groups(method) -> tuple[dict[int, int], list[str]]:
    """Block index (-1 = stem) -> group index, and the group names: local modules where the method has a
    split, else the blocks themselves."""
    split = getattr(method, "split", None)
    if split is not None and hasattr(split, "modules"):
        groups = {b: j for j, mod in enumerate(split.modules) for b in mod}
        return groups, [f"module {j}" for j in range(len(split.modules))]
    model = getattr(method, "model", method)
    n = len(model.blocks)
    return {-1: 0, **{i: i + 1 for i in range(n)}}, ["stem"] + [f"block {i}" for i in range(n)]


def profile_step(trainer, images: torch.Tensor, targets: torch.Tensor) -> dict:
    """Run one ``trainer.train_step`` and return its memory over time.

    Returns a dict of lists ``t`` (s from the step's start), ``memory`` (bytes above import on CPU, where
    the import baseline was marked, else above the step's start; allocated bytes on CUDA), ``saved``
    (bytes saved for backward, the meter's activations) and ``group`` (index into ``group_names``; -1
    before the first block), plus ``kind`` ("resident" or "cuda allocated").
    """
    method = trainer.method
    model = getattr(method, "model", method)
    groups, names = _groups(method)
    cuda = images.device.type == "cuda"
    if cuda:
        def read() -> int:
            return torch.cuda.memory_allocated(images.device)
        base = 0
    else:
        read = rss_bytes
        base = import_rss_bytes() or rss_bytes() or 0
    # Start from what is alive: freed pages of earlier steps (and of the FLOP-counted one) go back first, or a
    # method that does not trim (E2E) would show a flat line at its earlier high-water mark.
    gc.collect()
    trim_host_memory()
    handles = []
    with SavedTensorMeter(method) as meter:
        rec = _Recorder(read, meter)

        def enter(group: int):
            def set_group(*_):
                rec.group = group
            return set_group

        def on_output(group: int):
            def hook(_module, _inputs, output):
                fn = getattr(output, "grad_fn", None)
                if fn is not None:  # the gradient reaching this output starts this block's backward
                    fn.register_prehook(lambda grads: enter(group)())
            return hook

        pieces = [(-1, model.stem)] + list(enumerate(model.blocks))
        for b, piece in pieces:
            g = groups.get(b, 0)
            handles += [piece.register_forward_pre_hook(enter(g)), piece.register_forward_hook(on_output(g))]
        handles.append(trainer.optimizer.register_step_pre_hook(lambda *_: enter(len(names))()))
        try:
            with rec:
                trainer.train_step(images, targets)
        finally:
            for h in handles:
                h.remove()
    t, mem, saved, group = zip(*rec.samples) if rec.samples else ((), (), (), ())
    return {"t": list(t), "memory": [m - base for m in mem], "saved": list(saved), "group": list(group),
            "group_names": names + ["optimizer step"], "kind": "cuda allocated" if cuda else "resident"}


def plot_memory_profiles(profiles: list[tuple[str, dict]], path) -> None:
    """One panel per row (shared memory axis): memory over the step, coloured by module, and the bytes
    saved for backward beside it."""
    from matplotlib.collections import LineCollection

    plt = pyplot()

    mb = 2**20
    fig, axes = plt.subplots(len(profiles), 1, figsize=(9, 2.8 * len(profiles)), sharey=True, squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (label, p) in zip(axes[:, 0], profiles):
        t, mem = p["t"], [m / mb for m in p["memory"]]
        if len(t) > 1:
            segs = [[(t[i], mem[i]), (t[i + 1], mem[i + 1])] for i in range(len(t) - 1)]
            colors = [cmap(g % 10) if g >= 0 else (0.5, 0.5, 0.5, 1) for g in p["group"][1:]]
            ax.add_collection(LineCollection(segs, colors=colors, linewidths=1.6))
            ax.plot(t, [s / mb for s in p["saved"]], color="k", lw=0.8, ls=":",
                    label="saved for backward (the meter's activations)")
            ax.set_xlim(0, t[-1])
        peak = max(mem) if mem else 0
        ax.set_title(f"{label}: peak {peak:.0f} MB", fontsize=9)
        ax.set_ylabel(f"{p['kind']} MB" + (" above import" if p["kind"] == "resident" else ""), fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("seconds into one training step (colour: the module or block running)")
    ymax = max((max(p["memory"] + p["saved"], default=0) for _, p in profiles), default=0) / mb
    axes[0, 0].set_ylim(0, ymax * 1.05 or 1)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)  # written whole, then renamed: never a half-written plot
