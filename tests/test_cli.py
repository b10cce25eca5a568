"""The leanvision command: smoke runs of train, bench and the listing commands, and bad input."""

import json
import subprocess
import sys

import pytest

from leanvision.cli import main


def test_train_writes_a_run_folder_and_refuses_to_overwrite(tmp_path, capsys):
    args = ["train", "--model", "resnet20", "--data", "digits", "--epochs", "1", "--batch-size", "32",
            "--steps-per-epoch", "2", "--subset", "128", "--project", str(tmp_path), "--name", "r", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "last-epoch test accuracy" in out
    run = tmp_path / "r"
    assert {"config.yaml", "metrics.csv", "metrics.jsonl", "last.pt", "best.pt", "results.json"} <= {
        p.name for p in run.iterdir()}
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_yaml_config_with_flag_override_and_unknown_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: resnet20\ndata: digits\nepochs: 1\nbatch_size: 32\nsteps_per_epoch: 1\nsubset: 64\n"
                   "method_options: {}\n")
    assert main(["train", "--config", str(cfg), "--epochs", "1", "--project", str(tmp_path), "--name", "y",
                 "--no-progress"]) == 0
    saved = (tmp_path / "y" / "config.yaml").read_text()
    assert "model: resnet20" in saved and "epochs: 1" in saved
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: resnet20\nlearning_rate: 0.1\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "learning_rate" in err and "valid keys" in err
    evil = tmp_path / "evil.yaml"
    evil.write_text("model: !!python/object/apply:os.system ['echo hacked']\n")
    assert main(["train", "--config", str(evil)]) == 2  # safe loading refuses python tags


def test_unknown_model_and_dataset_list_the_valid_ones(tmp_path, capsys):
    assert main(["train", "--model", "resnet33", "--data", "digits", "--project", str(tmp_path)]) == 2
    assert "resnet32" in capsys.readouterr().err
    assert main(["train", "--data", "mnist-fashion", "--project", str(tmp_path)]) == 2
    assert "cifar10" in capsys.readouterr().err


def test_bench_resource_rows_table_and_json(tmp_path):
    out = tmp_path / "b"
    assert main(["bench", "resnet20:e2e", "resnet20:e2e:amp=none", "--steps", "1", "--batch-size", "8",
                 "--device", "cpu", "--out", str(out), "--json", str(tmp_path / "rows.json")]) == 0
    md = (out / "bench.md").read_text()
    assert "| resnet20 | e2e |  |" in md and "1.00" in md
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert {"model", "method", "settings", "accuracy", "peak_memory_bytes", "ms_per_step", "images_per_s",
            "trainable_params", "device"} <= set(rows[0])
    assert rows[0]["peak_memory_bytes"] > 0 and rows[0]["trainable_params"] == rows[1]["trainable_params"]
    assert (out / "bench.png").stat().st_size > 1000


def test_bench_interleaved_rounds_time_by_median_and_keep_memory_per_row(tmp_path, capsys):
    rows = ["resnet20:e2e", "resnet20:greedy:modules=2"]
    common = ["--batch-size", "4", "--device", "cpu"]
    assert main(["bench", *rows, "--steps", "1", *common, "--out", str(tmp_path / "a"),
                 "--json", str(tmp_path / "a.json")]) == 0
    assert main(["bench", *rows, "--steps", "2", "--rounds", "3", *common, "--out", str(tmp_path / "b"),
                 "--json", str(tmp_path / "b.json")]) == 0
    plain = json.loads((tmp_path / "a.json").read_text())["rows"]
    rounds = json.loads((tmp_path / "b.json").read_text())["rows"]
    for p, r in zip(plain, rounds):
        times = r["ms_per_step_rounds"]
        assert len(times) == 3 and r["time_rounds"] == 3
        assert r["ms_per_step"] == sorted(times)[1]  # the median of three rounds
        assert r["images_per_s"] == pytest.approx(4 * 1000 / r["ms_per_step"])
        # memory is still measured row by row: the interleaved timing must not leak into it
        assert r["peak_memory_bytes"] == p["peak_memory_bytes"]
        assert r["activation_peak_bytes"] == p["activation_peak_bytes"]
    assert rounds[1]["ms_per_step_vs_e2e"] == pytest.approx(rounds[1]["ms_per_step"] / rounds[0]["ms_per_step"])
    assert main(["bench", *rows, "--epochs", "1", "--rounds", "2", "--data", "digits"]) == 2
    assert "--rounds" in capsys.readouterr().err


