"""LR schedules: the default trains every step with LR > 0; the authors' rule stays available by name."""

import argparse
import json
import math

import pytest
import torch

from leanvision.classify.train import method_defaults
from leanvision.cli import main
from leanvision.config import TrainConfig
from leanvision.engine.schedule import CosinePerIteration, WarmupCosine, build_schedule
from leanvision.methods import create_method
from leanvision.models import create_model


def _lrs(schedule, epochs: int, iters: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    out = []
    for e in range(epochs):
        for it in range(iters):
            schedule.apply(opt, e, it, iters)
            out.append(opt.param_groups[0]["lr"])
    return out


def test_release_rule_by_name_gives_the_authors_values_by_hand():
    # cifar10-short: b = 0.1, E = 10, W = 2. Worked out from spec local_learning §4.1:
    # e=1: c = 0.05(1 + cos(pi/10)) = 0.0975528; lr = c*0/2 + 0.01*2/2 = 0.01
    # e=2: c = 0.05(1 + cos(pi/5)) = 0.0904508; lr = c*1/2 + 0.01*1/2 = 0.0502254
    # e=3: c = 0.05(1 + cos(3pi/10)) = 0.0793893; e=10: c = 0.05(1 + cos(pi)) = 0
    lrs = _lrs(build_schedule("release", 0.1, 10, 2), epochs=10, iters=3)
    per_epoch = lrs[::3]
    assert lrs == [v for v in per_epoch for _ in range(3)]  # constant within an epoch
    assert per_epoch[:3] == pytest.approx([0.01, 0.0502254, 0.0793893], abs=1e-7)
    assert per_epoch[9] == pytest.approx(0.0, abs=1e-12)  # the release's last epoch trains with LR 0
    assert isinstance(build_schedule("release", 0.1, 10, 2), WarmupCosine)


def test_cosine_default_warms_up_then_decays_per_step_by_hand():
    # b = 0.1, E = 2, W = 1, n = 2 steps/epoch: T = 4, Tw = 2
    # t=0: b*1/2 = 0.05; t=1: b*2/2 = 0.1; t=2: 0.05(1 + cos 0) = 0.1; t=3: 0.05(1 + cos(pi/2)) = 0.05
    assert _lrs(build_schedule("cosine", 0.1, 2, 1), epochs=2, iters=2) == pytest.approx([0.05, 0.1, 0.1, 0.05])
    # no warm-up, E = 1, n = 4: 0.05(1 + cos(pi t/4)) for t = 0..3; the last step still has LR > 0
    expected = [0.1, 0.05 * (1 + math.cos(math.pi / 4)), 0.05, 0.05 * (1 + math.cos(3 * math.pi / 4))]
    lrs = _lrs(CosinePerIteration(0.1, 1, 0), epochs=1, iters=4)
    assert lrs == pytest.approx(expected) and min(lrs) > 0.014


def test_unknown_schedule_is_refused_by_the_config():
    from leanvision.config import ConfigError

    with pytest.raises(ConfigError, match="lr_schedule must be .*one of cosine, release"):
        TrainConfig(lr_schedule="step")


def test_one_epoch_from_the_cli_trains_with_lr_above_zero_and_learns(tmp_path, capsys):
    # the command: with the release rule this epoch had LR 0 and test accuracy 0.100 (chance)
    assert main(["train", "--model", "resnet20", "--data", "digits", "--epochs", "1", "--batch-size", "32",
                 "--lr", "0.1", "--device", "cpu", "--project", str(tmp_path), "--name", "one", "--no-progress"]) == 0
    row = json.loads((tmp_path / "one" / "metrics.jsonl").read_text())
    assert row["lr"] > 0
    assert row["val_acc"] > 0.5  # 10 classes: chance is 0.1 (measured 0.81)
    saved = (tmp_path / "one" / "config.yaml").read_text()
    assert "lr_schedule: cosine" in saved


def test_method_recipe_defaults_fill_only_what_the_user_left_unset():
    method = create_method("e2e", create_model("resnet20", num_classes=10))
    assert method.recipe_defaults() == {}  # the base contract: no preferences
    method.recipe_defaults = lambda: {"lr_schedule": "release", "warmup_epochs": 5}
    got = method_defaults(TrainConfig(), method)
    assert (got.lr_schedule, got.warmup_epochs) == ("release", 5)
    kept = method_defaults(TrainConfig(lr_schedule="cosine", warmup_epochs=0), method)
    assert (kept.lr_schedule, kept.warmup_epochs) == ("cosine", 0)  # the user's values win


def test_bench_lr_schedule_flag_overrides_the_recipe_rule():
    # cifar10-short pins the release rule; the default-against-preset measurement needs the default rule under the
    # same recipe (docs/local_learning_release.md), so the flag must win over the recipe, and only when given
    from leanvision.bench.cli import add_bench_parser, base_config

    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers())
    plain = parser.parse_args(["bench", "resnet32:dgl", "--recipe", "cifar10-short"])
    assert base_config(plain, plain.recipe).lr_schedule == "release"
    cosine = parser.parse_args(["bench", "resnet32:dgl", "--recipe", "cifar10-short", "--lr-schedule", "cosine"])
    assert base_config(cosine, cosine.recipe).lr_schedule == "cosine"
    assert base_config(cosine, cosine.recipe).epochs == 10  # the rest of the recipe stays
