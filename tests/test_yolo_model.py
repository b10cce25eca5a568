"""YOLOv8 / GSO-YOLO tables: reference parameter counts and GFLOPs, outputs, decoding, registry, backbone seam."""

import math

import pytest
import torch
from torch import nn

from leanvision.models.yolo import (
    C2f,
    DetectionModel,
    count_parameters,
    create_detector,
    gso_yolo_table,
    list_detectors,
    model_gflops,
    register_detector,
)

# Reference counts at 80 classes, DFL's 16 fixed weights included (specs/gso_yolo.md §4.2)
REFERENCE_PARAMS = {"yolov8n": 3_157_200, "yolov8s": 11_166_560, "yolov8m": 25_902_640, "yolov8l": 43_691_520}


@pytest.mark.parametrize(("name", "params"), REFERENCE_PARAMS.items())
def test_parameter_count_matches_reference(name, params):
    assert count_parameters(create_detector(name)) == params


def test_yolov8x_parameter_count_close_to_68_2m():
    assert abs(count_parameters(create_detector("yolov8x")) / 68.2e6 - 1) < 0.005


def test_gflops_at_640():
    # FlopCounterMode counts conv/linear/matmul only (2 FLOPs per multiply-add), like ultralytics' count of
    # a Conv-BN-fused model: 8.7 GFLOPs for YOLOv8n. Its unfused figures (8.9 / 28.8) also count BN/bias.
    assert model_gflops(create_detector("yolov8n")) == pytest.approx(8.7, abs=0.1)
    assert model_gflops(create_detector("yolov8s")) == pytest.approx(28.8, rel=0.015)
    assert model_gflops(create_detector("gso-yolo-n")) == pytest.approx(10.2, rel=0.02)  # spec §4.2 estimate


def test_train_and_eval_outputs():
    m = create_detector("yolov8n", nc=3)
    x = torch.randn(2, 3, 64, 96)
    raw = m(x)
    assert [tuple(r.shape) for r in raw] == [(2, 67, 8, 12), (2, 67, 4, 6), (2, 67, 2, 3)]  # 4·16 + 3 channels
    m.eval()
    with torch.no_grad():
        out = m(x)
        assert out.shape == (2, 4 + 3, 8 * 12 + 4 * 6 + 2 * 3)
        torch.testing.assert_close(out, m.decode(m.forward_raw(x)))
    assert ((out[:, 4:] > 0) & (out[:, 4:] < 1)).all()  # sigmoid scores
    assert m.stride.tolist() == [8.0, 16.0, 32.0] and m.reg_max == 16 and m.nc == 3


