"""The one registry behind models, detectors, methods and datasets, and `leanvision models`."""

import pytest

from leanvision.cli import main
from leanvision.data.registry import DATASETS
from leanvision.methods._registry import METHODS
from leanvision.models._registry import MODELS
from leanvision.models.yolo import DETECTORS
from leanvision.registry import Registry


def test_register_list_create_and_refuse_a_duplicate():
    reg = Registry("widget", normalize=lambda n: n.lower().replace("-", "_"))

    @reg.register
    def net_b10(width=4):
        return ("b10", width)

    @reg.register("net-b2")
    def _b2(width=4):
        return ("b2", width)

    assert reg.names() == ["net_b2", "net_b10"]  # natural order: 2 before 10
    assert reg.names("NET-B1*") == ["net_b10"]  # the pattern is normalised like a name
    assert reg.create("Net-B10", width=None) == ("b10", 4)  # None = the builder's default
    assert reg.create("net_b2", width=8) == ("b2", 8)
    assert "NET_B2" in reg and "net_b3" not in reg and len(reg) == 2
    with pytest.raises(ValueError, match=r"widget 'net_b2' is already registered"):
        reg.add("Net-B2", lambda: None)
    with pytest.raises(ValueError, match=r"unknown widget 'net_b3'; valid widgets: net_b2, net_b10"):
        reg.get("net_b3")


def test_models_detectors_methods_and_datasets_share_the_implementation():
    assert all(isinstance(r, Registry) for r in (MODELS, DETECTORS, METHODS, DATASETS))
    assert [r.kind for r in (MODELS, DETECTORS, METHODS, DATASETS)] == ["model", "detector", "method", "dataset"]
    assert "resnet110" in MODELS and "gso-yolo-n" in DETECTORS and "dgl+mlaan" in METHODS and "CIFAR10" in DATASETS


def test_leanvision_models_lists_classifiers_and_detectors(capsys, monkeypatch):
    # timm's names (checked against the block-list contract: minutes the first time) are tests/test_cli_vocabulary's
    monkeypatch.setattr("leanvision.models.list_timm_models", lambda pattern, **kw: ["timm/a_checked_name"])
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    classify, detect = out.split("detectors (leanvision detect train --model NAME):")
    detect, timm = detect.split("timm classifiers wrapped as block lists (leanvision train --model timm/NAME):")
    assert timm == "\n  timm/a_checked_name\n"
    assert "  resnet110\n" in classify and "  vit_tiny_patch4_32\n" in classify and "yolo" not in classify
    assert "  yolov8n\n" in detect and "  gso_yolo_x\n" in detect and "resnet" not in detect


def test_leanvision_models_pattern_and_task(capsys):
    assert main(["models", "*yolo*s"]) == 0
    out = capsys.readouterr().out
    assert "classifiers" not in out and "  yolov8s\n  gso_yolo_s" not in out  # natural order: gso before yolo
    assert "  gso_yolo_s\n  yolov8s\n" in out
    assert main(["models", "--task", "detect", "gso-yolo-*"]) == 0
    assert capsys.readouterr().out.split() == ["gso_yolo_l", "gso_yolo_m", "gso_yolo_n", "gso_yolo_s", "gso_yolo_x"]
    assert main(["models", "--task", "classify", "resnet1*"]) == 0
    assert capsys.readouterr().out.split() == ["resnet18", "resnet101", "resnet110", "resnet152"]
    assert main(["models", "nothing*"]) == 0
    assert "no model matches 'nothing*'" in capsys.readouterr().out
