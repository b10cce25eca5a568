"""Run folders a user can trust, driven through the CLI: resume keeps its word, kills leave no duplicate rows
or temp files, --overwrite starts clean, names stay inside --project, and nothing non-finite is saved."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from leanvision.cli import main
from leanvision.engine.checkpoint import load_checkpoint
from leanvision.ops import atomic as atomic_mod

SRC = Path(__file__).resolve().parents[1] / "src"
BASE = ["train", "--model", "resnet20", "--data", "digits", "--batch-size", "32", "--steps-per-epoch", "2",
        "--subset", "128", "--device", "cpu", "--no-progress"]


def _rows(run: Path) -> list[int]:
    jsonl = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    csv_rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert len(csv_rows) == len(jsonl)
    return jsonl


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A 1-epoch run (of 2 planned) to copy: BASE with --epochs 2, killed after its first epoch is saved."""
    tmp = tmp_path_factory.mktemp("template")
    assert main([*BASE, "--epochs", "1", "--project", str(tmp), "--name", "r"]) == 0
    # make it a 2-epoch run that has finished 1 epoch (as a kill after the first save leaves it)
    ckpt = load_checkpoint(tmp / "r" / "last.pt")
    ckpt["config"]["epochs"] = 2
    torch.save(ckpt, tmp / "r" / "last.pt")
    return tmp / "r"


@pytest.fixture
def run(template, tmp_path) -> Path:
    dst = tmp_path / "proj" / "r"
    shutil.copytree(template, dst)
    return dst


# ------------------------------------------------------------------------------------------ resume


@pytest.mark.parametrize("form", ["folder", "last.pt"])
def test_resume_restores_the_saved_config_and_writes_into_its_folder(run, tmp_path, monkeypatch, form):
    monkeypatch.chdir(tmp_path)  # a resume that ignored the saved run would write to ./runs/train/...
    target = run if form == "folder" else run / "last.pt"
    assert main(["train", "--resume", str(target)]) == 0  # no other flag: everything comes from the run
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 2 and _rows(run) == [1, 2]
    cfg = ckpt["config"]
    assert (cfg["batch_size"], cfg["steps_per_epoch"], cfg["subset"]) == (32, 2, 128)  # not the defaults 128/None
    assert not (tmp_path / "runs").exists()


def test_config_yaml_holds_the_effective_values_and_no_resume(run):
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["lr"] == pytest.approx(0.1 * 32 / 128)  # resolved: 0.1 per 128 images
    assert (saved["optimizer"], saved["weight_decay"], saved["warmup_epochs"], saved["lr_schedule"]) == (
        "sgd", 1e-4, 0, "cosine")
    assert "resume" not in saved and "overwrite" not in saved and saved["name"] == "r"