def test_decode_hand_placed_distribution():
    # One anchor of interest: level P4 (stride 16), cell (x=1, y=0) -> anchor centre (1.5, 0.5) in grid units.
    # Distances l, t, r, b = 1, 0.5, 2, 3 bins (two-hot 0.5/0.5 at bins 0,1 for t) -> box in grid units
    # x1 = 0.5, y1 = 0, x2 = 3.5, y2 = 3.5 -> pixels ×16: (8, 0, 56, 56), xywh (32, 28, 48, 56).
    m = create_detector("yolov8n", nc=2).eval()
    raw = [torch.zeros(1, 66, 4, 4), torch.zeros(1, 66, 2, 2), torch.zeros(1, 66, 1, 1)]
    probs = torch.full((4, 16), 1e-12)
    probs[0, 1] = probs[2, 2] = probs[3, 3] = 1.0
    probs[1, 0] = probs[1, 1] = 0.5
    raw[1][0, :64, 0, 1] = probs.log().flatten()
    raw[1][0, 64:, 0, 1] = torch.tensor([0.0, 2.0])
    out = m.decode(raw)[0]  # (6, 16 + 4 + 1)
    a = 16 + 1  # the anchor's index: after the 16 P3 anchors, row 0, column 1 of P4
    torch.testing.assert_close(out[:4, a], torch.tensor([32.0, 28.0, 48.0, 56.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[4:, a], torch.sigmoid(torch.tensor([0.0, 2.0])))


def test_detect_bias_initialisation():
    m = create_detector("yolov8n")
    for box, cls, s in zip(m.head.cv2, m.head.cv3, (8, 16, 32)):
        assert torch.all(box[-1].bias == 1.0)
        torch.testing.assert_close(cls[-1].bias, torch.full((80,), math.log(5 / 80 / (640 / s) ** 2)))
    assert math.log(5 / 80 / 80**2) == pytest.approx(-11.5366, abs=1e-4)  # stride 8 by hand


def test_batchnorm_settings_and_frozen_dfl():
    m = create_detector("gso_yolo_n")
    bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    assert bns and all(b.eps == 1e-3 and b.momentum == 0.03 for b in bns)
    assert not m.head.dfl.conv.weight.requires_grad
    assert m.head.dfl.conv.weight.flatten().tolist() == list(range(16))


def test_scaled_widths_and_depths():
    n, m = create_detector("yolov8n"), create_detector("yolov8m")
    assert n.channels[:10] == [16, 32, 32, 64, 64, 128, 128, 256, 256, 256]
    assert len(n.model[4].m) == 2 and len(n.model[2].m) == 1  # 6·0.33 -> 2, 3·0.33 -> 1
    assert m.channels[7] == 576 and len(m.model[4].m) == 4  # min(1024, 768)·0.75, 6·0.67 -> 4


def test_registry_names_and_errors():
    names = list_detectors()
    for scale in "nsmlx":
        assert f"yolov8{scale}" in names and f"gso_yolo_{scale}" in names
    assert list_detectors("gso*") == [f"gso_yolo_{s}" for s in "lmnsx"]
    assert create_detector("GSO-YOLO-N", nc=5, gom=None).nc == 5  # None means "model default"
    with pytest.raises(ValueError, match="valid detectors"):
        create_detector("yolov9n")
    with pytest.raises(ValueError, match="already registered"):

        @register_detector
        def yolov8n(**kwargs):  # noqa: F811
            raise AssertionError

    assert create_detector("yolov8n", names=["a", "b"]).names == {0: "a", 1: "b"}


def test_gso_table_rows_and_p5_wiring_ablation():
    table = gso_yolo_table()
    rows = table["backbone"] + table["head"]
    assert [rows[i][2] for i in (9, 10, 11)] == ["GOM", "SPPF", "SCM"]
    assert rows[12][0] == -1 and rows[22][0] == [-1, 11]
    default = create_detector("gso-yolo-n")
    alt = create_detector("gso-yolo-n", p5_lateral="sppf")
    assert default.froms[22] == [-1, 11] and alt.froms[22] == [-1, 10]
    assert count_parameters(alt) == count_parameters(default)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    alt.load_state_dict(default.state_dict())
    assert not torch.allclose(default(x)[2], alt(x)[2])  # P5 really takes a different input


def test_backbone_blocks_and_swapping_a_block():
    m = create_detector("gso_yolo_n", nc=2)
    blocks, info = m.backbone_blocks(), m.backbone_info()
    assert len(blocks) == len(info) == 12 and len(create_detector("yolov8n").backbone_blocks()) == 10
    assert [b.name for b in info[:5]] == ["1.0", "2.0", "2.1", "3.0", "3.1"]
    assert (info[6].in_channels, info[6].out_channels, info[6].stride, info[6].transition) == (128, 128, 1, False)
    # the wiring lives beside the modules: a same-shape replacement just works
    x = torch.randn(1, 3, 64, 64)
    before = [r.detach() for r in m(x)]
    m.model[6] = C2f(128, 128, 2, True)
    after = m(x)
    assert [a.shape for a in after] == [b.shape for b in before]
    assert not torch.allclose(after[0], before[0])


def test_bad_scale_is_refused():
    with pytest.raises(ValueError, match="scale"):
        DetectionModel(gso_yolo_table(), scale="q")
