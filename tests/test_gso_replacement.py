"""Replacement Learning on the detector backbone through the block-list seam (``DetectionModel.blocks``): candidates
per scale, arithmetic, gradients, export, memory."""

import math

import pytest
import torch

from leanvision.detect.method import DetectionMethod
from leanvision.engine.meter import count_parameters, state_bytes
from leanvision.methods.replacement import (
    ReplacedBlock,
    apply_replacement,
    export_model,
    ineligibility,
    load_replaced_state,
)
from leanvision.models import BlockSlots, check_block_list
from leanvision.models.yolo import C2f, create_detector


def bottleneck_params(c: int) -> int:
    """Two Conv(c, c, 3): 3×3 weights without bias, BN weight and bias each."""
    return 2 * (c * c * 9 + 2 * c)


def batch(nc=3, size=64):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=g)
    targets = {"img_idx": torch.tensor([0, 0, 1]), "cls": torch.tensor([0, 1, 2]),
               "boxes": torch.tensor([[4.0, 6, 30, 40], [20, 20, 60, 50], [10, 8, 50, 44]])}
    return images, targets


def test_the_block_list_is_the_backbone_bottlenecks_and_writes_through():
    model = create_detector("gso-yolo-n", nc=3)
    blocks, info = check_block_list(model).blocks, model.block_info
    assert isinstance(blocks, BlockSlots) and len(blocks) == len(info) == 6  # n: C2f repeats 1,2,2,1
    assert [b.name for b in info] == ["2.m.0", "4.m.0", "4.m.1", "6.m.0", "6.m.1", "8.m.0"]
    assert [b.stage for b in info] == [2, 3, 3, 4, 4, 5]  # the feature level P2..P5
    assert [b.chained for b in info] == [False, False, True, False, True, False]
    assert [(b.in_channels, b.out_channels, b.stride, b.transition) for b in info[1:3]] == [(32, 32, 1, False)] * 2
    assert blocks[2] is model.model[4].m[1] and blocks[-1] is model.model[8].m[0]
    new = torch.nn.Identity()
    blocks[2] = new  # assigning swaps the module inside its C2f, under its old state_dict name
    assert model.model[4].m[1] is new and model.blocks[2] is new
    assert not any(k.startswith("model.4.m.1.") for k in model.state_dict())
    neck = {id(m) for r in range(model.num_backbone, len(model.model)) if isinstance(model.model[r], C2f)
            for m in model.model[r].m}
    assert neck and not neck & {id(b) for b in model.blocks}  # the neck belongs to the detector's head


@pytest.mark.parametrize("name", ["yolov8n", "gso-yolo-n", "gso-yolo-s"])
def test_scales_n_and_s_have_no_candidates_without_the_adapter(name):
    model = create_detector(name, nc=3)
    assert all(reason is not None for reason in ineligibility(model))
    before = count_parameters(model, trainable_only=True)
    with pytest.raises(ValueError, match=r"no eligible block among the 6 blocks") as err:
        apply_replacement(model, allow_none=False)
    msg = str(err.value)
    assert "4.m.0: its previous neighbour 2.m.0 does not feed into it directly" in msg
    assert "4.m.1: its next neighbour 6.m.0 does not feed into it directly" in msg and "adapter=True" in msg
    assert count_parameters(model, trainable_only=True) == before  # nothing half-replaced
    assert apply_replacement(model).replaced == []  # allow_none (default): a warning, the model unchanged


