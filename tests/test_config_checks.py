"""Validation at the door: every flag and config value is checked when it is read, with one line naming it.

Property-based tests (hypothesis) drive the YAML config loader with random and broken files: each either
gives a valid config or raises ConfigError naming the file, never another exception.
"""

import json
import math

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leanvision.cli import main
from leanvision.config import ConfigError, TrainConfig, build_config, field_names, to_dict
from leanvision.detect.config import DetectConfig
from leanvision.engine.run_folder import json_text

TRAIN = ["train", "--model", "resnet20", "--data", "digits", "--epochs", "1", "--batch-size", "32", "--device", "cpu",
         "--no-progress"]


def _refused(capsys, argv, flag, tmp_path) -> str:
    rc = main([*argv, "--project", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert flag in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err  # one line
    assert not (tmp_path / "runs").exists()  # refused before anything was written
    return err


@pytest.mark.parametrize("flag,value", [
    ("--epochs", "0"), ("--epochs", "-1"), ("--steps-per-epoch", "0"), ("--subset", "0"), ("--subset", "-5"),
    ("--warmup-epochs", "-3"), ("--patience", "0"), ("--batch-size", "-4"), ("--lr", "-0.1"), ("--lr", "nan"),
    ("--lr", "inf"), ("--weight-decay", "-1"), ("--momentum", "1.5"), ("--workers", "-1"), ("--seed", "-1"),
    ("--device", "tpu"), ("--name", "../x"), ("--name", "/tmp/abs"), ("--name", "a/b"), ("--name", ".."),
    ("--replace-interval", "1"),
])
def test_train_flags_that_mean_nothing_are_refused_naming_the_flag(flag, value, capsys, tmp_path):
    _refused(capsys, [*TRAIN, flag, value], flag, tmp_path)  # argparse keeps the last --epochs


@pytest.mark.parametrize("flag,value", [
    ("--epochs", "0"), ("--imgsz", "0"), ("--imgsz", "100"), ("--nbs", "0"), ("--workers", "-1"), ("--lr0", "nan"),
    ("--lr0", "-1"), ("--patience", "0"), ("--batch", "0"), ("--mosaic", "2"), ("--device", "tpu"),
    ("--name", "../x"), ("--replace-interval", "1"), ("--steps-per-epoch", "0"),
])
def test_detect_train_flags_that_mean_nothing_are_refused_naming_the_flag(flag, value, capsys, tmp_path):
    data = tmp_path / "data.yaml"  # never read: the flag is refused first
    data.write_text("train: images\nnames: [a]\n")
    _refused(capsys, ["detect", "train", "--data", str(data), flag, value], flag, tmp_path)


@pytest.mark.parametrize("argv,flag", [
    (["detect", "val", "--weights", "x.pt", "--imgsz", "0"], "--imgsz"),
    (["detect", "val", "--weights", "x.pt", "--conf", "2"], "--conf"),
    (["detect", "predict", "--weights", "x.pt", "--source", "x.jpg", "--imgsz", "-32"], "--imgsz"),
    (["detect", "synth", "--out", "x", "--images", "0"], "--images"),
    (["bench", "resnet20:e2e", "--steps", "0"], "--steps"),
])
def test_other_numeric_flags_are_refused_by_argparse(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err


def test_subset_smaller_than_a_batch_is_refused(capsys, tmp_path):
    rc = main([*TRAIN, "--subset", "16", "--project", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "--subset 16" in err and "--batch-size 32" in err and len(err.splitlines()) == 1


def test_yaml_value_of_the_wrong_type_names_the_file_and_key(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text('model: resnet20\nepochs: "ten"\n')
    assert main(["train", "--config", str(cfg), "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: epochs must be an integer >= 1" in err and "'ten'" in err and len(err.splitlines()) == 1
    det = tmp_path / "d.yaml"
    det.write_text("imgsz: 0\n")
    assert main(["detect", "train", "--config", str(det), "--data", str(cfg)]) == 2
    assert f"{det}: imgsz must be an integer (a positive multiple of 32), got 0" in capsys.readouterr().err


def test_yaml_1_1_exponent_without_a_dot_is_a_float(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 1e-3\nweight_decay: 5e-4\n")  # PyYAML reads these as strings
    got = build_config(TrainConfig, cfg, {})
    assert got.lr == 1e-3 and got.weight_decay == 5e-4


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("cmd", [["train", "--model", "resnet20", "--data", "digits"],
                                 ["detect", "train", "--data", "x.yaml"]])
def test_device_cuda_without_a_gpu_is_one_line(cmd, capsys, tmp_path):
    assert main([*cmd, "--device", "cuda", "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "no CUDA GPU" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_unknown_method_option_is_a_message_not_a_traceback(capsys, tmp_path):
    assert main([*TRAIN, "--method", "dgl", "--method-opt", "no_such_option=1", "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--method dgl" in err and "no_such_option" in err and "Traceback" not in err


def test_strict_json_never_writes_infinity():
    text = json_text({"best": -math.inf, "rows": [float("nan"), 1.5], "t": (1, 2)})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")) == {
        "best": None, "rows": [None, 1.5], "t": [1, 2]}


# ------------------------------------------------------------------------- property-based: the loader

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**20), st.text(max_size=12),
                     st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from(["cpu", "auto", "cuda:0", "sgd", "adamw", "release", "cosine", "bf16", "1e-3",
                                      "nan", "../x", "run", "yolov8n", "ciou"]))
_VALUES = st.recursive(_SCALARS, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids,
                                                                                             max_size=3), max_leaves=6)


def _keys(cls):
    return st.sampled_from(sorted(field_names(cls)) + ["learning_rate", "epochs-", "batch-size", "x"])


def _check_loader(cls, path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    try:
        cfg = build_config(cls, path, {})
    except ConfigError as e:
        assert str(path) in str(e)
        return
    again = path.with_name("again.yaml")  # what loads is a valid config, and it saves and loads back the same
    again.write_text(yaml.safe_dump(to_dict(cfg)))
    assert yaml.safe_dump(to_dict(build_config(cls, again, {}))) == yaml.safe_dump(to_dict(cfg))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cls=st.sampled_from([TrainConfig, DetectConfig]), data=st.data())
def test_random_yaml_mappings_load_or_raise_config_error_naming_the_file(tmp_path, cls, data):
    mapping = data.draw(st.dictionaries(_keys(cls), _VALUES, max_size=6))
    _check_loader(cls, tmp_path / "c.yaml", yaml.safe_dump(mapping, allow_unicode=True))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cls=st.sampled_from([TrainConfig, DetectConfig]),
       text=st.one_of(st.text(max_size=80), st.binary(max_size=40),
                      st.lists(st.sampled_from(["epochs: ", "lr: ", "{", "}", "[", "- ", "!!python/name:os.system",
                                                "&a ", "*a", "\n", ": ", "2001-13-45", "0x1F", "~", "'", "nan",
                                                "name: ", "device: ", "? ", "%YAML 1.1\n---\n"]), max_size=12)
                      .map("".join)))
def test_broken_yaml_files_load_or_raise_config_error_naming_the_file(tmp_path, cls, text):
    _check_loader(cls, tmp_path / "c.yaml", text)


@settings(max_examples=150, deadline=None)
@given(cls=st.sampled_from([TrainConfig, DetectConfig]), data=st.data())
def test_random_flag_values_build_or_raise_config_error_naming_the_flag(cls, data):
    key = data.draw(st.sampled_from(sorted(field_names(cls))))
    value = data.draw(_SCALARS)
    try:
        build_config(cls, None, {key: value})
    except ConfigError as e:
        assert str(e).startswith("--" + key.replace("_", "-")), str(e)
