"""GSO-YOLO at scale s and GOM's GFLOPs, against the spec's arithmetic (test_gso_modules.py covers scale n)."""

import pytest

from leanvision.models.yolo import count_parameters, create_detector, model_gflops


def test_gso_yolo_s_is_yolov8s_plus_gom_512_and_scm_512():
    # GOM(C=512, r=4): MLP 2·512·128 + 128 + 512 = 131,712; 7×7 convs 2·49·512·128 + 128 + 512 = 6,423,168;
    # BNs 2·128 + 2·512 = 1,280 -> 6,556,160 (spec: "about 6.56 M"). SCM(512, G=8): C/G = 64;
    # 64·64 + 64 + 9·64·64 + 64 + 2·64 = 41,216. YOLOv8s 11,166,560 -> 17,763,936 (spec §4.2: "about 17.7 M").
    assert count_parameters(create_detector("gso-yolo-s")) == 11_166_560 + 6_556_160 + 41_216 == 17_763_936


@pytest.mark.parametrize(("scale", "c"), [("n", 256), ("s", 512)])
def test_gom_adds_its_conv_and_mlp_multiply_adds_at_640(scale, c):
    # P5 is 20×20 at 640. Multiply-adds: two 7×7 convs C->C/4->C, 2·49·C·(C/4)·400, and the per-pixel MLP
    # 2·C·(C/4)·400; FLOPs = 2·MACs (the counter leaves out elementwise products, BN and sigmoids).
    # n: 1.311 GFLOPs (spec: "about +1.3"); s: 5.243 (spec: "about +5.1").
    macs = 2 * 49 * c * (c // 4) * 400 + 2 * c * (c // 4) * 400
    base = model_gflops(create_detector(f"gso-yolo-{scale}", gom=False, scm=False))
    with_gom = model_gflops(create_detector(f"gso-yolo-{scale}", gom=True, scm=False))
    assert with_gom - base == pytest.approx(2 * macs / 1e9, rel=1e-9)
