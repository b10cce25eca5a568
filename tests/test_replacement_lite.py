"""The "lite" surrogate (spec §2.5, our reconstruction of RepL v2): formula, hand-written forward,
analytic gradients, parameter arithmetic, optimizer, export and loading, resume, CLI/bench, errors."""

import argparse
import io
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from leanvision.bench.rows import parse_row
from leanvision.bench.runner import row_config
from leanvision.classify.cli import config_from_args
from leanvision.classify.train import build_method
from leanvision.cli import build_parser
from leanvision.config import TrainConfig
from leanvision.engine.meter import SavedTensorMeter, count_parameters
from leanvision.methods.replacement import (
    ReplacedBlock,
    ReplacementLearning,
    add_cli_arguments,
    apply_replacement,
    export_model,
    options_from_args,
    replace_module,
)
from leanvision.models import create_model
from leanvision.models.resnet import ResNet
from leanvision.models.vit import EncoderBlock, VisionTransformer


def randomize(module, seed=0):
    """Random values in every parameter and BN buffer, so that no formula can pass by accident of init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g, dtype=buf.dtype) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g, dtype=buf.dtype) + 0.5)
    return module


def basic_triple(width=4, dtype=torch.float64):
    torch.manual_seed(1)
    return [randomize(BasicBlock(width, width), seed=i).to(dtype) for i in range(3)]


def encoder_triple(dim=8, dtype=torch.float64):
    torch.manual_seed(1)
    return [randomize(EncoderBlock(dim, 2), seed=i).to(dtype) for i in range(3)]


def tiny_resnet():  # blocks 1.0-1.3 of width 4: interval 2 replaces 1.1
    torch.manual_seed(0)
    return ResNet(BasicBlock, (4,), (4,), num_classes=3, cifar_stem=True, image_size=8)


def tiny_vit():
    torch.manual_seed(0)
    return VisionTransformer(image_size=8, patch_size=4, dim=8, depth=4, num_heads=2, num_classes=3)


def batch(n=4, size=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def backward(loss):
    loss.backward()


def train(method, steps=3, seed=0, size=8):
    opt = torch.optim.SGD(method.param_groups(1e-4), lr=0.05, momentum=0.9)
    for s in range(steps):
        opt.zero_grad()
        method.train_step(*batch(size=size, seed=seed + s), backward)
        opt.step()
    return opt


def set_ab(rb, a, b):
    with torch.no_grad():
        rb.a.fill_(a)
        rb.b.fill_(b)


# Which neighbour tensors each lite tensor is fused from (the choice documented in lite.py).
BASIC_SOURCES = {"conv.weight": ("conv2.weight", "conv1.weight"), "bn.weight": ("bn2.weight", "bn1.weight"),
                 "bn.bias": ("bn2.bias", "bn1.bias")}
ENCODER_SOURCES = {f"{t}.{k}": (f"{s}.{k}",) * 2 for t, s in (("norm", "norm2"), ("fc1", "mlp.fc1"),
                                                           ("fc2", "mlp.fc2")) for k in ("weight", "bias")}


@pytest.mark.parametrize("triple, sources", [(basic_triple, BASIC_SOURCES), (encoder_triple, ENCODER_SOURCES)])
def test_fused_tensors_equal_the_formula(triple, sources):
    prev, target, nxt = triple()
    rb = replace_module(prev, target, nxt, surrogate="lite")
    set_ab(rb, 0.3, -1.7)
    fused = rb.fused_params()
    assert list(fused) == list(sources)
    for name, (p, n) in sources.items():
        expected = 0.3 * prev.get_parameter(p) + -1.7 * nxt.get_parameter(n)
        torch.testing.assert_close(fused[name], expected, rtol=0, atol=1e-14)
    assert [n for n, _ in rb.named_parameters()] == ["a", "b"]
    assert list(rb.template.parameters()) == []


def lite_basic_reference(x, prev, nxt, a, b, running_mean, running_var, training, eps=1e-5, momentum=0.1):
    """relu(BN(conv3x3(x; a·prev.conv2 + b·next.conv1)) + x), BN affine a·prev.bn2 + b·next.bn1."""
    w = a * prev.conv2.weight + b * nxt.conv1.weight
    gamma = a * prev.bn2.weight + b * nxt.bn1.weight
    beta = a * prev.bn2.bias + b * nxt.bn1.bias
    h = F.conv2d(x, w, padding=1)
    h = F.batch_norm(h, running_mean, running_var, gamma, beta, training=training, momentum=momentum, eps=eps)
    return F.relu(h + x)


def test_lite_basic_block_forward_equals_hand_written_reference_float64():
    prev, target, nxt = basic_triple()
    with torch.no_grad():
        target.bn2.running_mean.fill_(0.25)  # the lite BN starts from the target's bn2 statistics
    rb = replace_module(prev, target, nxt, surrogate="lite").train()
    set_ab(rb, 0.7, -0.4)
    bn = rb.template.bn
    assert torch.equal(bn.running_mean, target.bn2.running_mean) and bn.running_mean is not target.bn2.running_mean
    neighbour_stats = [t.clone() for m in (prev, nxt) for t in m.buffers()]
    rm, rv = bn.running_mean.clone(), bn.running_var.clone()
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        ref = lite_basic_reference(x, prev, nxt, 0.7, -0.4, rm, rv, training=True)
        torch.testing.assert_close(rb(x), ref, rtol=1e-12, atol=1e-12)
        # its own running statistics moved exactly like the reference's; the neighbours' did not
        torch.testing.assert_close(bn.running_mean, rm, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bn.running_var, rv, rtol=1e-12, atol=1e-12)
        assert all(torch.equal(t, u) for t, u in zip(neighbour_stats, (t for m in (prev, nxt) for t in m.buffers())))
        rb.eval()
        ref = lite_basic_reference(x, prev, nxt, 0.7, -0.4, rm, rv, training=False)
        torch.testing.assert_close(rb(x), ref, rtol=1e-12, atol=1e-12)


def lite_encoder_reference(x, prev, nxt, a, b, eps=1e-6):
    """x + fc2(gelu(fc1(LN(x)))) with every tensor a·prev + b·next of the neighbours' MLP sub-layer."""

    def f(name):
        return a * prev.get_parameter(name) + b * nxt.get_parameter(name)

    h = F.layer_norm(x, x.shape[-1:], f("norm2.weight"), f("norm2.bias"), eps)
    h = F.linear(F.gelu(F.linear(h, f("mlp.fc1.weight"), f("mlp.fc1.bias"))), f("mlp.fc2.weight"), f("mlp.fc2.bias"))
    return x + h


