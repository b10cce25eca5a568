"""Official-format loaders (CIFAR-10/100 pickles, SVHN .mat, STL-10 binary) on tiny files written here."""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest
import scipy.io

from leanvision.data import DatasetError, DataSpec, build_dataset, list_datasets


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANVISION_CACHE", str(tmp_path / "cache"))


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root, n=7, seed=0):
    """cifar-10-batches-py with 5 training batches of n images and a test batch of n images."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    names = [c.encode() for c in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                  "ship", "truck")]
    _pickle(d / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    out = {}
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        _pickle(d / f, {b"batch_label": f.encode(), b"data": data, b"labels": labels, b"filenames": []})
        out[f] = (data, labels)
    return d, out


def test_cifar10_round_trip_from_folder_parent_and_archive(tmp_path):
    d, batches = write_cifar10(tmp_path)
    want_x = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    want_y = sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(d, arcname="cifar-10-batches-py")
    for root in (d, tmp_path, tmp_path / "cifar-10-python.tar.gz"):
        ds = build_dataset("cifar10", train=True, root=root)
        assert len(ds) == 35 and ds.num_classes == 10 and ds.classes[1] == "automobile"
        assert np.array_equal(ds.images.numpy(), want_x)
        assert ds.labels.tolist() == want_y
        assert ds.spec.pad == 4 and ds.spec.pad_mode == "reflect" and ds.spec.flip
        assert ds.spec.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255))
    test = build_dataset("cifar10", train=False, root=d)
    # The pickled rows are R, G, B planes: pixel (y=0, x=1) of the green channel is byte 1024 + 1.
    assert test.images[0, 1, 0, 1] == batches["test_batch"][0][0, 1025]
    # A folder holding an official release is recognised when given as a path.
    assert len(build_dataset(str(d), train=False)) == 7


def test_cifar100_fine_labels(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(1)
    names = [f"c{i:02d}".encode() for i in range(100)]
    _pickle(d / "meta", {b"fine_label_names": names, b"coarse_label_names": names[:20]})
    for split, n in (("train", 9), ("test", 4)):
        _pickle(d / split, {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                            b"fine_labels": [99, 0, *range(n - 2)], b"coarse_labels": [0] * n})
    ds = build_dataset("cifar100", train=True, root=tmp_path)
    assert len(ds) == 9 and ds.num_classes == 100 and ds.labels[:2].tolist() == [99, 0]
    assert ds.spec.pad_mode == "reflect" and ds.spec.crop == 32
    assert len(build_dataset("cifar100", train=False, root=d)) == 4


def test_cifar_errors_name_the_file(tmp_path):
    d, _ = write_cifar10(tmp_path)
    (d / "data_batch_3").write_bytes((d / "data_batch_3").read_bytes()[:500])  # truncated
    with pytest.raises(DatasetError, match=r"data_batch_3: not a readable pickle .*python version of CIFAR"):
        build_dataset("cifar10", root=d)
    (d / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=r"missing data_batch_3"):
        build_dataset("cifar10", root=d)
    _pickle(d / "data_batch_3", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
    with pytest.raises(DatasetError, match=r"data_batch_3: label 10 at index 1 is outside 0..9"):
        build_dataset("cifar10", root=d)
    _pickle(d / "data_batch_3", {b"pixels": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DatasetError, match=r"data_batch_3: no key 'data'"):
        build_dataset("cifar10", root=d)
    _pickle(d / "data_batch_3", {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DatasetError, match=r"expected uint8 \(N, 3072\)"):
        build_dataset("cifar10", root=d)
    (tmp_path / "bad.tar.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DatasetError, match=r"bad.tar.gz"):
        build_dataset("cifar10", root=tmp_path / "bad.tar.gz")
    with pytest.raises(DatasetError, match=r"needs root="):
        build_dataset("cifar10")
    with pytest.raises(DatasetError, match=r"nowhere: not found"):
        build_dataset("cifar10", root=tmp_path / "nowhere")


def write_svhn(path, n, labels=None, seed=0):
    x = np.random.default_rng(seed).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = np.array(labels if labels is not None else [(i % 10) + 1 for i in range(n)], np.uint8).reshape(n, 1)
    scipy.io.savemat(path, {"X": x, "y": y})
    return x, y


def test_svhn_round_trip_maps_10_to_0(tmp_path):
    x, y = write_svhn(tmp_path / "train_32x32.mat", 12)
    write_svhn(tmp_path / "test_32x32.mat", 5, seed=1)
    xe, _ = write_svhn(tmp_path / "extra_32x32.mat", 3, labels=[10, 10, 1], seed=2)
    ds = build_dataset("svhn", train=True, root=tmp_path)
    assert len(ds) == 12 and ds.classes[0] == "0"
    assert ds.labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    assert np.array_equal(ds.images[4].numpy(), x[:, :, :, 4].transpose(2, 0, 1))  # (H, W, C) -> (C, H, W)
    assert ds.spec.pad == 2 and ds.spec.pad_mode == "constant" and not ds.spec.flip
    assert ds.spec.mean == (0.5, 0.5, 0.5) and ds.spec.std == (0.5, 0.5, 0.5)
    both = build_dataset("svhn", train=True, root=tmp_path, extra=True)
    assert len(both) == 15 and both.labels[-3:].tolist() == [0, 0, 1]
    assert np.array_equal(both.images[-1].numpy(), xe[:, :, :, 2].transpose(2, 0, 1))
    assert len(build_dataset("svhn", train=False, root=tmp_path)) == 5


def test_svhn_errors(tmp_path):
    write_svhn(tmp_path / "train_32x32.mat", 4, labels=[1, 2, 0, 3])
    with pytest.raises(DatasetError, match=r"train_32x32.mat: label 0 at index 2 is outside 1..10"):
        build_dataset("svhn", root=tmp_path)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"images": np.zeros((32, 32, 3, 1), np.uint8)})
    with pytest.raises(DatasetError, match=r"train_32x32.mat: no variable X or y \(has \['images'\]\)"):
        build_dataset("svhn", root=tmp_path)
    write_svhn(tmp_path / "train_32x32.mat", 40)
    raw = (tmp_path / "train_32x32.mat").read_bytes()
    (tmp_path / "train_32x32.mat").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match=r"train_32x32.mat: not a readable .mat file"):
        build_dataset("svhn", root=tmp_path)
    with pytest.raises(DatasetError, match=r"missing test_32x32.mat"):
        build_dataset("svhn", train=False, root=tmp_path)


def write_stl10(d, n, seed=0, labels=None):
    d.mkdir(parents=True, exist_ok=True)
    hwc = np.random.default_rng(seed).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
    # Official layout: per image, 3 channel planes each stored column-major (x varies slowest).
    (d / "train_X.bin").write_bytes(hwc.transpose(0, 3, 2, 1).tobytes())
    y = np.array(labels if labels is not None else [(i % 10) + 1 for i in range(n)], np.uint8)
    (d / "train_y.bin").write_bytes(y.tobytes())
    return hwc, y


def test_stl10_round_trip(tmp_path):
    hwc, y = write_stl10(tmp_path / "stl10_binary", 3)
    ds = build_dataset("stl10", train=True, root=tmp_path)
    assert len(ds) == 3 and ds.num_classes == 10 and ds.classes[0] == "airplane"
    assert ds.labels.tolist() == [0, 1, 2]
    assert np.array_equal(ds.images.numpy(), hwc.transpose(0, 3, 1, 2))
    assert ds.spec.crop == 96 and ds.spec.pad == 4 and ds.spec.pad_mode == "constant" and ds.spec.flip


def test_stl10_errors(tmp_path):
    d = tmp_path / "stl10_binary"
    write_stl10(d, 2)
    (d / "train_X.bin").write_bytes((d / "train_X.bin").read_bytes()[:-5])
    with pytest.raises(DatasetError, match=r"train_X.bin: 55291 bytes is not a multiple of 3\*96\*96"):
        build_dataset("stl10", root=d)
    write_stl10(d, 2, labels=[1, 11])
    with pytest.raises(DatasetError, match=r"train_y.bin: label 11 at index 1 is outside 1..10"):
        build_dataset("stl10", root=d)
    (d / "train_y.bin").write_bytes(b"\x01")
    with pytest.raises(DatasetError, match=r"train_y.bin: 1 labels for 2 images"):
        build_dataset("stl10", root=d)
    with pytest.raises(DatasetError, match=r"missing test_X.bin, test_y.bin"):
        build_dataset("stl10", train=False, root=d)


def test_digits_is_bundled_and_split_deterministically():
    tr, te = build_dataset("digits", train=True), build_dataset("digits", train=False)
    assert (len(tr), len(te)) == (1437, 360)
    assert tuple(tr.images.shape[1:]) == (3, 32, 32) and tr.images.dtype.is_floating_point is False
    assert te.labels.bincount().tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]  # stratified
    assert not tr.spec.flip and tr.spec.mean == (0.5, 0.5, 0.5)
    assert int(tr.images.max()) == 255 and int(tr.images.min()) == 0
    assert np.array_equal(build_dataset("digits", train=False).images, te.images)


def _digits_as_before():
    """The reader before issue 17: scikit-learn's load_digits and train_test_split, then the same resampling."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) * (255.0 / 16.0))[:, None]
    x = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    tr, te = train_test_split(np.arange(len(d.target)), test_size=360, stratify=d.target, random_state=0)
    return {split: (x[np.sort(i)], d.target[np.sort(i)]) for split, i in (("train", tr), ("test", te))}


