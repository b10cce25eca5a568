"""The ``replacement`` method: optimizer groups, export, resume, AMP, channels_last, DDP, local modules."""

import argparse
import io
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from leanvision.engine.meter import count_parameters
from leanvision.methods import create_method
from leanvision.methods.replacement import (
    ReplacedBlock,
    ReplacementLearning,
    add_cli_arguments,
    apply_replacement,
    options_from_args,
)
from leanvision.models import create_model
from leanvision.models.resnet import BasicBlock, ResNet
from leanvision.models.vit import VisionTransformer


def tiny_resnet():  # blocks 1.0-1.3 of width 4: interval 2 replaces 1.1
    torch.manual_seed(0)
    return ResNet(BasicBlock, (4,), (4,), num_classes=3, cifar_stem=True, image_size=8)


def tiny_vit():  # 4 encoder blocks of width 8: interval 2 replaces 1.1
    torch.manual_seed(0)
    return VisionTransformer(image_size=8, patch_size=4, dim=8, depth=4, num_heads=2, num_classes=3)


def backward(loss):
    loss.backward()


def batch(n=4, size=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def train(method, steps=3, lr=0.1, seed=0):
    opt = torch.optim.SGD(method.param_groups(1e-4), lr=lr, momentum=0.9)
    for s in range(steps):
        opt.zero_grad()
        method.train_step(*batch(seed=seed + s), backward)
        opt.step()
    return opt


def test_registry_builds_it_and_prints_the_report(capsys):
    method = create_method("replacement", tiny_resnet(), interval=2)
    out = capsys.readouterr().out
    assert isinstance(method, ReplacementLearning)
    assert "1/4 blocks replaced" in out and "1.1" in out and "trainable parameters:" in out
    assert "->" in method.describe()
    with pytest.raises(ValueError, match="not both"):
        ReplacementLearning(tiny_resnet(), interval=2, blocks="1")


def test_cli_flags_map_to_builder_options():
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(["--replace-blocks", "1.1,2.2", "--replace-convex", "--replace-init", "0.4,0.6"])
    opts = options_from_args(args)
    assert opts == dict(
        interval=None, blocks="1.1,2.2", init="0.4,0.6", detach_neighbors=None, convex=True, adapter=None,
        surrogate=None,
    )
    help_text = " ".join(parser.format_help().split())
    assert help_text.count("[our choice: the paper is silent]") == 7


@pytest.mark.parametrize("make", [tiny_resnet, tiny_vit])
def test_optimizer_holds_every_trainable_tensor_once(make):
    model = make()
    method = ReplacementLearning(model, interval=2, verbose=False)
    groups = method.param_groups(5e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert sum(p.numel() for g in groups for p in g["params"]) == count_parameters(
        method, trainable_only=True
    )
    assert len(list(model.parameters())) == len({id(p) for p in model.parameters()})
    no_decay = next(g for g in groups if g["weight_decay"] == 0.0)["params"]
    rb = model.blocks[1]
    assert any(p is rb.a for p in no_decay) and any(p is rb.b for p in no_decay)
    # neighbours appear once, in the decay group, and nothing of the replaced block beyond a and b
    assert sum(p is model.blocks[0].get_parameter(rb.names[0]) for p in groups[0]["params"]) == 1


def test_no_gradient_or_optimizer_state_for_the_replaced_block():
    method = ReplacementLearning(tiny_resnet(), interval=2, verbose=False)
    opt = train(method, steps=1)
    rb = method.model.blocks[1]
    assert all(p.numel() == 1 for p in rb.parameters())
    state_numel = sum(v.numel() for st in opt.state.values() for v in st.values() if torch.is_tensor(v))
    assert state_numel == count_parameters(method, trainable_only=True)


@pytest.mark.parametrize("make, name", [(tiny_resnet, None), (tiny_vit, None), (None, "resnet20")])
def test_exported_model_is_plain_and_equals_the_training_model_in_eval(make, name):
    model = make() if make else create_model(name)
    keys = list(model.state_dict())
    method = ReplacementLearning(model, interval=2, verbose=False)
    train(method, steps=3, seed=1) if make else None
    exported = method.export_model().eval()
    model.eval()
    x = batch(size=model.image_size)[0]
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), rtol=1e-5, atol=1e-6)
    assert list(exported.state_dict()) == keys
    assert not any(type(m).__module__.startswith("leanvision.methods") for m in exported.modules())
    assert any(isinstance(m, ReplacedBlock) for m in model.modules())  # the training model is untouched
    # a normal checkpoint: loads strictly into a freshly built model with no method code involved
    buf = io.BytesIO()
    torch.save(exported.state_dict(), buf)
    buf.seek(0)
    fresh = (make() if make else create_model(name)).eval()
    fresh.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), exported(x))


