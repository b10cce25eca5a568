"""Folder trees and archives of them: layout, labels, order, the decoded-array cache and every error."""

from __future__ import annotations

import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from leanvision.data import ArrayDataset, DatasetError, FolderDataset, build_dataset, build_loader


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANVISION_CACHE", str(tmp_path / "cache"))


def write_tree(root, size=8, per_class=3, classes=("cat", "dog", "eel"), splits=("train", "test"), seed=0):
    """PNG tree root/<split>/<class>/<i>.png; returns {relative path: (H, W, 3) uint8}."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(a).save(root / split / c / f"{i:04d}.png")
                pixels[f"{split}/{c}/{i:04d}.png"] = a
    return pixels


def make_tar(src, dest, arcname="tree"):
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(src, arcname=arcname)
    return dest


def test_folder_pixels_labels_and_order_round_trip(tmp_path):
    pixels = write_tree(tmp_path / "tree")
    ds = build_dataset(tmp_path / "tree", train=True)
    assert isinstance(ds, ArrayDataset) and ds.classes == ["cat", "dog", "eel"] and len(ds) == 9
    assert ds.paths == sorted(p for p in pixels if p.startswith("train/"))
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for i, p in enumerate(ds.paths):
        assert np.array_equal(ds.images[i].permute(1, 2, 0).numpy(), pixels[p])
    test = build_dataset(str(tmp_path / "tree"), train=False)
    assert test.paths[0] == "test/cat/0000.png" and len(test) == 9
    # Small images get the CIFAR recipe scaled to their size (pad = size/8, reflect, flip).
    assert ds.spec.crop == 8 and ds.spec.pad == 1 and ds.spec.pad_mode == "reflect" and ds.spec.flip


def test_archive_gives_the_same_dataset_as_the_folder(tmp_path):
    write_tree(tmp_path / "tree")
    archive = make_tar(tmp_path / "tree", tmp_path / "tree.tar.gz")  # wrapped in one top folder "tree/"
    a, b = build_dataset(tmp_path / "tree", train=False), build_dataset(archive, train=False)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.classes == b.classes
    assert b.paths[0] == "tree/test/cat/0000.png"
    sub = b.subset([4, 0])
    assert isinstance(sub, ArrayDataset) and sub.paths == [b.paths[4], b.paths[0]]
    assert torch.equal(sub.images[1], b.images[0]) and sub.spec == b.spec


def test_cache_is_reused_and_invalidated_by_a_changed_source(tmp_path):
    write_tree(tmp_path / "tree")
    archive = make_tar(tmp_path / "tree", tmp_path / "tree.tar.gz", arcname=".")
    cache = tmp_path / "mycache"
    first = build_dataset(archive, train=True, cache_dir=cache)
    entries = sorted(cache.glob("*.npz"))
    assert len(entries) == 1 and not list(cache.glob("*.tmp"))
    # A cached load must not read the archive: an entry holding its source's key is served as it is.
    stat = archive.stat()
    with np.load(entries[0]) as z:
        key = z["__cache_key__"]
    np.savez(entries[0], images=np.zeros_like(first.images.numpy()), labels=first.labels.numpy(),
             classes=np.asarray(first.classes), paths=np.asarray(first.paths), __cache_key__=key)
    assert int(build_dataset(archive, train=True, cache_dir=cache).images.max()) == 0
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # "edited": new key, decoded again
    again = build_dataset(archive, train=True, cache_dir=cache)
    assert torch.equal(again.images, first.images) and len(list(cache.glob("*.npz"))) == 2
    # An unreadable entry is rebuilt with a warning, not an error.
    for e in cache.glob("*.npz"):
        e.write_bytes(b"junk")
    with pytest.warns(UserWarning, match="unreadable"):
        assert torch.equal(build_dataset(archive, train=True, cache_dir=cache).images, first.images)


def test_single_split_tree_and_val_split(tmp_path):
    write_tree(tmp_path / "a", splits=("train", "val"))
    assert build_dataset(tmp_path / "a", train=False).paths[0] == "val/cat/0000.png"
    write_tree(tmp_path / "b" / "only", splits=("",))  # b/only/<class>/<image>: one wrapped split
    ds = build_dataset(tmp_path / "b", train=True)
    assert ds.classes == ["cat", "dog", "eel"] and len(ds) == 9


def test_large_images_stream_with_the_imagenet_recipe(tmp_path):
    write_tree(tmp_path / "big", size=80, per_class=2, classes=("a", "b"))
    ds = build_dataset(tmp_path / "big", train=True)
    assert isinstance(ds, FolderDataset) and len(ds) == 4 and ds.spec.crop == 224
    x, y = next(iter(build_loader(ds, batch_size=4, train=True, workers=0)))
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and y.tolist() == sorted(y.tolist())
    val = build_loader(build_dataset(tmp_path / "big", train=False), batch_size=3, train=False, workers=0)
    assert [tuple(b[0].shape) for b in val] == [(3, 3, 224, 224), (1, 3, 224, 224)]
    archive = make_tar(tmp_path / "big", tmp_path / "big.tar", arcname=".")
    streamed = build_dataset(archive, train=True)
    assert isinstance(streamed, FolderDataset) and streamed.subset([3]).paths == [streamed.paths[3]]
    assert streamed[0][0].size == (80, 80)
    # Override both ways.
    assert isinstance(build_dataset(tmp_path / "big", train=True, in_memory=True), ArrayDataset)
    small = build_dataset(tmp_path / "big", train=True, in_memory=False)
    assert isinstance(small, FolderDataset)


def test_wrong_layouts_each_say_what_to_do(tmp_path):
    write_tree(tmp_path / "t")
    (tmp_path / "t" / "train" / "fox").mkdir()
    with pytest.raises(DatasetError, match=r"class folder train/fox/ has no images.*remove it or add images"):
        build_dataset(tmp_path / "t")
    (tmp_path / "t" / "train" / "fox").rmdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "t" / "train" / "loose.png")
    with pytest.raises(DatasetError, match=r"image train/loose.png sits directly in train/; expected"):
        build_dataset(tmp_path / "t")
    (tmp_path / "t" / "train" / "loose.png").unlink()
    (tmp_path / "t" / "test" / "gnu").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "t" / "test" / "gnu" / "x.png")
    with pytest.raises(DatasetError, match=r"class folder test/gnu has no counterpart in train/"):
        build_dataset(tmp_path / "t", train=False)
    write_tree(tmp_path / "nt", splits=("train",))
    with pytest.raises(DatasetError, match=r"no val/ folder with images \(has train/\)"):
        build_dataset(tmp_path / "nt", train=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: no images"):
        build_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match=r"missing.tar.gz: not found"):
        build_dataset(tmp_path / "missing.tar.gz")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match=r"notes.txt: not a folder or a .tar/.tar.gz archive"):
        build_dataset(tmp_path / "notes.txt")


def test_corrupt_and_mismatched_images_are_named(tmp_path):
    write_tree(tmp_path / "t")
    bad = tmp_path / "t" / "train" / "dog" / "0001.png"
    bad.write_bytes(bad.read_bytes()[:30])
    with pytest.raises(DatasetError, match=r"train/dog/0001.png cannot be decoded.*delete or replace it"):
        build_dataset(tmp_path / "t", decode_workers=1)
    Image.new("RGB", (9, 8)).save(bad)
    with pytest.raises(DatasetError, match=r"0001.png is 9x8 but the first image is 8x8.*in_memory=False"):
        build_dataset(tmp_path / "t", decode_workers=1)
    archive = make_tar(tmp_path / "t", tmp_path / "t.tar.gz")
    (tmp_path / "cut.tar.gz").write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"cut.tar.gz: archive is truncated or damaged"):
        build_dataset(tmp_path / "cut.tar.gz")


def test_decoding_in_a_pool_matches_inline(tmp_path):
    write_tree(tmp_path / "t", per_class=400, classes=("a", "b", "c"), splits=("train",))  # > one 1024-chunk
    a = build_dataset(tmp_path / "t", decode_workers=2, cache_dir=tmp_path / "c1")
    b = build_dataset(tmp_path / "t", decode_workers=1, cache_dir=tmp_path / "c2")
    assert len(a) == 1200 and torch.equal(a.images, b.images)
