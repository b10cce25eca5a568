"""Pretrained weights of other tools (issue 13 item 4), without ultralytics installed.

The ultralytics-layout checkpoints here are written by ``ultralytics_fakes`` (leanvision's YOLOv8 with its
classes renamed into fake ``ultralytics.*`` modules, pickled exactly as ultralytics pickles its own);
``test_yolo_weights_reference.py`` does the same with the real package when it is installed.
"""

import builtins
import json
import os
import pickle
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import leanvision
from leanvision.cli import main
from leanvision.detect.data.synth import SYNTH_CLASSES, generate_synthetic_dataset
from leanvision.detect.weights import open_weights
from leanvision.engine.checkpoint import CheckpointError
from leanvision.models.yolo import create_detector
from leanvision.models.yolo_import import WeightsError, detector_from_weights, load_yolo_weights, read_yolo_weights
from leanvision.ops.plain_pickle import PlainPickleError, load_torch_zip
from ultralytics_fakes import save_ultralytics_checkpoint


def _detector(name="yolov8n", nc=80, seed=0):
    """A detector with non-trivial BatchNorm statistics, so a mix-up of buffers shows in the outputs."""
    torch.manual_seed(seed)
    m = create_detector(name, nc=nc).eval()
    for b in m.modules():
        if isinstance(b, torch.nn.BatchNorm2d):
            b.running_mean.normal_(0, 0.1)
            b.running_var.uniform_(0.5, 2)
            b.bias.data.normal_(0, 0.1)
    return m


def _half(m):
    """``m`` with its weights rounded to float16 and back, as a checkpoint of ultralytics stores them."""
    return m.half().float()


@pytest.fixture(scope="module")
def v8n():
    return _detector()


@pytest.fixture(scope="module")
def v8n_file(v8n, tmp_path_factory):
    return save_ultralytics_checkpoint(tmp_path_factory.mktemp("w") / "yolov8n.pt", {"model": v8n})


def _raw(m, x):
    with torch.no_grad():
        return m.forward_raw(x)


def test_an_ultralytics_checkpoint_rebuilds_yolov8n_with_identical_outputs(v8n, v8n_file):
    model, w = detector_from_weights(v8n_file)
    assert (w.model_name, w.nc, w.imgsz) == ("yolov8n", 80, 640) and "ultralytics 8.4.190" in w.source
    assert model.names == v8n.names
    ref = _half(create_detector("yolov8n", nc=80).eval())
    ref.load_state_dict(v8n.state_dict())
    ref = _half(ref)
    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    for got, want in zip(_raw(model, x), _raw(ref, x)):
        assert torch.equal(got, want)  # the same float16-rounded weights, the same ops: bit for bit


def test_the_ema_weights_are_preferred_as_ultralytics_does(tmp_path):
    ema, live = _detector(seed=1), _detector(seed=2)
    path = save_ultralytics_checkpoint(tmp_path / "last.pt", {"ema": ema, "model": live})
    model, w = detector_from_weights(path)
    assert "EMA weights" in w.source
    assert torch.equal(model.model[0].conv.weight, ema.model[0].conv.weight.half().float())


def test_nc_mismatch_reinitialises_and_lists_only_the_class_layers(v8n, v8n_file):
    w = read_yolo_weights(v8n_file)
    fresh = create_detector("yolov8n", nc=3)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    report = load_yolo_weights(fresh, w)
    # yolov8n's class branch is max(64, min(nc, 100)) wide: 80 -> 64 channels changes its two Convs too
    assert report.reinitialised and all(r.startswith("model.22.cv3.") for r in report.reinitialised)
    assert any(r.startswith("model.22.cv3.0.2 (80x80x1x1 in the file, 3x64x1x1 here)") for r in report.reinitialised)
    assert "re-initialised" in str(report) and not report.not_in_file and not report.unused
    src = v8n.state_dict()
    for k, v in fresh.state_dict().items():
        if k.startswith("model.22.cv3."):
            assert torch.equal(v, before[k]), k  # kept as initialised
        else:
            assert torch.equal(v, src[k].half().to(v.dtype)) if v.is_floating_point() else torch.equal(v, src[k]), k


