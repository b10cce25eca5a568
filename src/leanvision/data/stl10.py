"""STL-10 in the official binary format (``stl10_binary/``), labelled splits only.

``train_X.bin`` / ``test_X.bin``: uint8, every image 3×96×96 with each channel stored column-major
(so it reads as (3, W, H) and is transposed); ``train_y.bin`` / ``test_y.bin``: one uint8 label
1..10 per image, mapped to 0..9; ``class_names.txt``: one name per line (optional).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import recipes
from .base import ArrayDataset, DatasetError, check_labels
from .files import read_release

CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
_IMAGE_BYTES = 3 * 96 * 96


def load_stl10(root: str | Path, train: bool = True) -> ArrayDataset:
    """STL-10 labelled split (5 000 train / 8 000 test, 96×96, 10 classes).

    Args:
        root: ``stl10_binary`` folder, its parent, or an archive of it.
        train: ``train_X.bin``/``train_y.bin``, else the test files.
    """
    split = "train" if train else "test"
    xname, yname = f"{split}_X.bin", f"{split}_y.bin"
    files = read_release(Path(root), "stl10_binary", [xname, yname], "STL-10 (binary)")
    with files[xname]() as f:
        raw = np.frombuffer(f.read(), dtype=np.uint8)
    if raw.size == 0 or raw.size % _IMAGE_BYTES:
        raise DatasetError(f"{root}/{xname}: {raw.size} bytes is not a multiple of 3*96*96 = {_IMAGE_BYTES}; "
                           f"the file is truncated or not STL-10, download it again")
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # column-major planes -> (N, 3, H, W)
    with files[yname]() as f:
        y = np.frombuffer(f.read(), dtype=np.uint8)
    if len(y) != len(images):
        raise DatasetError(f"{root}/{yname}: {len(y)} labels for {len(images)} images in {xname}; "
                           f"one of the two files is truncated, download them again")
    labels = check_labels(y, 10, f"{root}/{yname}", first=1)
    return ArrayDataset(np.ascontiguousarray(images), labels, CLASSES, recipes.STL10, "stl10", train)
