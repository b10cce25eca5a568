"""ReplacedBlock: fused tensors, analytic gradients of a and b, BatchNorm statistics, options."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock

from leanvision.engine.meter import SavedTensorMeter
from leanvision.methods.replacement import (
    adapt,
    apply_replacement,
    export_model,
    replace_module,
)
from leanvision.methods.replacement.block import _Fuse
from leanvision.models.resnet import ResNet
from leanvision.models.vit import VisionTransformer


def tiny_resnet(depth=4, widths=(4,)):
    torch.manual_seed(0)
    return ResNet(BasicBlock, (depth,) * len(widths), widths, num_classes=3, cifar_stem=True, image_size=8)


def tiny_vit():
    torch.manual_seed(0)
    return VisionTransformer(image_size=8, patch_size=4, dim=8, depth=4, num_heads=2, num_classes=3)


def triple(width=4):
    torch.manual_seed(1)
    return [BasicBlock(width, width) for _ in range(3)]


@pytest.mark.parametrize("make", [tiny_resnet, tiny_vit])
def test_fused_tensors_equal_the_formula(make):
    model = make()
    apply_replacement(model, ids=[1])
    rb = model.blocks[1]
    with torch.no_grad():
        rb.a.fill_(0.3)
        rb.b.fill_(-1.7)
    prev, nxt = dict(model.blocks[0].named_parameters()), dict(model.blocks[2].named_parameters())
    fused = rb.fused_params()
    assert set(fused) == set(prev)
    for name, w in fused.items():
        torch.testing.assert_close(w, 0.3 * prev[name] + -1.7 * nxt[name], rtol=0, atol=1e-6)


def test_replaced_block_holds_only_a_and_b():
    prev, target, nxt = triple()
    rb = replace_module(prev, target, nxt)
    assert [n for n, _ in rb.named_parameters()] == ["a", "b"]
    assert all(getattr(p, "_no_weight_decay", False) for p in rb.parameters())
    assert rb.a.item() == 0.5 and rb.b.item() == 0.5  # spec §1.2 default
    # the template keeps its own BN buffers, and no weight
    assert {n for n, _ in rb.template.named_buffers()} >= {"bn1.running_mean", "bn2.running_var"}
    assert list(rb.template.parameters()) == []


def test_gradients_of_a_b_and_neighbours_are_the_analytic_inner_products():
    """∂L/∂a = Σ⟨G_n, θprev_n⟩, ∂L/∂b = Σ⟨G_n, θnext_n⟩, neighbours get their own grad + a·G (float64)."""
    model = tiny_resnet().double()
    apply_replacement(model, ids=[1])
    rb = model.blocks[1]
    with torch.no_grad():
        rb.a.fill_(0.7)
        rb.b.fill_(-0.4)
    plain = export_model(model)  # independent reference: an ordinary model holding W̃ as parameters
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 2, 1])
    F.cross_entropy(model(x), y).backward()
    F.cross_entropy(plain(x), y).backward()
    G = {n: p.grad for n, p in plain.blocks[1].named_parameters()}
    prev, nxt = dict(model.blocks[0].named_parameters()), dict(model.blocks[2].named_parameters())
    ga = sum((G[n] * prev[n]).sum() for n in G)
    gb = sum((G[n] * nxt[n]).sum() for n in G)
    torch.testing.assert_close(rb.a.grad, ga.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rb.b.grad, gb.detach(), rtol=1e-10, atol=1e-12)
    plain_prev = dict(plain.blocks[0].named_parameters())
    plain_next = dict(plain.blocks[2].named_parameters())
    for n in G:
        torch.testing.assert_close(prev[n].grad, plain_prev[n].grad + 0.7 * G[n], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(nxt[n].grad, plain_next[n].grad - 0.4 * G[n], rtol=1e-10, atol=1e-12)


def test_fuse_function_passes_gradcheck():
    torch.manual_seed(0)
    d = dict(dtype=torch.float64, requires_grad=True)
    a, b = torch.tensor(0.3, **d), torch.tensor(-1.2, **d)
    ts = [torch.randn(3, 2, **d), torch.randn(4, **d), torch.randn(3, 2, **d), torch.randn(4, **d)]
    assert torch.autograd.gradcheck(lambda a, b, *t: _Fuse.apply(a, b, 2, *t), (a, b, *ts))


def test_detach_neighbors_stops_gradient_into_neighbours_only():
    model = tiny_resnet().double()
    apply_replacement(model, ids=[1], detach_neighbors=True)
    plain = export_model(model)
    x, y = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1])
    F.cross_entropy(model(x), y).backward()
    F.cross_entropy(plain(x), y).backward()
    for (n, p), q in zip(model.blocks[0].named_parameters(), plain.blocks[0].parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
    assert model.blocks[1].a.grad.abs() > 0 and model.blocks[1].b.grad.abs() > 0


def test_convex_form_keeps_b_equal_one_minus_a():
    prev, target, nxt = triple()
    rb = replace_module(prev, target, nxt, convex=True, init=(0.25, 0.75))
    assert [n for n, _ in rb.named_parameters()] == ["s"]
    a, b = rb.coefficients()
    assert math.isclose(a.item(), 0.25, rel_tol=1e-6) and math.isclose((a + b).item(), 1.0)
    with pytest.raises(ValueError, match="convex"):
        replace_module(*triple(), convex=True, init=(0.5, 0.7))


def test_running_statistics_are_the_blocks_own_and_update_in_train_mode():
    prev, target, nxt = triple()
    rb = replace_module(prev, target, nxt).train()
    ref = rb.materialize().train()  # a plain BasicBlock with the same weights and (copied) buffers
    before_prev = prev.bn1.running_mean.clone()
    x = torch.randn(4, 4, 6, 6)
    out = rb(x)
    torch.testing.assert_close(out, ref(x))
    for name in ("bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"):
        torch.testing.assert_close(rb.template.get_buffer(name), ref.get_buffer(name))
    assert int(rb.template.bn1.num_batches_tracked) == 1
    assert rb.template.bn1.running_mean.abs().sum() > 0  # it moved away from zero ...
    assert torch.equal(prev.bn1.running_mean, before_prev)  # ... and the neighbour's did not
    # same result as torch.func.functional_call with the template's buffers passed by reference
    fc = torch.func.functional_call(
        rb.template, {**rb.fused_params(), **dict(rb.template.named_buffers())}, (x,), strict=False
    )
    torch.testing.assert_close(fc, rb(x))
    assert int(rb.template.bn1.num_batches_tracked) == 3
    assert rb.template.bn1.weight is None  # the swap leaves no fused tensor behind


def test_replaced_block_saves_at_most_its_fused_weights_more_than_a_normal_block():
    """Activation memory is unchanged (spec §3.2); the one extra saved set is the fused weights."""
    prev, target, nxt = triple(16)
    rb = replace_module(prev, target, nxt)
    ref = rb.materialize()
    x = torch.randn(8, 16, 16, 16)
    peaks = []
    for block, exclude in ((ref, ref), (rb, torch.nn.ModuleList([rb, prev, nxt]))):
        with SavedTensorMeter(exclude) as m:
            block(x).sum().backward()
        peaks.append(m.peak_bytes)
    fused_bytes = sum(p.numel() * p.element_size() for p in ref.parameters())
    assert 0 <= peaks[1] - peaks[0] <= fused_bytes
    assert peaks[1] - peaks[0] >= 2 * 16 * 16 * 9 * 4  # the two conv weights are what conv saves


def test_adapter_slices_and_tiles_with_fan_in_scaling():
    w = torch.arange(2 * 4 * 1 * 1, dtype=torch.float32).reshape(2, 4, 1, 1)
    small = adapt(w, torch.Size([2, 2, 1, 1]))  # leading slice of the input axis, fan-in 4 -> 2
    torch.testing.assert_close(small, w[:, :2] * math.sqrt(4 / 2))
    big = adapt(w, torch.Size([4, 8, 1, 1]))  # tiled on both axes, fan-in 4 -> 8
    torch.testing.assert_close(big, torch.cat([w, w], 1).repeat(2, 1, 1, 1) * math.sqrt(4 / 8))
    v = torch.tensor([1.0, 2.0])
    torch.testing.assert_close(adapt(v, torch.Size([3])), torch.tensor([1.0, 2.0, 1.0]))


def test_adapter_lets_blocks_next_to_a_transition_be_replaced():
    model = tiny_resnet(depth=3, widths=(4, 8, 16))
    with pytest.raises(ValueError, match="adapter=True"):
        apply_replacement(model, ids=["1.2"])
    report = apply_replacement(model, interval=2, adapter=True)
    assert report.names == ["1.1", "2.1", "3.1"]
    x = torch.randn(2, 3, 8, 8)
    model(x).sum().backward()
    assert all(model.blocks[i].a.grad is not None for i, _ in report.replaced)
    assert model.blocks[3].conv1.weight.grad is not None  # transition neighbour 2.0 gets gradient too
    model.eval()
    torch.testing.assert_close(export_model(model)(x), model(x))