def test_gso_yolo_takes_the_yolov8_rows_and_lists_its_own(v8n, v8n_file):
    gso = create_detector("gso-yolo-n", nc=80)
    report = load_yolo_weights(gso, read_yolo_weights(v8n_file))
    assert report.not_in_file == ["model.9 (GOM)", "model.11 (SCM)"] and not report.reinitialised
    assert not report.unused and report.used_numel == report.file_numel
    assert torch.equal(gso.model[10].cv2.conv.weight, v8n.model[9].cv2.conv.weight.half().float())  # SPPF 9 -> 10
    assert torch.equal(gso.model[24].cv3[2][2].bias, v8n.model[22].cv3[2][2].bias.half().float())  # Detect 22 -> 24


def test_another_scale_is_refused_naming_the_model_to_build(v8n_file):
    with pytest.raises(WeightsError, match=r"fit yolov8s: the file holds a yolov8n .*--model yolov8n"):
        load_yolo_weights(create_detector("yolov8s", nc=80), read_yolo_weights(v8n_file))


@pytest.mark.parametrize("rename, home, yaml_file, what", [
    ({"C2f": "C3k2"}, None, "yolo11n.yaml", "a YOLO11 checkpoint"),
    ({"C2f": "C3"}, None, "yolov5nu.yaml", "a YOLOv5 checkpoint"),
    ({}, None, "yolov9t.yaml", "a YOLOv9 checkpoint"),
    ({"DetectionModel": "SegmentationModel", "Detect": "Segment"}, None, "yolov8n-seg.yaml", "segment model"),
    ({"DetectionModel": "PoseModel", "Detect": "Pose"}, None, "yolov8n-pose.yaml", "pose model"),
    ({"Detect": "Segment"}, None, "yolov8n.yaml", "segment model"),
    ({"DetectionModel": "Model"}, {"DetectionModel": "models.yolo"}, "yolov5s.yaml", "YOLOv5 checkpoint of the yolov5"),
])
def test_other_families_and_tasks_are_refused_by_name(tmp_path, rename, home, yaml_file, what):
    path = save_ultralytics_checkpoint(tmp_path / "w.pt", {"model": create_detector("yolov8n", nc=4)}, rename, home,
                                       yaml_file)
    with pytest.raises(CheckpointError) as err:
        open_weights(path)
    assert what in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


class _Payload:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _hostile(kind: str, marker) -> object:
    return {
        "os.system": _Payload(os.system, (f"touch {marker}",)),
        "builtins.exec": _Payload(builtins.exec, (f"open({str(marker)!r}, 'w').close()",)),
        "subprocess.Popen": _Payload(subprocess.Popen, (["touch", str(marker)],)),
    }[kind]


@pytest.mark.parametrize("kind, named", [("os.system", "system"), ("builtins.exec", "builtin__.exec"),
                                         ("subprocess.Popen", "Popen")])
def test_hostile_pickles_are_refused_and_run_nothing(tmp_path, kind, named):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _hostile(kind, marker), "ema": None}, path)
    with pytest.raises(PlainPickleError, match=f"refused to unpickle: it names .*{named}"):
        load_torch_zip(path)
    with pytest.raises(CheckpointError, match="nothing from the file was run"):
        open_weights(path)
    assert not marker.exists()
    if kind == "builtins.exec":  # the file really is hostile: an ordinary unpickler runs it
        torch.load(path, weights_only=False)
        assert marker.exists()