def test_scale_m_replaces_the_second_bottleneck_of_the_4_repeat_rows():
    model = create_detector("yolov8m", nc=3)
    before = count_parameters(model, trainable_only=True)
    report = apply_replacement(model, interval=2)
    # m: C2f repeats 2,4,4,2 at rows 2,4,6,8; hidden widths c = width(256|512)·0.75/2 = 96 and 192
    assert report.total_blocks == 12
    assert report.names == ["4.m.1", "6.m.1"] and [i for i, _ in report.replaced] == [3, 7]
    removed = bottleneck_params(96) + bottleneck_params(192)
    assert removed == 830_592
    assert report.removed == removed and report.added == 4
    assert report.trainable_before == before
    assert report.trainable_after == before - removed + 4 == count_parameters(model, trainable_only=True)
    assert isinstance(model.model[4].m[1], ReplacedBlock) and not isinstance(model.model[4].m[2], ReplacedBlock)
    assert [info.name for info, why in zip(model.block_info, ineligibility(create_detector("yolov8m", nc=3)))
            if why is None] == ["4.m.1", "4.m.2", "6.m.1", "6.m.2"]
    assert "4.m.1 (#3), 6.m.1 (#7)" in str(report) and f"{before:,} -> {before - removed + 4:,}" in str(report)


def test_scale_l_interval_2_and_3():
    model = create_detector("yolov8l", nc=3)
    report = apply_replacement(model, interval=2)
    # l: repeats 3,6,6,3; widths 128,256,512,512 (max_channels 512) -> c = 64,128,256,256. 6.m.5 and 8.m.0 have
    # the same shapes, but a strided Conv runs between them: without the adapter neither borrows from the other
    assert report.names == ["2.m.1", "4.m.1", "4.m.3", "6.m.1", "6.m.3", "8.m.1"]
    assert report.removed == bottleneck_params(64) + 2 * bottleneck_params(128) + 3 * bottleneck_params(256)
    assert report.removed == 4_206_848
    model3 = create_detector("yolov8l", nc=3)
    assert apply_replacement(model3, interval=3).names == ["2.m.1", "4.m.1", "4.m.4", "6.m.1", "6.m.4", "8.m.1"]


def test_adapter_gives_candidates_at_scale_n_and_fuses_sliced_or_tiled_neighbours():
    torch.manual_seed(0)
    model = create_detector("gso-yolo-n", nc=3)
    # widths at n: C2f rows 2,4,6,8 have c = 16, 32, 64, 128; 4.m.0 borrows from 2.m.0 (c=16) and 4.m.1
    prev_w = model.model[2].m[0].cv1.conv.weight.detach().clone()  # (16, 16, 3, 3)
    next_w = model.model[4].m[1].cv1.conv.weight.detach().clone()  # (32, 32, 3, 3)
    report = apply_replacement(model, adapter=True, init=(0.3, 0.9))
    assert report.names == ["4.m.0", "6.m.0"]
    assert report.removed == bottleneck_params(32) + bottleneck_params(64) == 92_544
    fused = model.model[4].m[0].fused_params()["cv1.conv.weight"]
    tiled = torch.cat([torch.cat([prev_w, prev_w], 0)] * 2, 1) * math.sqrt(16 / 32)  # fan-in 16 -> 32
    torch.testing.assert_close(fused, 0.3 * tiled + 0.9 * next_w)
    # 6.m.1 borrows from 8.m.0 (c=128): leading slice, scaled by sqrt(128 / 64); not chosen at k=2
    assert model.model[6].m[1].cv1.conv.weight.shape == (64, 64, 3, 3)


def test_explicit_ids_and_their_errors():
    model = create_detector("yolov8m", nc=3)
    assert apply_replacement(model, ids=["4.m.2"]).names == ["4.m.2"]
    fresh = create_detector("yolov8m", nc=3)
    with pytest.raises(ValueError, match="adjacent"):
        apply_replacement(fresh, ids=["4.m.1", "4.m.2"])
    with pytest.raises(ValueError, match=r"\(4.m.0\): its previous neighbour 2.m.1 does not feed into it directly"):
        apply_replacement(fresh, ids=["4.m.0"])
    with pytest.raises(ValueError, match="unknown block '9.m.0'.*names such as '2.m.1'"):
        apply_replacement(fresh, ids=["9.m.0"])
    with pytest.raises(ValueError, match="interval must be an integer >= 2"):
        apply_replacement(fresh, interval=1)
    with pytest.raises(TypeError, match=r"Linear is not a block-list model that Replacement(.|\n)*no `blocks`"):
        apply_replacement(torch.nn.Linear(2, 2))


