"""Use a trained classifier from its checkpoint alone: `leanvision val`, `leanvision predict`, `leanvision.load`.

The run is a resnet20 trained through the CLI on 300 real CIFAR-10 JPEGs (``cifar_run`` in conftest.py). The
numbers are checked against a reference written here: the network rebuilt by hand from the checkpoint's
``model.*`` tensors, the images decoded with PIL and normalised with the CIFAR-10 statistics typed below, and
the metrics computed by scikit-learn and numpy.
"""

import contextlib
import csv
import io
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import confusion_matrix

import leanvision
from leanvision.cli import main
from leanvision.models import create_model

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_MEAN = torch.tensor([125.3, 123.0, 113.9]).view(3, 1, 1) / 255  # the CIFAR-10 recipe's statistics
CIFAR_STD = torch.tensor([63.0, 62.1, 66.7]).view(3, 1, 1) / 255
README = Path(__file__).resolve().parents[1] / "README.md"


@torch.no_grad()
def reference_logits(weights: Path, files: list[Path]) -> torch.Tensor:
    """(N, 10) logits by a route of its own: a fresh resnet20 given the checkpoint's model.* tensors."""
    ckpt = torch.load(weights, weights_only=True)
    net = create_model("resnet20", num_classes=10)
    net.load_state_dict({k[len("model."):]: v for k, v in ckpt["method"].items() if k.startswith("model.")})
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1) for f in files])
    return net.eval()((x.float() / 255 - CIFAR_MEAN) / CIFAR_STD)


def test_files(tree: Path) -> tuple[list[Path], np.ndarray]:
    files = sorted((tree / "test").glob("*/*.jpg"))  # the dataset's order: by relative path
    return files, np.array([CLASSES.index(f.parent.name) for f in files])


test_files.__test__ = False  # a helper, not a test


def test_val_prints_and_writes_what_a_hand_computation_gives(cifar_tree, cifar_run, tmp_path, capsys):
    weights = cifar_run / "best.pt"
    assert main(["val", "--weights", str(weights), "--project", str(tmp_path), "--no-progress"]) == 0  # no --data
    out = capsys.readouterr().out
    files, labels = test_files(cifar_tree)
    logits = reference_logits(weights, files).numpy()
    pred = logits.argmax(1)
    top1 = float((pred == labels).mean())
    top5 = float(np.mean([labels[i] in np.argsort(-logits[i])[:5] for i in range(len(labels))]))
    cm = confusion_matrix(labels, pred, labels=range(10))
    per_class = cm.diagonal() / cm.sum(1)
    assert len(set(pred)) > 1, "a model predicting one class would not test the matrix"
    assert f"100 images: top-1 {100 * top1:.2f} %, top-5 {100 * top5:.2f} %" in out
    for name, acc in zip(CLASSES, per_class):
        assert re.search(rf"^{name}\s+10\s+{100 * acc:.2f}%$", out, re.M), name
    folder = tmp_path / "val"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["top1"] == pytest.approx(top1) and metrics["topk"] == pytest.approx(top5) and metrics["k"] == 5
    assert metrics["per_class"] == pytest.approx(list(per_class)) and metrics["confusion"] == cm.tolist()
    rows = list(csv.reader(io.StringIO((folder / "confusion_matrix.csv").read_text())))
    assert rows[0] == ["true\\predicted", *CLASSES]
    assert [r[0] for r in rows[1:]] == CLASSES and [[int(v) for v in r[1:]] for r in rows[1:]] == cm.tolist()
    with Image.open(folder / "confusion_matrix.png") as im:
        assert im.format == "PNG" and min(im.size) >= 400
    # the trainer's own evaluation of the last epoch (best.pt is the last one here or the best on this test set)
    history = [json.loads(line) for line in (cifar_run / "metrics.jsonl").read_text().splitlines()]
    assert metrics["top1"] in [pytest.approx(row["val_acc"]) for row in history]


