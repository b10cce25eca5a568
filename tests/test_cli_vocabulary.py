"""One CLI vocabulary: the same flag spelling in every sub-command (aliases give the same config), `models`
listing timm names, and the one-line warnings for slow choices (fp16/bf16 on CPU, timings on a busy machine)."""

import argparse

import pytest

from leanvision.cli import build_parser, main
from leanvision.flags import SYNONYMS, subparsers


def _parse(argv):
    return build_parser().parse_args(argv)


def test_train_accepts_both_spellings_with_the_same_config():
    from leanvision.classify.cli import config_from_args

    a = config_from_args(_parse(["train", "--data", "digits", "--batch-size", "64", "--lr", "0.05"]))
    b = config_from_args(_parse(["train", "--data", "digits", "--batch", "64", "--lr0", "0.05"]))
    assert a == b and a.batch_size == 64 and a.lr == 0.05


def test_detect_train_accepts_both_spellings_with_the_same_config():
    from leanvision.detect.cli import config_from_args

    a = config_from_args(_parse(["detect", "train", "--data", "d.yaml", "--batch", "4", "--lr0", "0.02",
                                 "--imgsz", "96"]))
    b = config_from_args(_parse(["detect", "train", "--data", "d.yaml", "--batch-size", "4", "--lr", "0.02",
                                 "--image-size", "96"]))
    assert a == b and a.batch == 4 and a.lr0 == 0.02 and a.imgsz == 96


@pytest.mark.parametrize("argv, dest", [
    (["val", "--weights", "w.pt"], "batch_size"), (["detect", "val", "--weights", "w.pt"], "batch"),
    (["export", "--weights", "w.pt", "--format", "onnx"], "batch"), (["bench", "r:e2e"], "batch_size"),
    (["detect", "bench", "yolov8n"], "batch")])
def test_every_batch_flag_answers_to_both_spellings(argv, dest):
    assert getattr(_parse([*argv, "--batch", "3"]), dest) == 3
    assert getattr(_parse([*argv, "--batch-size", "3"]), dest) == 3


def test_help_shows_the_canonical_spelling_and_names_the_alias(capsys):
    with pytest.raises(SystemExit):
        main(["detect", "train", "--help"])
    out = capsys.readouterr().out
    assert "--batch-size BATCH_SIZE" in out and "--lr LR" in out and "(also --batch)" in out
    assert "[--batch " not in out and "--lr0 " not in out  # the usage line shows one spelling


def test_no_sub_command_uses_two_spellings_of_one_flag_for_different_things():
    for p in subparsers(build_parser()):
        for group in SYNONYMS:
            actions = {id(p._option_string_actions[s]) for s in group if s in p._option_string_actions}
            assert len(actions) <= 1, (p.prog, group)


def test_a_bad_value_names_the_canonical_flag(capsys):
    with pytest.raises(SystemExit):
        _parse(["detect", "val", "--weights", "w.pt", "--batch", "0"])
    assert "--batch-size" in capsys.readouterr().err


def test_every_long_loop_command_has_no_progress():
    for argv in (["models"], ["train"], ["val", "--weights", "w"], ["predict", "--weights", "w", "--source", "s"],
                 ["detect", "train"], ["detect", "val", "--weights", "w"], ["bench", "r:e2e"], ["demo"],
                 ["detect", "bench", "yolov8n"]):
        assert _parse([*argv, "--no-progress"]).progress is False, argv


# ------------------------------------------------------------------------------------------------ models


