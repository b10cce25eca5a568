"""One training step of local learning: every backward pass of a batch, no optimizer step.

The MLAAN step computes the gradients of the procedure of spec §3.3 (routing §3.4) for the
method's options, with each module run forward once. That procedure is the released code's
(``resnetMLAAN.py``: span 2, EMA of the last LAM only) generalised to span 3 and other EMA rules;
with our defaults (span 3, EMA of every LAM) it is *not* what the release computes, and
``preset="release"`` selects the release's options (docs/local_learning_release.md). The release
re-runs modules on a second stream ("y"/"z") so that cascaded loss i back-propagates into modules
i-span+1..i; here each module's graph is kept until the last cascaded loss that reaches it has
passed through, and the gradients are routed explicitly:

- a loss's gradient w.r.t. a module output h_j is found by backward through the heads/LAM only
  (their inputs are detached leaves), so the independent and cascaded parts stay apart;
- cascaded gradients are carried to earlier modules with input-only vector-Jacobian products
  (a backward restricted to the module input);
- every contribution to module j's output gradient is summed and pushed into its parameters with
  one parameter-only backward, which frees its graph.

So a module costs one forward, one parameter backward and span-1 input backwards, against the
release's 1+span forwards and backwards. With ``recompute=True`` a graph is freed once only its
parameter gradient is owed (or not built when no input gradient needs it) and rebuilt for that
gradient (one more forward, RNG replayed, BN statistics frozen), so fewer module graphs are alive
while a LAM runs.

What is tested (tests/test_local_equivalence.py, float64): the gradients and BN statistics equal
those of a transcription of §3.3 written in that test (span 2 and 3, DGL and InfoPro, with and
without recompute; rtol 1e-9); and with ``preset="release"`` two full training steps (passes, EMA,
SGD) equal the test's transcription of the released ``resnetMLAAN.py`` / ``resnetInfoProbin.py``
procedure (our rewrite of it, not the authors' code) to float64 rounding.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ...ops.memory import trim_host_memory
from ..base import Backward


def _trim(method, x: torch.Tensor) -> None:
    """A module's graph was just freed: return its pages to the system (CPU by default, see
    ``LocalLearning.trim_host_memory``), so the next module does not stack on top of them."""
    on = getattr(method, "trim_host_memory", None)
    if on or (on is None and x.device.type == "cpu"):
        trim_host_memory()


@contextlib.contextmanager
def _bn_repeats(pieces: list[nn.Module], counts: list[int]):
    """Make BN running statistics move as if each piece ran forward ``count`` times on this batch.

    n identical momentum updates r <- (1-m) r + m mu equal one update with momentum 1-(1-m)^n,
    because every recomputation of the release sees the same batch statistics (§6.13, §8.11).
    """
    changed = []
    for piece, n in zip(pieces, counts):
        if n <= 1 or not piece.training:
            continue
        for bn in piece.modules():
            if (
                isinstance(bn, nn.modules.batchnorm._BatchNorm)
                and bn.track_running_stats
                and bn.momentum is not None
            ):
                changed.append((bn, bn.momentum, n))
                bn.momentum = 1.0 - (1.0 - bn.momentum) ** n
    try:
        yield
    finally:
        for bn, momentum, n in changed:
            bn.momentum = momentum
            bn.num_batches_tracked.add_(n - 1)


def _run_module(pieces: list[nn.Module], x: torch.Tensor, counts: list[int] | None = None) -> torch.Tensor:
    with _bn_repeats(pieces, counts) if counts else contextlib.nullcontext():
        for piece in pieces:
            x = piece(x)
    return x


def greedy_step(
    method, images: torch.Tensor, targets: torch.Tensor, backward: Backward
) -> dict[str, torch.Tensor]:
    """DGL / InfoPro / greedy SL: forward module k on the detached output of k-1, back-propagate
    its local loss at once (freeing its graph), pass on the detached output (§1.1)."""
    k = len(method.split)
    image = method.target_image(images)
    x, aux = images, []
    for j in range(k - 1):
        h = _run_module(method.pieces(j), x)
        loss = method.aux[j](h, targets, image)
        if loss.requires_grad:
            backward(loss)
        aux.append(loss.detach())
        x = h.detach()
        del h, loss  # nothing of module j's graph may outlive its step
        _trim(method, x)
    loss, logits = method.final_loss(_run_module(method.pieces(k - 1), x), targets)
    backward(loss)
    out = {"loss": loss.detach(), "logits": logits.detach()}
    if aux:
        out["aux_loss"] = torch.stack(aux).float().mean()
    return out


def _params(pieces: list[nn.Module]) -> list[torch.Tensor]:
    return [p for piece in pieces for p in piece.parameters() if p.requires_grad]


def release_forward_counts(method) -> list[list[int]]:
    """How many times the release runs each piece forward per step: once on the x stream, plus
    once per cascaded (or final) loss that reaches its module; the stem runs once (§3.3, §3.4)."""
    k, s = len(method.split), method.span
    losses = method.loss_modules + [k - 1]
    counts = []
    for j, mod in enumerate(method.split.modules):
        n = 1 if k == 1 else 1 + sum(1 for i in losses if i - s + 1 <= j <= i)
        counts.append([1 if p < 0 else n for p in mod])
    return counts


def mlaan_step(
    method, images: torch.Tensor, targets: torch.Tensor, backward: Backward
) -> dict[str, torch.Tensor]:
    """MLAAN (DGL or InfoPro base), span s, K modules E_0..E_{K-1}:

    - module i in [s-1, K-2]: L_i = w_x * indep_i(h_i) + w_y * casc_i(LAM_i(h_i)); the independent
      part reaches E_i only, the cascaded part E_{i-s+1}..E_i (stem included in E_0);
    - final: CE(head(h_{K-1})) reaching E_{K-s}..E_{K-1} and the head.
    """
    k = len(method.split)
    image = method.target_image(images)
    has_loss = set(method.loss_modules)
    loss_steps = has_loss | {k - 1}
    counts = release_forward_counts(method) if method.bn_updates == "release" else [None] * k
    # live[j] = [output h_j (None once dropped for recompute), input x_j, summed output-gradient
    # for the parameter backward, RNG state of its forward (recompute only)]
    live: dict[int, list] = {}
    x, aux = images, []
    for j in range(k):
        h = forward_module(method, live, j, x, counts[j])
        if j in loss_steps:
            value, logits = _local_losses(method, j, h, targets, image, backward, live)
            if j < k - 1:
                aux.append(value)
            else:
                loss = value
        x = h.detach()
        del h  # a graph freed for recompute must have no stray reference
        if j in loss_steps and j < k - 1:  # module j-s+1 was finished (its graph freed) at this step
            _trim(method, x)
    _finish(method, live, None)
    out = {"loss": loss, "logits": logits}
    if aux:
        out["aux_loss"] = torch.stack(aux).float().mean()
    return out


def forward_module(method, live: dict[int, list], j: int, x: torch.Tensor, counts: list[int] | None,
                   floor: int = 0) -> torch.Tensor:
    """Module j forward on its input ``x``; records ``live[j]`` for the backward passes still owed to it.

    ``floor``: no gradient is carried below this module (0, or a pipeline stage's first module with the
    span restricted at the boundary)."""
    k, s = len(method.split), method.span
    loss_steps = set(method.loss_modules) | {k - 1}
    # x_j needs a gradient when a cascaded loss computed at step i in [j, j+s-2] reaches E_{j-1}.
    needs_input_grad = j > floor and any(i in loss_steps for i in range(j, j + s - 1))
    if needs_input_grad:
        x = x.requires_grad_()
    rng = _rng_state(x.device) if method.recompute else None
    # With recompute, a graph no input gradient needs is built only for its parameter backward.
    build_graph = not method.recompute or needs_input_grad or j == k - 1
    with torch.set_grad_enabled(build_graph):
        h = _run_module(method.pieces(j), x, counts)
    live[j] = [h if build_graph else None, x, None, rng]
    return h


def _local_losses(method, j, h, targets, image, backward, live) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Losses of step j: back-propagate them through the heads/LAM, carry the cascaded gradient
    down to E_{j-s+1}, and apply the parameter backward of the module that is now complete.

    Returns the detached loss value and, for the final module, its logits."""
    k, s = len(method.split), method.span
    grad, value, logits = head_losses(method, j, h, targets, image, backward, live)
    lowest = max(0, j - s + 1)
    carry_cascade(method, live, j, grad, j, lowest)
    # Module j-s+1 has now received every loss that reaches it: apply and free its graph.
    if j < k - 1:
        _finish(method, live, lowest)
    return value, logits


