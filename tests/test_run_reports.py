"""Run reports: metrics.csv and results.png after every epoch (classifier and detector), resume without duplicate
rows, the detector's PR/F1 curves and its confusion matrix (counts worked out by hand), bench pictures."""

import csv

import numpy as np
import pytest
from PIL import Image

from leanvision.cli import main
from leanvision.detect.evaluate import DetectionEvaluator, confusion_matrix
from leanvision.detect.plots import VAL_PLOTS, normalise_columns


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _png(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


# ------------------------------------------------------------------------------------------- classifier


TRAIN = ["train", "--model", "resnet20", "--data", "digits", "--batch-size", "32", "--steps-per-epoch", "2",
         "--subset", "128", "--no-progress"]


def test_classifier_run_writes_metrics_csv_and_results_png_each_epoch(tmp_path):
    assert main([*TRAIN, "--epochs", "2", "--project", str(tmp_path), "--name", "r"]) == 0
    rows = _rows(tmp_path / "r" / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]  # one row per epoch
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr"} <= set(rows[0])
    assert all(0 <= float(r["val_acc"]) <= 1 and float(r["lr"]) > 0 for r in rows)
    w, h = _png(tmp_path / "r" / "results.png")
    assert w > 600 and h > 150


def test_resume_appends_the_new_epochs_without_duplicating_rows(tmp_path):
    assert main([*TRAIN, "--epochs", "1", "--project", str(tmp_path), "--name", "r"]) == 0
    first = _rows(tmp_path / "r" / "metrics.csv")
    (tmp_path / "r" / "results.png").unlink()  # redrawn from the checkpoint's history on resume
    assert main(["train", "--resume", str(tmp_path / "r"), "--epochs", "3", "--no-progress"]) == 0
    rows = _rows(tmp_path / "r" / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[0] == first[0]  # the first epoch's row is kept as it was
    assert (tmp_path / "r" / "results.png").is_file()


def test_results_png_draws_every_metric_but_bookkeeping(tmp_path):
    from leanvision.engine.plots import curve_keys, plot_results

    hist = [{"epoch": e, "lr": 0.1 / e, "val_acc": 0.1 * e, "train_loss": 2.0 / e, "epoch_s": 3.0, "data_s": 0.1,
             "train_acc": None if e == 1 else 0.5} for e in (1, 2)]
    assert curve_keys(hist) == ["train_loss", "train_acc", "val_acc", "lr"]  # train, val, the LR last
    assert curve_keys(hist, ["val_acc", "missing"]) == ["val_acc"]
    assert plot_results(hist, tmp_path / "r.png") == tmp_path / "r.png" and _png(tmp_path / "r.png")[0] > 600
    assert plot_results([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


# ------------------------------------------------------------------------------------- confusion matrix


def _image(gt, pred):
    gt = np.asarray(gt, np.float64).reshape(-1, 5)
    return {"gt_cls": gt[:, 0].astype(int), "gt_boxes": gt[:, 1:], "pred": np.asarray(pred, np.float64).reshape(-1, 6)}


def test_confusion_matrix_counts_a_hand_worked_case():
    """Two classes; rows = predicted (0, 1, background), columns = true (0, 1, background)."""
    images = [
        _image(gt=[[0, 0, 0, 10, 10], [1, 20, 20, 30, 30], [0, 50, 50, 60, 60]],
               pred=[[0, 0, 10, 10, 0.9, 0],      # on A (class 0): (0, 0)
                     [20, 20, 30, 30, 0.8, 0],    # on B (class 1) with the wrong class: (0, 1)
                     [1, 1, 10, 10, 0.7, 0],      # IoU 0.81 with A, which p0 overlaps more: (0, background)
                     [80, 80, 90, 90, 0.6, 1],    # on nothing: (1, background)
                     [50, 50, 60, 60, 0.2, 0]]),  # on C but under conf 0.25: ignored, C is missed: (bg, 0)
        _image(gt=[], pred=[[0, 0, 5, 5, 0.5, 1]]),          # no ground truth: (1, background)
        _image(gt=[[1, 0, 0, 10, 10]], pred=[]),             # nothing predicted: (background, 1)
        _image(gt=[[0, 0, 0, 10, 10]], pred=[[0, 0, 10, 4.5, 0.9, 0]]),  # IoU exactly 0.45 is not > 0.45
    ]
    m = confusion_matrix(images, nc=2)
    assert m.tolist() == [[1, 1, 2],
                          [0, 0, 2],
                          [2, 1, 0]]
    np.testing.assert_allclose(normalise_columns(m), [[1 / 3, 0.5, 0.5], [0, 0, 0.5], [2 / 3, 0.5, 0]])


def test_confusion_matrix_keeps_each_ground_truths_best_prediction():
    # one prediction (class 1) overlapping two boxes goes to the one it overlaps most (IoU 0.9 with the class-0
    # box, 0.89 with the class-1 box): (1, 0); the class-1 box is missed: (background, 1)
    img = _image(gt=[[0, 0, 0, 10, 10], [1, 0, 0, 10, 8]], pred=[[0, 0, 10, 9, 0.9, 1]])
    assert confusion_matrix([img], nc=2).tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]


def test_evaluator_curves_hold_the_pr_and_f1_of_its_metrics():
    ev = DetectionEvaluator(["a", "b"])
    ev.update([np.array([[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.4, 0]])],
              [{"cls": np.array([0]), "boxes": np.array([[0, 0, 10, 10]])}])
    res = ev.compute(curves=True)
    c = res["curves"]
    assert c["pr"].shape == (2, 101) and np.isnan(c["pr"][1]).all()  # class b has no ground truth
    assert np.nanmean(c["pr"][0]) == pytest.approx(res["per_class"][0]["ap50"])
    i = np.searchsorted(c["px"], 0.5)  # only the 0.9 box is left above 0.5: P = R = F1 = 1
    assert c["p"][0, i] == 1 and c["r"][0, i] == 1 and c["f1"][0, i] == pytest.approx(1)
    j = np.searchsorted(c["px"], 0.3)  # both boxes: P = 1/2, R = 1, F1 = 2/3
    assert c["p"][0, j] == 0.5 and c["f1"][0, j] == pytest.approx(2 / 3)
    assert c["confusion"].tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 0]]
    assert "curves" not in ev.compute()


# --------------------------------------------------------------------------------------------- detector


@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    from leanvision.detect.data.synth import generate_synthetic_dataset

    tmp = tmp_path_factory.mktemp("det-reports")
    data = generate_synthetic_dataset(tmp / "data", images=4, imgsz=96, seed=1, val_fraction=0.5)
    assert main(["detect", "train", "--model", "yolov8n", "--data", str(data), "--epochs", "2", "--batch", "2",
                 "--imgsz", "64", "--workers", "0", "--project", str(tmp / "runs"), "--no-progress"]) == 0
    return tmp, data, tmp / "runs" / "train"


def test_detector_run_writes_metrics_results_and_val_plots(det_run):
    _, _, run = det_run
    rows = _rows(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train_box_loss", "train_cls_loss", "train_dfl_loss", "val_map50", "val_map", "lr"} <= set(rows[0])
    assert _png(run / "results.png")[0] > 600
    for name in VAL_PLOTS:
        w, h = _png(run / name)
        assert w > 400 and h > 300, name


def test_detect_val_writes_its_plots_to_project_name(det_run, capsys):
    tmp, data, run = det_run
    out = tmp / "val-out"
    assert main(["detect", "val", "--weights", str(run / "best.pt"), "--data", str(data), "--workers", "0",
                 "--project", str(out), "--name", "v"]) == 0
    assert all((out / "v" / name).is_file() for name in VAL_PLOTS)
    assert "confusion_matrix_normalized.png" in capsys.readouterr().out
    assert main(["detect", "val", "--weights", str(run / "best.pt"), "--data", str(data), "--workers", "0",
                 "--project", str(out), "--name", "n", "--no-plots"]) == 0
    assert not (out / "n").exists()


# ------------------------------------------------------------------------------------------------ bench


def test_bench_detect_writes_a_png_of_its_main_columns(tmp_path):
    from leanvision.bench.detect import PANELS

    assert main(["bench", "detect", "yolov8n", "--steps", "1", "--batch", "2", "--imgsz", "64", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0
    w, h = _png(tmp_path / "bench.png")
    assert w > 800 and h > 300
    # resource rows have no mAP: those panels are left out, the others drawn
    from leanvision.bench.report import plot_bars

    rows = [{"model": "m", "settings": "", "imgsz": 64, "train_images_per_s": 2.0, "peak_memory_bytes": 2**20,
             "val_images_per_s": 3.0, "params": 1e6, "map": None, "map50": float("nan")}]
    assert plot_bars(rows, ["m"], PANELS, tmp_path / "one.png") is not None
    assert plot_bars(rows, ["m"], PANELS[:2], tmp_path / "none.png") is None  # nothing to draw


def test_detect_val_refuses_a_bad_plot_folder_name_before_validating(tmp_path, capsys):
    assert main(["detect", "val", "--weights", str(tmp_path / "missing.pt"), "--name", "../up"]) == 2
    assert "--name" in capsys.readouterr().err  # not the missing checkpoint: nothing was loaded


def test_bench_bar_labels_give_ratios_and_accuracy_differences():
    from leanvision.bench.report import bar_label

    assert bar_label("peak_memory_bytes", 83.8, 0.43, 2.0**-20) == "83.8\n×0.43"
    assert bar_label("accuracy", 49.44, 0.4944 - 0.525, 100.0) == "49.4\n-3.1 pts"  # not "×-0.03"
    assert bar_label("ms_per_step", 1887.5, None, 1.0) == "1,888"
