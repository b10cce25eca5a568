"""Validation runs a BatchNorm-folded copy of the detector: same outputs, the caller's model untouched."""

from __future__ import annotations

import torch
from torch import nn

from leanvision.detection.val import fuse_conv_bn
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
    from leanvision.detection.replacement import apply_detector_replacement
    from leanvision.methods.replacement import ReplacedBlock

    torch.manual_seed(0)
    model = create_detector("yolov8n", nc=3)
    apply_detector_replacement(model, interval=2, adapter=True)
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
