"""InfoPro's local loss (spec §2.2): lambda1 * BCE(reconstruction) + lambda2 * task loss, with the
lambdas interpolated linearly over the module index."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# (ixx_1, ixy_1, ixx_2, ixy_2) from the InfoPro run script (Contrast mode), keyed by dataset,
# architecture and K. ResNet-32 K=15/16 and ResNet-110 K=54/55 follow AugLocal (§2.2).
LAMBDA_TABLE: dict[str, dict[str, dict[int, tuple[float, float, float, float]]]] = {
    "cifar10": {
        "resnet32": {
            2: (5, 1, 0, 0),
            4: (6, 0, 1, 2),
            8: (5, 0, 0, 2),
            15: (5, 0.05, 0.2, 0.5),
            16: (5, 0.05, 0.2, 0.5),
        },
        "resnet110": {
            2: (5, 0.5, 0, 0),
            4: (1, 0, 0, 1),
            8: (5, 0, 0, 1),
            16: (5, 0, 0.5, 1),
            54: (5, 0, 0.5, 1),
        },
    },
    "stl10": {
        "resnet110": {2: (10, 1, 0, 0), 4: (20, 0.2, 5, 2), 8: (20, 0.2, 5, 1), 16: (20, 0.5, 10, 0.1)}
    },
    "svhn": {"resnet110": {2: (1, 0.1, 0, 0), 4: (5, 0, 0.5, 1), 8: (5, 0, 0.5, 2), 16: (5, 0.2, 0.5, 1)}},
}
# Where no table entry exists: AugLocal's deep-split setting (§2.2), which keeps every module's
# reconstruction term and grows the task term with depth.
DEFAULT_LAMBDAS = (5.0, 0.0, 0.5, 1.0)


def lookup_lambdas(
    dataset: str | None, arch: str | None, key: int | None
) -> tuple[float, float, float, float] | None:
    """The published (ixx_1, ixy_1, ixx_2, ixy_2) for a dataset/architecture/code key, or None."""
    found = LAMBDA_TABLE.get(dataset or "", {}).get(arch or "", {}).get(key)
    return None if found is None else tuple(found)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is a half type, else unchanged: losses keep a float64 run exact."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def infopro_lambdas(
    index: int, num_modules: int, lambdas: tuple[float, float, float, float]
) -> tuple[float, float]:
    """(lambda1, lambda2) of the module at ``index`` (0..K-2): ratio = index / (K-2), 0 when K = 2.

    Pass the *module* index; the released InfoPro+MLAAN code passes the stage index (a bug, §3.3 C).
    """
    ixx_1, ixy_1, ixx_2, ixy_2 = lambdas
    ratio = index / (num_modules - 2) if num_modules > 2 else 0.0
    return ixx_1 * (1 - ratio) + ixx_2 * ratio, ixy_1 * (1 - ratio) + ixy_2 * ratio


def supcon_loss(
    features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07, base_temperature: float = 0.07
) -> torch.Tensor:
    """Supervised contrastive loss with one view (Khosla et al. 2020, as in InfoPro's ``losses.py``).

    Args:
        features: (B, D) projections; L2-normalised here.
        labels: (B,) class indices. An anchor's positives are the other samples with its label;
            anchors without a positive contribute 0 to the batch mean.
    """
    z = F.normalize(at_least_float32(features), dim=1)
    logits = z @ z.t() / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    mean_log_prob_pos = log_prob.masked_fill(~pos, 0.0).sum(1) / n_pos.clamp(min=1)
    return -(temperature / base_temperature) * mean_log_prob_pos.mean()


def reconstruction_loss(logits: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """BCE between sigmoid(decoder logits) and the un-normalised image in [0, 1], in at least float32."""
    logits = at_least_float32(logits)
    return F.binary_cross_entropy_with_logits(logits, image.to(logits.dtype))
