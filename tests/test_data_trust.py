"""Classification folder trees that try to fool the reader (issue 12, items 7 and 9): symlink loops and
aliases, caches of another dataset, one class, file names that are not UTF-8."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from leanvision.cli import main
from leanvision.data import DatasetError, build_dataset


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANVISION_CACHE", str(tmp_path / "cache"))


def write_bmp_tree(root, classes=("cat", "dog", "eel"), per_class=3, seed=0, splits=("train", "test")):
    """root/<split>/<class>/<i>.bmp, 8x8: BMP files of one size all have the same byte size, so a
    replaced image cannot be told by its size."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(a).save(root / split / c / f"{i}.bmp")
                pixels[f"{split}/{c}/{i}.bmp"] = a
    return pixels


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_symlink_loops_and_aliases_never_duplicate_or_relabel(tmp_path, capsys):
    root = tmp_path / "tree"
    write_bmp_tree(root)
    plain = build_dataset(root, train=True)
    assert len(plain) == 9
    os.symlink("..", root / "train" / "cat" / "up")  # loop: cat/up/cat/up/... (16 images became 656)
    os.symlink(".", root / "train" / "dog" / "self")  # loop onto itself
    os.symlink("../cat", root / "train" / "eel" / "cats")  # alias: cat's images again, as eel
    os.symlink("../cat/0.bmp", root / "train" / "dog" / "9.bmp")  # a file alias into another class
    ds = build_dataset(root, train=True, cache_dir=tmp_path / "c2")
    assert ds.paths == plain.paths and ds.labels.tolist() == plain.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert ds.classes == ["cat", "dog", "eel"]
    out = capsys.readouterr().out
    assert "skipped 4 symlink(s)" in out


def test_symlinked_dataset_folders_and_files_outside_the_tree_are_followed_once(tmp_path):
    px = write_bmp_tree(tmp_path / "store", splits=("train",))
    root = tmp_path / "tree"
    (root / "train").mkdir(parents=True)
    for c in ("cat", "dog"):
        os.symlink(tmp_path / "store" / "train" / c, root / "train" / c)  # class folders on another disk
    (root / "train" / "eel").mkdir()
    os.symlink(tmp_path / "store" / "train" / "eel" / "1.bmp", root / "train" / "eel" / "x.bmp")  # file link
    os.symlink(root / "train", root / "train" / "cat" / "back")  # and a loop through the link
    ds = build_dataset(root, train=True)
    assert ds.paths == [f"train/{c}/{i}.bmp" for c in ("cat", "dog") for i in range(3)] + ["train/eel/x.bmp"]
    assert np.array_equal(ds.images[-1].permute(1, 2, 0).numpy(), px["train/eel/1.bmp"])
    # a symlinked dataset root works as the root itself
    os.symlink(root, tmp_path / "link")
    assert build_dataset(tmp_path / "link", train=True).paths == ds.paths


def test_one_class_folder_is_refused(tmp_path, capsys):
    write_bmp_tree(tmp_path / "one", classes=("cat",))
    with pytest.raises(DatasetError, match=r"only one class folder \(train/cat/\); a classifier needs at least two"):
        build_dataset(tmp_path / "one", train=True)
    write_bmp_tree(tmp_path / "flat", classes=("cat",), splits=("",))  # flat/cat/*.bmp
    assert main(["train", "--data", str(tmp_path / "flat"), "--model", "resnet20", "--epochs", "1"]) == 2
    assert "only one class folder (cat/)" in _one_line_error(capsys)


def test_cache_is_rebuilt_when_images_are_replaced_with_same_size_and_mtime(tmp_path):
    """cp -p / rsync -a / tar x keep sizes and mtimes; the old cache, keyed by size + mtime, served the old
    pixels for the new images."""
    root = tmp_path / "tree"
    write_bmp_tree(root, seed=0)
    first = build_dataset(root, train=True)
    saved = {p: os.stat(p) for p in root.rglob("*.bmp")}
    shutil.rmtree(root)
    new = write_bmp_tree(root, seed=1)  # same names, classes and byte sizes; other pixels
    for p, st in saved.items():
        assert os.path.getsize(p) == st.st_size
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = build_dataset(root, train=True)
    assert again.paths == first.paths
    want = np.stack([new[p] for p in again.paths]).transpose(0, 3, 1, 2)
    assert np.array_equal(again.images.numpy(), want) and not np.array_equal(want, first.images.numpy())


def test_a_cache_entry_of_another_dataset_is_never_served(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_bmp_tree(a, seed=0)
    write_bmp_tree(b, classes=("x", "y", "z", "w"), seed=1)  # another class count: crashed after an epoch
    first_a = build_dataset(a, train=True)
    cache = tmp_path / "cache"
    entry_a = max(cache.glob("a-train-*.npz"), key=os.path.getmtime)
    build_dataset(b, train=True)
    entry_b = max(cache.glob("b-train-*.npz"), key=os.path.getmtime)
    shutil.copy(entry_b, entry_a)  # b's entry under a's name
    with pytest.warns(UserWarning, match="was not built from this source"):
        ds = build_dataset(a, train=True)
    assert ds.classes == ["cat", "dog", "eel"] and np.array_equal(ds.images.numpy(), first_a.images.numpy())


def test_non_utf8_file_name_is_a_one_line_error_naming_it(tmp_path, capsys):
    root = tmp_path / "tree"
    write_bmp_tree(root)
    bad = os.fsencode(root / "train" / "cat") + b"/caf\xe9.bmp"  # latin-1 e-acute
    shutil.copy(os.fsencode(root / "train" / "cat" / "0.bmp"), bad)
    with pytest.raises(DatasetError, match=r"train/cat: file name 'caf\\xe9.bmp' is not valid UTF-8"):
        build_dataset(root, train=True)
    assert main(["train", "--data", str(root), "--model", "resnet20", "--epochs", "1"]) == 2
    assert "file name 'caf\\xe9.bmp' is not valid UTF-8; rename it" in _one_line_error(capsys)


def test_a_cache_entry_killed_while_written_leaves_no_entry_and_no_temp_file(tmp_path, monkeypatch):
    """The decoded-array cache writes through the one atomic writer: an error in the middle of ``np.savez`` (a
    full disk, a kill) leaves neither a half-written entry that a later run would read nor a temporary file."""
    from leanvision.data import cache

    real_savez = np.savez

    def savez_then_fail(f, **arrays):
        real_savez(f, **arrays)
        f.write(b"half")
        raise OSError(28, "No space left on device")

    folder = tmp_path / "c"
    monkeypatch.setattr(cache.np, "savez", savez_then_fail)
    with pytest.warns(UserWarning, match="could not write cache entry"):
        cache.store_cached("key", "label", {"x": np.arange(3)}, cache_dir=folder)
    assert list(folder.iterdir()) == []
    monkeypatch.setattr(cache.np, "savez", real_savez)
    cache.store_cached("key", "label", {"x": np.arange(3)}, cache_dir=folder)
    assert [p.suffix for p in folder.iterdir()] == [".npz"]
    assert cache.load_cached("key", "label", cache_dir=folder)["x"].tolist() == [0, 1, 2]
