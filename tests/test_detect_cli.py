"""`leanvision detect ...`: train/val/predict/synth/convert/bench from the command line, and its errors."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from leanvision.cli import main
from leanvision.detect.data.synth import SYNTH_CLASSES, generate_synthetic_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch yolov8n run on 4 synthetic images (64 px), trained through the CLI."""
    tmp = tmp_path_factory.mktemp("detect")
    data = generate_synthetic_dataset(tmp / "data", images=4, imgsz=96, seed=1, val_fraction=0.5)
    rc = main(["detect", "train", "--model", "yolov8n", "--data", str(data), "--epochs", "1", "--batch", "2",
               "--imgsz", "64", "--workers", "0", "--project", str(tmp / "runs"), "--no-progress", "--no-plots"])
    assert rc == 0
    return tmp, data, tmp / "runs" / "train"


def test_train_writes_the_run_folder(run):
    _, _, run_dir = run
    for f in ("config.yaml", "metrics.csv", "last.pt", "best.pt", "results.json"):
        assert (run_dir / f).is_file(), f
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "val_map50" in header and "val_map" in header and "train_box_loss" in header


def test_val_prints_p_r_map_overall_and_per_class(run, capsys):
    _, data, run_dir = run
    assert main(["detect", "val", "--weights", str(run_dir / "best.pt"), "--data", str(data), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert all(h in out for h in ("P", "R", "mAP50", "mAP50-95"))
    lines = out.splitlines()
    assert any(line.split()[0] == "all" for line in lines if line.strip())
    assert any(line.strip().startswith("person") for line in lines)  # a per-class row


def test_predict_writes_image_and_json_in_original_coordinates(run, tmp_path):
    _, _, run_dir = run
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 300, 3), dtype=np.uint8))
    img.save(tmp_path / "wide.jpg")
    out = tmp_path / "pred"
    assert main(["detect", "predict", "--weights", str(run_dir / "best.pt"), "--source", str(tmp_path / "wide.jpg"),
                 "--conf", "0.0001", "--project", str(out), "--name", "p", "--save-txt"]) == 0
    assert (out / "p" / "wide.jpg").is_file()
    recs = json.loads((out / "p" / "predictions.json").read_text())
    assert recs and all(r["name"] in SYNTH_CLASSES for r in recs)
    boxes = np.array([r["box"] for r in recs])
    # a 300×150 image seen at 64 px: boxes come back in the 300×150 frame, not the 64×64 input
    assert boxes[:, [0, 2]].max() > 64 and boxes[:, [0, 2]].max() <= 300 and boxes[:, [1, 3]].max() <= 150
    assert (out / "p" / "labels" / "wide.txt").is_file()


def test_predict_equals_the_plain_model_path(run, tmp_path):
    """predict runs a BN-folded, channels_last copy (on CPU); its detections must equal the saved model's
    own NCHW forward + NMS + inverse letterbox, done here step by step."""
    from leanvision.detect.data.augment import scale_boxes_to_original
    from leanvision.detect.postprocess import non_max_suppression
    from leanvision.detect.predict import predict, preprocess
    from leanvision.detect.val import load_detector

    _, _, run_dir = run
    rgb = np.random.default_rng(1).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    recs = predict(run_dir / "best.pt", tmp_path / "a.png", tmp_path / "out", conf=0.001, save_images=False)
    model, _ = load_detector(run_dir / "best.pt")
    x, ratio_pad = preprocess(rgb, 64)
    with torch.no_grad():
        det = non_max_suppression(model(x), conf=0.001, iou=0.7, multi_label=False, max_det=300)[0]
    want = scale_boxes_to_original(det[:, :4], ratio_pad, rgb.shape[:2])
    assert len(recs) == len(det) > 0
    got = torch.tensor([[r["class"] * 1e4, *r["box"], r["score"]] for r in recs])  # records round scores to 1e-4
    ref = torch.cat([det[:, 5:6] * 1e4, want, det[:, 4:5]], 1)
    nearest = torch.cdist(got, ref, p=1).argmin(1)  # order-free: near-tied scores may swap places
    assert sorted(nearest.tolist()) == list(range(len(ref)))  # one to one
    torch.testing.assert_close(got[:, :5], ref[nearest, :5], rtol=0, atol=1e-2)  # class and box
    torch.testing.assert_close(got[:, 5], ref[nearest, 5], rtol=0, atol=2e-4)  # score (rounded to 1e-4)


def test_predict_maps_boxes_back_exactly(monkeypatch):
    from leanvision.detect.data.augment import scale_boxes_to_original
    from leanvision.detect.predict import preprocess

    img = np.zeros((100, 200, 3), np.uint8)
    x, ratio_pad = preprocess(img, 64)  # long side 200 -> 64: r = 0.32, height 32, padded 16 top
    assert x.shape == (1, 3, 64, 64)
    back = scale_boxes_to_original(torch.tensor([[0.0, 16, 64, 48]]), ratio_pad, (100, 200))
    torch.testing.assert_close(back, torch.tensor([[0.0, 0, 200, 100]]))


