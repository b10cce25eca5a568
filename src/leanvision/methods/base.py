"""The contract between a training method and the trainer.

A method owns what happens to one training batch: the forward pass(es) and every backward pass.
The trainer owns everything around it: epochs, learning-rate schedule, the optimizer step,
gradient synchronisation across processes, evaluation, logging and checkpoints.

A method is an ``nn.Module`` so that its state (the model, auxiliary networks, EMA copies,
learnable mixing scalars) is saved and restored by one ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Backward = Callable[[torch.Tensor], None]


def no_weight_decay(param: nn.Parameter) -> nn.Parameter:
    """Mark ``param`` so that :meth:`Method.param_groups` puts it in the no-decay group."""
    param._no_weight_decay = True  # type: ignore[attr-defined]
    return param


class Method(nn.Module):
    """Base class of training methods.

    Subclasses implement :meth:`train_step`. ``self.model`` is the model being trained; its
    ``forward`` is what evaluation runs (see :meth:`inference_model`).
    """

    name: str = "method"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def train_step(self, images: torch.Tensor, targets, backward: Backward) -> dict[str, torch.Tensor]:
        """Run forward and all backward passes of one batch.

        Args:
            images: input batch, already on the device (and in channels_last if asked).
            targets: labels (``Tensor[B]`` for classification) or the task's target structure.
            backward: call ``backward(loss)`` instead of ``loss.backward()``; it applies the
                mixed-precision loss scaling.

        Returns:
            A dict with at least ``"loss"`` (a scalar for logging; detached is fine). A classifier
            also returns ``"logits"`` (``Tensor[B, classes]``) of its final output so the trainer
            can report training accuracy. Further entries are logged as named losses.
        """
        raise NotImplementedError

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Parameter groups for the optimizer: each trainable tensor exactly once.

        Tensors marked with :func:`no_weight_decay` go to a group with ``weight_decay=0``.
        """
        decay, no_decay, seen = [], [], set()
        for p in self.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if getattr(p, "_no_weight_decay", False) else decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    def recipe_defaults(self) -> dict:
        """Config fields (e.g. ``{"lr_schedule": "release"}``) this method sets where the user left them unset."""
        return {}

    def before_optimizer_step(self) -> None:
        """Called after all backward passes and gradient sync, before ``optimizer.step()``."""

    def after_optimizer_step(self) -> None:
        """Called right after ``optimizer.step()``."""

    def inference_model(self) -> nn.Module:
        """The network that evaluation runs (``self.model`` unless a method keeps e.g. an EMA)."""
        return self.model

    def export_model(self) -> nn.Module:
        """A plain model for deployment, loadable without the method's code."""
        return self.inference_model()

    def describe(self) -> str:
        """One line for logs: what the method does to the model."""
        return self.name