def test_predict_top_k_for_a_file_a_folder_and_a_glob(cifar_tree, cifar_run, tmp_path, capsys):
    weights = cifar_run / "best.pt"
    files, _ = test_files(cifar_tree)
    probs = reference_logits(weights, files).softmax(1)
    expected = {str(f): p for f, p in zip(files, probs)}
    sources = {"file": [str(files[0])], "folder": [str(cifar_tree / "test" / "cat")],
               "glob": [str(cifar_tree / "test" / "*" / "000[0-2].jpg"), "--top-k", "3"]}
    for name, source in sources.items():
        assert main(["predict", "--weights", str(weights), "--source", *source, "--project", str(tmp_path),
                     "--name", name, "--no-progress"]) == 0
        records = json.loads((tmp_path / name / "predictions.json").read_text())
        want = {"file": [files[0]], "folder": sorted((cifar_tree / "test" / "cat").glob("*.jpg")),
                "glob": sorted(f for f in files if f.stem in ("0000", "0001", "0002"))}[name]
        assert [r["image"] for r in records] == [str(f) for f in want] and len(want) > 0
        k = 3 if name == "glob" else 5
        for r in records:
            p = expected[r["image"]]
            assert [t["class"] for t in r["top"]] == p.topk(k).indices.tolist()
            assert [t["name"] for t in r["top"]] == [CLASSES[c] for c in p.topk(k).indices.tolist()]
            assert [t["score"] for t in r["top"]] == pytest.approx(p.topk(k).values.tolist(), abs=1e-5)
        rows = list(csv.reader(io.StringIO((tmp_path / name / "predictions.csv").read_text())))
        assert rows[0][:3] == ["image", "class_1", "score_1"] and len(rows[0]) == 1 + 2 * k
        assert [(r[0], r[1]) for r in rows[1:]] == [(x["image"], x["top"][0]["name"]) for x in records]
    assert "glob" not in capsys.readouterr().err  # --no-progress: nothing on stderr


def test_predict_shows_progress_only_on_a_terminal(cifar_tree, cifar_run, tmp_path, monkeypatch):
    args = ["predict", "--weights", str(cifar_run / "best.pt"), "--source", str(cifar_tree / "test" / "dog"),
            "--project", str(tmp_path)]

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for tty, flags, shown in ((False, [], False), (True, [], True), (True, ["--no-progress"], False)):
        err = Terminal() if tty else io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        assert main([*args, *flags, "--overwrite"]) == 0
        assert ("predict:" in err.getvalue() and "/10 " in err.getvalue()) == shown, (tty, flags)


def test_the_readme_load_example_runs_as_written(cifar_tree, cifar_run, tmp_path, monkeypatch):
    text = README.read_text()
    code = re.search(r"```python\n(import leanvision\n.*?)```", text, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) == 5
    path = re.search(r'leanvision\.load\("([^"]+)"\)', code).group(1)
    (tmp_path / path).parent.mkdir(parents=True)
    shutil.copy(cifar_run / "best.pt", tmp_path / path)
    cat = sorted((cifar_tree / "test" / "cat").glob("*.jpg"))[0]
    shutil.copy(cat, tmp_path / "cat.jpg")
    monkeypatch.chdir(tmp_path)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "README.md", "exec"), {})
    assert buf.getvalue().strip() == CLASSES[int(reference_logits(cifar_run / "best.pt", [cat]).argmax())]


def test_load_returns_a_plain_eval_module_with_the_checkpoints_classes(cifar_run, cifar_tree):
    model = leanvision.load(cifar_run / "best.pt")
    assert not model.training and model.classes == CLASSES and model.image_size == 32
    plain = create_model("resnet20", num_classes=10)
    assert model.net.state_dict().keys() == plain.state_dict().keys()
    files, _ = test_files(cifar_tree)
    x = torch.stack([model.transform(Image.open(f)) for f in files[:8]])
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_logits(cifar_run / "best.pt", files[:8]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", [["replacement", "--replace-interval", "2"], ["dgl", "--modules", "2"],
                                    ["dgl+mlaan", "--modules", "2", "--replace-interval", "2"]])
def test_load_and_val_of_replacement_and_local_learning_runs(method, tmp_path, capsys):
    """Replaced blocks materialised, auxiliary networks dropped: the plain network of `create_model`, and val's
    top-1 equals the trainer's last evaluation of the same test set."""
    assert main(["train", "--model", "resnet20", "--data", "digits", "--epochs", "1", "--batch-size", "64",
                 "--steps-per-epoch", "3", "--method", *method, "--project", str(tmp_path), "--name", "r",
                 "--no-progress"]) == 0
    model = leanvision.load(tmp_path / "r" / "last.pt")
    plain = create_model("resnet20", num_classes=10)
    assert model.net.state_dict().keys() == plain.state_dict().keys()  # no ReplacedBlock, no auxiliary network
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
    capsys.readouterr()
    assert main(["val", "--weights", str(tmp_path / "r" / "last.pt"), "--project", str(tmp_path), "--no-progress"]) == 0
    top1 = float(re.search(r"top-1 ([\d.]+) %", capsys.readouterr().out).group(1))
    last = json.loads((tmp_path / "r" / "results.json").read_text())["final"]["val_acc"]
    assert top1 == pytest.approx(100 * last, abs=0.005)