def test_digits_are_bit_identical_to_scikit_learns_load_digits_and_split():
    before = _digits_as_before()
    for split, train in (("train", True), ("test", False)):
        ds = build_dataset("digits", train=train)
        assert ds.images.dtype == before[split][0].dtype and ds.images.is_contiguous()
        assert np.array_equal(ds.images.numpy(), before[split][0].numpy())
        assert np.array_equal(ds.labels.numpy(), before[split][1])


def test_digits_upsampling_equals_torchs_bilinear_interpolate_on_any_pixels():
    import torch
    import torch.nn.functional as F

    from leanvision.data.digits import upsample_digits

    images = np.random.default_rng(0).integers(0, 17, (500, 8, 8)).astype(np.float64)
    images[:17] = np.arange(17)[:, None, None]  # flat images of every value, the edges included
    x = torch.from_numpy(images.astype(np.float32) * (255.0 / 16.0))[:, None]
    ref = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False).round().clamp(0, 255)
    assert np.array_equal(upsample_digits(images), ref[:, 0].to(torch.uint8).numpy())


@pytest.mark.parametrize("n,classes,n_test,seed,balanced", [
    (1797, 10, 360, 0, False), (100, 3, 17, 5, False), (61, 7, 20, 123, False),
    (30, 3, 10, 0, True), (70, 7, 25, 9, True)])  # balanced: tied remainders, so rng.choice picks the classes
