"""`leanvision export` to ONNX and TorchScript, run with onnxruntime and torch.jit on real images.

Classifier: the CIFAR-10 run of conftest.py on its own test JPEGs. Detector: a `leanvision detect train`
checkpoint run on construction-site photos from the shared archive. The references are PyTorch's outputs of
the module `leanvision.load` returns, and for NMS `detection.postprocess.non_max_suppression` (prediction
settings), which runs torchvision's batched_nms.
"""

import importlib.util
import json
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

import leanvision
from leanvision.cli import main
from leanvision.detect.data.dataset import load_rgb
from leanvision.detect.data.synth import generate_synthetic_dataset
from leanvision.detect.postprocess import non_max_suppression
from leanvision.detect.predict import preprocess

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
SITE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "construction-site-safety.tar"
IMGSZ = 320


def run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def assert_same_detections(got: torch.Tensor, want: torch.Tensor, where) -> None:
    """``got`` holds ``want``'s detections (n, 6): as many, each (class, box) once, scores within 1e-4, best first.

    Only the order of detections whose scores lie within the runtimes' float differences may differ. onnxruntime's
    detector scores differ from PyTorch's by up to about 4e-5 on these photos, and photo 1 has 8 kept detections
    within 2e-5 of the next one: e.g. two class-5 boxes that PyTorch scores 0.8097224 and 0.8097141 come out of
    the ONNX graph scored 0.8097168 and 0.8097256, so NMS lists them the other way round (its output is exactly
    PyTorch's NMS of onnxruntime's own scores). As both lists are sorted by their own scores, the k-th scores
    still agree within the tolerance whatever boxes hold them.
    """
    assert len(got) == len(want), where
    assert (got[1:, 4] <= got[:-1, 4]).all(), where  # best first
    torch.testing.assert_close(got[:, 4], want[:, 4], atol=1e-4, rtol=0)
    # two kept boxes of one class never lie within 1e-4 of the image of each other (their IoU would be ~1 > iou),
    # so a detection matches at most one of the other list: exactly one each way is the same set
    same = ((got[:, None, :4] - want[None, :, :4]).abs().amax(-1) <= 1e-4 * IMGSZ) \
        & (got[:, None, 5] == want[None, :, 5]) & ((got[:, None, 4] - want[None, :, 4]).abs() <= 1e-4)
    assert (same.sum(0) == 1).all() and (same.sum(1) == 1).all(), where


def onnx_metadata(path: Path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def site_photos(tmp_path_factory) -> torch.Tensor:
    """Four test photos of the construction-site archive, letterboxed to IMGSZ as `detect predict` does."""
    if not SITE.is_file():
        pytest.skip(f"{SITE} is not present")
    out = tmp_path_factory.mktemp("site")
    with tarfile.open(SITE) as tf:
        members = [m for m in tf if m.isfile() and "/test/images/" in m.name and m.name.endswith(".jpg")][:4]
        for m in members:
            (out / Path(m.name).name).write_bytes(tf.extractfile(m).read())
    return torch.cat([preprocess(load_rgb(str(f)), IMGSZ)[0] for f in sorted(out.glob("*.jpg"))])


@pytest.fixture(scope="module")
def detector(tmp_path_factory, site_photos) -> Path:
    """A `leanvision detect train` checkpoint (yolov8n, one epoch on synthetic scenes) made to detect a lot.

    After one epoch the class scores are nearly constant (BatchNorm statistics still at their start, class bias
    at its prior), so NMS would have nothing or only ties to sort. Its BatchNorm statistics are therefore
    computed on the photos and the class head is scaled, and the checkpoint saved again in the same format:
    hundreds of candidates with distinct scores per photo, one photo past max_det.
    """
    tmp = tmp_path_factory.mktemp("detector")
    data = generate_synthetic_dataset(tmp / "data", images=4, imgsz=96, seed=1, val_fraction=0.5)
    assert main(["detect", "train", "--model", "yolov8n", "--data", str(data), "--epochs", "1", "--batch", "2",
                 "--imgsz", "64", "--workers", "0", "--project", str(tmp), "--name", "run", "--no-progress",
                 "--no-plots"]) == 0
    model = leanvision.load(tmp / "run" / "best.pt")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batch
    with torch.no_grad():
        model.train()(site_photos)
        for head in model.head.cv3:
            head[2].weight.mul_(3.0)
            head[2].bias.fill_(-3.0)
    ckpt = torch.load(tmp / "run" / "best.pt", weights_only=True)
    for prefix in ("model.", "ema_model."):
        ckpt["method"].update({prefix + k: v for k, v in model.state_dict().items()})
    torch.save(ckpt, tmp / "run" / "best.pt")
    return tmp / "run" / "best.pt"


def test_classifier_onnx_and_torchscript_equal_pytorch_on_cifar_images(cifar_run, cifar_tree, tmp_path, capsys):
    weights = cifar_run / "best.pt"
    model = leanvision.load(weights)
    x = torch.stack([model.transform(Image.open(f)) for f in sorted((cifar_tree / "test").glob("*/000[0-1].jpg"))])
    with torch.no_grad():
        ref = model(x)  # (20, 10)
    assert main(["export", "--weights", str(weights), "--format", "onnx", "--dynamic", "--out",
                 str(tmp_path / "c.onnx")]) == 0
    assert "images (batch, 3, 32, 32)" in capsys.readouterr().out
    torch.testing.assert_close(run_onnx(tmp_path / "c.onnx", x), ref, atol=1e-4, rtol=0)  # batch 20 through batch 1
    meta = onnx_metadata(tmp_path / "c.onnx")
    assert meta["task"] == "classify" and json.loads(meta["names"]) == model.classes and meta["imgsz"] == "32"
    assert main(["export", "--weights", str(weights), "--format", "torchscript"]) == 0  # default path: beside it
    extra = {"leanvision.json": ""}
    scripted = torch.jit.load(str(weights.with_suffix(".torchscript")), _extra_files=extra)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), ref, atol=1e-5, rtol=0)
    assert json.loads(extra["leanvision.json"])["names"] == model.classes


