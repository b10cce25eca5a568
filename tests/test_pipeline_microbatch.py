"""Micro-batches (``--micro-batches M``) and data-parallel replicas of a pipelined local-learning run.

The references are written here without the pipeline code: ``method.train_step`` on each micro-batch with its
loss scaled by 1/M (gradient accumulation, as a single process would do it), and for R replicas R copies of the
method, each on its slice of the batch, whose gradients are averaged before each copy's optimizer steps.
The pipelined runs are real gloo processes (tests/_pipeline_workers.py), compared with ``torch.equal``.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from _pipeline_workers import BATCH, batches, build, make_optimizer, single, stage_worker
from leanvision.config import ConfigError
from leanvision.engine.checkpoint import load_checkpoint
from leanvision.engine.pipeline.fit import check_micro_batches
from leanvision.engine.pipeline.stage import Stage
from leanvision.engine.pipeline.topology import build_topology
from leanvision.methods.local.stages import split_micro_batches


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(method: str, modules: int, counts: list[int], schedule: str, replicas: int = 1,
           micro_batches: int = 1, batch: int = BATCH, save_to: Path | None = None) -> list[dict]:
    """Every rank's state (rank r*P + p is stage p of replica r); with ``save_to``, the job's save written there."""
    world = len(counts) * replicas
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(stage_worker, args=(world, _port(), method, modules, counts, schedule, out, {}, micro_batches,
                                     batch, None if save_to is None else str(save_to)),
                 nprocs=world, join=True)
        return [dict(out[r]) for r in range(world)]


def _merge(states: list[dict]) -> dict:
    merged = {}
    for st in states:
        assert not set(merged) & set(st)  # every tensor is saved by one stage only
        merged.update(st)
    return merged


def reference(method_name: str, modules: int, micro_batches: int = 1, replicas: int = 1,
              batch: int = BATCH) -> list[dict]:
    """Each replica's state after the test batches: replica r trains on the r-th slice of every batch, cut into
    ``micro_batches`` whose losses are scaled by 1/M and whose gradients add up; the replicas' gradients are
    averaged; then every replica takes its optimizer step (the EMA update first, as the trainer does)."""
    torch.set_num_threads(1)
    methods = [build(method_name, modules) for _ in range(replicas)]
    opts = [make_optimizer(m) for m in methods]
    for images, targets in batches(batch):
        for m, opt, x, t in zip(methods, opts, images.chunk(replicas), targets.chunk(replicas)):
            opt.zero_grad(set_to_none=True)
            for xm, tm in zip(x.chunk(micro_batches), t.chunk(micro_batches)):
                if micro_batches == 1:
                    m.train_step(xm, tm, torch.Tensor.backward)
                else:
                    m.train_step(xm, tm, lambda loss: (loss / micro_batches).backward())
        if replicas > 1:
            for ps in zip(*(m.parameters() for m in methods)):
                if ps[0].grad is not None:
                    mean = sum(p.grad for p in ps[1:]) + ps[0].grad  # the all-reduce's sum, then / R
                    mean = mean / replicas
                    for p in ps:
                        p.grad = mean.clone()
        for m, opt in zip(methods, opts):
            m.before_optimizer_step()
            opt.step()
    return [{k: v.clone() for k, v in m.state_dict().items()} for m in methods]


def _assert_same(ref: dict, got: dict) -> None:
    assert set(got) == set(ref)
    different = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.parametrize("method,modules,counts,m", [
    ("dgl", 4, [2, 2], 2), ("infopro", 4, [1, 3], 3), ("dgl+mlaan", 4, [2, 2], 2), ("dgl+mlaan", 5, [1, 2, 2], 3),
])
def test_sync_micro_batches_are_single_process_gradient_accumulation_bit_for_bit(method, modules, counts, m):
    ref = reference(method, modules, micro_batches=m)[0]
    got = _merge(_ranks(method, modules, counts, "sync", micro_batches=m))
    _assert_same(ref, got)
    # and the micro-batches were real: BatchNorm saw micro-batch statistics, so the whole-batch run differs
    whole = single(method, modules)
    assert any(not torch.equal(whole[k], got[k]) for k in got if k.endswith("running_mean"))


def test_micro_batches_of_one_stage_give_the_whole_batch_update_when_batchnorm_statistics_are_fixed():
    # BN in eval mode uses its running statistics, so the mean loss of the batch is the mean of the micro-batch
    # means and M micro-batches must give the whole batch's update, to rounding (the reference is M = 1)
    images, targets = batches()[0]
    for name in ("dgl", "dgl+mlaan"):
        after = []
        for m in (1, 3):
            method = build(name, 4).eval()
            stage = Stage(method, build_topology(1, 0, 1), ((0, 1, 2, 3),), "sync", torch.device("cpu"),
                          make_optimizer, 1e-4, micro_batches=m)
            out = stage.step(images, targets)
            assert out["logits"].shape == (6, 4) and torch.equal(out["targets"], targets)
            after.append((out, {k: v.clone() for k, v in method.state_dict().items()}))
        (one, a), (three, b) = after
        torch.testing.assert_close(three["loss"], one["loss"], rtol=1e-12, atol=0)
        moved = [k for k in a if a[k].is_floating_point() and not torch.allclose(a[k], b[k], rtol=1e-10, atol=1e-13)]
        assert not moved, f"{name}: {moved[:3]} differ"
        start = build(name, 4).state_dict()
        assert any(not torch.equal(start[k], a[k]) for k in a)  # the step did update


@pytest.mark.parametrize("method,schedule,m", [("dgl", "overlap", 1), ("dgl+mlaan", "sync", 1)])
def test_two_stages_times_two_replicas_is_data_parallel_training(method, schedule, m):
    stages, replicas = 2, 2
    ranks = _ranks(method, 4, [2, 2], schedule, replicas=replicas, micro_batches=m)
    ref = reference(method, 4, micro_batches=m, replicas=replicas)
    names = {n for n, _ in build(method, 4).named_parameters()}
    for p in range(stages):
        a, b = ranks[p], ranks[stages + p]
        assert set(a) == set(b) and names & set(a)
        assert all(torch.equal(a[k], b[k]) for k in names & set(a)), f"stage {p}: the replicas' weights differ"
    for r in range(replicas):  # weights and each replica's own BatchNorm statistics
        _assert_same(ref[r], _merge(ranks[r * stages:(r + 1) * stages]))
    # the replicas did see different data: their BatchNorm statistics differ
    assert any(not torch.equal(ranks[0][k], ranks[stages][k]) for k in ranks[0] if k.endswith("running_mean"))


@pytest.mark.parametrize("method,schedule", [("dgl", "overlap"), ("dgl+mlaan", "sync")])
def test_two_stages_times_two_replicas_with_two_micro_batches_is_data_parallel_gradient_accumulation(
        tmp_path, method, schedule):
    # a batch of 8: each replica's shard of 4 splits into 2 micro-batches of 2 (the test above uses 6: shards of 3)
    stages, replicas, m, batch = 2, 2, 2, 8
    ranks = _ranks(method, 4, [2, 2], schedule, replicas=replicas, micro_batches=m, batch=batch, save_to=tmp_path)
    ref = reference(method, 4, micro_batches=m, replicas=replicas, batch=batch)
    names = {n for n, _ in build(method, 4).named_parameters()}
    for p in range(stages):  # the replicas of a stage end with the same weights ...
        a, b = ranks[p], ranks[stages + p]
        assert set(a) == set(b) and names & set(a)
        assert all(torch.equal(a[k], b[k]) for k in names & set(a)), f"stage {p}: the replicas' weights differ"
    for r in range(replicas):  # ... those of the reference, and each its own BatchNorm statistics, bit for bit
        _assert_same(ref[r], _merge(ranks[r * stages:(r + 1) * stages]))
    bn = [k for k in ref[0] if k.endswith("running_mean")]
    assert any(not torch.equal(ref[0][k], ref[1][k]) for k in bn)  # the replicas saw different data
    whole = reference(method, 4, micro_batches=1, replicas=replicas, batch=batch)[0]
    assert any(not torch.equal(whole[k], ref[0][k]) for k in bn)  # and the micro-batches were real
    # BatchNorm statistics per replica: the saved checkpoint holds replica 0's, and replica 1's are not kept
    assert sorted(f.name for f in (tmp_path / "stages").iterdir()) == ["stage0.pt", "stage1.pt"]
    saved = load_checkpoint(tmp_path / "last.pt")["method"]
    _assert_same(ref[0], saved)
    assert any(not torch.equal(saved[k], ref[1][k]) for k in bn)


def test_micro_batches_that_do_not_split_the_batch_or_are_not_positive_are_refused():
    with pytest.raises(ConfigError, match=r"--micro-batches 4: each replica's batch of 6 images \(--batch-size 12 "
                                          r"over 2 replica\(s\)\) does not split into 4 equal micro-batches; choose "
                                          r"a divisor of 6 such as 2, 3, 6, or 1"):
        check_micro_batches(4, 12, 2)
    check_micro_batches(3, 12, 2)
    check_micro_batches(1, 7, 1)
    with pytest.raises(ValueError, match="a batch of 6 does not split into 4"):
        split_micro_batches(torch.zeros(6, 2), 4)
    assert [t.tolist() for t in split_micro_batches(torch.arange(6), 3)] == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match="--micro-batches 0: must be at least 1"):
        Stage(build("dgl", 2), build_topology(1, 0, 1), ((0, 1),), "sync", torch.device("cpu"), make_optimizer,
              1e-4, micro_batches=0)


SRC = str(Path(__file__).resolve().parents[1] / "src")
TRAIN = ["train", "--model", "resnet20", "--data", "digits", "--method", "dgl", "--modules", "2", "--epochs", "1",
         "--batch-size", "16", "--steps-per-epoch", "1", "--subset", "32", "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("extra,message", [
    (["--pipeline", "1", "--micro-batches", "0"], "--micro-batches must be an integer >= 1, got 0"),
    (["--pipeline", "1", "--micro-batches", "-2"], "--micro-batches must be an integer >= 1, got -2"),
    (["--micro-batches", "2"], "--micro-batches 2 needs --pipeline P"),
    (["--pipeline", "1", "--micro-batches", "3"], "--micro-batches 3: each replica's batch of 16 images"),
])
def test_bad_micro_batches_on_the_command_line_get_one_line(tmp_path, extra, message):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "leanvision", *TRAIN, *extra, "--project", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], res.stderr