def head_losses(method, j, h, targets, image, backward, live) -> tuple[torch.Tensor | None, torch.Tensor,
                                                                          torch.Tensor | None]:
    """The losses of step j on module output ``h``, back-propagated through the heads/LAM only (their inputs
    are detached leaves): L_j = w_x * indep_j(h_j) + w_y * casc_j(LAM_j(h_j)), or the final CE.

    The independent part's gradient w.r.t. h_j goes into ``live[j]``; returns the cascaded (or final)
    gradient w.r.t. h_j, the detached loss value, and for the final module its detached logits.
    Shared by :func:`mlaan_step` and the pipeline's stage step (``stages.py``), so both sum alike."""
    hy = h.detach().requires_grad_()
    if j == len(method.split) - 1:
        loss, logits = method.final_loss(hy, targets)
        backward(loss)
        return hy.grad, loss.detach(), logits.detach()
    hx = h.detach().requires_grad_()
    indep = method.indep[str(j)](hx, targets, image)
    casc = method.casc[str(j)](method.lams[str(j)](hy), targets, image)
    total = method.w_x * indep + method.w_y * casc
    backward(total)
    _accumulate(live[j], hx.grad)
    return hy.grad, total.detach(), None


def carry_cascade(method, live, j: int, grad: torch.Tensor | None, top: int, lowest: int,
                  bottom: int = 0) -> torch.Tensor | None:
    """Carry the cascaded gradient of loss step j, w.r.t. the output of module ``top``, down to module
    ``lowest`` (the last its loss reaches), stopping at ``bottom`` (a pipeline stage's first module):
    each module's output gradient is accumulated in ``live``, and an input-only backward passes it on.

    Returns the gradient w.r.t. the input of module ``bottom`` when the loss reaches below it, else the
    last gradient carried (unused)."""
    s = method.span
    loss_steps = set(method.loss_modules) | {len(method.split) - 1}
    for m in range(top, max(lowest, bottom) - 1, -1):
        _accumulate(live[m], grad)
        if m > lowest and grad is not None:
            out_m, in_m = live[m][0], live[m][1]
            # With recompute, the last input pass through E_m frees its graph; it is rebuilt for
            # the parameter backward. (Freeing by backward, not by dropping references, also works
            # under saved-tensor hooks, whose packed outputs form reference cycles.)
            last = method.recompute and not any(i in loss_steps for i in range(j + 1, m + s - 1))
            # backward(inputs=...) rather than autograd.grad: same work, and it also runs under
            # module-tracking modes (FlopCounterMode) that refuse autograd.grad on a leaf.
            torch.autograd.backward(out_m, grad, inputs=[in_m], retain_graph=not last)
            grad, in_m.grad = in_m.grad, None
            if last:
                live[m][0] = None
    return grad


