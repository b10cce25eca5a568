"""One stage of a pipelined local-learning job: its part of the method, its optimizer, one training step.

Schedules:
- ``sync``: sends wait until received (no queue), MLAAN's cascaded gradients go back across stage boundaries
  and the EMA copies' source blocks are refreshed before every optimizer step: every update is exactly the
  single-process update (tests/test_pipeline_equivalence.py compares in float64).
- ``overlap`` (default): up to ``depth`` (micro-)batches queue between stages, so all stages work at once. DGL, InfoPro
  and greedy SL are still exactly the single-process run (no stage needs anything from a later one). MLAAN's
  span is restricted at a stage boundary and its EMA sources on other stages are refreshed once per epoch
  (methods/local/stages.py says why and what that changes).

Micro-batches (``--micro-batches M``, default 1): stage 0 splits each replica's batch into M equal micro-batches
that follow each other through the stages, so a stage holds the activations of one micro-batch at a time, not
of the whole batch. Every loss is scaled by 1/M and every module accumulates its gradients over the M
micro-batches, then steps once per batch (after the replicas' all-reduce and, in ``sync``, the EMA refresh), as
GPipe does. The update is the single-process full-batch update except for BatchNorm, whose batch statistics
(and running averages, updated M times per batch) are per micro-batch, and for the rounding of the summation.
M = 1 is the whole batch and exactly the single-process run; the default, because it keeps that promise
(``sync`` bit for bit). The queue of ``overlap`` counts micro-batches.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from ...methods.local.stages import (
    check_pipelinable,
    key_owner,
    merge_micro_batches,
    piece_stage,
    prune_to_stage,
    scaled_backward,
    shadow_blocks,
    split_micro_batches,
    stage_step,
    update_stage_ema,
)
from ..distributed import average_gradients
from ..trainer import NonFiniteLossError, autocast
from .comm import BATCH, EVAL, EVAL_END, Link
from .topology import Topology

SCHEDULES = ("sync", "overlap")


def optimizer_layout(method, weight_decay: float) -> list[list[str]]:
    """Parameter names of each group of the single-process optimizer (``method.param_groups``), in order."""
    names = {id(p): n for n, p in method.named_parameters()}
    return [[names[id(p)] for p in g["params"]] for g in method.param_groups(weight_decay)]


class Stage:
    """Stage ``topo.stage`` of ``method`` (pruned here to what it holds) with ``stages`` modules per stage."""

    def __init__(self, method, topo: Topology, stages, schedule: str, device: torch.device,
                 make_optimizer, weight_decay: float, amp: str = "none", depth: int = 2, micro_batches: int = 1):
        if schedule not in SCHEDULES:
            raise ValueError(f"--pipeline-schedule {schedule!r}: choose sync or overlap")
        if micro_batches < 1:
            raise ValueError(f"--micro-batches {micro_batches}: must be at least 1")
        check_pipelinable(method)
        self.method, self.topo, self.stages, self.schedule = method, topo, stages, schedule
        self.micro_batches = micro_batches
        self.device, self.amp = device, amp
        self.p = topo.stage
        self.mine = stages[self.p]
        self.cross = schedule == "sync"
        self.infopro = method.base == "infopro"
        owner = key_owner(method, stages)
        self.owned = {k for k in method.state_dict() if owner(k) == self.p}
        self.owner = owner
        self.layout = optimizer_layout(method, weight_decay)
        # EMA sources each stage shadows, worked out before pruning (every stage needs the whole plan)
        self.refresh_plan = [(c, piece_stage(method, stages, c), q)
                             for q in range(len(stages)) for c in shadow_blocks(method, stages, q)]
        prune_to_stage(method, stages, self.p)
        method.to(device)
        self.optimizer = make_optimizer(method)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        d = 0 if schedule == "sync" else depth
        self.prev = Link(topo.rank_of(self.p - 1), device, d) if not topo.is_first else None
        self.next = Link(topo.rank_of(self.p + 1), device, d) if not topo.is_last else None

    # -- one batch -----------------------------------------------------------------------------------------
    def receive(self):
        kind, ts = self.prev.recv()
        if kind != BATCH:
            raise RuntimeError(f"stage {self.p}: expected a training batch from stage {self.p - 1}, got kind {kind}")
        return ts[0], ts[1], (ts[2] if self.infopro else None)

    def step(self, images=None, targets=None) -> dict:
        """Train this stage's modules on one batch (stage 0: ``images``/``targets``; others receive theirs), as
        ``micro_batches`` micro-batches whose gradients add up before the one optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        m = self.micro_batches
        backward = scaled_backward(m)
        if self.prev is None:
            parts = zip(split_micro_batches(images, m), split_micro_batches(targets, m))
            outs = [self.micro_step(x, t, x, backward) for x, t in parts]
        else:
            outs = [self.micro_step(*self.receive(), backward) for _ in range(m)]
        out = merge_micro_batches(outs)
        values = out["aux"] + ([out["loss"]] if "loss" in out else [])
        if values and not bool(torch.isfinite(torch.stack([v.float() for v in values])).all()):
            raise NonFiniteLossError(f"stage {self.p}: a loss is not finite; lower the learning rate")
        if self.topo.replicas > 1:
            average_gradients(self.params, group=self.topo.stage_group)
        if self.cross:
            self.refresh_shadows()
        update_stage_ema(self.method, self.mine)
        self.optimizer.step()
        return out

    def micro_step(self, x, targets, raw, backward) -> dict:
        """Every backward pass of this stage for one micro-batch (its output sent on as soon as it exists)."""
        image = self.method.target_image(raw) if self.infopro else None

        def send_out(out):
            if self.next is not None:
                self.next.send(BATCH, [out, targets] + ([raw] if self.infopro else []))

        with autocast(self.device, self.amp):
            out = stage_step(self.method, self.stages, self.p, x, targets, image, backward,
                             cross=self.cross, send_out=send_out,
                             send_grad=lambda j, g: self.prev.send(BATCH, [g], tag=1),
                             recv_grad=lambda j, like: self.next.recv(tag=1)[1][0])
        out["targets"] = targets
        return out

    def refresh_shadows(self) -> None:
        """Copy the current weights of the EMA source blocks from the stages that train them to the stages that
        shadow them (point to point: sends first, non-blocking, then receives)."""
        if not self.refresh_plan:
            return
        works, blocks = [], self.method.model.blocks
        for c, src, dst in self.refresh_plan:
            if src == self.p:
                flat = _flatten_dense_tensors([q.detach() for q in blocks[c].parameters()])
                works.append((dist.isend(flat, self.topo.rank_of(dst), tag=2), flat))
        for c, src, dst in self.refresh_plan:
            if dst == self.p:
                params = list(blocks[c].parameters())
                flat = _flatten_dense_tensors([q.detach() for q in params])
                dist.recv(flat, self.topo.rank_of(src), tag=2)
                with torch.no_grad():
                    for q, v in zip(params, _unflatten_dense_tensors(flat, params)):
                        q.copy_(v)
        for w, _ in works:
            w.wait()

    # -- evaluation: test batches flow through the stages --------------------------------------------------
    @torch.no_grad()
    def evaluate(self, loader=None) -> dict | None:
        """Top-1 accuracy and mean cross-entropy over ``loader`` (read by stage 0); the result on the last
        stage, None elsewhere."""
        from ..trainer import to_device

        m = self.method
        was = m.training
        m.eval()
        correct = total = 0
        loss_sum = 0.0

        def run(x):
            with autocast(self.device, self.amp):
                for j in self.mine:
                    for piece in m.pieces(j):
                        x = piece(x)
            return x

        def finish(h, t):
            nonlocal correct, total, loss_sum
            if self.next is not None:
                self.next.send(EVAL, [h, t])
                return
            with autocast(self.device, self.amp):
                logits = m.model.head(h)
            loss_sum += float(torch.nn.functional.cross_entropy(logits.float(), t, reduction="sum"))
            correct += int((logits.argmax(1) == t).sum())
            total += t.numel()

        if self.prev is None:
            for images, t in loader:
                finish(run(to_device(images, self.device)), to_device(t, self.device))
        else:
            while True:
                kind, ts = self.prev.recv()
                if kind == EVAL_END:
                    break
                finish(run(ts[0]), ts[1])
        if self.next is not None:
            self.next.send(EVAL_END, [])
            self.next.flush()
        m.train(was)
        return {"acc": correct / max(total, 1), "loss": loss_sum / max(total, 1)} if self.next is None else None

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state(self) -> dict:
        """This stage's weights and optimizer state, keyed by name (consolidate.py merges the stages)."""
        sd = {k: v for k, v in self.method.state_dict().items() if k in self.owned}
        names = {id(p): n for n, p in self.method.named_parameters()}
        opt = self.optimizer.state_dict()
        by_name, groups = {}, []
        for g, sg in zip(self.optimizer.param_groups, opt["param_groups"]):
            groups.append({k: v for k, v in sg.items() if k != "params"})
            for p, idx in zip(g["params"], sg["params"]):
                if idx in opt["state"]:
                    by_name[names[id(p)]] = opt["state"][idx]
        return {"method": sd, "optimizer": {"state": by_name, "param_groups": groups}}

    def load(self, method_state: dict, optimizer_state: dict) -> None:
        """Restore this stage from a consolidated (single-process) checkpoint's method and optimizer state."""
        missing = sorted(self.owned - set(method_state))
        if missing:
            raise ValueError(f"the checkpoint has no {missing[0]} (and {len(missing) - 1} more) for stage {self.p}")
        self.method.load_state_dict({k: method_state[k] for k in self.owned}, strict=False)
        flat = [n for group in self.layout for n in group]
        index = {n: i for i, n in enumerate(flat)}
        names = {id(p): n for n, p in self.method.named_parameters()}
        mine = self.optimizer.state_dict()
        state = {}
        for g, sg in zip(self.optimizer.param_groups, mine["param_groups"]):
            for p, idx in zip(g["params"], sg["params"]):
                st = optimizer_state["state"].get(index[names[id(p)]])
                if st is not None:
                    state[idx] = st
        hyper = optimizer_state["param_groups"][0]
        groups = [{**sg, **{k: v for k, v in hyper.items() if k not in ("params", "weight_decay")}}
                  for sg in mine["param_groups"]]
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
