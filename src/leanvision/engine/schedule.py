"""Learning-rate schedules, as pure functions of (epoch, iteration) so that resume is exact."""

from __future__ import annotations

import math

import torch


class WarmupCosine:
    """The released recipe's warm-up + cosine rule, with the LR set once per epoch.

    For epoch e = 1..E (1-based) and base LR b, with W warm-up epochs:
      c(e) = 0.5·b·(1 + cos(π·e/E))
      lr(e) = c(e)·(e−1)/W + 0.01·(W+1−e)/W   for e ≤ W   (linear warm-up from 0.01)
      lr(e) = c(e)                             otherwise
    (spec local_learning §4.1; the issue's cifar10-short recipe is E=10, W=2, b=0.1.)
    """

    def __init__(self, base_lr: float, epochs: int, warmup_epochs: int, warmup_start: float = 0.01):
        self.base_lr, self.epochs, self.warmup, self.start = base_lr, epochs, warmup_epochs, warmup_start

    def lr(self, epoch: int) -> float:
        """LR of 1-based ``epoch``."""
        c = 0.5 * self.base_lr * (1 + math.cos(math.pi * epoch / self.epochs))
        if epoch <= self.warmup:
            w = self.warmup
            return c * (epoch - 1) / w + self.start * (w + 1 - epoch) / w
        return c

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, it: int, iters_per_epoch: int) -> None:
        """Set the LR for 0-based ``epoch`` (constant within the epoch)."""
        lr = self.lr(epoch + 1)
        for g in optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