def _accumulate(entry: list, grad: torch.Tensor | None) -> None:
    if grad is not None:
        entry[2] = grad if entry[2] is None else entry[2] + grad


def _finish(method, live: dict[int, list], upto: int | None) -> None:
    """Parameter backward (one per module) for live modules with index <= ``upto`` (all if None);
    a dropped graph is rebuilt first from the module's input, RNG state and frozen BN statistics."""
    for m in sorted(live):
        if upto is not None and m > upto:
            break
        h, x, grad, rng = live.pop(m)
        params = _params(method.pieces(m))
        if grad is None or not params:
            continue
        if h is None:
            with _replay(rng, x.device), _frozen_bn(method.pieces(m)):
                h = _run_module(method.pieces(m), x)
        torch.autograd.backward(h, grad, inputs=params)


def _rng_state(device: torch.device):
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@contextlib.contextmanager
def _replay(rng, device: torch.device):
    """Run with the RNG state a module's first forward saw (dropout, drop-path), then restore."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else [], device_type="cuda" if cuda else "cpu"):
        torch.set_rng_state(rng[0])
        if cuda:
            torch.cuda.set_rng_state(rng[1], device)
        yield


@contextlib.contextmanager
def _frozen_bn(pieces: list[nn.Module]):
    """A recomputation must not move BN running statistics: momentum 0 keeps them as they are."""
    changed = [
        (bn, bn.momentum)
        for piece in pieces
        for bn in piece.modules()
        if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.track_running_stats and bn.training
    ]
    for bn, _ in changed:
        bn.momentum = 0.0
    try:
        yield
    finally:
        for bn, momentum in changed:
            bn.momentum = momentum
            bn.num_batches_tracked.sub_(1)