def test_lite_encoder_block_forward_equals_hand_written_reference_float64():
    prev, target, nxt = encoder_triple()
    rb = replace_module(prev, target, nxt, surrogate="lite")
    set_ab(rb, 0.6, 0.9)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(rb(x), lite_encoder_reference(x, prev, nxt, 0.6, 0.9), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("triple, sources", [(basic_triple, BASIC_SOURCES), (encoder_triple, ENCODER_SOURCES)])
def test_gradients_of_a_b_and_neighbours_are_the_analytic_inner_products(triple, sources):
    """∂L/∂a = Σ_n ⟨G_n, prev_n⟩, ∂L/∂b = Σ_n ⟨G_n, next_n⟩ over the lite tensors only (float64).

    G_n = ∂L/∂W̃_n comes from an independent reference: the materialised lite block, whose fused
    tensors are ordinary leaf parameters.
    """
    prev, target, nxt = triple()
    rb = replace_module(prev, target, nxt, surrogate="lite").train()
    set_ab(rb, 0.7, -0.4)
    plain = rb.materialize()  # same fused values, same (copied) BN statistics
    shape = (3, 4, 6, 6) if isinstance(target, BasicBlock) else (2, 5, 8)
    x = torch.randn(*shape, dtype=torch.float64)
    r = torch.randn(*shape, dtype=torch.float64)  # L = Σ r·out, a generic linear read-out
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    (rb(x1) * r).sum().backward()
    (plain(x2) * r).sum().backward()
    G = {n: p.grad for n, p in plain.named_parameters()}
    assert set(G) == set(sources)
    ga = sum((G[n] * prev.get_parameter(p)).sum() for n, (p, _) in sources.items())
    gb = sum((G[n] * nxt.get_parameter(q)).sum() for n, (_, q) in sources.items())
    torch.testing.assert_close(rb.a.grad, ga, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rb.b.grad, gb, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)
    used_prev = {p: n for n, (p, _) in sources.items()}
    used_next = {q: n for n, (_, q) in sources.items()}
    for block, used, coef in ((prev, used_prev, 0.7), (nxt, used_next, -0.4)):
        for name, p in block.named_parameters():
            if name in used:  # neighbours get a·G (b·G) into the fused tensors ...
                torch.testing.assert_close(p.grad, coef * G[used[name]], rtol=1e-10, atol=1e-12)
            else:  # ... and nothing into the rest (e.g. prev.conv1, the attention sub-layer)
                assert p.grad is None, name


@pytest.mark.parametrize("make", [tiny_resnet, tiny_vit])
def test_detach_and_convex_options_work_with_lite(make):
    model = make()
    apply_replacement(model, ids=[1], detach_neighbors=True, convex=True, init=(0.25, 0.75), surrogate="lite")
    rb = model.blocks[1]
    assert [n for n, _ in rb.named_parameters()] == ["s"]
    name, (p, q) = next(iter((BASIC_SOURCES if make is tiny_resnet else ENCODER_SOURCES).items()))
    expected = 0.25 * model.blocks[0].get_parameter(p) + 0.75 * model.blocks[2].get_parameter(q)
    torch.testing.assert_close(rb.fused_params()[name], expected)
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    assert rb.s.grad is not None and rb.s.grad.abs() > 0
    # stop-gradient: a backward through the replaced block alone reaches s but neither neighbour
    h = model.blocks[0](model.stem(x)).detach()
    model.zero_grad(set_to_none=True)
    rb(h).sum().backward()
    assert rb.s.grad is not None
    assert all(q.grad is None for i in (0, 2) for q in model.blocks[i].parameters())


def test_trainable_parameters_equal_hand_arithmetic_for_resnet32_interval_2():
    """E2E ResNet-32 (projection shortcuts) minus the four replaced BasicBlocks plus 2 scalars each."""
    with torch.device("meta"):
        model = create_model("resnet32")
    stem, head = 3 * 16 * 9 + 2 * 16, 64 * 10 + 10

    def basic(w):
        return 2 * 9 * w * w + 4 * w

    def transition(c_in, w):  # conv1 c_in->w stride 2, conv2, 2 BNs, 1x1 projection + BN
        return 9 * c_in * w + 9 * w * w + 4 * w + c_in * w + 2 * w

    e2e = stem + 5 * basic(16) + transition(16, 32) + 4 * basic(32) + transition(32, 64) + 4 * basic(64) + head
    assert e2e == 466_906 == count_parameters(model, trainable_only=True)
    report = apply_replacement(model, interval=2, surrogate="lite")
    assert report.names == ["1.1", "1.3", "2.2", "3.2"]  # the same blocks as surrogate="full"
    expected = e2e - (2 * basic(16) + basic(32) + basic(64)) + 4 * 2
    assert expected == 365_026
    assert report.trainable_after == count_parameters(model, trainable_only=True) == expected
    assert report.options["surrogate"] == "lite"


@pytest.mark.parametrize("make", [tiny_resnet, tiny_vit])
def test_optimizer_holds_every_trainable_tensor_once(make):
    model = make()
    method = ReplacementLearning(model, interval=2, surrogate="lite", verbose=False)
    groups = method.param_groups(5e-4)
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(model.parameters()))
    assert sum(p.numel() for p in params) == count_parameters(method, trainable_only=True)
    rb = model.blocks[1]
    no_decay = next(g for g in groups if g["weight_decay"] == 0.0)["params"]
    assert any(p is rb.a for p in no_decay) and any(p is rb.b for p in no_decay)
    opt = train(method, steps=1)
    state = sum(v.numel() for st in opt.state.values() for v in st.values() if torch.is_tensor(v))
    assert state == count_parameters(method, trainable_only=True)