def test_models_lists_timm_names_that_pass_the_block_list_check(capsys, tmp_path, monkeypatch):
    pytest.importorskip("timm")
    from leanvision.models import check_block_model, create_model, timm_adapter

    monkeypatch.setenv("LEANVISION_CACHE", str(tmp_path))
    assert main(["models", "--task", "timm", "resnet18*"]) == 0
    assert main(["models", "--task", "timm", "timm/vit_tiny*"]) == 0
    names = capsys.readouterr().out.split()
    assert "timm/resnet18" in names and "timm/vit_tiny_patch16_224" in names
    assert all(n.startswith("timm/") for n in names)
    for name in ("timm/resnet10t", "timm/resnetblur18", "timm/vit_tiny_patch16_224"):  # blur: stride in a pool
        check_block_model(create_model(name, num_classes=4))  # real tensors, not the listing's meta device
    # each outcome is kept under the timm version: a second listing checks nothing ...
    import json

    cache = json.loads((tmp_path / "timm-block-check.json").read_text())
    assert cache["key"].startswith("timm ") and cache["results"]["resnet18"] is None
    assert set(cache["results"]) == {n.removeprefix("timm/") for n in names}

    def no_check(name):
        raise AssertionError(f"{name} was checked again")

    monkeypatch.setattr(timm_adapter, "timm_check_problem", no_check)
    assert main(["models", "--task", "timm", "resnet18*"]) == 0
    assert "timm/resnet18" in capsys.readouterr().out.split()
    # ... until timm (or torch, or the check's code) changes
    monkeypatch.setattr(timm_adapter, "_check_key", lambda: "timm 99.0 | another version")
    with pytest.raises(AssertionError, match="checked again"):
        main(["models", "--task", "timm", "resnet18*"])


def test_models_leaves_out_timm_names_that_fail_the_block_list_check(capsys, tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    from leanvision.models import list_timm_models, timm_adapter

    monkeypatch.setenv("LEANVISION_CACHE", str(tmp_path))
    # break the ResNet family: its head now drops the last class, so the probe's logits have the wrong width
    head_forward = timm_adapter._TimmResNetHead.forward
    monkeypatch.setattr(timm_adapter._TimmResNetHead, "forward", lambda self, x: head_forward(self, x)[:, :-1])
    problem = timm_adapter.timm_check_problem("resnet18")
    assert problem is not None and "head returned shape (1, 9)" in problem
    assert timm_adapter.timm_check_problem("vit_tiny_patch16_224") is None
    assert set(timm.list_models("resnet18*")) and list_timm_models("resnet18*") == []
    assert list_timm_models("resnet18*", check=False) == [f"timm/{n}" for n in sorted(timm.list_models("resnet18*"))]
    assert main(["models", "--task", "timm", "resnet18*"]) == 0
    assert capsys.readouterr().out.split() == []
    assert main(["models", "*resnet18*"]) == 0  # the full listing: the registered resnet18, no timm section
    out = capsys.readouterr().out
    assert "  resnet18\n" in out and "timm/" not in out and "timm classifiers" not in out


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_every_listed_timm_name_passes_the_block_list_check():
    """Every name `leanvision models --task timm` lists, built as `leanvision train --model timm/NAME` builds it
    (timm's own weight init included) and checked by check_block_model with its probe. The models are built on
    the meta device (shapes only): a real ViT-gigantic forward would take minutes on a CPU. ~7 min on one idle core
    (two passes over 244 names with timm 1.0.31: the listing's and this test's)."""
    timm = pytest.importorskip("timm")
    import torch

    from leanvision.models import check_block_model, create_model, list_timm_models

    listed = list_timm_models()
    candidates = list_timm_models(check=False)
    assert {"timm/resnet18", "timm/resnet50", "timm/vit_base_patch16_224"} <= set(listed)
    assert len(listed) >= 0.9 * len(candidates), "most of timm's ResNets and ViTs should pass"
    assert len(candidates) >= len(timm.list_models("resnet*", module="resnet"))
    failed = {}
    for name in listed:
        try:
            with torch.device("meta"):
                model = create_model(name, num_classes=7)
            check_block_model(model)
        except Exception as e:  # noqa: BLE001 - collect every failure, then report them together
            failed[name] = str(e).splitlines()[0]
    assert not failed, f"{len(failed)} listed timm models fail the check: {failed}"


# ---------------------------------------------------------------------------------------------- warnings


def test_fp16_on_cpu_warns_in_one_line_with_what_to_use(tmp_path, capsys):
    from leanvision.engine.trainer import slow_amp_warning

    assert slow_amp_warning("none", "cpu") is None and slow_amp_warning("fp16", "cuda") is None
    args = ["train", "--model", "resnet20", "--data", "digits", "--epochs", "1", "--batch-size", "8",
            "--steps-per-epoch", "1", "--subset", "16", "--project", str(tmp_path), "--no-progress"]
    assert main([*args, "--name", "a", "--amp", "none"]) == 0
    assert "warning" not in capsys.readouterr().err
    from leanvision.engine import trainer

    trainer_autocast = trainer.autocast
    try:  # the warning is the point here, not 90 s of fp16 kernels: run the step in fp32
        trainer.autocast = lambda device, amp: trainer_autocast(device, "none")
        assert main([*args, "--name", "b", "--amp", "fp16"]) == 0
    finally:
        trainer.autocast = trainer_autocast
    err = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(err) == 1 and "fp16 on CPU" in err[0] and "--amp none" in err[0]


def test_bf16_warning_follows_the_cpu(monkeypatch):
    from leanvision.engine import trainer

    monkeypatch.setattr(trainer, "_cpu_has_bf16", lambda: False)
    assert "--amp none" in trainer.slow_amp_warning("bf16", "cpu")
    monkeypatch.setattr(trainer, "_cpu_has_bf16", lambda: True)
    assert trainer.slow_amp_warning("bf16", "cpu") is None


def test_busy_machine_warning(monkeypatch):
    import os

    from leanvision.bench.report import busy_warning

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 3.0, 2.0))
    w = busy_warning()
    assert "busy" in w and "3.5" in w and "4 cores" in w and "swing" in w
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    assert busy_warning() is None


