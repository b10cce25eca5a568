"""Multi-process training: gradient averaging with 2 CPU (gloo) processes, and torchrun end to end."""

import os
import subprocess
import sys

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


def test_torchrun_two_processes_train_and_write_one_run(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29633",
           "-m", "leanvision", "train", "--model", "resnet20", "--data", "digits", "--epochs", "1",
           "--batch-size", "32", "--steps-per-epoch", "2", "--subset", "128", "--device", "cpu",
           "--project", str(tmp_path), "--name", "ddp", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "x2" in res.stdout  # the run reports two processes
    assert (tmp_path / "ddp" / "last.pt").is_file() and (tmp_path / "ddp" / "results.json").is_file()
