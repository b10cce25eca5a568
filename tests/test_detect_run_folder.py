"""`leanvision detect train` through the CLI: resume from a run (bit-identical on CPU), nothing non-finite saved."""

import json

import pytest
import torch

from leanvision.cli import main
from leanvision.detect.data.synth import generate_synthetic_dataset
from leanvision.engine import trainer as trainer_mod
from leanvision.engine.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate_synthetic_dataset(tmp_path_factory.mktemp("det") / "data", images=4, imgsz=96, seed=1,
                                      val_fraction=0.5)


def _args(data, project, name, *extra):
    # --close-mosaic 0: mosaic stays on, so the resumed epoch must also restore the augmentation's random state
    return ["detect", "train", "--model", "yolov8n", "--data", str(data), "--batch", "2", "--nbs", "2", "--imgsz", "64",
            "--workers", "0", "--close-mosaic", "0", "--project", str(project), "--name", name, "--no-progress",
            "--no-plots", *extra]


def test_resume_from_the_cli_equals_an_uninterrupted_run(data, tmp_path, monkeypatch):
    # batch 1, nbs 4: 2 batches per epoch, a nominal accumulate of 4 reached over a 2-epoch warm-up (3 epochs, the
    # last one left out, no 100-iteration floor), so the run stops mid-warm-up, in the accumulate ramp: 1, 2 | 2, 3 | 4.
    # The stop must be a real one (the third epoch of a 3-epoch run never runs): a finished shorter run, resumed
    # with more --epochs, is not the same run, as its warm-up was planned over fewer epochs (none for 1 epoch).
    flags = ("--epochs", "3", "--batch", "1", "--nbs", "4", "--warmup-min-iters", "0")
    assert main(_args(data, tmp_path, "full", *flags)) == 0
    real_epoch, calls = trainer_mod.train_one_epoch, {"n": 0}

    def killed(trainer, epoch):  # dies at the start of the second epoch, after last.pt of the first was saved
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_epoch(trainer, epoch)

    monkeypatch.setattr(trainer_mod, "train_one_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        main(_args(data, tmp_path, "part", *flags))
    monkeypatch.setattr(trainer_mod, "train_one_epoch", real_epoch)
    run = tmp_path / "part"
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 1
    ckpt["config"]["method"] = "yolo"  # what earlier versions saved (and then refused to resume: 'unknown method')
    torch.save(ckpt, run / "last.pt")
    assert main(["detect", "train", "--resume", str(run / "last.pt")]) == 0
    ref, got = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(run / "last.pt")
    assert got["epoch"] == 3 and got["config"]["method"] == "e2e"
    assert int(ref["method"]["ema_updates"]) == 2 + 1 + 1  # the ramp was in play: a fixed 4 would step once an epoch
    for k, v in ref["method"].items():
        assert torch.equal(v, got["method"][k]), k  # bit-identical on CPU
    for a, b in zip(ref["optimizer"]["state"].values(), got["optimizer"]["state"].values(), strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    res = json.loads((run / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert res["best_epoch"] in (1, 2, 3)


def test_detect_resume_refuses_a_contradicting_flag(data, tmp_path, capsys):
    assert main(_args(data, tmp_path, "r", "--epochs", "1")) == 0
    assert main(["detect", "train", "--resume", str(tmp_path / "r"), "--epochs", "2", "--imgsz", "96"]) == 2
    err = capsys.readouterr().err
    assert "--imgsz 96 contradicts" in err and "imgsz=64" in err


def test_a_non_finite_detector_state_is_never_saved(data, tmp_path, capsys, monkeypatch):
    from leanvision.detect.method import DetectionMethod

    real, calls = DetectionMethod.train_step, {"n": 0}

    def poisoned(self, images, targets, backward):  # one step per epoch: the second epoch poisons a weight
        calls["n"] += 1
        out = real(self, images, targets, backward)
        if calls["n"] > 1:
            next(self.model.parameters()).data.fill_(float("nan"))
        return out

    monkeypatch.setattr(DetectionMethod, "train_step", poisoned)
    assert main(_args(data, tmp_path, "n", "--epochs", "3")) == 1
    err = capsys.readouterr().err
    run = tmp_path / "n"
    assert f"the last finite checkpoint is {run / 'last.pt'} (epoch 1)" in err and "Traceback" not in err
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(run / name)
        assert state["epoch"] == 1
        assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())
