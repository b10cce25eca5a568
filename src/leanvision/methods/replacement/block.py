"""The replaced block: no weights of its own, rebuilt on every forward from its two neighbours.

θ_i = a_i·θ_{i−1} + b_i·θ_{i+1} (spec §1.1), one (a, b) pair shared by every tensor of the block
(§1.2), evaluated through a parameter-free copy of the block (the *template*, §1.3) that keeps its
own BatchNorm running statistics. Nothing here assumes a :class:`~leanvision.models.BlockModel`:
:func:`replace_module` works on any (prev, target, next) triple of modules, e.g. detector backbone
blocks.

What the template computes is the block's *surrogate*, chosen by name from a small registry:
``"full"`` (the default, v1: the whole block, every tensor fused with its same-named neighbour
tensors) is defined here; ``"lite"`` (a cheaper surrogate, our reconstruction of RepL v2, spec §2.5)
lives in :mod:`.lite`. Both go through the same fusion (:class:`_Fuse`) and the same swap into a
parameter-free template, so each idea has one implementation.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..base import no_weight_decay

Slot = tuple[nn.Module, str]  # (submodule, parameter name inside it)


def _slots(module: nn.Module, names: list[str]) -> list[Slot]:
    out = []
    for name in names:
        owner, _, attr = name.rpartition(".")
        out.append((module.get_submodule(owner), attr))
    return out


def _inner(g: torch.Tensor, x: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """⟨g, x⟩ as a 0-dim tensor of dtype ``acc``; a BLAS dot (no temporary) when both are dense."""
    if g.dtype == x.dtype == acc and g.is_contiguous() and x.is_contiguous():
        return torch.dot(g.view(-1), x.view(-1))
    return torch.sum(g * x, dtype=acc)  # e.g. channels_last or half-precision tensors


class _Fuse(torch.autograd.Function):
    """W̃_n = a·P_n + b·Q_n for all tensors n at once (``torch._foreach`` ops: a few kernels per block).

    Saves only ``a``, ``b`` and the neighbour tensors, which are alive anyway (they are parameters),
    so the fusion itself adds no saved memory; the fused tensors live until the block's own
    backward has used them. Backward (spec §1.2):
        ∂L/∂a = Σ_n ⟨G_n, P_n⟩,  ∂L/∂b = Σ_n ⟨G_n, Q_n⟩,  ∂L/∂P_n = a·G_n,  ∂L/∂Q_n = b·G_n,
    with G_n = ∂L/∂W̃_n the weight gradient of the fused tensor.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, n: int, *tensors: torch.Tensor):
        prev, nxt = list(tensors[:n]), list(tensors[n:])
        fused = torch._foreach_mul(prev, a)
        torch._foreach_addcmul_(fused, nxt, [b] * n)  # in place: one pass less than mul + add
        ctx.n = n
        ctx.save_for_backward(a, b, *tensors)
        return tuple(fused)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        a, b, *tensors = ctx.saved_tensors
        n = ctx.n
        prev, nxt = tensors[:n], tensors[n:]  # P_n, Q_n
        live = [i for i, g in enumerate(grads) if g is not None]
        g = [grads[i] for i in live]

        acc = torch.promote_types(a.dtype, torch.float32)  # half-precision parameters sum in fp32

        def dot(xs):  # Σ_n ⟨G_n, X_n⟩
            terms = [_inner(gi, xs[i], acc) for gi, i in zip(g, live)]
            return torch.stack(terms).sum().to(a.dtype) if terms else torch.zeros_like(a)

        need = ctx.needs_input_grad
        grad_a = dot(prev) if need[0] else None
        grad_b = dot(nxt) if need[1] else None

        def scaled(s, offset):
            if not any(need[3 + offset + i] for i in live):
                return [None] * n
            out: list[torch.Tensor | None] = [None] * n
            for i, t in zip(live, torch._foreach_mul(g, s)):
                out[i] = t
            return out

        return (grad_a, grad_b, None, *scaled(a, 0), *scaled(b, n))


