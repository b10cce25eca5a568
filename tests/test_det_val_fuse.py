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