def test_gradients_reach_a_b_and_the_neighbours_and_the_replaced_block_has_no_weights():
    torch.manual_seed(0)
    model = create_detector("gso-yolo-n", nc=3)
    apply_replacement(model, adapter=True)
    names = dict(model.named_parameters())
    assert not any(k.startswith("model.4.m.0.template") for k in names)
    assert {"model.4.m.0.a", "model.4.m.0.b"} <= set(names)
    method = DetectionMethod(model, "aiou", ema=False).train()
    images, targets = batch()
    method.train_step(images, targets, lambda loss: loss.backward())
    for k in ("model.4.m.0.a", "model.4.m.0.b", "model.2.m.0.cv1.conv.weight", "model.4.m.1.cv2.conv.weight"):
        g = names[k].grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, k
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name,adapter", [("gso-yolo-n", True), ("yolov8m", False)])
def test_export_and_checkpoint_reload_give_identical_eval_outputs(name, adapter):
    torch.manual_seed(0)
    model = create_detector(name, nc=3)
    report = apply_replacement(model, adapter=adapter)
    method = DetectionMethod(model, "ciou")  # with EMA: a deepcopy of a model holding ReplacedBlocks
    opt = torch.optim.SGD(method.param_groups(5e-4), lr=0.01, momentum=0.9)
    images, targets = batch()
    for _ in range(2):  # a, b and the BN statistics move away from their initial values
        opt.zero_grad()
        method.train_step(images, targets, lambda loss: loss.backward())
        opt.step()
        method.after_optimizer_step()
    a = model.get_submodule(f"model.{report.names[0]}").a
    assert float(a.detach()) != 0.5
    x = images.float() / 255
    for net in (model, method.ema_model):
        net.eval()
        with torch.no_grad():
            want = net(x)
            plain = export_model(net)
            assert not any(isinstance(m, ReplacedBlock) for m in plain.modules())
            assert torch.equal(plain(x), want)
            # a saved state dict (trainer checkpoint) rebuilds into the plain network: the same tensors bit for
            # bit; the outputs to float rounding (another model object: CPU conv kernels may take other paths)
            reloaded = load_replaced_state(create_detector(name, nc=3), net.state_dict(), report.rebuild_options)
            want_sd = plain.state_dict()
            assert all(torch.equal(v, want_sd[k]) for k, v in reloaded.state_dict().items())
            assert set(reloaded.state_dict()) == set(create_detector(name, nc=3).state_dict())
            torch.testing.assert_close(reloaded.eval()(x), want, rtol=1e-5, atol=1e-5)


def test_state_bytes_shrink_by_the_removed_weights_grads_and_momentum():
    torch.manual_seed(0)
    images, targets = batch()

    def one_step(replace: bool) -> tuple[dict, int]:
        torch.manual_seed(0)
        model = create_detector("yolov8m", nc=3)
        removed = apply_replacement(model).removed if replace else 0
        method = DetectionMethod(model, "ciou", ema=False).train()
        opt = torch.optim.SGD(method.param_groups(5e-4), lr=0.01, momentum=0.9)
        method.train_step(images, targets, lambda loss: loss.backward())
        opt.step()
        return state_bytes(method, opt), removed

    plain, _ = one_step(False)
    rep, removed = one_step(True)
    scalars = 4  # a and b of 2 replaced Bottlenecks, fp32
    for key in ("params", "grads"):
        assert plain[key] - rep[key] == 4 * (removed - scalars), key
    # SGD momentum: one buffer per trainable tensor (state_bytes leaves 0-dim state such as a's and b's out)
    assert plain["optimizer"] - rep["optimizer"] == 4 * removed
    assert plain["buffers"] == rep["buffers"]  # a replaced Bottleneck keeps its own BN statistics
