"""Validation runs a BatchNorm-folded copy of the detector: same outputs, the caller's model untouched."""

from __future__ import annotations

import torch
from torch import nn

from leanvision.detect.val import fuse_conv_bn
from leanvision.models.yolo import create_detector


def test_fused_copy_matches_the_model_and_leaves_it_alone():
    torch.manual_seed(0)
    model = create_detector("yolov8n", nc=3)
    for m in model.modules():  # non-trivial running statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.train()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    fused = fuse_conv_bn(model)
    assert model.training and sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn
    assert not fused.training and not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        ref, out = model.eval()(x), fused(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-3)


def test_fused_copy_of_a_model_with_replaced_bottlenecks_matches_it():
    """Replaced blocks hold no conv weights of their own: they are materialised, then folded."""
    from leanvision.methods.replacement import ReplacedBlock, apply_replacement

    torch.manual_seed(0)
    model = create_detector("yolov8n", nc=3)
    apply_replacement(model, interval=2, adapter=True)
    assert any(isinstance(m, ReplacedBlock) for m in model.modules())
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    fused = fuse_conv_bn(model)
    assert not any(isinstance(m, (nn.BatchNorm2d, ReplacedBlock)) for m in fused.modules())
    assert any(isinstance(m, ReplacedBlock) for m in model.modules())  # the caller's model is untouched
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref, out = model.eval()(x), fused(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-3)


def test_channels_last_inference_net_matches_and_only_the_copy_changes_format():
    """validate()'s NHWC path (the CPU default) computes the same outputs; the caller's model keeps NCHW."""
    from leanvision.detect.val import inference_net, resolve_channels_last

    assert resolve_channels_last(None, "cpu") and not resolve_channels_last(None, "cuda")
    assert not resolve_channels_last(False, "cpu") and resolve_channels_last(True, "cuda")
    torch.manual_seed(0)
    model = create_detector("yolov8n", nc=3).eval()
    net = inference_net(model, fuse=True, channels_last=True)
    assert net.model[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.model[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert inference_net(model, fuse=False, channels_last=True) is model  # never converts the caller's model
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        ref, out = model(x), net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-3)