def test_a_payload_through_a_recorded_class_stays_a_record(tmp_path):
    """A class in an allowed namespace called with a payload is only recorded (its arguments kept as data)."""
    fake = types.ModuleType("ultralytics.nn.modules.conv")

    class Conv:
        def __reduce__(self):
            return Conv, ("rm -rf /",)

    Conv.__module__, Conv.__qualname__ = fake.__name__, "Conv"
    fake.Conv = Conv
    path = tmp_path / "w.pt"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("ultralytics", "ultralytics.nn", "ultralytics.nn.modules"):
            mp.setitem(sys.modules, name, types.ModuleType(name))
        mp.setitem(sys.modules, fake.__name__, fake)
        torch.save({"model": Conv()}, path)
    obj = load_torch_zip(path)["model"]
    assert obj.qualname == "ultralytics.nn.modules.conv.Conv" and obj.args == ("rm -rf /",)
    with pytest.raises(WeightsError, match="not an ultralytics YOLOv8 DetectionModel"):
        read_yolo_weights(path)


def test_a_function_in_an_allowed_namespace_and_forged_tensors_are_refused(tmp_path):
    src = b"\x80\x02cultralytics.utils.downloads\nattempt_download_asset\nq\x00X\x01\x00\x00\x00xq\x01\x85q\x02R."
    forged = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00(X\x03\x00\x00\x00abcK\x00K\x01\x85K\x01\x85tRq\x01."
    for name, blob, why in (("fn.pt", src, "attempt_download_asset"), ("forged.pt", forged, "other than a storage")):
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            z.writestr("archive/data.pkl", blob)
        with pytest.raises(PlainPickleError, match=why):
            load_torch_zip(tmp_path / name)


def test_damaged_or_foreign_files_get_one_line(tmp_path, v8n_file):
    blob = v8n_file.read_bytes()
    cases = {"truncated.pt": (blob[: len(blob) // 2], "truncated or damaged"), "empty.pt": (b"", "empty"),
             "raw.pt": (pickle.dumps({"model": 1}, protocol=2), "legacy format"),
             "notes.pt": (b"hello, not weights", "not a torch checkpoint"),
             "w.safetensors": (b"\x10\x00\x00\x00\x00\x00\x00\x00{", "not a readable .safetensors")}
    for name, (data, why) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as err:
            open_weights(tmp_path / name)
        assert why in str(err.value) and name in str(err.value) and "\n" not in str(err.value), str(err.value)
    torch.save({"optimizer": {"lr": 0.1}, "step": 3}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a leanvision checkpoint.*expected a best.pt"):
        open_weights(tmp_path / "other.pt")


def test_safetensors_and_bare_state_dicts_rebuild_the_model_they_hold(tmp_path):
    from safetensors.torch import save_file

    gso = _detector("gso-yolo-n", nc=5, seed=3)
    gso_off = create_detector("gso-yolo-n", nc=5, gom=False)
    names = ["helmet", "vest", "person", "boots", "gloves"]
    save_file(gso.state_dict(), str(tmp_path / "gso.safetensors"), metadata={"names": json.dumps(names)})
    torch.save(gso_off.state_dict(), tmp_path / "gso_off.pt")
    model, w = detector_from_weights(tmp_path / "gso.safetensors")
    assert (w.model_name, list(model.names.values()), w.overrides) == ("gso-yolo-n", names, {})
    x = torch.rand(1, 3, 64, 64)
    for got, want in zip(_raw(model, x), _raw(gso, x)):
        assert torch.equal(got, want)
    model, w = detector_from_weights(open_weights(tmp_path / "gso_off.pt"))
    assert w.overrides == {"gom": False} and isinstance(model.model[9], torch.nn.Identity)


def test_leanvision_load_returns_the_detector_of_an_ultralytics_file(v8n_file):
    model = leanvision.load(v8n_file)
    assert type(model).__name__ == "DetectionModel" and not model.training
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 84, 84)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Synthetic scenes and an ultralytics-layout yolov8n file with their classes (and one with COCO's 80)."""
    tmp = tmp_path_factory.mktemp("synth")
    data = generate_synthetic_dataset(tmp / "data", images=4, imgsz=96, seed=1, val_fraction=0.5)
    m = _detector(nc=len(SYNTH_CLASSES))
    m.names = dict(enumerate(SYNTH_CLASSES))
    return tmp, data, save_ultralytics_checkpoint(tmp / "site.pt", {"ema": m})


def test_cli_val_and_predict_take_an_ultralytics_checkpoint(synth, capsys):
    tmp, data, weights = synth
    assert main(["detect", "val", "--weights", str(weights), "--data", str(data), "--imgsz", "64", "--workers",
                 "0"]) == 0
    out = capsys.readouterr().out
    assert "mAP50-95" in out and any(line.strip().startswith(SYNTH_CLASSES[0]) for line in out.splitlines())
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(tmp / "a.jpg")
    assert main(["detect", "predict", "--weights", str(weights), "--source", str(tmp / "a.jpg"), "--imgsz", "64",
                 "--conf", "0.0001", "--project", str(tmp / "pred"), "--name", "p"]) == 0
    recs = json.loads((tmp / "pred" / "p" / "predictions.json").read_text())
    assert recs and {r["name"] for r in recs} <= set(SYNTH_CLASSES)


def test_cli_refuses_hostile_and_foreign_weights_in_one_line(synth, tmp_path, capsys):
    _, data, _ = synth
    marker = tmp_path / "pwned"
    torch.save({"model": _hostile("os.system", marker)}, tmp_path / "evil.pt")
    seg = save_ultralytics_checkpoint(tmp_path / "seg.pt", {"model": create_detector("yolov8n", nc=4)},
                                      {"DetectionModel": "SegmentationModel"}, yaml_file="yolov8n-seg.yaml")
    for weights, why in ((tmp_path / "evil.pt", "refused to unpickle"), (seg, "segment model")):
        for cmd in (["val", "--data", str(data)], ["predict", "--source", str(tmp_path)]):
            assert main(["detect", cmd[0], "--weights", str(weights), *cmd[1:]]) == 2
            err = capsys.readouterr().err.strip()
            assert err.startswith(f"leanvision detect: error: {weights}") and why in err and "\n" not in err, err
    assert not marker.exists()


def test_cli_train_starts_from_an_ultralytics_checkpoint_and_lists_the_class_layers(synth, tmp_path, capsys):
    tmp, data, _ = synth
    coco = save_ultralytics_checkpoint(tmp_path / "yolov8n.pt", {"model": _detector(nc=80)})
    assert main(["detect", "train", "--model", "yolov8n", "--weights", str(coco), "--data", str(data), "--epochs",
                 "1", "--batch", "2", "--imgsz", "64", "--workers", "0", "--project", str(tmp_path / "runs"),
                 "--no-progress", "--no-plots", "--no-val"]) == 0
    out = capsys.readouterr().out
    assert f"tensors of yolov8n loaded from {coco}" in out
    assert "re-initialised (shapes differ from the file's): model.22.cv3.0.0 (80x64x3x3 in the file" in out


def test_a_leanvision_checkpoint_starts_gso_yolo_from_its_ema_weights(tmp_path):
    from leanvision.detect.val import detector_spec
    from leanvision.detect.weights import load_start_weights

    ema, live = _detector(nc=3, seed=4), _detector(nc=3, seed=5)
    method = {f"ema_model.{k}": v for k, v in ema.state_dict().items()}
    method |= {f"model.{k}": v for k, v in live.state_dict().items()}
    torch.save({"config": {"detector": detector_spec("yolov8n", ["a", "b", "c"], {})}, "method": method},
               tmp_path / "best.pt")
    gso = create_detector("gso-yolo-n", nc=3)
    report = load_start_weights(gso, tmp_path / "best.pt")
    assert report.not_in_file == ["model.9 (GOM)", "model.11 (SCM)"] and not report.reinitialised
    assert "a leanvision detector checkpoint" in report.source
    assert torch.equal(gso.model[10].cv1.bn.running_var, ema.model[9].cv1.bn.running_var)  # SPPF 9 -> 10, EMA's
