"""Pipelined local learning computes the single-process updates: real gloo processes, float64, bit for bit.

Each case trains a tiny ResNet-20 (8x8 inputs, batch 6) for 3 steps in one process (``method.train_step`` and
one optimizer, as the trainer does) and as P stages (tests/_pipeline_workers.py), then compares every tensor of
the method's state with ``torch.equal``.
"""

import socket

import pytest
import torch
import torch.multiprocessing as mp

from _pipeline_workers import build, single, single_cut, stage_worker
from leanvision.config import ConfigError
from leanvision.engine.pipeline.assign import assign, balance, parse_split
from leanvision.engine.pipeline.topology import replicas_for
from leanvision.methods.local.stages import check_pipelinable, incoming_steps, shadow_blocks, stage_step


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pipelined(method: str, modules: int, counts: list[int], schedule: str) -> dict:
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(stage_worker, args=(len(counts), _port(), method, modules, counts, schedule, out, {}),
                 nprocs=len(counts), join=True)
        merged = {}
        for rank in range(len(counts)):
            assert not set(merged) & set(out[rank])  # every tensor is saved by one stage only
            merged.update(out[rank])
    return merged


def _assert_same(ref: dict, got: dict) -> None:
    assert set(got) == set(ref)
    different = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.parametrize("method,modules,counts", [
    ("dgl", 4, [2, 2]), ("dgl", 4, [1, 2, 1]),
    ("infopro", 4, [2, 2]), ("infopro", 4, [1, 1, 2]),
    ("dgl+mlaan", 4, [2, 2]), ("dgl+mlaan", 5, [1, 2, 2]),
])
def test_sync_schedule_is_the_single_process_run_bit_for_bit(method, modules, counts):
    _assert_same(single(method, modules), _pipelined(method, modules, counts, "sync"))


def test_overlap_schedule_is_exact_for_dgl():
    # no stage needs anything from a later one, so the queue changes nothing
    _assert_same(single("dgl", 4), _pipelined("dgl", 4, [2, 2], "overlap"))


def test_overlap_mlaan_cuts_the_cascade_at_the_boundary_and_follows_an_epoch_old_ema_source():
    # span 2, modules 0-1 | 2-3: loss step 2's cascade would reach module 1 on stage 0; the LAM of module 1 tracks
    # blocks of stage 1. The reference is written without the pipeline code (see single_cut).
    ref = single_cut("dgl+mlaan", 4, first_of_stage1=2)
    got = _pipelined("dgl+mlaan", 4, [2, 2], "overlap")
    _assert_same(ref, got)
    exact = single("dgl+mlaan", 4)  # and the rule matters: stage 0's last module differs from the exact run
    assert any(not torch.equal(exact[k], got[k]) for k in got if k.startswith("model.blocks.1."))


def test_one_stage_is_the_method_unchanged():
    for name in ("dgl", "dgl+mlaan"):
        a, b = build(name, 4), build(name, 4)
        images, targets = torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.randint(0, 4, (6,))
        ref = a.train_step(images, targets, torch.Tensor.backward)
        out = stage_step(b, ((0, 1, 2, 3),), 0, images, targets, None, torch.Tensor.backward)
        assert torch.equal(ref["loss"], out["loss"])
        for (n, p), q in zip(a.named_parameters(), b.parameters()):
            assert (p.grad is None) == (q.grad is None) and (p.grad is None or torch.equal(p.grad, q.grad)), n
        assert shadow_blocks(b, ((0, 1, 2, 3),), 0) == [] and incoming_steps(b, ((0, 1, 2, 3),), 0, True) == []


def test_mlaan_messages_and_shadows_follow_the_split():
    m = build("dgl+mlaan", 5)  # span 2: loss steps 1, 2, 3 and the final step 4
    stages = ((0,), (1, 2), (3, 4))
    assert incoming_steps(m, stages, 0, True) == [1]  # step 1 reaches module 0
    assert incoming_steps(m, stages, 1, True) == [3]  # step 3 reaches module 2
    assert incoming_steps(m, stages, 1, False) == []  # overlap: the span stops at the boundary
    own = {q for j in (1, 2) for q in m.split.modules[j]}
    expected = sorted({c for i in (1, 2) for c in m.lams[str(i)].sources[:1]} - own)
    assert shadow_blocks(m, stages, 1) == expected


def test_bad_pipeline_requests_are_refused_with_the_reason():
    from leanvision.methods import create_method
    from leanvision.models import create_model

    e2e = create_method("e2e", create_model("resnet20", num_classes=4))
    with pytest.raises(ValueError, match="E2E back-propagates one loss through the whole network"):
        check_pipelinable(e2e)
    with pytest.raises(ValueError, match="replacement: it is not local learning"):
        check_pipelinable(create_method("replacement", create_model("resnet20", num_classes=4), interval=2))
    with pytest.raises(ConfigError, match="not a multiple of 2 stages"):
        replicas_for(2, 3)
    assert replicas_for(2, 4) == 2
    with pytest.raises(ConfigError, match="every stage needs at least one"):
        assign(build("dgl", 3), 4, None, 8)
    with pytest.raises(ConfigError, match="add up to the method's 4 modules"):
        parse_split("1,1", 2, 4)
    assert parse_split("1,3", 2, 4) == [1, 3]
    assert balance([1, 1, 1, 5], 2) == [3, 1] and balance([4, 1, 1, 1, 1], 3) == [1, 2, 2]