def test_lite_saves_fewer_activations_than_the_full_replaced_block():
    """The point of the surrogate (spec §3.2): one conv + BN instead of two each."""
    peaks = []
    for surrogate in ("full", "lite"):
        prev, target, nxt = basic_triple(16, torch.float32)
        rb = replace_module(prev, target, nxt, surrogate=surrogate)
        x = torch.randn(8, 16, 16, 16, requires_grad=True)
        with SavedTensorMeter(nn.ModuleList([rb, prev, nxt])) as m:
            rb(x).sum().backward()
        peaks.append(m.peak_bytes)
    assert peaks[1] < 0.6 * peaks[0]


def trained_lite_export(make, name=None):
    model = make() if make else create_model(name)
    method = ReplacementLearning(model, interval=2, surrogate="lite", verbose=False)
    train(method, steps=3, seed=1, size=model.image_size)
    return model.eval(), method.export_model().eval(), batch(size=model.image_size)[0]


@pytest.mark.parametrize("make, name", [(tiny_resnet, None), (tiny_vit, None), (None, "resnet20")])
def test_exported_model_equals_training_model_in_eval_and_is_plain_torch(make, name):
    model, exported, x = trained_lite_export(make, name)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(exported(x), out)  # same fused values, same ops: identical, not just close
    assert not any(type(m).__module__.startswith("leanvision.methods") for m in exported.modules())
    lite_children = {type(c) for m in exported.modules() if isinstance(m, torch.fx.GraphModule) for c in m.children()}
    assert lite_children and all(t.__module__.startswith("torch.nn") for t in lite_children)
    assert any(isinstance(m, ReplacedBlock) for m in model.modules())  # the training model is untouched
    # a bare state_dict loads strictly into the documented rebuild (same options, then export)
    buf = io.BytesIO()
    torch.save(exported.state_dict(), buf)
    buf.seek(0)
    rebuilt = make() if make else create_model(name)
    apply_replacement(rebuilt, interval=2, surrogate="lite")
    rebuilt = export_model(rebuilt).eval()
    rebuilt.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), out)