def without_parameters(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters are ``None`` (names kept) and whose buffers are its own.

    deepcopy with every parameter pre-mapped to None: no weight is copied, and ``_parameters`` keep
    their keys (so ``state_dict`` order survives export).
    """
    return copy.deepcopy(module, memo={id(p): None for p in module.parameters()})


@dataclass
class Surrogate:
    """What a replaced block evaluates, and where each of its tensors comes from.

    Attributes:
        template: parameter-free module (parameters ``None``) run with the fused tensors; its buffers
            (BatchNorm running statistics) are the replaced block's own.
        names: parameter names inside ``template`` that receive fused tensors.
        prev_names / next_names: for each of ``names``, the neighbour tensor it is fused from
            (W̃[names[j]] = a·prev[prev_names[j]] + b·next[next_names[j]]).
        shapes: the shape of each fused tensor (neighbour tensors are adapted to it, spec §2.4).
    """

    template: nn.Module
    names: list[str]
    prev_names: list[str]
    next_names: list[str]
    shapes: list[torch.Size]


SurrogateBuilder = Callable[[nn.Module, nn.Module, nn.Module], Surrogate]
_SURROGATES: dict[str, SurrogateBuilder] = {}


def register_surrogate(name: str) -> Callable[[SurrogateBuilder], SurrogateBuilder]:
    """Register ``fn(prev, target, next) -> Surrogate`` under ``name`` (refuses duplicates)."""

    def deco(fn: SurrogateBuilder) -> SurrogateBuilder:
        if name in _SURROGATES:
            raise ValueError(f"surrogate {name!r} is already registered")
        _SURROGATES[name] = fn
        return fn

    return deco


def build_surrogate(name: str, prev: nn.Module, target: nn.Module, nxt: nn.Module) -> Surrogate:
    if name not in _SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; valid surrogates: {', '.join(sorted(_SURROGATES))}")
    return _SURROGATES[name](prev, target, nxt)


@register_surrogate("full")
def full_surrogate(prev: nn.Module, target: nn.Module, nxt: nn.Module) -> Surrogate:
    """v1 (spec §1.3): the whole target block, each tensor fused from the same-named neighbour tensors."""
    params = dict(target.named_parameters())
    names = list(params)
    return Surrogate(without_parameters(target), names, names, names, [p.shape for p in params.values()])


def adapt(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """v2-style shape adapter (spec §2.4, our reconstruction): bring neighbour tensor ``t`` to ``shape``.

    Per axis: a larger neighbour is cut to its leading slice; a smaller one is tiled (then cut). When
    the input-channel axis (dim 1 of a conv/linear weight) is tiled or cut, the weight is scaled by
    sqrt(fan_in_src / fan_in_dst) so that the output variance is kept (our reading of "scale by the
    fan-in ratio so the output variance is kept"). Differentiable, so a, b and the neighbour still
    get their gradients.

    Args:
        t: neighbour tensor, e.g. ``(C_out', C_in', k, k)``.
        shape: the replaced block's tensor shape, same number of dimensions.
    """
    if t.shape == shape:
        return t
    src_fan_in = t.shape[1] if t.dim() >= 2 else None
    for d, (have, want) in enumerate(zip(t.shape, shape)):
        if have < want:
            reps = [1] * t.dim()
            reps[d] = math.ceil(want / have)
            t = t.repeat(*reps)
        if t.shape[d] > want:
            t = t.narrow(d, 0, want)
    if src_fan_in is not None and src_fan_in != shape[1]:
        t = t * math.sqrt(src_fan_in / shape[1])
    return t


def shape_mismatch(prev: nn.Module, target: nn.Module, nxt: nn.Module, adapter: bool = False) -> str | None:
    """Why ``target`` cannot borrow the tensors of ``prev`` and ``nxt`` (None when it can).

    Condition (c) of spec §2.2: every tensor of the target has a same-named tensor of the same
    shape in both neighbours. With ``adapter`` the shapes may differ (§2.4) but the names and the
    number of dimensions must match. Neighbours must be of the target's class, so that a name means
    the same thing in all three.
    """
    own = dict(target.named_parameters())
    if not own:
        return f"it has no parameters ({type(target).__name__}), so there is nothing to replace"
    for role, nb in (("previous", prev), ("next", nxt)):
        if isinstance(nb, ReplacedBlock):
            return (
                f"its {role} neighbour is itself replaced (two replaced blocks are never adjacent, spec §2.2)"
            )
        if type(nb) is not type(target):
            return f"its {role} neighbour is a {type(nb).__name__}, not a {type(target).__name__}"
        theirs = dict(nb.named_parameters())
        for name, p in own.items():
            q = theirs.get(name)
            if q is None:
                return f"its {role} neighbour has no tensor {name!r}"
            if q.shape == p.shape:
                continue
            if adapter and q.dim() == p.dim():
                continue
            hint = (
                ""
                if adapter
                else "; pass adapter=True (--replace-adapter) to fuse neighbours of another width"
            )
            return f"its {role} neighbour's {name} has shape {tuple(q.shape)}, not {tuple(p.shape)}{hint}"
    return None


class ReplacedBlock(nn.Module):
    """A block whose parameters are a·θ(prev) + b·θ(next), rebuilt on every forward (spec §1.3).

    Registered state: ``a`` and ``b`` (or, with ``convex``, the logit ``s`` with a = sigmoid(s),
    b = 1 − a), both excluded from weight decay (spec §1.2), and ``template``: the surrogate the
    block evaluates, with its parameters removed (set to ``None``) and buffers, e.g. BatchNorm
    running statistics, of its own (§1.2 "BatchNorm"). With ``surrogate="full"`` the template is a
    copy of the target block; with ``"lite"`` it is the cheaper block of :mod:`.lite`. The
    neighbours are referenced in plain Python
    attributes, not registered, so ``model.parameters()`` and the optimizer see each neighbour
    tensor once (§1.3). Copy the whole model, not a ReplacedBlock on its own: ``copy.deepcopy`` of
    the parent keeps the references pointing at the copied neighbours.

    Works wherever the neighbours live: in another local-learning module the neighbour simply gets
    gradient from two places (its own module's loss and, through the fusion, this block's). Use
    ``detach_neighbors=True`` if strict gradient isolation between modules is wanted.

    Args:
        prev / target / nxt: the previous, replaced and next blocks (any modules; same class).
        init: initial (a, b); (0.5, 0.5) averages the neighbours (spec §1.2).
        convex: b = 1 − a with a = sigmoid(s) (our option; one learnable number per block).
        detach_neighbors: stop-gradient into the neighbours (ablation, spec §7.1).
        adapter: slice/tile neighbour tensors whose shape differs (v2-style, spec §2.4).
        surrogate: ``"full"`` (default; v1, the whole block with fused weights) or ``"lite"`` (a
            cheaper surrogate, our reconstruction of RepL v2, spec §2.5; see :mod:`.lite` for the
            supported block types).

    Shapes: ``forward(x)`` takes and returns what ``target`` does.
    """

    def __init__(
        self,
        prev: nn.Module,
        target: nn.Module,
        nxt: nn.Module,
        init: tuple[float, float] = (0.5, 0.5),
        convex: bool = False,
        detach_neighbors: bool = False,
        adapter: bool = False,
        surrogate: str = "full",
    ):
        super().__init__()
        # Condition (c) of spec §2.2 on the whole block, whatever the surrogate: "lite" replaces the
        # same blocks as "full", so the two are compared on the same selection.
        reason = shape_mismatch(prev, target, nxt, adapter)
        if reason:
            raise ValueError(f"cannot replace this {type(target).__name__}: {reason}")
        plan = build_surrogate(surrogate, prev, target, nxt)
        self.surrogate = surrogate
        self.names, self.shapes = plan.names, plan.shapes
        self.template = plan.template
        ref = next(target.parameters())
        a0, b0 = (float(v) for v in init)
        self.convex = convex
        self.detach_neighbors = detach_neighbors
        self.adapter = adapter
        kw = dict(dtype=ref.dtype, device=ref.device)
        if convex:
            if not math.isclose(a0 + b0, 1.0) or not 0.0 < a0 < 1.0:
                raise ValueError(f"convex=True needs init (a, 1 - a) with 0 < a < 1, got {init}")
            self.s = no_weight_decay(nn.Parameter(torch.tensor(math.log(a0 / (1 - a0)), **kw)))
        else:
            self.a = no_weight_decay(nn.Parameter(torch.tensor(a0, **kw)))
            self.b = no_weight_decay(nn.Parameter(torch.tensor(b0, **kw)))
        self._template_slots = _slots(self.template, self.names)
        # Plain (unregistered) references: slots are re-read on every forward so a neighbour whose
        # Parameter objects are swapped (to_empty, load_state_dict(assign=True)) stays in sync.
        self._neighbors = (prev, nxt)
        self._neighbor_slots = (_slots(prev, plan.prev_names), _slots(nxt, plan.next_names))

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b) as 0-dim tensors, differentiable."""
        if self.convex:
            a = torch.sigmoid(self.s)
            return a, 1 - a
        return self.a, self.b

    def _neighbor_tensors(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        prev, nxt = ([m._parameters[k] for m, k in slots] for slots in self._neighbor_slots)
        if self.adapter:
            prev = [adapt(t, s) for t, s in zip(prev, self.shapes)]
            nxt = [adapt(t, s) for t, s in zip(nxt, self.shapes)]
        if self.detach_neighbors:
            prev, nxt = [t.detach() for t in prev], [t.detach() for t in nxt]
        return prev, nxt

    def fused_tensors(self) -> list[torch.Tensor]:
        """The template's tensors a·P_n + b·Q_n, in ``self.names`` order (one fusion per forward)."""
        a, b = self.coefficients()
        prev, nxt = self._neighbor_tensors()
        return list(_Fuse.apply(a, b, len(prev), *prev, *nxt))

    def fused_params(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.fused_tensors()))

    def forward(self, *args, **kwargs):
        fused = self.fused_tensors()
        # The same swap torch.func.functional_call performs, minus its generic bookkeeping (a few
        # hundred microseconds per call on CPU). Buffers are the template's own, so BatchNorm updates
        # its running statistics in place. The fused tensors are dropped from the template right
        # after the call; autograd keeps them only until this block's backward has run.
        for (m, k), t in zip(self._template_slots, fused):
            m._parameters[k] = t
        try:
            return self.template(*args, **kwargs)
        finally:
            for m, k in self._template_slots:
                m._parameters[k] = None

    @torch.no_grad()
    def materialize(self) -> nn.Module:
        """An ordinary module with the fused weights stored as its parameters (for export, spec §1.3).

        ``"full"``: a block of the target's class. ``"lite"``: the lite surrogate, a
        ``torch.fx.GraphModule`` of plain torch layers (see :mod:`.lite` for how to load it).
        """
        block = copy.deepcopy(self.template)
        for (m, k), t in zip(_slots(block, self.names), self.fused_tensors()):
            m._parameters[k] = nn.Parameter(t.detach().clone())
        return block.train(self.training)

    def extra_repr(self) -> str:
        a, b = (float(v.detach()) for v in self.coefficients())
        opts = [f"a={a:.4g}", f"b={b:.4g}", f"tensors={len(self.names)}", f"surrogate={self.surrogate}"]
        opts += [name for name in ("convex", "detach_neighbors", "adapter") if getattr(self, name)]
        return ", ".join(opts)


def replace_module(prev: nn.Module, target: nn.Module, nxt: nn.Module, **options) -> ReplacedBlock:
    """Build the :class:`ReplacedBlock` that takes ``target``'s place between ``prev`` and ``nxt``.

    The caller puts the result where ``target`` was (``parent[i] = replace_module(...)``); ``target``'s
    parameters are then dropped with it. Options as in :class:`ReplacedBlock`.
    """
    return ReplacedBlock(prev, target, nxt, **options)


def materialize_replaced(module: nn.Module) -> nn.Module:
    """Swap every :class:`ReplacedBlock` inside ``module`` (in place) for its materialised block."""
    for name, child in list(module.named_children()):
        if isinstance(child, ReplacedBlock):
            setattr(module, name, child.materialize())
        else:
            materialize_replaced(child)
    return module
