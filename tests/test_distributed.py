"""Multi-process training: gradient averaging with 2 CPU (gloo) processes, and torchrun end to end."""

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world: int, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from leanvision.engine.distributed import average_gradients, broadcast_module

    torch.manual_seed(100 + rank)  # different weights per rank before the broadcast
    lin = torch.nn.Linear(4, 3)
    broadcast_module(lin)
    x = torch.full((2, 4), float(rank + 1))
    lin(x).sum().backward()
    extra = torch.nn.Parameter(torch.zeros(5))
    extra.grad = torch.full((5,), float(rank))
    average_gradients(list(lin.parameters()) + [extra], bucket_bytes=16)  # tiny buckets: several all-reduces
    out[rank] = (lin.weight.detach().clone(), lin.weight.grad.clone(), lin.bias.grad.clone(), extra.grad.clone())
    dist.destroy_process_group()


def test_average_gradients_equals_the_mean_over_ranks(unused_tcp_port=29611):
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(2, unused_tcp_port, out), nprocs=2, join=True)
        w0, gw0, gb0, ge0 = out[0]
        w1, gw1, gb1, ge1 = out[1]
    assert torch.equal(w0, w1)  # broadcast gave both ranks rank 0's weights
    # d(sum(Wx+b))/dW = sum over the batch of x: rank r has x = r+1, batch 2 -> 2(r+1); mean = 3
    assert torch.allclose(gw0, torch.full((3, 4), 3.0)) and torch.equal(gw0, gw1)
    assert torch.allclose(gb0, torch.full((3,), 2.0))
    assert torch.allclose(ge0, torch.full((5,), 0.5)) and torch.equal(ge0, ge1)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           *args]
    src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout, whatever the working folder
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)


# rank 0 alone evaluates; a constant accuracy makes epoch 2 the first without improvement on every run
CONSTANT_EVAL = """
import sys
import leanvision.classify.train as run
run.evaluate_classifier = lambda *a, **k: {"acc": 0.5, "loss": 1.0}
from leanvision.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_torchrun_two_processes_train_write_one_run_and_stop_early_together(tmp_path):
    script = tmp_path / "constant_eval.py"
    script.write_text(CONSTANT_EVAL)
    res = _torchrun([str(script), "train", "--model", "resnet20", "--data", "digits", "--epochs", "4",
                     "--batch-size", "32", "--steps-per-epoch", "2", "--subset", "128", "--device", "cpu",
                     "--patience", "1", "--project", str(tmp_path), "--name", "p", "--no-progress"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "x2" in res.stdout  # the run reports two processes
    assert (tmp_path / "p" / "last.pt").is_file() and (tmp_path / "p" / "results.json").is_file()
    # both ranks stopped after epoch 2 (a rank that stopped alone left the other waiting in an all-reduce)
    assert res.stdout.count("early stop") == 1 and res.stdout.count("test accuracy") == 1  # rank 0 reports
    assert "nan" not in res.stdout
    rows = (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2


def test_torchrun_early_stop_is_decided_on_rank_0_for_the_detector(tmp_path):
    from leanvision.detect.data.synth import generate_synthetic_dataset

    data = generate_synthetic_dataset(tmp_path / "data", images=4, imgsz=64, seed=1, val_fraction=0.5)
    # an untrained detector scores mAP 0 every epoch: epoch 1 improves on -inf, epoch 2 does not
    res = _torchrun(["-m", "leanvision", "detect", "train", "--model", "yolov8n", "--data", str(data), "--epochs", "4",
                     "--batch", "2", "--nbs", "2", "--imgsz", "64", "--workers", "0", "--lr0", "1e-9", "--patience",
                     "1", "--device", "cpu", "--project", str(tmp_path), "--name", "d", "--no-progress",
                     "--no-plots"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("early stop") == 1 and res.stdout.count("results in") == 1
    assert len((tmp_path / "d" / "metrics.jsonl").read_text().splitlines()) == 2