def test_a_checkpoint_of_an_earlier_version_falls_back_to_its_data(cifar_run, cifar_tree, tmp_path, capsys):
    """Without the saved class names and recipe: val reads them from the dataset, predict from the training data
    its config names, and says what is missing when that data is gone."""
    ckpt = torch.load(cifar_run / "best.pt", weights_only=True)
    del ckpt["config"]["classifier"]
    old = tmp_path / "old.pt"
    torch.save(ckpt, old)
    assert main(["val", "--weights", str(old), "--project", str(tmp_path), "--no-progress"]) == 0
    assert main(["val", "--weights", str(cifar_run / "best.pt"), "--project", str(tmp_path), "--no-progress"]) == 0
    first, second = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("val", "val2"))
    assert first["confusion"] == second["confusion"] and first["classes"] == CLASSES
    assert leanvision.load(old).classes == CLASSES
    ckpt["config"]["data"] = str(tmp_path / "moved-away")
    torch.save(ckpt, old)
    capsys.readouterr()
    assert main(["predict", "--weights", str(old), "--source", str(cifar_tree / "test" / "cat"),
                 "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(old) in err and "older leanvision" in err and "Traceback" not in err


def _detector_checkpoint(path: Path) -> Path:
    from leanvision.detect.val import detector_spec

    torch.save({"method": {"model.w": torch.zeros(1)}, "config": {"detector": detector_spec("yolov8n", ["a"], {}),
                                                                   "imgsz": 64}}, path)
    return path


class Unpicklable:
    pass


@pytest.mark.parametrize("kind, expect", [
    ("detector", "a detector checkpoint (yolov8n, 1 classes) of `leanvision detect train`; expected a classifier"),
    ("truncated", "truncated or damaged"),
    ("state_dict", "a bare state_dict"),
    ("pickle", "Python objects beyond tensors and plain data"),
    ("foreign", "a dict with keys model, optimizer, not a leanvision checkpoint"),
    ("empty", "the file is empty"),
    ("missing", "checkpoint not found"),
])
def test_a_checkpoint_of_the_wrong_kind_is_named_with_what_it_is(kind, expect, cifar_run, cifar_tree, tmp_path,
                                                                 capsys):
    path = tmp_path / f"{kind}.pt"
    if kind == "detector":
        _detector_checkpoint(path)
    elif kind == "truncated":
        data = (cifar_run / "best.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "state_dict":
        torch.save(create_model("resnet20", num_classes=10).state_dict(), path)
    elif kind == "pickle":
        torch.save({"model": Unpicklable()}, path)
    elif kind == "foreign":
        torch.save({"model": {"w": torch.zeros(1)}, "optimizer": {}}, path)
    elif kind == "empty":
        path.write_bytes(b"")
    for cmd in (["val", "--weights", str(path)],
                ["predict", "--weights", str(path), "--source", str(cifar_tree / "test" / "cat" / "0000.jpg")]):
        capsys.readouterr()
        assert main([*cmd, "--project", str(tmp_path / "out")]) == 2, (kind, cmd[0])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and expect in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.*"))  # nothing half-written


def test_bad_sources_and_mismatched_data_are_refused_by_name(cifar_run, cifar_tree, tmp_path, capsys):
    weights = str(cifar_run / "best.pt")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    cases = [(["--source", str(tmp_path / "nothing-*.jpg")], "matches no image"),
             (["--source", str(tmp_path / "notes.txt")], "not an image file"),
             (["--source", str(tmp_path / "missing.jpg")], "no such image, folder or glob"),
             (["--source", str(tmp_path / "broken.jpg")], f"image {tmp_path / 'broken.jpg'} cannot be decoded")]
    for flags, expect in cases:
        capsys.readouterr()
        assert main(["predict", "--weights", weights, *flags, "--project", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert expect in err and "Traceback" not in err, err
    assert main(["val", "--weights", weights, "--data", "digits", "--project", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "digits: its classes (0, 1, 2" in err and "are not those" in err


def test_a_classifier_given_to_the_detector_commands_is_named(cifar_run, cifar_tree, tmp_path, capsys):
    weights = str(cifar_run / "best.pt")
    image = str(cifar_tree / "test" / "cat" / "0000.jpg")
    for cmd in (["detect", "val", "--weights", weights],
                ["detect", "predict", "--weights", weights, "--source", image, "--project", str(tmp_path)]):
        capsys.readouterr()
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert (f"{weights}: a classifier checkpoint (resnet20, method e2e) of `leanvision train`; expected a "
                "detector checkpoint") in err and err.count("\n") == 1, err
