"""Detection datasets that try to fool the reader (issue 12, items 7 and 9; issue 13, item 1): every broken
data.yaml key and label is one message naming the file and the key, never a traceback; caches never serve
another dataset; a dataset without labels is refused; exports whose split paths point at the exporter's
drive are found again next to the yaml."""

from __future__ import annotations

import os
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from leanvision.cli import main
from leanvision.detect.data.check import DatasetCheckError, load_yolo_dataset
from leanvision.detect.data.formats import DatasetFormatError, load_data_yaml
from test_det_formats import write_image, write_yolo

CSS_ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "construction-site-safety.tar"


def _train(data, capsys, *extra) -> tuple[int, str]:
    rc = main(["detect", "train", "--data", str(data), "--epochs", "1", "--batch", "2", "--imgsz", "32",
               "--workers", "0", "--no-progress", "--no-plots", "--project", str(Path(data).parent / "runs"), *extra])
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return rc, err


# ------------------------------------------------------------------------------------------ data.yaml keys


@pytest.mark.parametrize("key, value, message", [
    ("names", "person", r"'names' is the string 'person'; give a list, e.g. 'names: \[person\]'"),
    ("names", [], r"'names' is empty"),
    ("names", 6, r"'names' must be a list of class names or a mapping \{index: name\}, got int 6"),
    ("names", {"a": "x"}, r"'names' keys must be the class indices 0..0"),
    ("names", [None, "b"], r"'names' entry 0 is None"),
    ("nc", "six", r"'nc' must be the number of classes \(an integer\), got 'six'"),
    ("nc", 3, r"nc=3 but 'names' has 2 entries"),
    ("train", {"x": 1}, r"'train' must be a folder, a .txt list of images, an image, or a list of those .*got dict"),
    ("val", [5], r"'val' must be a folder.*got int 5"),
    ("path", 5, r"'path' must be the dataset folder \(a string\), got 5"),
])
def test_bad_yaml_keys_are_one_line_errors_naming_file_and_key(tmp_path, capsys, key, value, message):
    y = write_yolo(tmp_path, {"im0": "0 0.5 0.5 0.2 0.2\n"})
    cfg = yaml.safe_load(y.read_text())
    cfg[key] = value
    y.write_text(yaml.safe_dump(cfg))
    with pytest.raises(DatasetFormatError, match=rf"^{y}: {message}"):
        load_data_yaml(y)
    rc, err = _train(y, capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and str(y) in err


def test_names_mapping_and_scalars_still_read(tmp_path):
    y = write_yolo(tmp_path, {"im0": "0 0.5 0.5 0.2 0.2\n"})
    cfg = yaml.safe_load(y.read_text())
    for names, want in (({0: "a", "1": "b"}, ["a", "b"]), (["person"], ["person"]), ([1, 2.5], ["1", "2.5"])):
        cfg["names"] = names
        cfg.pop("nc", None)
        y.write_text(yaml.safe_dump(cfg))
        assert load_data_yaml(y)["names"] == want


# ------------------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize("cls", ["inf", "nan", "-inf", "1e400"])
def test_non_finite_class_id_is_a_problem_naming_file_and_line(tmp_path, capsys, cls):
    y = write_yolo(tmp_path, {"good": "0 0.5 0.5 0.2 0.2\n", "bad": f"1 0.5 0.5 0.2 0.2\n{cls} 0.5 0.5 0.2 0.2\n"})
    with pytest.raises(DatasetCheckError, match=rf"bad.jpg: line 2: class id {cls} is not an integer"):
        load_yolo_dataset(y, "train", on_error="fail", cache=False)
    with pytest.warns(UserWarning, match="bad.jpg: line 2"):
        kept, _ = load_yolo_dataset(y, "train", on_error="skip", cache=False)
    assert sorted(len(s["cls"]) for s in kept) == [1, 1]  # the good line of bad.txt is kept
    rc, err = _train(y, capsys, "--on-error", "fail")
    assert rc == 2 and "bad.jpg: line 2: class id" in err


def test_a_dataset_without_labels_is_refused_whatever_on_error(tmp_path, capsys):
    y = write_yolo(tmp_path, {"im0": "0 0.5 0.5 0.2 0.2\n", "im1": ""})
    shutil.rmtree(tmp_path / "labels")
    with pytest.raises(DatasetFormatError, match=r"none of the 2 'train' images has a label file .*/train/im0.txt"):
        load_yolo_dataset(y, "train")
    for on_error in ("skip", "fail"):
        rc, err = _train(y, capsys, "--on-error", on_error)
        assert rc == 2 and "has a label file" in err and len(err.splitlines()) == 1
    # one image without a label file is an image without objects, as in YOLO
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "im0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    samples, _ = load_yolo_dataset(y, "train")
    assert sorted(len(s["cls"]) for s in samples) == [0, 1]


def test_non_utf8_image_name_is_an_error_naming_it(tmp_path, capsys):
    y = write_yolo(tmp_path, {"im0": "0 0.5 0.5 0.2 0.2\n"})
    shutil.copy(tmp_path / "images" / "train" / "im0.jpg", os.fsencode(tmp_path / "images" / "train") + b"/\xff.jpg")
    with pytest.raises(DatasetFormatError, match=r"images/train: file name '\\xff.jpg' is not valid UTF-8"):
        load_yolo_dataset(y, "train")
    rc, err = _train(y, capsys)
    assert rc == 2 and "'\\xff.jpg' is not valid UTF-8" in err and len(err.splitlines()) == 1


def test_non_utf8_image_list_is_an_error_naming_it(tmp_path):
    y = write_yolo(tmp_path, {"im0": "0 0.5 0.5 0.2 0.2\n"}, split_entry="list.txt")
    (tmp_path / "list.txt").write_bytes(b"images/train/im0.jpg\nimages/train/\xff.jpg\n")
    with pytest.raises(DatasetFormatError, match=r"list.txt: cannot read this image list.*UTF-8"):
        load_yolo_dataset(y, "train")


def test_symlink_loop_in_an_images_folder_lists_each_image_once(tmp_path):
    y = write_yolo(tmp_path, {"im0": "0 0.5 0.5 0.2 0.2\n", "im1": "1 0.5 0.5 0.2 0.2\n"})
    (tmp_path / "images" / "train" / "sub").mkdir()
    os.symlink("..", tmp_path / "images" / "train" / "sub" / "up")
    os.symlink("../../train", tmp_path / "images" / "train" / "again")
    samples, _ = load_yolo_dataset(y, "train", cache=False)
    assert sorted(os.path.basename(s["im_file"]) for s in samples) == ["im0.jpg", "im1.jpg"]


# -------------------------------------------------------------------------------------------- label cache


@pytest.mark.parametrize("content", ["[]", "{}", '{"key": 1, "samples": 5}', '{"samples": [1, 2]}', "null", "\x00"])
def test_damaged_label_cache_is_rebuilt_with_a_warning(tmp_path, content):
    y = write_yolo(tmp_path, {"im0": "0 0.5 0.5 0.2 0.2\n", "im1": "1 0.5 0.5 0.25 0.25\n"})
    want = load_yolo_dataset(y, "train")[0]
    cache = tmp_path / "labels" / "train.cache"
    assert cache.is_file()
    cache.write_text(content)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = load_yolo_dataset(y, "train")[0]
    assert [s["cls"].tolist() for s in got] == [s["cls"].tolist() for s in want]
    assert any("label cache" in str(x.message) and str(cache) in str(x.message) for x in w)


def test_label_cache_of_another_dataset_or_replaced_labels_is_not_used(tmp_path):
    a = write_yolo(tmp_path / "a", {"im0": "0 0.5 0.5 0.2 0.2\n"})
    b = write_yolo(tmp_path / "b", {"im0": "1 0.5 0.5 0.2 0.2\n"})
    assert load_yolo_dataset(a, "train")[0][0]["cls"].tolist() == [0]
    load_yolo_dataset(b, "train")
    shutil.copy(tmp_path / "b" / "labels" / "train.cache", tmp_path / "a" / "labels" / "train.cache")
    assert load_yolo_dataset(a, "train")[0][0]["cls"].tolist() == [0]
    # a label replaced by one of the same size, its mtime kept (cp -p, rsync -a): the cache is rebuilt
    lab = tmp_path / "a" / "labels" / "train" / "im0.txt"
    st = lab.stat()
    lab.write_text("1 0.5 0.5 0.2 0.2\n")
    os.utime(lab, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert lab.stat().st_size == st.st_size and lab.stat().st_mtime_ns == st.st_mtime_ns
    assert load_yolo_dataset(a, "train")[0][0]["cls"].tolist() == [1]


# ----------------------------------------------------------------- exports pointing at the exporter's drive


def _roboflow_copy(root: Path) -> Path:
    """The shape of the shared Construction Site Safety export: data.yaml beside css-data/<split>/images,
    its paths on the publisher's drive."""
    for split in ("train", "valid", "test"):
        for i in range(2):
            write_image(root / "css-data" / split / "images" / f"{split}{i}.jpg", 40, 40)
            lab = root / "css-data" / split / "labels" / f"{split}{i}.txt"
            lab.parent.mkdir(parents=True, exist_ok=True)
            lab.write_text("0 0.5 0.5 0.2 0.2\n")
    y = root / "data.yaml"
    y.write_text("train: F://PPE detection//css-data//train//images\nval: F://PPE detection//css-data//valid//images\n"
                 "test: F://PPE detection//css-data//test//images\n\nnc: 2\nnames: [Hardhat, Mask]\n")
    return y


def test_split_paths_on_another_drive_are_found_by_their_trailing_folders(tmp_path, capsys):
    y = _roboflow_copy(tmp_path / "css")
    cfg = load_data_yaml(y)
    for split, folder in (("train", "train"), ("val", "valid"), ("test", "test")):
        assert [Path(f).name for f in cfg[split]] == [f"{folder}0.jpg", f"{folder}1.jpg"]
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    assert out[0] == (f"note: {y}: train path 'F://PPE detection//css-data//train//images' does not exist; using "
                      f"{tmp_path / 'css' / 'css-data' / 'train' / 'images'} (its trailing folders, found next to the "
                      "yaml); write 'train: css-data/train/images' to silence this")
    samples, _ = load_yolo_dataset(y, "val")
    assert len(samples) == 2 and samples[0]["cls"].tolist() == [0]
    # Windows separators and a yaml moved up a folder (../train/images) too
    y.write_text("train: 'C:\\\\data\\\\css-data\\\\train\\\\images'\nval: ../css-data/valid/images\nnames: [a, b]\n")
    cfg = load_data_yaml(y)
    assert len(cfg["train"]) == 2 and len(cfg["val"]) == 2


def test_split_path_found_nowhere_keeps_the_error_and_says_what_to_write(tmp_path, capsys):
    y = _roboflow_copy(tmp_path / "css")
    shutil.rmtree(tmp_path / "css" / "css-data" / "valid")
    with pytest.raises(DatasetFormatError, match=r"val path 'F://PPE detection//css-data//valid//images' does not "
                                                 r"exist .*write the val images folder relative to .*'val: "):
        load_data_yaml(y)
    rc, err = _train(y, capsys)
    assert rc == 2 and "val path" in err and len(err.splitlines()) == 1


def test_the_shared_construction_site_archive_reads_as_published(tmp_path, capsys):
    """The real data.yaml of ../shared/datasets/construction-site-safety.tar (only it and 3 images + labels
    per split are extracted)."""
    if not CSS_ARCHIVE.is_file():
        pytest.skip(f"{CSS_ARCHIVE} is not present")
    picked, per_split = [], {}
    with tarfile.open(CSS_ARCHIVE) as tf:
        for m in tf:
            parts = m.name.split("/")
            if m.name.endswith("/data.yaml"):
                picked.append(m)
            elif m.isfile() and len(parts) == 5 and parts[3] == "images":
                if per_split.setdefault(parts[2], 0) < 3:
                    per_split[parts[2]] += 1
                    picked.append(m)
                    lab = tf.getmember("/".join(parts[:3] + ["labels", Path(parts[4]).with_suffix(".txt").name]))
                    picked.append(lab)
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(tmp_path, members=picked, **kw)
    y = tmp_path / "construction-site-safety" / "data.yaml"
    assert "F://PPE detection" in y.read_text()  # as published
    for split in ("train", "val", "test"):
        samples, names = load_yolo_dataset(y, split, cache=False)
        assert len(samples) == 3 and len(names) == 10 and names[2] == "NO-Hardhat"
        assert all(s["shape"] == (640, 640) for s in samples)
    out = capsys.readouterr().out
    assert "using " in out and "css-data/valid/images" in out
    assert np.concatenate([s["cls"] for s in samples]).max() < 10