@pytest.mark.parametrize("flags,named", [
    (["--batch-size", "128"], "--batch-size"), (["--data", "cifar10"], "--data"), (["--lr", "0.5"], "--lr"),
    (["--name", "B"], "--name"), (["--steps-per-epoch", "5"], "--steps-per-epoch"), (["--epochs", "1"], "--epochs"),
    (["--method", "dgl"], "--method"), (["--modules", "4"], "--method-opt"),
])
def test_resume_refuses_a_flag_that_contradicts_the_saved_run(run, capsys, flags, named):
    before = (run / "last.pt").read_bytes()
    assert main(["train", "--resume", str(run / "last.pt"), *flags]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert (run / "last.pt").read_bytes() == before and not (run.parent / "B").exists()


def test_a_field_the_saved_run_lacks_reads_as_its_default_on_resume(run, capsys):
    # a run saved before a config field existed resumes with that field's default, so a flag asking for
    # something else is refused (it used to be skipped: the saved config had no value to compare with)
    ckpt = load_checkpoint(run / "last.pt")
    del ckpt["config"]["patience"]
    torch.save(ckpt, run / "last.pt")
    before = (run / "last.pt").read_bytes()
    assert main(["train", "--resume", str(run), "--patience", "3"]) == 2
    err = capsys.readouterr().err
    assert "--patience" in err and "patience=None" in err and len(err.splitlines()) == 1
    assert (run / "last.pt").read_bytes() == before
    assert main(["train", "--resume", str(run)]) == 0 and _rows(run) == [1, 2]


def test_resume_with_the_same_values_and_more_epochs_is_accepted(run):
    assert main(["train", "--resume", str(run), "--batch-size", "32", "--data", "digits", "--epochs", "3",
                 "--device", "cpu"]) == 0
    assert _rows(run) == [1, 2, 3] and yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 3


def test_a_config_with_a_new_name_is_a_new_run_and_resume_with_config_is_refused(run, capsys):
    assert main(["train", "--config", str(run / "config.yaml"), "--resume", str(run)]) == 2
    assert "drop --config" in capsys.readouterr().err
    assert main(["train", "--config", str(run / "config.yaml"), "--project", str(run.parent), "--name", "new",
                 "--epochs", "1"]) == 0
    new = run.parent / "new"
    assert _rows(new) == [1] and load_checkpoint(new / "last.pt")["epoch"] == 1  # started over, not resumed
    assert _rows(run) == [1]  # the old run is untouched


def test_the_patience_counter_survives_a_resume(tmp_path, monkeypatch):
    import leanvision.classify.train as run_mod

    monkeypatch.setattr(run_mod, "evaluate_classifier", lambda *a, **k: {"acc": 0.5, "loss": 1.0})  # never improves
    run = tmp_path / "p"
    assert main([*BASE, "--epochs", "2", "--patience", "3", "--project", str(tmp_path), "--name", "p"]) == 0
    assert load_checkpoint(run / "last.pt")["stale"] == 1  # epoch 1 improved on -inf, epoch 2 did not
    assert main(["train", "--resume", str(run), "--epochs", "10"]) == 0
    # epochs 3 and 4 do not improve either: 3 stale epochs at epoch 4 (a counter restarted at 0 stops at 5)
    assert _rows(run) == [1, 2, 3, 4]


KILLER = """
import os, signal, sys
real = os.replace
seen = {"n": 0}
def replace(src, dst):  # SIGKILL while the second last.pt is written: its temp file exists, not yet renamed
    if str(dst).endswith("last.pt"):
        seen["n"] += 1
        if seen["n"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)
os.replace = replace
from leanvision.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_real_kill_while_saving_leaves_no_duplicate_rows_or_temp_files_after_resume(tmp_path):
    # (that the resumed weights equal an uninterrupted run's is test_trainer's resume test)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLER, *BASE, "--epochs", "2", "--project", str(tmp_path),
                           "--name", "k"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run = tmp_path / "k"
    assert list(run.glob(".last.pt.*.tmp"))  # the kill left the temp file of the second save
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and _rows(run) == [1]  # rows follow the checkpoint
    assert main(["train", "--resume", str(run)]) == 0
    assert _rows(run) == [1, 2] and not list(run.glob(".*.tmp"))
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


# -------------------------------------------------------------------------------------- run folders


def test_overwrite_clears_the_old_runs_rows(run, capsys):
    assert main([*BASE, "--epochs", "1", "--project", str(run.parent), "--name", "r"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')  # an older, longer run
    assert main([*BASE, "--epochs", "1", "--project", str(run.parent), "--name", "r", "--overwrite"]) == 0
    assert _rows(run) == [1]


def test_run_names_stay_inside_the_project(tmp_path, capsys):
    outside = tmp_path / "x"
    for cmd in ([*BASE, "--epochs", "1"], ["detect", "train", "--data", "d.yaml"],
                ["detect", "predict", "--weights", "w.pt", "--source", "s.jpg"]):
        for name in ("../x", str(outside), "a/../../x"):
            assert main([*cmd, "--project", str(tmp_path / "proj"), "--name", name]) == 2
            assert "--name" in capsys.readouterr().err
    assert not outside.exists() and not (tmp_path / "proj").exists()
    # an absolute --project is the user's choice of parent folder
    assert main([*BASE, "--epochs", "1", "--project", str(tmp_path / "abs"), "--name", "ok"]) == 0
    assert (tmp_path / "abs" / "ok" / "last.pt").is_file()


def test_every_run_artefact_goes_through_the_atomic_writer(tmp_path, monkeypatch):
    written, synced = [], []
    real_write, real_sync = atomic_mod._atomic_write, atomic_mod.fsync_folder
    monkeypatch.setattr(atomic_mod, "_atomic_write", lambda p, *a, **k: (written.append(Path(p).name),
                                                                             real_write(p, *a, **k))[1])
    monkeypatch.setattr(atomic_mod, "fsync_folder", lambda f: (synced.append(Path(f)), real_sync(f))[1])
    assert main([*BASE, "--epochs", "1", "--project", str(tmp_path), "--name", "a"]) == 0
    run = tmp_path / "a"
    files = {p.name for p in run.iterdir() if p.is_file()}
    assert files >= {"config.yaml", "metrics.csv", "metrics.jsonl", "results.json", "last.pt", "best.pt"}
    assert files <= set(written)  # every file in the run folder was written atomically
    assert synced and all(f == run for f in synced)  # and the folder was fsynced after each rename


# ----------------------------------------------------------------------------------------- non-finite


def _all_finite(path: Path) -> bool:
    return all(torch.isfinite(v).all() for v in load_checkpoint(path)["method"].values() if v.is_floating_point())


def test_a_diverging_run_exits_non_zero_and_saves_nothing_non_finite(tmp_path, capsys):
    assert main([*BASE, "--epochs", "3", "--lr", "1e6", "--project", str(tmp_path), "--name", "d"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    run = tmp_path / "d"
    ckpts = [p for p in (run / "last.pt", run / "best.pt") if p.exists()]
    assert all(_all_finite(p) for p in ckpts)
    if (run / "last.pt").exists():
        assert f"the last finite checkpoint is {run / 'last.pt'}" in err
    else:
        assert "no checkpoint was written" in err


@pytest.mark.parametrize("poison", ["bn", "loss"])
def test_non_finite_batchnorm_statistics_or_loss_are_never_saved(tmp_path, capsys, monkeypatch, poison):
    from leanvision.methods.e2e import EndToEnd

    real, calls = EndToEnd.train_step, {"n": 0}

    def poisoned(self, images, targets, backward):  # epoch 1 (2 steps) is fine, then it goes bad
        calls["n"] += 1
        out = real(self, images, targets, backward)
        if calls["n"] > 2:
            if poison == "bn":  # the loss stays finite: only the saved state would show it
                self.model.stem[1].running_var.fill_(float("inf"))
            else:
                out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(EndToEnd, "train_step", poisoned)
    assert main([*BASE, "--epochs", "3", "--project", str(tmp_path), "--name", "n"]) == 1
    err = capsys.readouterr().err
    run = tmp_path / "n"
    assert f"the last finite checkpoint is {run / 'last.pt'} (epoch 1)" in err and len(err.splitlines()) == 1
    if poison == "bn":
        assert "running_var holds NaN or infinity" in err
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert _all_finite(run / "last.pt") and _all_finite(run / "best.pt")
    assert _rows(run) == [1]
