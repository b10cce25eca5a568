"""Detector training: the v8 schedule and EMA by hand, parameter groups, resume, and an overfit run."""

import math
import time

import pytest
import torch
import yaml

from leanvision.detect.config import DetectConfig
from leanvision.detect.data.synth import generate_synthetic_dataset
from leanvision.detect.method import DetectionMethod, ema_decay, yolo_param_groups
from leanvision.detect.schedule import YoloSchedule
from leanvision.detect.train import train_detector
from leanvision.engine.checkpoint import load_checkpoint
from leanvision.models.yolo import create_detector


def _groups(schedule, epoch, it, iters):
    opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]},
                           {"params": [torch.zeros(1, requires_grad=True)], "warmup_bias": True}], lr=1.0, momentum=0.5)
    schedule.apply(opt, epoch, it, iters)
    return opt.param_groups[0]["lr"], opt.param_groups[1]["lr"], opt.param_groups[0]["momentum"]


def test_schedule_warmup_values_by_hand():
    s = YoloSchedule(lr0=0.01, lrf=0.01, epochs=100, warmup_epochs=3)
    # 50 iterations/epoch -> nw = max(150, 100) = 150; epoch 1, it 25 -> ni = 75, halfway through warm-up.
    # lf(1) = (1 - 1/100)(1 - 0.01) + 0.01 = 0.9901, target 0.009901
    other, bias, mom = _groups(s, 1, 25, 50)
    assert other == pytest.approx(0.5 * 0.009901)
    assert bias == pytest.approx(0.1 + 0.5 * (0.009901 - 0.1))  # 0.0549505
    assert mom == pytest.approx(0.8 + 0.5 * 0.137)  # 0.8685
    # start: bias 0.1, others 0, momentum 0.8
    assert _groups(s, 0, 0, 50) == pytest.approx((0.0, 0.1, 0.8))


def test_schedule_minimum_of_100_warmup_iterations():
    s = YoloSchedule(lr0=0.01, lrf=0.01, epochs=100, warmup_epochs=3)
    assert s.warmup_iters(10) == 100  # 3 * 10 = 30 < 100
    other, _, _ = _groups(s, 5, 0, 10)  # ni = 50 of 100; lf(5) = 0.95 * 0.99 + 0.01 = 0.9505
    assert other == pytest.approx(0.5 * 0.01 * 0.9505)
    assert YoloSchedule(warmup_epochs=3, min_warmup_iters=0).warmup_iters(10) == 30


def test_schedule_linear_decay_after_warmup():
    s = YoloSchedule(lr0=0.01, lrf=0.01, epochs=100, warmup_epochs=3)
    # epoch 50: lf = 0.5 * 0.99 + 0.01 = 0.505; every group the same, momentum back at 0.937
    assert _groups(s, 50, 7, 50) == pytest.approx((0.00505, 0.00505, 0.937))
    assert s.lf(100) == pytest.approx(0.01)  # final LR = lr0 * lrf
    # pure function: the same (epoch, it) gives the same values whatever came before
    assert _groups(s, 2, 10, 50) == _groups(s, 2, 10, 50)


def test_schedule_warmup_leaves_the_last_epoch_at_the_regular_rate():
    # the reference caps the warm-up at epochs - 1: a 3-epoch run with warmup_epochs 3 warms up over 2 epochs
    s = YoloSchedule(lr0=0.01, lrf=0.01, epochs=3, warmup_epochs=3, min_warmup_iters=0)
    assert s.warmup_iters(10) == 20
    # epoch 1, it 5: ni = 15 of 20; lf(1) = (2/3)(0.99) + 0.01 = 0.67, target 0.0067
    other, bias, mom = _groups(s, 1, 5, 10)
    assert other == pytest.approx(0.75 * 0.0067)
    assert mom == pytest.approx(0.8 + 0.75 * 0.137)
    assert _groups(s, 2, 0, 10) == pytest.approx((0.0034, 0.0034, 0.937))  # last epoch: lf(2) = 0.34
    assert YoloSchedule(epochs=1, warmup_epochs=3).warmup_iters(10) == 0  # one epoch: no warm-up at all