def test_detector_onnx_outputs_and_nms_equal_pytorch_on_site_photos(detector, site_photos, tmp_path):
    model = leanvision.load(detector)
    with torch.no_grad():
        ref = model(site_photos)  # (4, 4 + nc, A)
    assert main(["export", "--weights", str(detector), "--format", "onnx", "--imgsz", str(IMGSZ), "--dynamic",
                 "--out", str(tmp_path / "d.onnx")]) == 0
    out = run_onnx(tmp_path / "d.onnx", site_photos)
    torch.testing.assert_close(out[:, 4:], ref[:, 4:], atol=1e-4, rtol=0)  # class scores
    torch.testing.assert_close(out[:, :4] / IMGSZ, ref[:, :4] / IMGSZ, atol=1e-4, rtol=0)  # boxes, image units
    other = torch.nn.functional.interpolate(site_photos[:2], size=(256, 384), mode="bilinear")  # another shape
    with torch.no_grad():
        torch.testing.assert_close(run_onnx(tmp_path / "d.onnx", other), model(other), atol=1e-3, rtol=1e-4)

    expected = non_max_suppression(ref, conf=0.25, iou=0.7, multi_label=False, max_det=300)
    counts = [len(d) for d in expected]
    assert sum(counts) > 300 and max(counts) == 300  # real work for NMS, and one photo capped at max_det
    # a fixed batch of 4: the variable shapes are tested above, and a dynamic NMS graph takes three times as long
    assert main(["export", "--weights", str(detector), "--format", "onnx", "--imgsz", str(IMGSZ), "--batch", "4",
                 "--nms", "--out", str(tmp_path / "nms.onnx")]) == 0
    assert main(["export", "--weights", str(detector), "--format", "torchscript", "--imgsz", str(IMGSZ), "--nms",
                 "--out", str(tmp_path / "nms.torchscript")]) == 0
    scripted = torch.jit.load(str(tmp_path / "nms.torchscript"))
    with torch.no_grad():
        outputs = {"onnx": run_onnx(tmp_path / "nms.onnx", site_photos), "torchscript": scripted(site_photos)}
    for fmt, dets in outputs.items():
        assert dets.shape[1] == 7
        for i, want in enumerate(expected):
            assert_same_detections(dets[dets[:, 0] == i, 1:], want, (fmt, i))
    assert "NonMaxSuppression" in {node.op_type for node in onnx.load(str(tmp_path / "nms.onnx")).graph.node}
    meta = onnx_metadata(tmp_path / "nms.onnx")
    assert meta["task"] == "detect" and json.loads(meta["nms"]) == {"conf": 0.25, "iou": 0.7, "max_det": 300}


def test_export_refuses_what_it_cannot_do_in_one_line(cifar_run, detector, tmp_path, capsys, monkeypatch):
    bare = tmp_path / "bare.pt"
    torch.save({"w": torch.zeros(2)}, bare)
    cases = [
        (["--weights", str(cifar_run / "best.pt"), "--format", "onnx", "--nms"], "--nms applies to detectors"),
        (["--weights", str(detector), "--format", "torchscript", "--imgsz", "100"], "multiple of 32"),
        (["--weights", str(bare), "--format", "torchscript"], f"{bare}: a bare state_dict"),
    ]
    for args, expect in cases:
        capsys.readouterr()
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err
        assert expect in err and err.count("\n") == 1 and "Traceback" not in err, err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    assert main(["export", "--weights", str(cifar_run / "best.pt"), "--format", "onnx",
                 "--out", str(tmp_path / "x.onnx")]) == 2
    assert "pip install 'leanvision[export]'" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