def test_demo_warns_on_a_busy_machine(monkeypatch, tmp_path, capsys):
    import os

    from leanvision.bench import cli as bench_cli

    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 99.0, 99.0))
    monkeypatch.setattr(bench_cli, "parse_rows", lambda rows: [])  # no rows: only the start of the demo
    monkeypatch.setattr("leanvision.bench.runner.run_rows", lambda *a, **k: [])
    assert main(["demo", "--out", str(tmp_path), "--no-detect", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "busy" in err and "load average 99.0" in err


def test_parser_walk_finds_nested_sub_commands():
    progs = [p.prog for p in subparsers(build_parser())]
    assert "leanvision detect bench" in progs and "leanvision train" in progs
    assert all(isinstance(p, argparse.ArgumentParser) for p in subparsers(build_parser()))


# ----------------------------------------------------------------------------------------------- config files


def _yaml(path, **values):
    import yaml

    path.write_text(yaml.safe_dump(values))
    return path


def _saved(run_dir):
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    from leanvision.detect.data.synth import generate_synthetic_dataset

    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth") / "data", images=4, imgsz=96, seed=1,
                                      val_fraction=0.5)


@pytest.mark.parametrize("batch_key,lr_key", [("batch_size", "lr"), ("batch", "lr0")])
def test_one_config_file_works_for_train_and_detect_train(tmp_path, synth_data, batch_key, lr_key):
    cfg = _yaml(tmp_path / "c.yaml", **{batch_key: 2, lr_key: 0.02, "epochs": 1, "steps_per_epoch": 1,
                                        "device": "cpu", "workers": 0, "progress": False})
    assert main(["train", "--config", str(cfg), "--model", "resnet20", "--data", "digits", "--subset", "16",
                 "--project", str(tmp_path), "--name", "c"]) == 0
    assert main(["detect", "train", "--config", str(cfg), "--data", str(synth_data), "--imgsz", "64",
                 "--project", str(tmp_path), "--name", "d", "--no-plots"]) == 0
    c, d = _saved(tmp_path / "c"), _saved(tmp_path / "d")
    assert (c["batch_size"], c["lr"]) == (2, 0.02) and (d["batch"], d["lr0"]) == (2, 0.02)


def test_config_keys_take_every_spelling_of_the_flags(tmp_path):
    from leanvision.config import TrainConfig, load_yaml
    from leanvision.detect.cli import config_from_args
    from leanvision.detect.config import DetectConfig

    f = _yaml(tmp_path / "a.yaml", **{"batch-size": 8, "lr0": 0.5, "img-size": 96, "data": "d.yaml"})
    assert load_yaml(f, DetectConfig) == {"batch": 8, "lr0": 0.5, "imgsz": 96, "data": "d.yaml"}
    cfg = config_from_args(_parse(["detect", "train", "--config", str(f), "--batch", "4"]))  # flags still win
    assert (cfg.batch, cfg.lr0, cfg.imgsz) == (4, 0.5, 96)
    f = _yaml(tmp_path / "b.yaml", batch=8, lr0=0.5, image_size=96)
    assert load_yaml(f, DetectConfig) == {"batch": 8, "lr0": 0.5, "imgsz": 96}
    f = _yaml(tmp_path / "c.yaml", batch=8, lr0=0.5)
    assert load_yaml(f, TrainConfig) == {"batch_size": 8, "lr": 0.5}


@pytest.mark.parametrize("task", [["train", "--data", "digits"], ["detect", "train", "--data", "d.yaml"]])
def test_config_file_errors_are_one_line_naming_the_file_and_key(tmp_path, capsys, task):
    def error(**values):
        f = _yaml(tmp_path / "c.yaml", **values)
        assert main([*task, "--config", str(f), "--project", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and f"{f}: " in err and "Traceback" not in err
        return err

    assert "'batch' and 'batch_size' both set" in error(batch=4, batch_size=8)  # even when they agree:
    assert "'lr' and 'lr0' both set" in error(lr=0.1, lr0=0.1)  # one idea, one key
    assert "'batch-size' and 'batch_size' both set" in error(**{"batch_size": 4, "batch-size": 4})
    err = error(batchsize=4)
    assert "unknown key(s) batchsize" in err
    assert ("batch_size (or batch)" if task[0] == "train" else "batch (or batch_size)") in err  # the valid spellings
    assert "c.yaml: batch must be an integer >= 1, got 0" in error(batch=0)  # the key as the file wrote it
    if task[0] == "train":  # a classifier has no input-size option (its flags have none either)
        assert "unknown key(s) imgsz" in error(imgsz=64)


def test_saved_config_yaml_of_a_run_still_loads_and_the_run_resumes(tmp_path, synth_data):
    """A run folder's config.yaml keeps the fields' own names (batch_size for classifiers, batch/lr0/imgsz for
    detectors): `--config RUN/config.yaml --name NEW` starts the same run again, and `--resume RUN` continues it."""
    from leanvision.engine.checkpoint import load_checkpoint

    common = ["--epochs", "1", "--steps-per-epoch", "1", "--workers", "0", "--project", str(tmp_path),
              "--no-progress", "--device", "cpu"]
    assert main(["train", "--model", "resnet20", "--data", "digits", "--subset", "16", "--batch-size", "4",
                 "--name", "c", *common]) == 0
    assert main(["detect", "train", "--data", str(synth_data), "--imgsz", "64", "--batch", "2", "--name", "d",
                 "--no-plots", *common]) == 0
    for cmd, run in ((["train"], tmp_path / "c"), (["detect", "train"], tmp_path / "d")):
        saved = _saved(run)
        assert main([*cmd, "--config", str(run / "config.yaml"), "--name", run.name + "2"]) == 0
        again = _saved(tmp_path / (run.name + "2"))
        assert again.pop("name") == run.name + "2" and {**again, "name": run.name} == saved
        assert main([*cmd, "--resume", str(run), "--epochs", "2"]) == 0
        assert _saved(run) == {**saved, "epochs": 2} and load_checkpoint(run / "last.pt")["epoch"] == 2