def test_checkpoint_resume_restores_a_b_buffers_and_optimizer():
    method = ReplacementLearning(tiny_resnet(), interval=2, verbose=False)
    opt = train(method, steps=2)
    ckpt = io.BytesIO()
    torch.save({"method": method.state_dict(), "optimizer": opt.state_dict()}, ckpt)
    assert {"model.blocks.1.a", "model.blocks.1.b", "model.blocks.1.template.bn1.running_mean"} <= set(
        method.state_dict()
    )
    ckpt.seek(0)
    state = torch.load(ckpt, weights_only=True)
    resumed = ReplacementLearning(tiny_resnet(), interval=2, verbose=False)
    resumed.load_state_dict(state["method"], strict=True)
    opt2 = torch.optim.SGD(resumed.param_groups(1e-4), lr=0.1, momentum=0.9)
    opt2.load_state_dict(state["optimizer"])
    for m in (method, resumed):  # one more identical step from the same state
        o = opt if m is method else opt2
        o.zero_grad()
        m.train_step(*batch(seed=9), backward)
        o.step()
    for (n, p), q in zip(method.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(p, q, msg=n)


def test_mixed_precision_autocast():
    model = tiny_resnet()
    method = ReplacementLearning(model, interval=2, verbose=False)
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method.train_step(x, y, backward)
    rb = model.blocks[1]
    assert out["logits"].dtype == torch.bfloat16
    assert rb.a.grad.dtype == torch.float32 and torch.isfinite(rb.a.grad) and torch.isfinite(rb.b.grad)
    assert model.blocks[0].conv1.weight.grad.dtype == torch.float32


def test_channels_last_gives_the_same_result():
    ref, cl = tiny_resnet(), tiny_resnet().to(memory_format=torch.channels_last)
    for m in (ref, cl):
        apply_replacement(m, interval=2)
    x, y = batch()
    F.cross_entropy(ref(x), y).backward()
    F.cross_entropy(cl(x.contiguous(memory_format=torch.channels_last)), y).backward()
    torch.testing.assert_close(cl.blocks[1].a.grad, ref.blocks[1].a.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        cl.blocks[0].conv2.weight.grad, ref.blocks[0].conv2.weight.grad, rtol=1e-4, atol=1e-6
    )


def test_ddp_single_process_matches_plain_training():
    if dist.is_initialized():
        pytest.skip("a process group is already initialised")
    with tempfile.TemporaryDirectory() as d:
        dist.init_process_group(
            "gloo", init_method=f"file://{os.path.join(d, 'store')}", rank=0, world_size=1
        )
        try:
            ref, dmodel = tiny_vit(), tiny_vit()
            for m in (ref, dmodel):
                apply_replacement(m, interval=2)
            ddp = nn.parallel.DistributedDataParallel(dmodel)
            x, y = batch()
            F.cross_entropy(ref(x), y).backward()
            F.cross_entropy(ddp(x), y).backward()
            for (n, p), q in zip(ref.named_parameters(), dmodel.parameters()):
                torch.testing.assert_close(q.grad, p.grad, msg=n)
        finally:
            dist.destroy_process_group()


@pytest.mark.parametrize("detach", [False, True])
def test_neighbour_in_another_local_module_gets_gradient_from_both(detach):
    """Local learning cuts after block 0: module A = stem + block 0 (own aux loss), module B = the rest.

    The replaced block 1 sits in B; its neighbour block 0 sits in A and receives A's gradient plus,
    through the fusion, B's (unless ``detach_neighbors``).
    """
    model = tiny_resnet()
    apply_replacement(model, ids=[1], detach_neighbors=detach)
    aux = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x, y = batch()

    def module_losses():
        h = model.blocks[0](model.stem(x))
        loss_a = F.cross_entropy(aux(h), y)
        z = h.detach()  # the gradient-isolated cut
        for blk in model.blocks[1:]:
            z = blk(z)
        return loss_a, F.cross_entropy(model.head(z), y)

    w = model.blocks[0].conv1.weight
    grads = []
    for which in (0, 1, None):  # A only, B only, both as a local method runs them
        model.zero_grad()
        la, lb = module_losses()
        for i, loss in enumerate((la, lb)):
            if which is None or which == i:
                loss.backward()
        grads.append(torch.zeros_like(w) if w.grad is None else w.grad.clone())
    torch.testing.assert_close(grads[2], grads[0] + grads[1])
    assert (grads[1].abs().sum() == 0) == detach


def test_timm_style_vit_with_other_sizes_runs():
    model = VisionTransformer(image_size=8, patch_size=4, dim=8, depth=6, num_heads=2, num_classes=3)
    method = ReplacementLearning(model, blocks="1,3", init="1,0", verbose=False)
    assert method.report.names == ["1.1", "1.3"]
    rb = model.blocks[1]
    # init (1, 0) copies the previous block
    torch.testing.assert_close(rb.fused_params()["mlp.fc1.weight"], model.blocks[0].mlp.fc1.weight)
    train(method, steps=1)
