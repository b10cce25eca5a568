"""YOLOv8's learning-rate, momentum and gradient-accumulation schedule, as a pure function of (epoch, iteration).

Warm-up, per iteration over ``nw = max(round(w · iters_per_epoch), min_warmup_iters)`` iterations, where
``w = min(warmup_epochs, epochs − 1)`` so that at least the last epoch runs at the regular rate (as the
reference, ultralytics 8.4; ``min_warmup_iters`` is 100 in original YOLOv8, 0 in 8.4): the bias group's LR
falls linearly from ``warmup_bias_lr`` to ``lr0 · lf(epoch)``, every other group's rises from 0 to
``lr0 · lf(epoch)``, the momentum rises from ``warmup_momentum`` to ``momentum``, and the number of batches
summed per optimizer step rises from 1 to the nominal ``round(nbs / batch)`` (rounded to the nearest
integer, ties to even), so early training takes an optimizer step (and an EMA update) nearly every batch.
Afterwards ``lr = lr0 · lf(epoch)`` with the linear decay ``lf(e) = (1 − e/E)(1 − lrf) + lrf`` for 0-based
epoch e (set once per epoch, as v8's per-epoch LambdaLR). Nothing is stored between calls, so a resumed run
gets exactly the same values.
"""

from __future__ import annotations

import torch


class YoloSchedule:
    """Args: lr0, lrf, epochs (E), warmup_epochs, warmup_momentum, momentum, warmup_bias_lr, min_warmup_iters.

    Parameter groups with ``"warmup_bias": True`` get the bias warm-up; ``lr_scale`` in a group multiplies
    its LR (as in the foundation schedule).
    """

    def __init__(self, lr0: float = 0.01, lrf: float = 0.01, epochs: int = 100, warmup_epochs: float = 3.0,
                 warmup_momentum: float = 0.8, momentum: float = 0.937, warmup_bias_lr: float = 0.1,
                 min_warmup_iters: int = 100):
        self.lr0, self.lrf, self.epochs = lr0, lrf, epochs
        self.warmup_epochs, self.warmup_momentum, self.momentum = warmup_epochs, warmup_momentum, momentum
        self.warmup_bias_lr, self.min_warmup_iters = warmup_bias_lr, min_warmup_iters

    def lf(self, epoch: int) -> float:
        """LR factor of 0-based ``epoch``: 1 at epoch 0, ``lrf`` at epoch E."""
        return (1 - epoch / self.epochs) * (1.0 - self.lrf) + self.lrf

    def warmup_iters(self, iters_per_epoch: int) -> int:
        """Warm-up length in iterations; the warm-up never takes the last epoch (at most ``epochs − 1``)."""
        epochs = min(self.warmup_epochs, max(self.epochs - 1, 0))
        if epochs <= 0:
            return 0
        return max(round(epochs * iters_per_epoch), self.min_warmup_iters)

    def accumulate(self, epoch: int, it: int, iters_per_epoch: int, nominal: int) -> int:
        """Batches summed per optimizer step at 0-based ``epoch`` and iteration ``it``: ``nominal`` after the
        warm-up, ``round(1 + x · (nominal − 1))`` at the fraction ``x`` of it done (at least 1)."""
        nw = self.warmup_iters(iters_per_epoch)
        ni = epoch * iters_per_epoch + it
        if ni >= nw:
            return nominal
        return max(1, round(1 + ni / nw * (nominal - 1)))

    def values(self, epoch: int, it: int, iters_per_epoch: int) -> tuple[float, float, float]:
        """(bias-group LR, other-group LR, momentum) at 0-based ``epoch`` and iteration ``it``."""
        target = self.lr0 * self.lf(epoch)
        nw = self.warmup_iters(iters_per_epoch)
        ni = epoch * iters_per_epoch + it  # iterations done so far over the whole run
        if ni >= nw:
            return target, target, self.momentum
        x = ni / nw
        bias = self.warmup_bias_lr + x * (target - self.warmup_bias_lr)
        mom = self.warmup_momentum + x * (self.momentum - self.warmup_momentum)
        return bias, x * target, mom

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, it: int, iters_per_epoch: int) -> None:
        bias, other, mom = self.values(epoch, it, iters_per_epoch)
        for g in optimizer.param_groups:
            g["lr"] = (bias if g.get("warmup_bias") else other) * g.get("lr_scale", 1.0)
            if "momentum" in g:
                g["momentum"] = mom
