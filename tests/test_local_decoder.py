"""InfoPro's decoder: the factorised upsample+conv equals the plain composition (values and grads)."""

import pytest
import torch
import torch.nn.functional as F

from leanvision.methods.local.heads import Decoder, upsample_conv3x3


def _plain(x, weight, bias, size):
    return F.conv2d(F.interpolate(x, size=size, mode="bilinear", align_corners=True), weight, bias, padding=1)


@pytest.mark.parametrize(
    "shape, size",
    [((2, 16, 8, 8), (32, 32)), ((3, 5, 5, 7), (32, 24)), ((1, 4, 1, 1), (6, 6)), ((2, 6, 32, 32), (32, 32))],
)
def test_upsample_conv3x3_matches_interpolate_then_conv(shape, size):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(12, shape[1], 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(12, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(shape[0], 12, *size, dtype=torch.float64)

    got = upsample_conv3x3(x, weight, bias, size)
    grads = torch.autograd.grad(got, (x, weight, bias), upstream)
    want = _plain(x, weight, bias, size)
    want_grads = torch.autograd.grad(want, (x, weight, bias), upstream)

    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-9)


def test_decoder_output_is_the_published_layer_stack():
    """The module keeps the plain layer table (state dict keys) and computes exactly what it says."""
    torch.manual_seed(0)
    dec = Decoder(32).double().eval()
    assert list(dec.state_dict()) == [
        "body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias", "body.1.running_mean",
        "body.1.running_var", "body.1.num_batches_tracked", "body.3.weight", "body.3.bias",
    ]
    h = torch.randn(2, 32, 16, 16, dtype=torch.float64)
    want = dec.body(F.interpolate(h, size=(32, 32), mode="bilinear", align_corners=True))
    torch.testing.assert_close(dec(h, (32, 32)), want, rtol=0, atol=1e-10)