NO_METHOD_CODE = """
import sys, importlib.abc
class NoMethods(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "leanvision.methods" or name.startswith("leanvision.methods."):
            raise ImportError("leanvision.methods is not available: " + name)
sys.meta_path.insert(0, NoMethods())
import torch
for model_path, x_path, out_path in zip(*[iter(sys.argv[1:])] * 3):
    model = torch.load(model_path, weights_only=False).eval()
    with torch.no_grad():
        torch.save(model(torch.load(x_path)), out_path)
assert not any(m.startswith("leanvision.methods") for m in sys.modules)
"""


def test_torch_save_of_the_exported_model_loads_where_leanvision_methods_cannot_be_imported(tmp_path):
    args, outs = [], []
    for i, make in enumerate((tiny_resnet, tiny_vit)):
        model, exported, x = trained_lite_export(make)
        with torch.no_grad():
            outs.append(model(x))
        torch.save(exported, tmp_path / f"model{i}.pt")
        torch.save(x, tmp_path / f"x{i}.pt")
        args += [str(tmp_path / f"{f}{i}.pt") for f in ("model", "x", "out")]
    run = subprocess.run([sys.executable, "-c", NO_METHOD_CODE, *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for i, out in enumerate(outs):
        assert torch.equal(torch.load(tmp_path / f"out{i}.pt"), out)


def test_checkpoint_resume_restores_a_b_buffers_and_optimizer():
    method = ReplacementLearning(tiny_resnet(), interval=2, surrogate="lite", verbose=False)
    opt = train(method, steps=2)
    keys = set(method.state_dict())
    assert {"model.blocks.1.a", "model.blocks.1.b", "model.blocks.1.template.bn.running_mean"} <= keys
    assert not any(k.startswith("model.blocks.1.template.conv") for k in keys)  # no stored weight
    ckpt = io.BytesIO()
    torch.save({"method": method.state_dict(), "optimizer": opt.state_dict()}, ckpt)
    ckpt.seek(0)
    state = torch.load(ckpt, weights_only=True)
    resumed = ReplacementLearning(tiny_resnet(), interval=2, surrogate="lite", verbose=False)
    resumed.load_state_dict(state["method"], strict=True)
    opt2 = torch.optim.SGD(resumed.param_groups(1e-4), lr=0.05, momentum=0.9)
    opt2.load_state_dict(state["optimizer"])
    for m, o in ((method, opt), (resumed, opt2)):  # one more identical step from the same state
        o.zero_grad()
        m.train_step(*batch(seed=9), backward)
        o.step()
    for (n, p), q in zip(method.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(p, q, msg=n)
    # a full-surrogate checkpoint does not load silently into a lite model
    full = ReplacementLearning(tiny_resnet(), interval=2, verbose=False)
    with pytest.raises(RuntimeError, match="template"):
        resumed.load_state_dict(full.state_dict(), strict=True)


def test_unsupported_blocks_give_a_clear_error_and_leave_the_model_unchanged():
    with torch.device("meta"):
        model = create_model("resnet50")
    before = [type(b) for b in model.blocks]
    with pytest.raises(ValueError, match=r"block \d+ \(\d\.\d+\).*Bottleneck.*") as err:
        apply_replacement(model, interval=2, surrogate="lite")
    msg = str(err.value)
    assert "BasicBlock" in msg and "EncoderBlock" in msg and "surrogate='full'" in msg
    assert [type(b) for b in model.blocks] == before
    triple = [Bottleneck(16, 4) for _ in range(3)]
    with pytest.raises(ValueError, match="not for a Bottleneck"):
        replace_module(*triple, surrogate="lite")
    assert isinstance(replace_module(*triple), ReplacedBlock)  # the full surrogate still handles it
    with pytest.raises(ValueError, match="unknown surrogate 'tiny'; valid surrogates: full, lite"):
        replace_module(*basic_triple(), surrogate="tiny")
    # a transition BasicBlock has no identity shortcut (the full surrogate replaces such a triple)
    triple = [BasicBlock(4, 8, 2, nn.Sequential(nn.Conv2d(4, 8, 1, 2, bias=False), nn.BatchNorm2d(8))) for _ in "abc"]
    assert isinstance(replace_module(*triple), ReplacedBlock)
    with pytest.raises(ValueError, match="identity shortcut"):
        replace_module(*triple, surrogate="lite")


def test_adapter_and_autocast_work_with_lite():
    torch.manual_seed(0)
    model = ResNet(BasicBlock, (3, 3, 3), (4, 8, 16), num_classes=3, cifar_stem=True, image_size=8)
    report = apply_replacement(model, interval=2, adapter=True, surrogate="lite")
    assert report.names == ["1.1", "2.1", "3.1"]
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert all(torch.isfinite(model.blocks[i].a.grad) for i, _ in report.replaced)
    assert model.blocks[3].conv1.weight.grad is not None  # transition neighbour 2.0 feeds conv2 *and* ...
    assert model.blocks[5].conv1.weight.grad is not None  # ... next neighbour 3.0's conv1 is sliced
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(export_model(model)(x), model(x))


def test_cli_flag_config_and_bench_row_build_the_lite_method():
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    assert options_from_args(parser.parse_args(["--replace-surrogate", "lite"]))["surrogate"] == "lite"
    assert options_from_args(parser.parse_args([]))["surrogate"] is None  # None = method default ("full")
    with pytest.raises(SystemExit):
        parser.parse_args(["--replace-surrogate", "tiny"])
    help_text = " ".join(parser.format_help().split())
    assert "--replace-surrogate {full,lite}" in help_text and "reconstruction of RepL v2" in help_text
    # leanvision train ... --method replacement --replace-interval 2 --replace-surrogate lite
    args = build_parser().parse_args(["train", "--model", "resnet20", "--method", "replacement",
                                      "--replace-interval", "2", "--replace-surrogate", "lite"])
    cfg = config_from_args(args)
    assert cfg.replace_options == {"surrogate": "lite"}
    method = build_method(cfg, create_model("resnet20"))
    assert method.report.options["surrogate"] == "lite" and "lite surrogate" in method.describe()
    # bench row resnet32:replacement:interval=2,surrogate=lite
    row = parse_row("resnet20:replacement:interval=2,surrogate=lite")
    method = build_method(row_config(row, TrainConfig()), create_model("resnet20"))
    assert isinstance(method.model.blocks[1].template, torch.fx.GraphModule)
    # inside another method: e2e with replace_interval and replace_options
    cfg = TrainConfig(model="resnet20", method="e2e", replace_interval=2, replace_options={"surrogate": "lite"})
    model = create_model("resnet20")
    build_method(cfg, model)
    assert model.blocks[1].surrogate == "lite"
