"""Integration: a small subset of the shared CIFAR-10 JPEG archive (../shared/datasets/cifar10-jpg.tar.gz)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leanvision.data import ArrayDataset, build_dataset, build_loader

ARCHIVE = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "cifar10-jpg.tar.gz"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def subset_archive(tmp_path_factory):
    """The first 20 training and 5 test images of every class, re-packed as a .tar.gz (250 members)."""
    if not ARCHIVE.is_file():
        pytest.skip(f"{ARCHIVE} is not here")
    keep = {"train": 20, "test": 5}
    counts: dict[str, int] = {}
    out = tmp_path_factory.mktemp("cifar") / "cifar10-subset.tar.gz"
    with tarfile.open(ARCHIVE, "r|gz") as src, tarfile.open(out, "w:gz") as dst:
        for m in src:
            parts = m.name.split("/")
            if not m.isfile() or len(parts) != 3 or parts[0] not in keep:
                continue
            folder = "/".join(parts[:2])
            if counts.get(folder, 0) < keep[parts[0]]:
                counts[folder] = counts.get(folder, 0) + 1
                dst.addfile(m, src.extractfile(m))
            if len(counts) == 20 and all(counts[f] == keep[f.split("/")[0]] for f in counts):
                break
    return out


def test_cifar10_jpg_subset_loads_with_the_cifar_recipe(subset_archive, tmp_path):
    ds = build_dataset(subset_archive, train=True, cache_dir=tmp_path)
    assert isinstance(ds, ArrayDataset) and len(ds) == 200 and ds.classes == CLASSES
    assert ds.images.shape == (200, 3, 32, 32) and ds.labels.bincount().tolist() == [20] * 10
    assert ds.paths == sorted(ds.paths) and ds.paths[0].startswith("train/airplane/")
    assert ds.spec.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255))
    assert ds.spec.std == pytest.approx((63.0 / 255, 62.1 / 255, 66.7 / 255))
    assert (ds.spec.pad, ds.spec.pad_mode, ds.spec.crop, ds.spec.flip) == (4, "reflect", 32, True)
    # Pixels are exactly what PIL decodes from the member.
    with tarfile.open(subset_archive) as tf:
        raw = tf.extractfile(ds.paths[123]).read()
    want = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(ds.images[123].numpy(), want)
    assert ds.labels[123] == CLASSES.index(ds.paths[123].split("/")[1])
    # The bench's short recipe: a seeded subset of training indices in sorted-path order.
    idx = np.random.default_rng(0).permutation(len(ds))[:50]
    short = ds.subset(idx)
    assert short.paths == [ds.paths[i] for i in idx] and len(short) == 50

    test = build_dataset(subset_archive, train=False, cache_dir=tmp_path)
    assert len(test) == 50 and test.paths[0].startswith("test/airplane/")
    loader = build_loader(ds, batch_size=64, train=True, drop_last=True)
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    x, y = batches[0]
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(float(x.mean())) < 0.5  # normalised
    assert len(list(tmp_path.glob("*.npz"))) == 2  # one decoded cache entry per split
