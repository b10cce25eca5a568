"""A few real training steps on a small subset of the shared CIFAR-10 archive, through the CLI."""

import json

from leanvision.cli import main


def test_train_a_few_steps_on_the_shared_cifar10_archive(cifar_archive, tmp_path):
    rc = main(["train", "--model", "resnet20", "--data", str(cifar_archive), "--epochs", "1",
               "--batch-size", "64", "--steps-per-epoch", "4", "--subset", "512", "--project", str(tmp_path),
               "--name", "cifar", "--no-progress"])
    assert rc == 0
    res = json.loads((tmp_path / "cifar" / "results.json").read_text())
    final = res["final"]
    assert 0.0 <= final["val_acc"] <= 1.0 and final["train_loss"] > 0
    assert res["resources"]["trainable_params"] == 272_474  # resnet20 with 10 classes
    cfg = (tmp_path / "cifar" / "config.yaml").read_text()
    assert "cifar10-jpg.tar.gz" in cfg
