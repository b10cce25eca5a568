"""GOM (GAM) and SCM (EMA attention): parameter arithmetic, shapes, hand-checkable forwards."""

import pytest
import torch
from torch import nn

from leanvision.models.gso import GOM, SCM, channel_shuffle
from leanvision.models.yolo import count_parameters, create_detector


def gom_params(c, r=4, g=1):
    """GAM parameter count, from its definition."""
    h = c // r
    mlp = (c * h + h) + (h * c + c)  # Linear C->C/r and C/r->C, with biases
    conv1 = 7 * 7 * (c // g) * h + h  # 7×7 conv C->C/r (grouped), with bias
    conv2 = 7 * 7 * (h // g) * c + c  # 7×7 conv C/r->C (grouped), with bias
    bns = 2 * h + 2 * c  # BN affine weights and biases
    return mlp + conv1 + conv2 + bns


def scm_params(c, g):
    cg = c // g
    return (cg * cg + cg) + (9 * cg * cg + cg) + 2 * cg  # conv1x1, conv3x3, GroupNorm affine


def test_gom_parameter_count_matches_the_spec_arithmetic():
    # C = 256, r = 4: MLP 2·256·64 + 64 + 256 = 33,088; convs 2·(49·256·64) + 64 + 256 = 1,605,952;
    # BNs 2·64 + 2·256 = 640; total 1,639,680 (the spec's "about 1.64 M" at YOLOv8n's P5)
    assert gom_params(256) == 1_639_680
    assert count_parameters(GOM(256)) == 1_639_680
    assert count_parameters(GOM(512)) == gom_params(512)  # s: ~6.56 M
    assert count_parameters(GOM(256, groups=4)) == gom_params(256, g=4)


def test_scm_parameter_count_matches_the_spec_arithmetic():
    # C = 256, G = 8: C/G = 32; 32·32+32 + 9·32·32+32 + 2·32 = 10,368 (spec: about 10 k); G = 32: 672 (~0.7 k)
    assert count_parameters(SCM(256, groups=8)) == scm_params(256, 8) == 10_368
    assert count_parameters(SCM(256, groups=32)) == scm_params(256, 32) == 672


@pytest.mark.parametrize("module", [GOM(32), GOM(32, groups=2), GOM(32, channel_sigmoid=False), SCM(32), SCM(32, 4)])
def test_shape_preserved_and_every_parameter_gets_a_gradient(module):
    x = torch.randn(2, 32, 5, 7)
    y = module(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gom_hand_checkable_forward():
    # zero the MLP and the last conv: Mc = σ(0) = 0.5, and in eval mode BN(0) = 0 (fresh running stats),
    # so Ms = σ(0) = 0.5: the output is x·0.5·0.5. Without the channel sigmoid Mc = 0 and the output is 0.
    for sigmoid, factor in ((True, 0.25), (False, 0.0)):
        gom = GOM(16, channel_sigmoid=sigmoid).eval()
        with torch.no_grad():
            for p in [*gom.channel_attention.parameters(), *gom.spatial_out[0].parameters()]:
                p.zero_()
        x = torch.randn(1, 16, 4, 4)
        torch.testing.assert_close(gom(x), x * factor)


def test_gom_is_not_residual_and_rejects_bad_groups():
    gom = GOM(16).eval()
    x = torch.randn(1, 16, 3, 3)
    assert (gom(x).abs() <= x.abs() + 1e-6).all()  # two sigmoid gates only ever shrink the input
    with pytest.raises(ValueError, match="groups"):
        GOM(16, groups=3)


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_scm_cross_spatial_weights_hand_reference():
    # With the 1×1 conv zeroed both direction gates are σ(0) = 0.5, so x1 = GN(0.25·x_g), whose channel
    # means are 0 (affine 1/0) -> a1 is uniform. With the 3×3 conv an identity, x2 = x_g.
    # Then W = mean_c(x_g) + softmax_c(GAP(x_g))·x1 and the output is x_g·σ(W).
    scm = SCM(8, groups=2)
    with torch.no_grad():
        scm.conv1x1.weight.zero_()
        scm.conv1x1.bias.zero_()
        scm.conv3x3.weight.zero_()
        scm.conv3x3.bias.zero_()
        scm.conv3x3.weight[:, :, 1, 1] = torch.eye(4)
    x = torch.randn(3, 8, 5, 6)
    xg = x.view(6, 4, 5, 6)
    mu = xg.mean(dim=(2, 3), keepdim=True)
    gn = 0.25 * (xg - mu) / torch.sqrt(0.0625 * xg.var(dim=(2, 3), unbiased=False, keepdim=True) + 1e-5)
    a2 = torch.softmax(mu.flatten(1), dim=1)[:, :, None, None]  # (BG, Cg, 1, 1)
    w = xg.mean(dim=1, keepdim=True) + (a2 * gn).sum(dim=1, keepdim=True)
    expected = (xg * torch.sigmoid(w)).view_as(x)
    torch.testing.assert_close(scm(x), expected, atol=1e-5, rtol=1e-5)


def test_scm_groups_share_weights():
    scm = SCM(8, groups=2)
    half = torch.randn(1, 4, 5, 5)
    y = scm(torch.cat([half, half], 1))
    torch.testing.assert_close(y[:, :4], y[:, 4:])


def test_scm_requires_divisible_channels():
    with pytest.raises(AssertionError, match="divisible"):
        SCM(30, groups=8)


def test_gso_yolo_n_total_is_yolov8n_plus_gom_and_scm():
    # 3,157,200 (YOLOv8n) + GOM(256) 1,639,680 + SCM(256, G=8) 10,368 = 4,807,248 (spec §4.2: "about 4.8 M")
    m = create_detector("gso-yolo-n")
    assert count_parameters(m) == 3_157_200 + gom_params(256) + scm_params(256, 8) == 4_807_248
    assert isinstance(m.model[9], GOM) and isinstance(m.model[11], SCM)
    assert m.model[9].spatial_in[1].eps == 1e-3 and m.model[9].spatial_in[1].momentum == 0.03


@pytest.mark.parametrize(
    ("gom", "scm", "extra"),
    [(False, False, 0), (True, False, 1_639_680), (False, True, 10_368), (True, True, 1_650_048)],
)
def test_gso_ablation_variants(gom, scm, extra):
    m = create_detector("gso_yolo_n", gom=gom, scm=scm)
    assert count_parameters(m) == 3_157_200 + extra
    assert isinstance(m.model[9], GOM if gom else nn.Identity)
    assert isinstance(m.model[11], SCM if scm else nn.Identity)
