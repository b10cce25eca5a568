"""Learning-rate schedules, as pure functions of (epoch, iteration) so that resume is exact.

Two rules, chosen by ``TrainConfig.lr_schedule``:

* ``cosine`` (the default, :class:`CosinePerIteration`): linear warm-up, then cosine decay, the LR set
  before every step. Every step, the last one included, trains with LR > 0.
* ``release`` (:class:`WarmupCosine`): the authors' released rule, the LR set once per epoch. It evaluates
  the cosine at the end of each epoch, so the last epoch trains with LR 0 (and a 1-epoch run learns
  nothing); kept, by name, to reproduce the published recipes.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "release")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """``lr`` in every parameter group, times the group's ``lr_scale`` (default 1)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


class WarmupCosine:
    """The released recipe's warm-up + cosine rule, with the LR set once per epoch (``lr_schedule: release``).

    For epoch e = 1..E (1-based) and base LR b, with W warm-up epochs:
      c(e) = 0.5·b·(1 + cos(π·e/E))
      lr(e) = c(e)·(e−1)/W + 0.01·(W+1−e)/W   for e ≤ W   (linear warm-up from 0.01)
      lr(e) = c(e)                             otherwise
    (spec local_learning §4.1; the issue's cifar10-short recipe is E=10, W=2, b=0.1.) Note lr(E) = 0.
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
        set_lr(optimizer, self.lr(epoch + 1))


class CosinePerIteration:
    """Linear warm-up then cosine decay, evaluated before every step (``lr_schedule: cosine``, the default).

    With n steps per epoch, T = E·n steps in all and Tw = W·n warm-up steps, step t = 0..T−1 trains with
      lr(t) = b·(t+1)/Tw                                  for t < Tw
      lr(t) = 0.5·b·(1 + cos(π·(t−Tw)/(T−Tw)))            otherwise
    so the first step after warm-up has b and the last, t = T−1, has 0.5·b·(1 + cos(π·(1 − 1/(T−Tw)))) > 0.

    Why per iteration rather than per epoch: every step has LR > 0 however few epochs there are (a
    1-epoch run still decays over its steps), and there is no jump at epoch boundaries. It depends on
    (epoch, iteration, steps per epoch) only, so a resumed run gets the same values.
    """

    def __init__(self, base_lr: float, epochs: int, warmup_epochs: int):
        self.base_lr, self.epochs, self.warmup = base_lr, epochs, warmup_epochs

    def lr(self, step: int, iters_per_epoch: int) -> float:
        """LR of 0-based global ``step`` with ``iters_per_epoch`` steps per epoch."""
        total, warm = self.epochs * iters_per_epoch, self.warmup * iters_per_epoch
        if step < warm:
            return self.base_lr * (step + 1) / warm
        return 0.5 * self.base_lr * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, it: int, iters_per_epoch: int) -> None:
        set_lr(optimizer, self.lr(epoch * iters_per_epoch + it, iters_per_epoch))


def build_schedule(name: str, base_lr: float, epochs: int, warmup_epochs: int):
    """The schedule called ``name`` (one of :data:`SCHEDULES`)."""
    if name == "cosine":
        return CosinePerIteration(base_lr, epochs, warmup_epochs)
    if name == "release":
        return WarmupCosine(base_lr, epochs, warmup_epochs)
    raise ValueError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
