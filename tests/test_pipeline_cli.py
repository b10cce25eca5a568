"""``leanvision train --pipeline``: the command line end to end, with the processes torchrun would start.

The stage processes are started here with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT) rather
than by torchrun itself: without its agent, nothing but our own watchdog stops the job when one dies.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import leanvision
from leanvision.engine.checkpoint import load_checkpoint

SRC = str(Path(__file__).resolve().parents[1] / "src")
TRAIN = ["train", "--model", "resnet20", "--data", "digits", "--method", "dgl", "--modules", "4", "--epochs", "3",
         "--batch-size", "16", "--steps-per-epoch", "4", "--subset", "96", "--device", "cpu", "--no-progress",
         "--lr", "0.05"]


def _env(**extra) -> dict:
    path = os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **extra}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: list[str], cwd, world: int = 2, **env) -> list[subprocess.Popen]:
    port = str(_port())
    return [subprocess.Popen([sys.executable, "-m", "leanvision", *args], cwd=cwd, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                                      MASTER_PORT=port, **env))
            for r in range(world)]


def _wait(procs, timeout=600) -> list[tuple[int, str, str]]:
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, *o) for p, o in zip(procs, outs)]


@pytest.mark.slow  # five short runs of two processes (about a minute on an idle 2-core machine)
def test_pipelined_run_is_the_single_process_run_and_kill_and_resume_continue_it(tmp_path):
    # one process, no pipeline: the reference
    ref = subprocess.run([sys.executable, "-m", "leanvision", *TRAIN, "--project", str(tmp_path), "--name", "one"],
                         capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    # two stages, overlap schedule: DGL's updates are exactly the single-process ones
    outs = _wait(_launch([*TRAIN, "--pipeline", "2", "--project", str(tmp_path), "--name", "two"], tmp_path))
    assert all(rc == 0 for rc, _, _ in outs), outs[0][2][-2000:] + outs[1][2][-2000:]
    assert "stage 0: modules 0-" in outs[0][1] and "expected share" in outs[0][1]
    one, two = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    assert set(one["method"]) == set(two["method"])
    assert all(torch.equal(one["method"][k], two["method"][k]) for k in one["method"])
    # the consolidated optimizer state is the single-process optimizer's, entry for entry
    groups = [[g["params"] for g in c["optimizer"]["param_groups"]] for c in (one, two)]
    assert groups[0] == groups[1]
    for i, st in one["optimizer"]["state"].items():
        assert torch.equal(st["momentum_buffer"], two["optimizer"]["state"][i]["momentum_buffer"])
    assert (tmp_path / "two" / "stages" / "stage1.pt").is_file()
    # the consolidated checkpoint is an ordinary one: leanvision.load builds the classifier from it
    x = torch.rand(2, 3, 8, 8)
    logits = [leanvision.load(tmp_path / name / "best.pt")(x) for name in ("one", "two")]
    assert torch.equal(logits[0], logits[1])

    # kill -9 of stage 1 once epoch 1 is saved: stage 0 stops within seconds, naming it
    procs = _launch([*TRAIN, "--pipeline", "2", "--project", str(tmp_path), "--name", "kill"], tmp_path,
                    LEANVISION_PIPELINE_TIMEOUT="3")
    last = tmp_path / "kill" / "last.pt"
    deadline = time.monotonic() + 600
    while not last.exists() and time.monotonic() < deadline and procs[0].poll() is None:
        time.sleep(0.05)
    assert last.exists(), procs[0].communicate()[1][-2000:]
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    _, err = procs[0].communicate(timeout=120)
    assert procs[0].returncode != 0 and time.monotonic() - t0 < 60
    assert "rank 1 (stage 1, replica 0)" in err and "Traceback" not in err, err[-2000:]
    procs[1].communicate()
    # resume: the job continues from the consolidated last.pt and ends where the uninterrupted run ended
    outs = _wait(_launch(["train", "--resume", str(tmp_path / "kill"), "--no-progress"], tmp_path))
    assert all(rc == 0 for rc, _, _ in outs), outs[0][2][-2000:] + outs[1][2][-2000:]
    resumed = load_checkpoint(last)
    assert resumed["epoch"] == 3
    assert all(torch.equal(two["method"][k], resumed["method"][k]) for k in two["method"])


def test_e2e_cannot_be_pipelined_and_the_error_says_why(tmp_path):
    i = TRAIN.index("--modules")
    args = TRAIN[:i] + TRAIN[i + 2:]  # E2E takes no --modules
    res = subprocess.run([sys.executable, "-m", "leanvision", *args, "--method", "e2e", "--pipeline", "1",
                          "--project", str(tmp_path)], capture_output=True, text=True, env=_env(), cwd=tmp_path,
                         timeout=600)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--pipeline needs a local-learning method" in res.stderr and "E2E back-propagates" in res.stderr


@pytest.mark.slow  # three short runs of two processes
def test_a_run_with_micro_batches_resumes_exactly_and_keeps_its_micro_batches(tmp_path):
    mb = [*TRAIN, "--pipeline", "2", "--micro-batches", "2", "--project", str(tmp_path)]
    # uninterrupted, M = 2 (per replica 16 images: 2 micro-batches of 8)
    outs = _wait(_launch([*mb, "--name", "whole"], tmp_path))
    assert all(rc == 0 for rc, _, _ in outs), outs[0][2][-2000:] + outs[1][2][-2000:]
    whole = load_checkpoint(tmp_path / "whole" / "last.pt")
    assert whole["epoch"] == 3 and whole["config"]["micro_batches"] == 2
    # the same run, both stages killed once an epoch is saved
    procs = _launch([*mb, "--name", "cut"], tmp_path)
    last = tmp_path / "cut" / "last.pt"
    deadline = time.monotonic() + 600
    while not last.exists() and time.monotonic() < deadline and procs[0].poll() is None:
        time.sleep(0.05)
    assert last.exists(), procs[0].communicate()[1][-2000:]
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.communicate()
    stopped = int(load_checkpoint(last)["epoch"])
    assert 1 <= stopped < 3
    # another --micro-batches than the saved run's is refused in one line naming the flag
    for other in ("1", "4"):
        res = subprocess.run([sys.executable, "-m", "leanvision", "train", "--resume", str(tmp_path / "cut"),
                              "--micro-batches", other], capture_output=True, text=True, env=_env(), cwd=tmp_path,
                             timeout=600)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
        assert f"--micro-batches {other} contradicts the run being resumed" in lines[0]
        assert "micro_batches=2" in lines[0]
    # resumed (repeating the saved --micro-batches is allowed): it continues after the saved epoch and ends
    # where the uninterrupted run ended, weights, BatchNorm statistics and momentum
    outs = _wait(_launch(["train", "--resume", str(tmp_path / "cut"), "--micro-batches", "2", "--no-progress"],
                         tmp_path))
    assert all(rc == 0 for rc, _, _ in outs), outs[0][2][-2000:] + outs[1][2][-2000:]
    rows = [ln for ln in outs[0][1].splitlines() if ln.startswith("epoch=")]
    assert [ln.split(",")[0] for ln in rows] == [f"epoch={e}" for e in range(stopped + 1, 4)], outs[0][1]
    resumed = load_checkpoint(last)
    assert resumed["epoch"] == 3 and resumed["config"]["micro_batches"] == 2
    assert set(whole["method"]) == set(resumed["method"])
    different = [k for k in whole["method"] if not torch.equal(whole["method"][k], resumed["method"][k])]
    assert not different, different[:3]
    for i, st in whole["optimizer"]["state"].items():
        assert torch.equal(st["momentum_buffer"], resumed["optimizer"]["state"][i]["momentum_buffer"])


def test_a_run_saved_before_micro_batches_existed_resumes_with_one_and_refuses_another(tmp_path):
    # such a run trained on whole batches: its config has no micro_batches, which must read as 1, not as "any"
    from leanvision.classify.train import upgrade_saved_config
    from leanvision.config import ConfigError, TrainConfig
    from leanvision.engine.checkpoint import atomic_save
    from leanvision.engine.resume import config_for_resume

    config = {"model": "resnet20", "data": "digits", "method": "dgl", "epochs": 3, "pipeline": 2,
              "batch_size": 16, "method_options": {"modules": 4}}
    atomic_save({"config": config, "epoch": 1}, tmp_path / "old" / "last.pt")
    cfg = config_for_resume(TrainConfig, tmp_path / "old", {"micro_batches": None}, upgrade=upgrade_saved_config)
    assert cfg.micro_batches == 1
    assert config_for_resume(TrainConfig, tmp_path / "old", {"micro_batches": 1},
                             upgrade=upgrade_saved_config).micro_batches == 1
    with pytest.raises(ConfigError, match=r"--micro-batches 2 contradicts the run being resumed .*micro_batches=1"):
        config_for_resume(TrainConfig, tmp_path / "old", {"micro_batches": 2}, upgrade=upgrade_saved_config)
