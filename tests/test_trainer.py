"""Trainer behaviour: overfitting, exact resume, non-finite loss, checkpoints, the LR schedule."""

import math

import pytest
import torch

from leanvision.classify.train import build_optimizer, train
from leanvision.config import TrainConfig
from leanvision.engine import trainer as trainer_mod
from leanvision.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint
from leanvision.engine.schedule import WarmupCosine
from leanvision.engine.trainer import NonFiniteLossError, Trainer
from leanvision.methods import create_method
from leanvision.models import create_model


def quick_cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(model="resnet20", data="digits", epochs=2, batch_size=32, steps_per_epoch=3, subset=256,
                project=str(tmp_path), name="run", progress=False, device="cpu", lr=0.05)
    return TrainConfig(**{**base, **kw})


def test_cifar10_short_schedule_matches_the_issue_formula():
    s = WarmupCosine(0.1, epochs=10, warmup_epochs=2)
    for e in range(1, 11):
        c = 0.05 * (1 + math.cos(math.pi * e / 10))
        expected = c * (e - 1) / 2 + 0.01 * (3 - e) / 2 if e <= 2 else c
        assert s.lr(e) == pytest.approx(expected, abs=1e-12)
    assert s.lr(1) == pytest.approx(0.01)  # warm-up starts at 0.01


def test_trainer_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4)
    method = create_method("e2e", model)
    opt = build_optimizer(method, "sgd", 0.05, 0.0, 0.9)
    t = Trainer(method, opt, WarmupCosine(0.05, 1, 0), [], evaluate=lambda m: {}, run_dir="/nonexistent",
                epochs=1, config={}, device=torch.device("cpu"), progress=False)
    x, y = torch.randn(16, 3, 16, 16), torch.arange(16) % 4
    for _ in range(60):
        out = t.train_step(x, y)
    assert float(out["loss"]) < 0.05
    method.eval()
    assert (model(x).argmax(1) == y).all()


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    full = train(quick_cfg(tmp_path, name="full"))
    ref = load_checkpoint(tmp_path / "full" / "last.pt")

    real_eval = trainer_mod.Trainer.fit.__globals__["train_one_epoch"]
    calls = {"n": 0}

    def killed(trainer, epoch):  # dies in the middle of the second epoch
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_eval(trainer, epoch)

    monkeypatch.setattr(trainer_mod, "train_one_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train(quick_cfg(tmp_path, name="killed"))
    monkeypatch.setattr(trainer_mod, "train_one_epoch", real_eval)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 1
    resumed = train(quick_cfg(tmp_path, name="killed", resume=str(tmp_path / "killed" / "last.pt")))
    got = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert got["epoch"] == 2
    for k, v in ref["method"].items():
        assert torch.equal(v, got["method"][k]), k  # bitwise on CPU
    for a, b in zip(ref["optimizer"]["state"].values(), got["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert resumed["final"]["val_acc"] == full["final"]["val_acc"]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from leanvision.methods.e2e import EndToEnd

    real = EndToEnd.train_step
    calls = {"n": 0}

    def poisoned(self, images, targets, backward):
        calls["n"] += 1
        out = real(self, images, targets, backward)
        if calls["n"] > 3:  # the whole first epoch is fine, then the loss goes NaN
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(EndToEnd, "train_step", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"last finite checkpoint is .*last.pt \(epoch 1\)"):
        train(quick_cfg(tmp_path))
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["method"].values() if v.is_floating_point())


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    from leanvision.config import ConfigError

    train(quick_cfg(tmp_path, epochs=1))
    with pytest.raises(ConfigError, match="model 'resnet32' contradicts .* model='resnet20'"):
        train(quick_cfg(tmp_path, model="resnet32", epochs=2, resume=str(tmp_path / "run" / "last.pt")))


def test_existing_run_is_not_overwritten(tmp_path):
    from leanvision.config import ConfigError

    train(quick_cfg(tmp_path, epochs=1))
    with pytest.raises(ConfigError, match="--overwrite"):
        train(quick_cfg(tmp_path, epochs=1))
    res = train(quick_cfg(tmp_path, epochs=1, overwrite=True))
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") >= 2
    assert "val_acc" in res["final"] and res["resources"]["trainable_params"] > 0


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save({"epoch": 1}, path)

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_save({"epoch": 2, "bad": Unsaveable()}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_truncated_or_foreign_checkpoints_give_clear_errors(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save({"epoch": 1, "w": torch.ones(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable leanvision checkpoint"):
        load_checkpoint(path)
    evil = tmp_path / "evil.pt"
    torch.save({"x": object.__new__(Trainer)}, evil)  # needs unpickling an arbitrary class
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_bf16_autocast_and_channels_last_train(tmp_path):
    res = train(quick_cfg(tmp_path, epochs=1, amp="bf16", channels_last=True))
    assert math.isfinite(res["final"]["train_loss"])
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["config"]["amp"] == "bf16"
    assert all(v.dtype != torch.bfloat16 for v in ckpt["method"].values())  # weights stay fp32 under autocast


def test_replacement_inside_a_local_method_trains(tmp_path):
    plain = train(quick_cfg(tmp_path, name="plain", epochs=1, method="dgl", method_options={"modules": 3}))
    res = train(quick_cfg(tmp_path, epochs=1, method="dgl", method_options={"modules": 3}, replace_interval=2))
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert any(k.endswith(".a") for k in ckpt["method"]), "replaced blocks keep their scalars"
    # resnet20 has one eligible block (1.1): 2 convs of 16x16x3x3 and 2 BNs of 16 -> 4,672 weights, +2 scalars
    removed = plain["resources"]["trainable_params"] - res["resources"]["trainable_params"]
    assert removed == 4_672 - 2


def test_metrics_go_to_tensorboard_when_it_is_installed(tmp_path, monkeypatch):
    import sys
    import types

    calls = []

    class FakeWriter:  # stands in for torch.utils.tensorboard.SummaryWriter (tensorboard is optional)
        def __init__(self, logdir):
            calls.append(("dir", logdir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def flush(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    train(quick_cfg(tmp_path, epochs=2))
    assert calls[0] == ("dir", str(tmp_path / "run" / "tensorboard"))
    tags = {(c[0], c[2]) for c in calls[1:]}
    assert {("train_loss", 1), ("val_acc", 1), ("train_loss", 2), ("val_acc", 2)} <= tags


@pytest.mark.slow
def test_compiled_blocks_train_like_eager_ones(tmp_path):
    eager = train(quick_cfg(tmp_path, name="eager", epochs=1, steps_per_epoch=1, subset=32, batch_size=16))
    compiled = train(quick_cfg(tmp_path, name="compiled", epochs=1, steps_per_epoch=1, subset=32, batch_size=16,
                               compile=True))
    assert compiled["final"]["train_loss"] == pytest.approx(eager["final"]["train_loss"], abs=1e-4)
    assert compiled["final"]["val_loss"] == pytest.approx(eager["final"]["val_loss"], abs=1e-3)
