"""Local learning cut into pipeline stages: which modules, weights and auxiliary networks a stage holds, and
one training step of a stage (the engine's ``engine/pipeline`` moves the tensors between processes).

A stage is a run of consecutive modules. It holds their pieces (the stem with module 0, the head with the last
module) and every auxiliary network that belongs to one of its modules: DGL/InfoPro's ``aux[j]``, MLAAN's
``lams[j]``, ``indep[j]`` and ``casc[j]`` (a LAM's trainable ``aug`` copies and its EMA copies are its own
tensors, saved with it). Everything else is replaced by ``nn.Identity`` on that stage, so its memory is gone.

DGL, InfoPro and greedy SL need nothing from the next stage: a stage receives the detached output of the
module before it (and the labels, and for InfoPro the image) and sends its own. Its updates are therefore
exactly those of one process, whatever the schedule.

MLAAN crosses stage boundaries twice; the rule (``cross``, decided by the engine's schedule):

- **the cascade**: cascaded loss i reaches modules i-span+1..i, which may live on the stage before.
  ``cross=True`` (schedule ``sync``): the gradient w.r.t. the stage's input is sent back and carried on there,
  in the order one process sums it, so every update is exactly one process's. ``cross=False`` (``overlap``):
  the span is restricted at the boundary: a cascaded loss reaches only the modules of its own stage
  (``floor`` = the stage's first module), so no stage ever waits for a later one.
- **LAM EMA copies** track backbone blocks that are usually deeper, often on a later stage. The stage keeps a
  *shadow* of each such block (frozen, never trained or saved here); the engine refreshes the shadow from the
  owning stage before every optimizer step in ``sync`` (exact), and at the start of every epoch in
  ``overlap`` (the EMA then follows weights up to one epoch old).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn

from .method import LocalLearning
from .split import STEM
from .step import _finish, _run_module, carry_cascade, forward_module, head_losses, release_forward_counts

LOCAL_METHODS = ("greedy", "dgl", "infopro", "dgl+mlaan", "infopro+mlaan")
_AUX = re.compile(r"^(aux|lams|indep|casc)\.(\d+)\.")
_BLOCK = re.compile(r"^model\.blocks\.(\d+)\.")


def check_pipelinable(method: nn.Module) -> LocalLearning:
    """``method`` if it can be pipelined, else ValueError saying why."""
    if not isinstance(method, LocalLearning):
        name = getattr(method, "name", type(method).__name__)
        why = (
            "E2E back-propagates one loss through the whole network, so stage p would wait for the gradient of "
            "every stage after it and no two stages could work at once"
            if name == "e2e"
            else "it is not local learning: only gradient-isolated modules can train on different processes at once"
        )
        raise ValueError(f"--pipeline needs a local-learning method ({', '.join(LOCAL_METHODS)}); {name}: {why}")
    if any(type(b).__name__ == "ReplacedBlock" for b in method.model.blocks):
        raise ValueError("--pipeline with --replace-*: a replaced block borrows its neighbours' weights, which may "
                         "live on another stage; pipeline local learning without Replacement Learning")
    return method


def stage_of(stages: tuple[tuple[int, ...], ...], module: int) -> int:
    for p, mods in enumerate(stages):
        if module in mods:
            return p
    raise IndexError(f"module {module} is on no stage")


def piece_stage(method: LocalLearning, stages, piece: int) -> int:
    """The stage that trains piece ``piece`` (-1 = stem, else a block index)."""
    for j, mod in enumerate(method.split.modules):
        if piece in mod:
            return stage_of(stages, j)
    raise IndexError(f"piece {piece} is in no module")


def key_owner(method: LocalLearning, stages) -> Callable[[str], int]:
    """``owner(key)``: the stage that trains and saves the state-dict entry ``key`` of ``method``."""
    last = len(stages) - 1

    def owner(key: str) -> int:
        if key.startswith("model.stem."):
            return piece_stage(method, stages, STEM)
        if key.startswith("model.head."):
            return last
        m = _BLOCK.match(key)
        if m:
            return piece_stage(method, stages, int(m.group(1)))
        m = _AUX.match(key)
        if m:
            return stage_of(stages, int(m.group(2)))
        raise ValueError(f"--pipeline: the method's state entry {key!r} belongs to no module; pipelining needs a "
                         "model of stem, blocks and head only")

    return owner


def ema_sources(method: LocalLearning, modules) -> list[int]:
    """Backbone blocks that the EMA copies of the LAMs of ``modules`` track (sorted)."""
    if not method.mlaan:
        return []
    out = set()
    for i in modules:
        lam = method.lams[str(i)] if str(i) in method.lams else None
        if isinstance(lam, nn.Module) and hasattr(lam, "sources"):
            out.update(lam.sources[: len(lam.ema)])
    return sorted(out)


def shadow_blocks(method: LocalLearning, stages, p: int) -> list[int]:
    """Blocks stage ``p`` keeps as a frozen shadow: EMA sources of its LAMs that another stage trains."""
    return [c for c in ema_sources(method, stages[p]) if piece_stage(method, stages, c) != p]


def prune_to_stage(method: LocalLearning, stages, p: int) -> None:
    """Drop from ``method`` what stage ``p`` does not hold (see the module docstring); shadows are frozen."""
    model, mine = method.model, set(stages[p])
    pieces = {q for j in mine for q in method.split.modules[j]}
    shadows = set(shadow_blocks(method, stages, p))
    if STEM not in pieces:
        model.stem = nn.Identity()
    if len(method.split) - 1 not in mine:
        model.head = nn.Identity()
    for i in range(len(model.blocks)):
        if i in shadows:
            model.blocks[i].requires_grad_(False)
        elif i not in pieces:
            model.blocks[i] = nn.Identity()
    for name in ("aux", "lams", "indep", "casc"):
        heads = getattr(method, name, None)
        if heads is None:
            continue
        keys = range(len(heads)) if isinstance(heads, nn.ModuleList) else list(heads.keys())
        for key in keys:
            if int(key) not in mine:
                heads[key] = nn.Identity()


def update_stage_ema(method: LocalLearning, modules) -> None:
    """:meth:`LocalLearning.before_optimizer_step` restricted to the LAMs of ``modules``."""
    if not method.mlaan or not method.loss_modules:
        return
    chosen = method.loss_modules if method.ema_update == "all" else [len(method.split) - 2]
    for i in chosen:
        if i in modules and str(i) in method.lams:
            method.lams[str(i)].update_ema(method.model.blocks, method.ema_momentum)


# --- micro-batches ---------------------------------------------------------------------------------------------
def split_micro_batches(t: torch.Tensor, m: int) -> list[torch.Tensor]:
    """``t`` cut along the batch into ``m`` equal micro-batches (views, in order); ValueError if it does not
    divide."""
    n = t.shape[0]
    if n % m:
        raise ValueError(f"--micro-batches {m}: a batch of {n} does not split into {m} equal micro-batches; "
                         f"choose a divisor of the per-replica batch")
    return [t] if m == 1 else list(t.split(n // m))


def scaled_backward(m: int) -> Callable[[torch.Tensor], None]:
    """The ``backward`` of one of ``m`` equal micro-batches: each loss is a micro-batch mean, so 1/m of it
    makes the gradients summed over the micro-batches those of the batch mean."""
    if m == 1:
        return torch.Tensor.backward
    return lambda loss: (loss / m).backward()


def merge_micro_batches(outs: list[dict]) -> dict:
    """One batch's result from its micro-batches' :func:`stage_step` results (plus ``targets``): losses
    averaged (equal sizes: the batch mean), logits and targets concatenated; no ``out`` (the stage's output
    was sent on; keeping every micro-batch's would hold the whole batch)."""
    if len(outs) == 1:
        return outs[0]
    res = {"aux": [torch.stack(v).mean(0) for v in zip(*(o["aux"] for o in outs))],
           "targets": torch.cat([o["targets"] for o in outs])}
    if "loss" in outs[0]:
        res["loss"] = torch.stack([o["loss"] for o in outs]).mean(0)
        res["logits"] = torch.cat([o["logits"] for o in outs])
    return res


# --- one step of one stage -------------------------------------------------------------------------------------
def _lowest(method: LocalLearning, j: int, floor: int) -> int:
    return max(floor, j - method.span + 1)


def incoming_steps(method: LocalLearning, stages, p: int, cross: bool) -> list[int]:
    """Loss steps of later stages whose cascaded gradient reaches stage ``p`` (in the order they arrive)."""
    if not (method.mlaan and cross) or p == len(stages) - 1:
        return []
    last = stages[p][-1]
    steps = set(method.loss_modules) | {len(method.split) - 1}
    return [j for j in sorted(steps) if j > last and _lowest(method, j, 0) <= last]


def stage_step(method: LocalLearning, stages, p: int, x: torch.Tensor, targets: torch.Tensor,
               image: torch.Tensor | None, backward, cross: bool = True,
               send_grad: Callable[[int, torch.Tensor], None] | None = None,
               recv_grad: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
               send_out: Callable[[torch.Tensor], None] | None = None) -> dict:
    """Every backward pass of stage ``p`` for one batch: the part of ``method.train_step`` it owns.

    Args:
        x: the stage's input: the images on stage 0, else the detached output of the stage before.
        image: InfoPro's reconstruction target (``method.target_image(images)``), else None.
        cross: MLAAN: cascaded gradients cross stage boundaries (see the module docstring).
        send_grad(j, g): send the gradient w.r.t. ``x`` of loss step ``j`` to stage p-1 (MLAAN, ``cross``).
        recv_grad(j, like): receive from stage p+1 the gradient w.r.t. this stage's output for step ``j``.
        send_out(h): pass the stage's detached output on, as soon as it exists (before the gradients that
            come back for it are awaited).

    Returns:
        ``out``: this stage's detached output; ``aux``: its auxiliary loss values; on the last stage also
        ``loss`` and ``logits``.
    """
    if method.mlaan:
        return _mlaan(method, stages, p, x, targets, image, backward, cross, send_grad, recv_grad, send_out)
    k, res, aux = len(method.split), {}, []
    for j in stages[p]:
        h = _run_module(method.pieces(j), x)
        if j < k - 1:
            loss = method.aux[j](h, targets, image)
            if loss.requires_grad:
                backward(loss)
            aux.append(loss.detach())
        else:
            loss, logits = method.final_loss(h, targets)
            backward(loss)
            res.update(loss=loss.detach(), logits=logits.detach())
        x = h.detach()
    if send_out is not None:
        send_out(x)
    return {**res, "out": x, "aux": aux}


def _mlaan(method, stages, p, x, targets, image, backward, cross, send_grad, recv_grad, send_out) -> dict:
    """:func:`.step.mlaan_step` over the modules of stage ``p`` (same operations, same summation order)."""
    k, s = len(method.split), method.span
    mods = stages[p]
    a, b = mods[0], mods[-1]
    floor = 0 if cross else a
    loss_steps = set(method.loss_modules) | {k - 1}
    counts = release_forward_counts(method) if method.bn_updates == "release" else [None] * k
    live: dict[int, list] = {}
    res, aux = {}, []

    def carry(j: int, grad: torch.Tensor, top: int) -> None:
        """Carry the cascaded gradient of step ``j`` (w.r.t. the output of module ``top``) down this stage."""
        lowest = _lowest(method, j, floor)
        grad = carry_cascade(method, live, j, grad, top, lowest, bottom=a)
        if lowest < a:
            send_grad(j, grad)
        if j < k - 1:  # no later loss reaches below module j-s+2 (with or without a floor): those are complete
            _finish(method, live, j - s + 1)

    for j in mods:
        h = forward_module(method, live, j, x, counts[j], floor)
        if j in loss_steps:
            grad, value, logits = head_losses(method, j, h, targets, image, backward, live)
            if j == k - 1:
                res.update(loss=value, logits=logits)
            else:
                aux.append(value)
            carry(j, grad, j)
        x = h.detach()
        del h
    if send_out is not None:
        send_out(x)
    for j in incoming_steps(method, stages, p, cross):
        carry(j, recv_grad(j, x), b)
    _finish(method, live, None)
    return {**res, "out": x, "aux": aux}
