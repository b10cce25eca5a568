"""The bundled offline default: scikit-learn's digits as 32×32 RGB images.

scikit-learn ships 1 797 handwritten digits of 8×8 pixels with values 0..16 (10 classes). We scale
them to 0..255, upsample ×4 bilinearly to 32×32 and repeat the grey channel three times, so every
CIFAR-sized model runs on them unchanged.

Split (deterministic): ``sklearn.model_selection.train_test_split(test_size=360, stratify=labels,
random_state=0)`` -> 1 437 training and 360 test images, every class in the same proportion in both.
Recipe: the SVHN one (zero-pad 2, random crop 32, no flip since digits are not mirror-symmetric,
mean = std = 0.5).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import recipes
from .base import ArrayDataset

_cache: dict[str, np.ndarray] = {}


def _load_once() -> None:
    """Decode and split once per process; both splits come from the same arrays."""
    if not _cache:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        d = load_digits()
        x = torch.from_numpy(d.images.astype(np.float32) * (255.0 / 16.0))[:, None]  # (N, 1, 8, 8)
        x = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)  # (N, 1, 32, 32)
        x = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
        train_idx, test_idx = train_test_split(np.arange(len(d.target)), test_size=360, stratify=d.target,
                                               random_state=0)
        _cache.update(images=x.numpy(), labels=d.target.astype(np.int64), train=np.sort(train_idx),
                      test=np.sort(test_idx))


def load_digits32(train: bool = True) -> ArrayDataset:
    """scikit-learn digits, 32×32 RGB uint8; 1 437 training or 360 test images (see module docstring).

    Args:
        train: training split, else test split.
    """
    _load_once()
    idx = _cache["train" if train else "test"]
    return ArrayDataset(_cache["images"][idx], _cache["labels"][idx], [str(d) for d in range(10)],
                        recipes.DIGITS, "digits", train)
