"""Classification data: official CIFAR-10/100, SVHN and STL-10 files, folder trees (or archives of
them), and the bundled offline default ("digits").

    ds = build_dataset("cifar10", train=True, root="~/data")            # cifar-10-batches-py
    ds = build_dataset("../shared/datasets/cifar10-jpg.tar.gz", train=False)
    loader = build_loader(ds, batch_size=128, train=True, device="cuda")
    for images, labels in loader: ...   # float32 (B, 3, H, W) normalised, int64 (B,), on the device
"""

from .augment import crop_flip, draw_params, normalize
from .base import ArrayDataset, DatasetError, DataSpec
from .cache import cache_root
from .folder import SMALL_MAX, FolderDataset
from .loader import InMemoryLoader, StreamingLoader, build_loader
from .recipes import small_folder_spec
from .registry import build_dataset, list_datasets

__all__ = [
    "ArrayDataset",
    "DataSpec",
    "DatasetError",
    "FolderDataset",
    "InMemoryLoader",
    "SMALL_MAX",
    "StreamingLoader",
    "build_dataset",
    "build_loader",
    "cache_root",
    "crop_flip",
    "draw_params",
    "list_datasets",
    "normalize",
    "small_folder_spec",
]