def test_bench_row_syntax_errors_are_clear(capsys):
    assert main(["bench", "resnet20", "--steps", "1"]) == 2
    assert "MODEL:METHOD" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [["models", "--task", "classify", "resnet*"], ["methods"]])
def test_python_dash_m_entrypoint(cmd):
    res = subprocess.run([sys.executable, "-m", "leanvision", *cmd], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert ("resnet110" if cmd[0] == "models" else "e2e") in res.stdout


def test_bench_rows_from_a_yaml_file(tmp_path):
    from leanvision.bench import parse_rows

    f = tmp_path / "rows.yaml"
    f.write_text("rows:\n  - resnet20:e2e\n  - {model: resnet20, method: dgl, settings: {modules: 3, amp: bf16}}\n")
    rows = parse_rows([str(f)])
    assert [r.label for r in rows] == ["resnet20:e2e", "resnet20:dgl:modules=3,amp=bf16"]
    assert rows[1].options == {"modules": 3} and rows[1].train == {"amp": "bf16"}


def test_bench_train_flops_equal_three_forwards_less_the_stem_input_gradient(tmp_path):
    """Reference by hand: 2 FLOPs per multiply-add of every Conv2d/Linear, from the layers' shapes."""
    import torch
    from torch import nn

    from leanvision.models import create_model

    model = create_model("resnet20", num_classes=10)
    per_layer = {}

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            per_layer[module] = 2 * k * output[0].numel()
        else:
            per_layer[module] = 2 * module.in_features * module.out_features

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(count)
    model(torch.zeros(1, 3, 32, 32))
    forward = sum(per_layer.values())
    stem = per_layer[next(m for m in model.stem.modules() if isinstance(m, nn.Conv2d))]
    # backward: weight gradients of every layer and input gradients of all but the first conv
    want = 3 * forward - stem
    assert main(["bench", "resnet20:e2e", "--steps", "1", "--batch-size", "2", "--device", "cpu",
                 "--out", str(tmp_path), "--json", str(tmp_path / "r.json")]) == 0
    row = json.loads((tmp_path / "r.json").read_text())["rows"][0]
    assert row["train_flops_per_image"] == want
    assert "train GFLOP/image" in (tmp_path / "bench.md").read_text()


def test_bench_row_settings_take_the_flags_spellings():
    """Row settings speak the flags' vocabulary (flags.SYNONYMS), as --config files do; two spellings of one
    option in a row are refused naming both."""
    from leanvision.bench import parse_row
    from leanvision.bench.detect import parse_row as parse_detect_row
    from leanvision.config import ConfigError

    row = parse_row("resnet20:dgl:modules=3,batch=64,lr0=0.05")
    assert row.options == {"modules": 3} and row.train == {"batch_size": 64, "lr": 0.05}
    assert parse_row("resnet20:e2e:batch-size=32").train == {"batch_size": 32}
    with pytest.raises(ConfigError, match="'batch' and 'batch_size' both set batch_size"):
        parse_row("resnet20:e2e:batch=64,batch_size=32")
    assert parse_detect_row("yolov8n:batch_size=4,lr=0.02,gom=false") == ("yolov8n", {"batch": 4, "lr0": 0.02,
                                                                                     "gom": False})
    with pytest.raises(ConfigError, match="'lr' and 'lr0' both set lr0"):
        parse_detect_row("yolov8n:lr=0.02,lr0=0.01")
