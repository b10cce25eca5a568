"""Per-dataset normalisation and training augmentation (specs/local_learning.md §4.1, §4.2).

Test-time transforms are "normalise only" for small images and "resize 256, centre crop 224" for
ImageNet-style trees.
"""

from __future__ import annotations

from .base import DataSpec

_CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
_CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
_HALF = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CIFAR10 = DataSpec(32, _CIFAR_MEAN, _CIFAR_STD, pad=4, pad_mode="reflect", crop=32, flip=True)
# The MLAAN/InfoPro code trains CIFAR-100 with the CIFAR-10 recipe and statistics.
CIFAR100 = CIFAR10
SVHN = DataSpec(32, _HALF, _HALF, pad=2, pad_mode="constant", crop=32, flip=False)
STL10 = DataSpec(96, _HALF, _HALF, pad=4, pad_mode="constant", crop=96, flip=True)
# Digits are not mirror-symmetric, so no flip; otherwise the SVHN recipe (also digits).
DIGITS = SVHN
IMAGENET = DataSpec(224, IMAGENET_MEAN, IMAGENET_STD, crop=224, flip=True, random_resized_crop=True,
                    resize=256)


def small_folder_spec(size: int) -> DataSpec:
    """Recipe of an in-memory folder tree of ``size``×``size`` images: the CIFAR-10 recipe scaled.

    Padding is size/8 (4 at 32 px, as CIFAR) with reflection, and the CIFAR-10 statistics are used
    as-is: at 32 px with 10 classes this is exactly the CIFAR-10 recipe (the shared cifar10-jpg
    archive), and for other natural-image sets they are close enough to natural-image statistics.
    Pass ``spec=`` to ``build_dataset`` to choose others.
    """
    return DataSpec(size, _CIFAR_MEAN, _CIFAR_STD, pad=max(size // 8, 1), pad_mode="reflect", crop=size,
                    flip=True)
