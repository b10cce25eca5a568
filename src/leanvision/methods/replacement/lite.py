"""The ``"lite"`` surrogate: a replaced block that is cheaper than the block it replaces (spec §2.5).

A reconstruction of RepL v2's "lightweight computing layer" that "avoids full-layer computation";
no source gives its form, so everything below is our choice where the paper is silent. ``"full"``
(v1, :func:`~.block.full_surrogate`) stays the default. The fusion rule is v1's,
W̃ = a·θ(prev) + b·θ(next), with one (a, b) pair per block; only *what* is fused and evaluated
changes:

- **ResNet BasicBlock** (torchvision's; CIFAR ResNet-20..110, ImageNet ResNet-18/34):
  ``relu(BN(conv3x3(x; W̃)) + x)``, one conv instead of two, with
  W̃ = a·prev.conv2.weight + b·next.conv1.weight (both (C, C, 3, 3); spec §2.5) and the BN affine
  fused from the BNs that follow those convs: γ̃ = a·prev.bn2.weight + b·next.bn1.weight, β̃ likewise.
  The BN keeps its own running statistics (spec §1.2 "BatchNorm"), starting from a copy of the target's
  ``bn2`` buffers; its eps/momentum and the conv's stride/padding are the target's ``bn2``/``conv2``'s.
- **ViT encoder block** (:class:`~leanvision.models.vit.EncoderBlock`): ``x + MLP(LN(x))``, the
  fused MLP sub-layer alone (LN, fc1, GELU, fc2 fused from both neighbours' ``norm2`` and ``mlp``);
  the attention sub-layer is skipped. Why the MLP rather than attention: the two full neighbours on
  either side still mix tokens, and in trained transformers attention sub-layers are the more
  redundant ones (dropping many of them costs little, He et al. 2024, arXiv 2406.15786; Michel et
  al. 2019 on heads), so the surrogate keeps the token-wise part that holds 2/3 of the block's
  weights. The saving is the attention sub-layer: about 1/3 of the block's matmul FLOPs plus the
  N² attention term, and its activations.
- **Other blocks** (torchvision ``Bottleneck``, detector Bottlenecks, timm blocks, ...): a
  ``ValueError`` naming the block type and the supported ones. A Bottleneck has no obvious lite form:
  its neighbours' facing convs (prev.conv3, C←C/4, and next.conv1, C/4←C) have transposed shapes, so
  no single fused conv maps C to C; any choice would be a new design, not a reading of spec §2.5.

Selection is unchanged (spec §2.2): ``"lite"`` replaces exactly the blocks ``"full"`` would, and
the trainable-parameter count is the same (2 scalars per replaced block).

**Export and loading.** The template is a ``torch.fx.GraphModule`` whose children are plain torch
layers (``nn.Conv2d`` + ``nn.BatchNorm2d`` + ``nn.ReLU``, or ``nn.LayerNorm`` + ``nn.Linear`` +
``nn.GELU``) and whose forward is generated code; no leanvision class is involved. The exported
model (:func:`~.transform.export_model`) therefore

- pickles without leanvision's method code: ``torch.save(exported, "model.pt")`` and later
  ``torch.load("model.pt", weights_only=False)`` need only torch, torchvision and the model's own
  module (``leanvision.models``); the lite block's forward travels as source text in the pickle;
- has state_dict keys ``blocks.i.conv.weight``, ``blocks.i.bn.{weight,bias,running_*}`` (ResNet)
  or ``blocks.i.{norm,fc1,fc2}.{weight,bias}`` (ViT) at each replaced position instead of the
  original block's keys, so it does *not* load into a freshly built E2E model. To load a bare
  state_dict, rebuild the architecture the same way it was made and load strictly::

      model = create_model("resnet32")
      apply_replacement(model, interval=2, surrogate="lite")   # same options as for training
      plain = export_model(model)
      plain.load_state_dict(torch.load("exported_state.pt"), strict=True)
"""

from __future__ import annotations

import copy
import operator

from torch import fx, nn
from torchvision.models.resnet import BasicBlock

from ...models.vit import EncoderBlock
from .block import Surrogate, register_surrogate, without_parameters