def test_schedule_accumulate_ramps_from_1_to_nominal_over_the_warmup():
    s = YoloSchedule(epochs=10, warmup_epochs=3, min_warmup_iters=0)  # nw = 30 at 10 iterations per epoch
    # 1 + ni/30 * 3, rounded half to even: ni 0 -> 1, 5 -> 1.5 -> 2, 15 -> 2.5 -> 2, 16 -> 2.6 -> 3, 29 -> 3.9 -> 4
    got = [s.accumulate(ni // 10, ni % 10, 10, nominal=4) for ni in (0, 5, 15, 16, 29, 30, 95)]
    assert got == [1, 2, 2, 3, 4, 4, 4]
    assert s.accumulate(0, 0, 10, nominal=1) == 1


def test_optimizer_steps_follow_the_accumulate_ramp(tmp_path):
    # 16 images, batch 2, nbs 8: 8 batches per epoch, nominal accumulate 4; warm-up 1 epoch = 8 iterations.
    # accumulate at ni 0..7 = round(1 + ni * 3/8) = 1 1 2 2 2 3 3 4; a step once that many batches are summed
    # (and at an epoch's last batch): ni 0, 1, 3, 6, 7 -> 5 steps; then 4 per step: 2 steps in each later epoch.
    y = _tiny_data(tmp_path, 16)
    cfg = DetectConfig(model="yolov8n", data=str(y), epochs=3, batch=2, nbs=8, imgsz=64, augment=False, workers=0,
                       warmup_epochs=1, warmup_min_iters=0, val=False, project=str(tmp_path / "runs"), name="acc",
                       progress=False, plots=False)
    train_detector(cfg)
    ckpt = load_checkpoint(tmp_path / "runs" / "acc" / "last.pt")
    assert int(ckpt["method"]["ema_updates"]) == 5 + 2 + 2  # a fixed accumulate of 4 would take 2 + 2 + 2


def test_ema_decay_formula():
    assert ema_decay(0) == 0.0
    assert ema_decay(2000) == pytest.approx(0.9999 * (1 - math.exp(-1)))  # 0.63206
    assert ema_decay(10**6) == pytest.approx(0.9999)


def test_ema_update_follows_the_formula():
    torch.manual_seed(0)
    m = DetectionMethod(create_detector("yolov8n", nc=2))
    w0 = m.ema_model.model[0].conv.weight.clone()
    with torch.no_grad():
        m.model.model[0].conv.weight.add_(1.0)
    m.after_optimizer_step()
    d = ema_decay(1)
    torch.testing.assert_close(m.ema_model.model[0].conv.weight, d * w0 + (1 - d) * (w0 + 1.0))
    assert int(m.ema_updates) == 1 and "ema_updates" in m.state_dict()
    # every entry, by name: weights and BN running statistics average, integer counters are left alone
    ema0 = {k: v.clone() for k, v in m.ema_model.state_dict().items()}
    with torch.no_grad():
        for v in m.model.state_dict().values():
            v.add_(torch.randn_like(v) if v.dtype.is_floating_point else 5)
    m.after_optimizer_step()
    d = ema_decay(2)
    src = m.model.state_dict()
    for k, v in m.ema_model.state_dict().items():
        want = d * ema0[k] + (1 - d) * src[k] if v.dtype.is_floating_point else ema0[k]
        torch.testing.assert_close(v, want, msg=k)
    assert any(k.startswith("ema_model.") for k in m.state_dict())
    assert m.inference_model() is m.ema_model


@pytest.mark.parametrize("name", ["yolov8n", "gso-yolo-n"])
def test_param_groups_each_parameter_once_and_no_decay_on_bn_and_bias(name):
    model = create_detector(name, nc=3)
    groups = yolo_param_groups(model, 5e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ids) == trainable  # the frozen DFL projection is left out, everything else is in
    named = {id(p): n for n, p in model.named_parameters()}
    decay, norm, bias = groups
    assert decay["weight_decay"] == 5e-4 and norm["weight_decay"] == 0 and bias["weight_decay"] == 0
    assert bias.get("warmup_bias") and not decay.get("warmup_bias")
    assert all(named[id(p)].endswith("bias") for p in bias["params"])
    assert all(not named[id(p)].endswith("bias") for p in decay["params"] + norm["params"])
    bn_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert bn_weights <= {id(p) for p in norm["params"]}
    assert not bn_weights & {id(p) for p in decay["params"]}


def _tiny_data(tmp_path, n, repeat=1, min_side=0.0):
    y = generate_synthetic_dataset(tmp_path / "data", images=n, imgsz=128, seed=0, val_fraction=0.0)
    for f in (tmp_path / "data" / "labels" / "train").glob("*.txt"):
        # boxes under ~1.5 strides hold no anchor centre for the assigner: unlearnable, so not asked for
        keep = [ln for ln in f.read_text().splitlines() if min(float(v) for v in ln.split()[3:5]) * 128 >= min_side]
        f.write_text("".join(k + "\n" for k in keep))
    cfg = yaml.safe_load(y.read_text())
    cfg["train"] = ["images/train"] * repeat  # the same images several times per epoch: fewer epoch overheads
    cfg["val"] = "images/train"  # overfit: validate on the training images
    y.write_text(yaml.safe_dump(cfg))
    return y


def test_resume_continues_epochs_and_ema(tmp_path):
    y = _tiny_data(tmp_path, 2)
    base = dict(model="yolov8n", data=str(y), batch=2, nbs=2, imgsz=64, augment=False, workers=0, warmup_epochs=0,
                project=str(tmp_path / "runs"), name="r", progress=False, plots=False)
    train_detector(DetectConfig(epochs=1, **base))
    first = load_checkpoint(tmp_path / "runs" / "r" / "last.pt")
    assert first["epoch"] == 1 and int(first["method"]["ema_updates"]) == 1
    res = train_detector(DetectConfig(epochs=2, resume=str(tmp_path / "runs" / "r" / "last.pt"), **base))
    second = load_checkpoint(tmp_path / "runs" / "r" / "last.pt")
    assert second["epoch"] == 2 and int(second["method"]["ema_updates"]) == 2  # EMA count restored, not restarted
    assert [r["epoch"] for r in second["history"]] == [1, 2]
    assert res["run_dir"] == str((tmp_path / "runs" / "r").resolve())
    lines = (tmp_path / "runs" / "r" / "metrics.csv").read_text().strip().splitlines()
    assert len(lines) == 3  # header + two epochs


@pytest.mark.slow
def test_overfit_a_few_synthetic_images_to_map50_above_0_9(tmp_path):
    y = _tiny_data(tmp_path, 4, repeat=12, min_side=12)
    t0 = time.perf_counter()
    # 4 images x 12 per epoch, batch 4: 12 steps/epoch, 432 steps; the SGD schedule of the product, no warm-up.
    # Square val, the inputs it memorised: without augmentation the network never saw rect val's 160 px canvas
    # (a 16 px grey border) and scores lower there (mAP50 0.83-0.90 against 0.93 square in two runs).
    cfg = DetectConfig(model="yolov8n", data=str(y), epochs=36, batch=4, nbs=4, imgsz=128, lr0=0.04, augment=False,
                       warmup_epochs=0, close_mosaic=0, val=False, workers=0, project=str(tmp_path / "runs"),
                       progress=False, plots=False, rect=False)
    res = train_detector(cfg)
    print(f"overfit: mAP50 {res['val']['map50']:.3f}, mAP50-95 {res['val']['map']:.3f} in "
          f"{time.perf_counter() - t0:.0f} s")
    assert res["val"]["map50"] > 0.9, res["val"]
