"""`detect val --split`: each split scores its own images; an unknown or absent split is a one-line error
(issue 12, item 0: any split name used to fall back to val silently)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from leanvision.cli import main
from leanvision.detect.data.synth import generate_synthetic_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One-epoch yolov8n on 6 train / 2 val images at 64 px, and a test split of 3 other images."""
    tmp = tmp_path_factory.mktemp("valsplit")
    data = generate_synthetic_dataset(tmp / "data", images=8, imgsz=64, seed=2, val_fraction=0.25)
    other = generate_synthetic_dataset(tmp / "other", images=3, imgsz=64, seed=9, val_fraction=0.0)
    shutil.copytree(tmp / "other" / "images" / "train", tmp / "data" / "images" / "test")
    shutil.copytree(tmp / "other" / "labels" / "train", tmp / "data" / "labels" / "test")
    assert other.is_file()
    rc = main(["detect", "train", "--data", str(data), "--epochs", "1", "--batch", "2", "--imgsz", "64",
               "--workers", "0", "--project", str(tmp / "runs"), "--no-progress", "--no-plots"])
    assert rc == 0
    return tmp, data, tmp / "runs" / "train" / "best.pt"


def _val(weights, data, split, tmp):
    out = tmp / f"{split}.json"
    rc = main(["detect", "val", "--weights", str(weights), "--data", str(data), "--split", split, "--workers", "0",
               "--imgsz", "64", "--json", str(out), "--no-plots"])
    return rc, (json.loads(out.read_text()) if rc == 0 else None)


def test_each_split_scores_its_own_images(run, tmp_path):
    tmp, data, weights = run
    cfg = yaml.safe_load(data.read_text())
    cfg["test"] = "images/test"
    data.write_text(yaml.safe_dump(cfg))
    counts = {s: _val(weights, data, s, tmp_path)[1]["images"] for s in ("train", "val", "test")}
    assert counts == {"train": 6, "val": 2, "test": 3}


def test_absent_or_unknown_split_is_an_error_naming_split_and_yaml(run, tmp_path, capsys):
    tmp, data, weights = run
    cfg = yaml.safe_load(data.read_text())
    cfg.pop("test", None)
    no_test = tmp_path / "no_test.yaml"
    no_test.write_text(yaml.safe_dump({**cfg, "path": str(tmp / "data")}))
    assert _val(weights, no_test, "test", tmp_path)[0] == 2
    err = capsys.readouterr().err.strip()
    assert "--split test" in err and str(no_test) in err and "no 'test:' entry" in err
    assert len(err.splitlines()) == 1
    assert _val(weights, no_test, "valid", tmp_path)[0] == 2
    err = capsys.readouterr().err.strip()
    assert "--split valid" in err and str(no_test) in err and "train, val, test" in err