SUPPORTED = "torchvision BasicBlock (CIFAR ResNet-20..110, ResNet-18/34) and leanvision's ViT EncoderBlock"


def _graph_module(children: dict[str, nn.Module], order: list[str], class_name: str) -> fx.GraphModule:
    """``x -> children[order[0]] -> ...``, where the entry ``"add"`` adds the block input ``x``.

    Built node by node (no tracing of a leanvision class): the result's only classes are torch's,
    so it pickles and loads without this module.
    """
    g = fx.Graph()
    x = h = g.placeholder("x")
    for name in order:
        h = g.call_function(operator.add, (h, x)) if name == "add" else g.call_module(name, (h,))
    g.output(h)
    return fx.GraphModule(children, g, class_name=class_name)


def _surrogate(
    target: nn.Module, fused: dict[str, tuple[str, str, str]], extra: dict[str, nn.Module], order: list[str], name: str
) -> Surrogate:
    """Template of ``fused`` children (parameter-free copies) and ``extra`` ones, run in ``order``.

    Args:
        fused: template child -> (the target's submodule it copies, the previous block's submodule
            and the next block's submodule it is fused from); every parameter of it is fused.
        extra: parameter-free children used as they are (activations).
    """
    children = {child: without_parameters(target.get_submodule(own)) for child, (own, _, _) in fused.items()}
    names, prev_names, next_names, shapes = [], [], [], []
    for child, (own, p, n) in fused.items():
        for attr, param in target.get_submodule(own).named_parameters():
            names.append(f"{child}.{attr}")
            prev_names.append(f"{p}.{attr}")
            next_names.append(f"{n}.{attr}")
            shapes.append(param.shape)
    template = _graph_module({**children, **{k: copy.deepcopy(m) for k, m in extra.items()}}, order, name)
    return Surrogate(template, names, prev_names, next_names, shapes)


def _lite_basic(target: BasicBlock) -> Surrogate:
    c1, c2 = target.conv1, target.conv2
    if target.downsample is not None or c1.stride != (1, 1) or c1.in_channels != c2.out_channels:
        raise ValueError(
            "the lite surrogate keeps an identity shortcut, but this BasicBlock changes width or resolution "
            f"(stride {c1.stride}, {c1.in_channels}->{c2.out_channels} channels); replace a non-transition block"
        )
    # conv2 is C -> C, 3x3, stride 1: the shape of prev.conv2 and next.conv1. Each conv is fused
    # with the BN that follows it in its own block: prev.conv2 + next.conv1, prev.bn2 + next.bn1.
    fused = {"conv": ("conv2", "conv2", "conv1"), "bn": ("bn2", "bn2", "bn1")}
    return _surrogate(target, fused, {"act": target.relu}, ["conv", "bn", "add", "act"], "LiteBasicBlock")


def _lite_encoder(target: EncoderBlock) -> Surrogate:
    # the same sub-layer of both neighbours (their MLPs), unlike the ResNet's facing convs: the
    # neighbours' facing sub-layers (prev MLP, next attention) have different tensors
    fused = {k: (own, own, own) for k, own in (("norm", "norm2"), ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2"))}
    order = ["norm", "fc1", "act", "fc2", "add"]
    return _surrogate(target, fused, {"act": target.mlp.act}, order, "LiteEncoderBlock")


def lite_unsupported(target: nn.Module) -> str | None:
    """Why ``target`` has no lite surrogate (None when it has one)."""
    if isinstance(target, (BasicBlock, EncoderBlock)):
        return None
    return (
        f"the lite surrogate (spec §2.5) is defined for {SUPPORTED}, not for a {type(target).__name__}; "
        "use surrogate='full' (the default) for this model"
    )


@register_surrogate("lite")
def lite_surrogate(prev: nn.Module, target: nn.Module, nxt: nn.Module) -> Surrogate:
    """The cheaper replaced block of the module docstring (our reconstruction of RepL v2, spec §2.5).

    Raises:
        ValueError: for a block type other than the supported ones (the message names both), or a
            BasicBlock with a projection shortcut.
    """
    why = lite_unsupported(target)
    if why:
        raise ValueError(why)
    return _lite_basic(target) if isinstance(target, BasicBlock) else _lite_encoder(target)