def test_stratified_split_draws_what_train_test_split_draws(n, classes, n_test, seed, balanced):
    """Against scikit-learn's train_test_split(stratify=...) on uneven and on equal class sizes."""
    from sklearn.model_selection import train_test_split

    from leanvision.data.digits import stratified_split

    labels = np.random.default_rng(seed).integers(0, classes, n)
    labels[:2 * classes] = np.repeat(np.arange(classes), 2)  # at least two of each class
    if balanced:
        labels = np.random.default_rng(seed).permutation(np.arange(n) % classes)
    tr, te = train_test_split(np.arange(n), test_size=n_test, stratify=labels, random_state=seed)
    ours = stratified_split(labels, n_test, seed)
    assert np.array_equal(ours[0], np.sort(tr)) and np.array_equal(ours[1], np.sort(te))


def test_digits_file_missing_or_corrupt_is_a_one_line_error(tmp_path, monkeypatch):
    import importlib.util

    from leanvision.data import digits

    monkeypatch.setattr(digits, "_cache", {})
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetError, match=r"--data digits reads scikit-learn's bundled digits.csv.gz "
                                           r"\(scikit-learn is not installed\): pip install scikit-learn"):
        build_dataset("digits")
    spec = importlib.machinery.ModuleSpec("sklearn", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(DatasetError, match=rf"not in {tmp_path}/datasets/data"):
        build_dataset("digits")
    bad = tmp_path / "datasets" / "data" / "digits.csv.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not gzip")
    with pytest.raises(DatasetError, match=r"digits.csv.gz: not a readable digits file .*reinstall scikit-learn"):
        build_dataset("digits")


def test_unknown_name_lists_valid_ones():
    with pytest.raises(DatasetError) as e:
        build_dataset("cifar11")
    for name in ("cifar10", "cifar100", "svhn", "stl10", "imagenet", "digits"):
        assert name in str(e.value)
    assert list_datasets() == ["cifar10", "cifar100", "digits", "imagenet", "stl10", "svhn"]


def test_spec_override_and_unknown_options():
    spec = DataSpec(32, (0.1, 0.2, 0.3), (1.0, 1.0, 1.0), pad=0, flip=True)
    ds = build_dataset("digits", train=True, spec=spec)
    assert ds.spec == spec and ds.subset([0, 1]).spec == spec
    with pytest.raises(DatasetError, match=r"dataset 'digits' does not take 'extra'"):
        build_dataset("digits", extra=True)
