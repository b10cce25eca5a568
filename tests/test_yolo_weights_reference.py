"""leanvision reads a YOLOv8 checkpoint written by ultralytics itself and computes the same head output.

Needs the reference implementation (``pip install .[reference]``: ultralytics, AGPL-3.0, a test extra only);
skipped without it. Runs offline: the model is built from ultralytics' bundled ``yolov8n.yaml``, nothing is
downloaded, and its settings go to a temporary folder.
"""

import copy
import os
import tempfile

import pytest
import torch

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported: no network, no settings in $HOME
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultralytics-settings-"))
ultralytics = pytest.importorskip("ultralytics", reason="the reference implementation (ultralytics, the "
                                                        "`reference` test extra) is not installed")

import leanvision  # noqa: E402
from leanvision.models.yolo import create_detector  # noqa: E402
from leanvision.models.yolo_import import load_yolo_weights, read_yolo_weights  # noqa: E402


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics and biases: a fresh model's (mean 0, var 1) would hide a mix-up."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _reference_raw(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ultralytics' raw head output as (box logits (B, 4·16, A), class logits (B, nc, A)), whichever form its
    version returns (8.4: a dict in the tuple; earlier: a list of per-level maps)."""
    with torch.no_grad():
        raw = model(x)[1]
    if isinstance(raw, dict):
        return raw["boxes"], raw["scores"]
    b = x.shape[0]
    cat = torch.cat([r.view(b, r.shape[1], -1) for r in raw], 2)
    return cat[:, :64], cat[:, 64:]


def _leanvision_raw(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        raw = model.forward_raw(x)
    b = x.shape[0]
    cat = torch.cat([r.view(b, r.shape[1], -1) for r in raw], 2)
    return cat[:, :64], cat[:, 64:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """ultralytics' yolov8n (80 classes), saved by ultralytics' own ``Model.save`` and read back by ultralytics."""
    from ultralytics import YOLO

    torch.manual_seed(0)
    yolo = YOLO("yolov8n.yaml")  # bundled yaml: built locally, nothing downloaded
    _perturb(yolo.model, 0)
    path = tmp_path_factory.mktemp("ultra") / "yolov8n.pt"
    yolo.save(path)  # torch.save({"model": half-precision DetectionModel, "date", "version", ...})
    ref = YOLO(str(path)).model.float().eval()  # the reference reading its own file
    return path, ref


def test_the_raw_head_output_equals_the_reference_on_its_own_checkpoint(reference):
    path, ref = reference
    ours = leanvision.load(path)
    x = torch.rand(2, 3, 320, 256, generator=torch.Generator().manual_seed(1))
    for got, want in zip(_leanvision_raw(ours, x), _reference_raw(ref, x)):
        assert got.shape == want.shape
        assert (got - want).abs().max().item() < 1e-4
    with torch.no_grad():  # the decoded boxes (pixels) and scores agree too
        decoded, ref_decoded = ours(x), ref(x)[0]
    assert (decoded - ref_decoded).abs().max().item() < 1e-3


def test_a_trainer_checkpoint_prefers_the_ema_and_gso_yolo_takes_its_yolov8_parts(reference, tmp_path):
    """ultralytics' trainer writes {"model": None, "ema": half model, ...}; a file with both keys gives the EMA."""
    import ultralytics as u

    _, ref = reference
    live = copy.deepcopy(ref)
    _perturb(live, 1)
    ckpt = {"epoch": 0, "best_fitness": None, "model": copy.deepcopy(live).half(), "ema": copy.deepcopy(ref).half(),
            "updates": 1, "optimizer": None, "train_args": {"imgsz": 320}, "version": u.__version__}
    torch.save(ckpt, tmp_path / "last.pt")
    w = read_yolo_weights(tmp_path / "last.pt")
    assert "EMA weights" in w.source and w.imgsz == 320
    ours = leanvision.load(tmp_path / "last.pt")
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    for got, want in zip(_leanvision_raw(ours, x), _reference_raw(ref, x)):
        assert (got - want).abs().max().item() < 1e-4
    gso = create_detector("gso-yolo-n", nc=80)
    report = load_yolo_weights(gso, w)
    assert report.not_in_file == ["model.9 (GOM)", "model.11 (SCM)"] and not report.reinitialised
    assert torch.equal(gso.model[0].conv.weight, ref.model[0].conv.weight.half().float())
