"""Workers of the pipeline tests: a tiny float64 local-learning run, in one process or as P gloo stages."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from leanvision.methods import create_method
from leanvision.models import create_model

SIZE, BATCH, STEPS = 8, 6, 3


def build(method: str, modules: int, **opts):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4).double()
    extra = {"span": 2} if "mlaan" in method else {}
    if method.startswith("infopro"):
        extra.update(lambdas=(1.0, 0.5, 0.5, 1.0), loss_mode="softmax")
    return create_method(method, model, modules=modules, split="blocks", image_size=SIZE, **{**extra, **opts}).double()


def make_optimizer(method):
    return torch.optim.SGD(method.param_groups(1e-4), lr=0.05, momentum=0.9, nesterov=True)


def batches(batch: int = BATCH):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(batch, 3, SIZE, SIZE, generator=g, dtype=torch.float64),
             torch.randint(0, 4, (batch,), generator=g)) for _ in range(STEPS)]


def single(method_name: str, modules: int, **opts) -> dict:
    """The reference: ``method.train_step`` and one optimizer over everything, as the trainer does."""
    torch.set_num_threads(1)
    method = build(method_name, modules, **opts)
    opt = make_optimizer(method)
    for images, targets in batches():
        opt.zero_grad(set_to_none=True)
        method.train_step(images, targets, torch.Tensor.backward)
        method.before_optimizer_step()
        opt.step()
    return {k: v.clone() for k, v in method.state_dict().items()}


def stage_worker(rank: int, world: int, port: int, method_name: str, modules: int, counts, schedule, out,
                 opts, micro_batches: int = 1, batch: int = BATCH, save_to: str | None = None) -> None:
    """Stage ``rank % P`` of replica ``rank // P`` (P = len(counts)); replica r's stage 0 feeds the r-th of
    ``world // P`` equal slices of every batch (of ``batch`` images). With ``save_to`` (a run folder) the job's
    own end-of-epoch save runs after training: stage files of replica 0, ``last.pt`` consolidated by rank 0."""
    from leanvision.engine.pipeline.assign import stage_modules
    from leanvision.engine.pipeline.stage import Stage
    from leanvision.engine.pipeline.topology import build_topology

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        method = build(method_name, modules, **opts)
        topo = build_topology(len(counts), rank, world)
        stage = Stage(method, topo, stage_modules(counts), schedule, torch.device("cpu"), make_optimizer, 1e-4,
                      micro_batches=micro_batches)
        for images, targets in batches(batch):
            if topo.is_first:
                r, n = topo.replica, topo.replicas
                stage.step(images.chunk(n)[r], targets.chunk(n)[r])
            else:
                stage.step()
        for link in (stage.prev, stage.next):
            if link is not None:
                link.flush()
        dist.barrier()
        out[rank] = {k: v.clone() for k, v in stage.state()["method"].items()}
        if save_to is not None:
            from types import SimpleNamespace

            from leanvision.engine.pipeline.fit import _Job

            job = _Job(SimpleNamespace(steps_per_epoch=None), stage, topo, None, [], None, Path(save_to), {},
                       torch.device("cpu"))
            job.save(1, improved=False)
    finally:
        dist.destroy_process_group()


class ZeroGradIn(torch.nn.Module):
    """Runs ``block`` but lets no gradient through to its input: the reference for a cut cascade."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        if x.requires_grad:
            x.register_hook(torch.zeros_like)
        return self.block(x)


def single_cut(method_name: str, modules: int, first_of_stage1: int) -> dict:
    """MLAAN in one process with the cascade cut at module ``first_of_stage1`` and the EMA copies of stage 0
    following a snapshot of the blocks stage 1 trains (the ``overlap`` rule, for one epoch), written without
    the pipeline code."""
    import copy

    torch.set_num_threads(1)
    method = build(method_name, modules)
    first_piece = method.split.modules[first_of_stage1][0]
    snapshot = copy.deepcopy(method.model.blocks)  # weights at the start of the epoch
    stage1_blocks = {q for j in range(first_of_stage1, len(method.split)) for q in method.split.modules[j]}
    method.model.blocks[first_piece] = ZeroGradIn(method.model.blocks[first_piece])
    opt = make_optimizer(method)
    for images, targets in batches():
        opt.zero_grad(set_to_none=True)
        method.train_step(images, targets, torch.Tensor.backward)
        for i in method.loss_modules:  # ema_update="all"
            lam = method.lams[str(i)]
            if i < first_of_stage1:
                source = [snapshot[c] if c in stage1_blocks else method.model.blocks[c] for c in range(len(snapshot))]
                lam.update_ema(source, method.ema_momentum)
            else:
                lam.update_ema(method.model.blocks, method.ema_momentum)
        opt.step()
    method.model.blocks[first_piece] = method.model.blocks[first_piece].block
    return {k: v.clone() for k, v in method.state_dict().items()}
