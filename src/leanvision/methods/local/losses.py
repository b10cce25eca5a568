"""Local loss modules: each maps a module output (and the batch) to one scalar loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .infopro import reconstruction_loss, supcon_loss


class ClassifierLoss(nn.Module):
    """Cross-entropy of an auxiliary classifier (DGL, greedy SL, MLAAN's linear heads)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, h: torch.Tensor, targets: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        return F.cross_entropy(self.head(h), targets)


class InfoProLoss(nn.Module):
    """lambda1 * BCE(decoder(h), image) + lambda2 * task(classifier(h)) (spec §2.2).

    Terms whose lambda is 0 are skipped (their value and gradient are 0 anyway), and their
    networks are not built.

    Args:
        decoder: :class:`~.heads.Decoder` or None when lambda1 == 0.
        classifier: head giving logits ("softmax") or 128-d projections ("contrast"), or None.
        lam1 / lam2: the module's interpolated weights.
        mode: "softmax" (cross-entropy) or "contrast" (SupCon, temperature 0.07).
    """

    def __init__(
        self, decoder: nn.Module | None, classifier: nn.Module | None, lam1: float, lam2: float, mode: str
    ):
        super().__init__()
        self.decoder, self.classifier = decoder, classifier
        self.lam1, self.lam2, self.mode = float(lam1), float(lam2), mode

    def forward(self, h: torch.Tensor, targets: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        loss = h.new_zeros((), dtype=torch.float32 if h.dtype in (torch.float16, torch.bfloat16) else h.dtype)
        if self.decoder is not None:
            loss = loss + self.lam1 * reconstruction_loss(self.decoder(h, image.shape[-2:]), image)
        if self.classifier is not None:
            out = self.classifier(h)
            task = supcon_loss(out, targets) if self.mode == "contrast" else F.cross_entropy(out, targets)
            loss = loss + self.lam2 * task
        return loss

    def extra_repr(self) -> str:
        return f"lam1={self.lam1:.4g}, lam2={self.lam2:.4g}, mode={self.mode}"