def test_resume_flag_uses_the_saved_config(run, tmp_path):
    from leanvision.detect.cli import config_from_args

    _, _, run_dir = run
    import argparse

    args = argparse.Namespace(config=None, resume=str(run_dir / "last.pt"), epochs=3)
    cfg = config_from_args(args)
    assert cfg.imgsz == 64 and cfg.batch == 2 and cfg.epochs == 3


def test_synth_writes_a_yolo_dataset(tmp_path, capsys):
    assert main(["detect", "synth", "--out", str(tmp_path / "s"), "--images", "3", "--imgsz", "64"]) == 0
    cfg = yaml.safe_load((tmp_path / "s" / "data.yaml").read_text())
    assert list(cfg["names"].values()) == SYNTH_CLASSES
    assert len(list((tmp_path / "s" / "images").rglob("*.jpg"))) == 3
    assert "leanvision detect train" in capsys.readouterr().out


def _write_voc(root, n=3):
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for i in range(n):
        Image.new("RGB", (80, 60), (i * 40, 90, 20)).save(root / "JPEGImages" / f"im{i}.jpg")
        (root / "Annotations" / f"im{i}.xml").write_text(
            f"<annotation><filename>im{i}.jpg</filename><size><width>80</width><height>60</height></size>"
            "<object><name>helmet</name><difficult>0</difficult><bndbox><xmin>11</xmin><ymin>6</ymin>"
            "<xmax>40</xmax><ymax>30</ymax></bndbox></object></annotation>")


def test_convert_voc_to_yolo(tmp_path):
    _write_voc(tmp_path / "voc")
    assert main(["detect", "convert", str(tmp_path / "voc"), "--format", "voc", "--out", str(tmp_path / "y")]) == 0
    cfg = yaml.safe_load((tmp_path / "y" / "data.yaml").read_text())
    assert list(cfg["names"].values() if isinstance(cfg["names"], dict) else cfg["names"]) == ["helmet"]
    labels = list((tmp_path / "y" / "labels").rglob("*.txt"))
    assert labels and labels[0].read_text().split()[0] == "0"


def test_train_reads_a_voc_folder_directly(tmp_path):
    from leanvision.detect.train import load_detection_data

    _write_voc(tmp_path / "voc", n=10)
    splits, names = load_detection_data(tmp_path / "voc")
    assert names == ["helmet"] and len(splits["train"]) + len(splits["val"]) == 10 and splits["val"]
    assert splits["train"][0]["boxes"].tolist() == [[10.0, 5.0, 40.0, 30.0]]  # VOC 1-based -> 0-based


def test_broken_data_yaml_is_a_one_line_error_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "data.yaml"
    bad.write_text("names: [a, b]\n")  # no train split
    rc = main(["detect", "train", "--data", str(bad), "--epochs", "1", "--workers", "0", "--project",
               str(tmp_path / "runs"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and str(bad) in err, err
    bad.write_text("train: [unclosed\n")
    assert main(["detect", "train", "--data", str(bad), "--project", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(bad) in err.splitlines()[0]


def test_gom_switch_on_a_yolov8_model_is_refused(run, capsys):
    _, data, _ = run
    assert main(["detect", "train", "--model", "yolov8n", "--no-gom", "--data", str(data), "--epochs", "1"]) == 2
    assert "gso-yolo" in capsys.readouterr().err


def test_gso_switches_reach_the_model():
    from leanvision.detect.config import DetectConfig
    from leanvision.detect.train import model_overrides
    from leanvision.detect.val import build_detector, detector_spec

    cfg = DetectConfig(model="gso-yolo-n", gom=False, scm=True)
    m = build_detector(detector_spec(cfg.model, ["a"], model_overrides(cfg)))
    kinds = [type(layer).__name__ for layer in m.model]
    assert kinds[9] == "Identity" and kinds[11] == "SCM"


def test_bench_resource_rows(tmp_path, capsys):
    assert main(["detect", "bench", "yolov8n", "--imgsz", "64", "--steps", "1", "--batch", "2", "--device", "cpu",
                 "--out", str(tmp_path / "b")]) == 0
    md = (tmp_path / "b" / "bench.md").read_text()
    assert "| yolov8n |" in md and "train images/s" in md
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())["rows"]
    assert rows[0]["train_images_per_s"] > 0 and rows[0]["peak_memory_bytes"] > 0 and rows[0]["params"] > 0


@pytest.mark.parametrize("cmd", ["train", "val", "predict", "synth", "convert", "bench"])
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main(["detect", cmd, "--help"])
    assert e.value.code == 0 and "usage" in capsys.readouterr().out
