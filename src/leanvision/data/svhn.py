"""SVHN (cropped digits) in the official .mat format: ``train_32x32.mat``, ``test_32x32.mat``,
``extra_32x32.mat``.

Each file holds ``X`` of shape (32, 32, 3, N) uint8 and ``y`` of shape (N, 1) with labels 1..10,
where 10 means the digit 0; like torchvision we map 10 -> 0 so label i is digit i.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError

from . import recipes
from .base import ArrayDataset, DatasetError, check_labels
from .files import read_release

CLASSES = [str(d) for d in range(10)]


def _read_mat(opener, source: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with opener() as f:
            mat = scipy.io.loadmat(f, variable_names=["X", "y"])
    except NotImplementedError as e:  # MATLAB v7.3 (HDF5) files are not the official release
        raise DatasetError(f"{source}: MATLAB v7.3 file; expected the official SVHN v5 .mat "
                           f"(download train_32x32.mat again)") from e
    except (MatReadError, ValueError, TypeError, OSError, EOFError, KeyError, IndexError) as e:
        raise DatasetError(f"{source}: not a readable .mat file ({type(e).__name__}: {e}); the file is "
                           f"truncated or not SVHN format 2, download it again") from e
    missing = [k for k in ("X", "y") if k not in mat]
    if missing:
        with opener() as f:  # loadmat read only X and y; list what the file does hold
            keys = sorted(name for name, _, _ in scipy.io.whosmat(f))
        raise DatasetError(f"{source}: no variable {' or '.join(missing)} (has {keys}); expected SVHN "
                           f"cropped digits with X (32, 32, 3, N) and y (N, 1)")
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DatasetError(f"{source}: X is {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N)")
    y = np.asarray(y).reshape(-1)
    if len(y) != x.shape[3]:
        raise DatasetError(f"{source}: {x.shape[3]} images but {len(y)} labels")
    return x, y


def load_svhn(root: str | Path, train: bool = True, extra: bool = False) -> ArrayDataset:
    """SVHN cropped digits (73 257 train / 26 032 test / 531 131 extra, 32×32).

    Args:
        root: folder holding the .mat files (or an archive of them).
        train: ``train_32x32.mat`` (plus extra), else ``test_32x32.mat``.
        extra: also load ``extra_32x32.mat`` into the training split (not used by the spec's recipe).
    """
    names = (["train_32x32.mat"] + (["extra_32x32.mat"] if extra else [])) if train else ["test_32x32.mat"]
    files = read_release(Path(root), "svhn", names, "SVHN (format 2, cropped digits)")
    images, labels = [], []
    for n in names:
        source = f"{root}/{n}"
        x, y = _read_mat(files[n], source)
        # Official labels are 1..10 with 10 for digit 0: check that range, then map 10 -> 0.
        y = check_labels(y, 10, source, first=1) + 1
        y[y == 10] = 0
        images.append(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))  # (H, W, C, N) -> (N, C, H, W)
        labels.append(y)
    return ArrayDataset(np.concatenate(images), np.concatenate(labels), CLASSES, recipes.SVHN, "svhn", train)
