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
