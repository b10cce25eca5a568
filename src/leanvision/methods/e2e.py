"""End-to-end backpropagation: one forward, one backward, the baseline every method is compared to."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._registry import register_method
from .base import Backward, Method


class EndToEnd(Method):
    name = "e2e"

    def train_step(self, images: torch.Tensor, targets: torch.Tensor, backward: Backward) -> dict[str, torch.Tensor]:
        logits = self.model(images)
        loss = F.cross_entropy(logits, targets)
        backward(loss)
        return {"loss": loss.detach(), "logits": logits.detach()}


@register_method("e2e")
def e2e(model, **options) -> EndToEnd:
    if options:
        raise ValueError(f"method 'e2e' takes no options, got: {', '.join(options)}")
    return EndToEnd(model)
