"""`make demo` runs `leanvision demo`: both of its parts, cut down to seconds."""

import json

from PIL import Image

from leanvision.cli import main
from leanvision.detect.demo import run_detect_demo


def test_demo_classification_rows_train_and_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--rows", "resnet20:e2e", "resnet20:dgl:modules=4", "--no-detect",
                 "--out", str(out)]) == 0
    rows = json.loads((out / "classify" / "bench.json").read_text())["rows"]
    assert [(r["model"], r["method"]) for r in rows] == [("resnet20", "e2e"), ("resnet20", "dgl")]
    for r in rows:  # trained for real: a test accuracy of a 10-class problem, not a placeholder
        assert 0.0 <= r["accuracy"] <= 1.0
    assert "test acc" in capsys.readouterr().out


def test_detect_demo_writes_a_checkpoint_and_an_annotated_prediction(tmp_path):
    res = run_detect_demo(tmp_path / "detect", images=2, repeat=1, epochs=1)
    image = Image.open(res["prediction_image"])
    assert image.size[0] > 0
    predict_dir = tmp_path / "detect" / "predict"
    assert isinstance(json.loads((predict_dir / "predictions.json").read_text()), (list, dict))
    assert any((tmp_path / "detect").glob("**/last.pt"))
