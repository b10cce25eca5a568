"""The seam between models and methods: a stem, an ordered list of body blocks, a head.

Training methods work on this list only (E2E runs it, local learning cuts it into modules,
Replacement Learning swaps entries of it); they never look at the model's class. Classifiers keep
their blocks in an ``nn.ModuleList`` run in order (:class:`BlockModel`); a detector, which is a layer
table rather than a chain, exposes the Bottlenecks of its backbone through a :class:`BlockSlots` view.
:func:`check_block_model` checks everything a method reads (:func:`check_block_list` the part
Replacement Learning reads) and names each missing piece with how to add it. ARCHITECTURE.md has the
table of which method reads what.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class BlockInfo:
    """What a method may need to know about one body block, without inspecting it.

    Attributes:
        name: the label reports, ``--replace-blocks`` and split end points use. Classifiers write
            "s.l": stage s (1-based) and block l (0-based) within the stage, as the papers' split tables
            do (e.g. "2.0" is the first block of stage 2). A detector uses the block's state_dict path
            inside its layer table ("4.m.1": row 4's Bottleneck 1).
        stage: the block's stage (classifiers count from 1; a detector's is its feature level, P3 -> 3).
            Stages never decrease along the list.
        index: 0-based position within the stage.
        in_channels / out_channels: channel (or embedding) width in and out.
        stride: spatial stride of the block (1 for ViT blocks).
        transition: True where the block changes width or resolution (projection shortcut).
        chained: True when the block's input is the previous block's output. False where other layers sit
            between the two (in a detector's backbone, the strided Conv and the C2f convs between the
            Bottlenecks of two C2f rows): such neighbours are borrowed from only with the shape adapter.
    """

    name: str
    stage: int
    index: int
    in_channels: int
    out_channels: int
    stride: int = 1
    transition: bool = False
    chained: bool = True


class BlockSlots(Sequence):
    """A block list whose blocks live inside other modules: the seam for models that are not one chain.

    Entry i is ``owner[position]`` for the i-th (owner ``nn.ModuleList``, position) pair: reading gives that
    module and assigning swaps it in place, so a method that replaces ``blocks[i]`` changes the model itself,
    as it does with a classifier's ``nn.ModuleList``. The view registers nothing (the modules stay where the
    model keeps them, with their state_dict keys).

    Args:
        slots: (owner, position) per block, in forward order.
        where: one phrase that says where the blocks live and what runs between them; error messages of
            methods that need a chain quote it.
    """

    def __init__(self, slots: list[tuple[nn.ModuleList, int]], where: str):
        self._slots, self.where = list(slots), where

    def __len__(self) -> int:
        return len(self._slots)

    def __getitem__(self, i: int) -> nn.Module:
        owner, position = self._slots[i]
        return owner[position]

    def __setitem__(self, i: int, module: nn.Module) -> None:
        owner, position = self._slots[i]
        owner[position] = module

    def __repr__(self) -> str:
        return f"BlockSlots({len(self)} blocks: {self.where})"


class BlockModel(nn.Module):
    """Base class of block-list classifiers.

    Subclasses set ``stem`` (image -> first feature map), ``blocks`` (an ``nn.ModuleList`` run in
    order), ``head`` (last feature map -> logits, pooling included), ``num_features`` (head input
    width), ``block_info`` (one :class:`BlockInfo` per block), ``image_size`` and ``num_classes``;
    :func:`check_block_model` says what is missing. The README's ``SmallNet`` is a complete example.
    """

    stem: nn.Module
    blocks: nn.ModuleList
    head: nn.Module
    num_features: int
    block_info: list[BlockInfo]
    num_classes: int
    image_size: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def block_names(self) -> list[str]:
        return [b.name for b in self.block_info]


_HOW = ("subclass leanvision.models.BlockModel as the README's \"Use a method on your own model\" shows, "
        "or wrap a timm model with leanvision.models.from_timm")


class ContractError(TypeError):
    """A model does not expose what a method reads; the message lists each missing piece and how to add it."""


def _raise(model: nn.Module, needs: str, problems: list[str]) -> None:
    if problems:
        raise ContractError(f"{type(model).__name__} is not a block-list model that {needs} can use:\n  - "
                            + "\n  - ".join(problems) + f"\n({_HOW})")


def _block_list_problems(model: nn.Module) -> list[str]:
    """What Replacement Learning reads: ``blocks`` (indexed and assigned) and one BlockInfo per block."""
    name = type(model).__name__
    problems = []
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        problems.append("no `blocks`: set self.blocks = nn.ModuleList([...]) with the body blocks in the order "
                        "forward runs them")
    elif not isinstance(blocks, nn.ModuleList | BlockSlots):
        problems.append(f"{name}.blocks is a {type(blocks).__name__}, not an nn.ModuleList: write "
                        "self.blocks = nn.ModuleList(blocks) (methods index it and swap entries; a plain list "
                        "would also hide the blocks' parameters from the optimizer)")
    elif not len(blocks):
        problems.append(f"{name}.blocks is empty: put the body blocks in it")
    infos = getattr(model, "block_info", None)
    if infos is None:
        problems.append("no `block_info`: set self.block_info = [BlockInfo(name, stage, index, in_channels, "
                        "out_channels, stride, transition) for each block] (leanvision.models.BlockInfo)")
        return problems
    bad = [f"{i} ({type(b).__name__})" for i, b in enumerate(infos) if not isinstance(b, BlockInfo)]
    if bad:
        problems.append(f"block_info entries {', '.join(bad)} are not leanvision.models.BlockInfo")
        return problems
    if isinstance(blocks, nn.ModuleList | BlockSlots) and len(infos) != len(blocks):
        problems.append(f"block_info has {len(infos)} entries for {len(blocks)} blocks: give one BlockInfo per "
                        "block, in the same order")
    names = [b.name for b in infos]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        problems.append(f"block_info names {', '.join(map(repr, twice))} appear more than once: names must be "
                        "unique (--replace-blocks and split end points refer to blocks by name)")
    for i, b in enumerate(infos):
        ints = {"stage": b.stage, "index": b.index, "in_channels": b.in_channels, "out_channels": b.out_channels,
                "stride": b.stride}
        wrong = [f"{k}={v!r}" for k, v in ints.items() if not isinstance(v, int) or v < (0 if k == "index" else 1)]
        if wrong:
            problems.append(f"block_info[{i}] ({b.name}): {', '.join(wrong)}; stage, channels and stride are "
                            "positive integers, index a 0-based integer")
    return problems


def check_block_list(model: nn.Module) -> nn.Module:
    """Check what Replacement Learning reads: ``blocks`` and ``block_info`` (see :class:`BlockInfo`).

    Classifiers keep their blocks in an ``nn.ModuleList``; a detector exposes the Bottlenecks of its
    backbone as a :class:`BlockSlots` view. Returns ``model``; raises :class:`ContractError` (a
    ``TypeError``) listing every missing or malformed piece and how to add it.
    """
    _raise(model, "Replacement Learning", _block_list_problems(model))
    return model


def check_block_model(model: nn.Module, probe: bool = True) -> BlockModel:
    """Check the whole block-list contract, everything any method reads, before a method is built on it.

    What is checked (local learning reads all of it; Replacement Learning the first two):

    - ``blocks``: an ``nn.ModuleList`` of the body blocks, run in order (not a :class:`BlockSlots` view:
      local learning cuts the list into a chain of modules);
    - ``block_info``: one :class:`BlockInfo` per block, unique names, stages that never decrease, each
      ``index`` the block's position within its stage;
    - ``stem`` and ``head``: modules (image -> first block's input; last block's output -> logits);
    - ``num_classes`` and ``image_size``: positive integers (auxiliary heads predict ``num_classes``
      classes; shapes are probed with an ``image_size`` image).

    With ``probe`` (default), one eval-mode forward of a (1, 3, image_size, image_size) zero image through
    stem -> blocks -> head checks that the blocks chain, that the head returns (1, num_classes), that
    ``forward`` computes exactly that chain (local learning trains only stem, blocks and head; a second
    forward, skipped when the class keeps BlockModel's forward) and that ``block_info``'s channels (and,
    for feature maps, strides) are the blocks' real ones.

    Returns ``model``; raises :class:`ContractError` (a ``TypeError``) listing each missing piece and how to
    add it.
    """
    name = type(model).__name__
    problems = _block_list_problems(model)
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, BlockSlots):
        problems.insert(0, f"{name}.blocks are not one chain run by forward in order but a view of blocks that "
                           f"live inside other layers ({blocks.where}); local learning cuts a chain stem -> "
                           "blocks -> head into gradient-isolated modules, which this model is not (Replacement "
                           "Learning applies to it: leanvision.methods.replacement.apply_replacement)")
        _raise(model, "local learning", problems)
    for attr, how in (("stem", "the module that maps images (B, 3, H, W) to the first block's input "
                               "(nn.Identity() if the first block takes the image)"),
                      ("head", "the module that maps the last block's output to logits (B, num_classes), "
                               "pooling included")):
        if not isinstance(getattr(model, attr, None), nn.Module):
            problems.append(f"no `{attr}` module: set self.{attr} to {how}")
    for attr, how in (("num_classes", "the head's output width; auxiliary heads predict that many classes"),
                      ("image_size", "the input side in pixels, e.g. 32 for CIFAR; block output shapes are "
                                     "probed with an image of that size")):
        value = getattr(model, attr, None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{'no' if value is None else f'bad ({value!r})'} `{attr}`: set self.{attr} to a "
                            f"positive int ({how})")
    infos = getattr(model, "block_info", None)
    if not problems:
        problems += _order_problems(infos)
    if not problems and probe:
        problems += _probe_problems(model)
    _raise(model, "local learning", problems)
    return model  # type: ignore[return-value]


def _order_problems(infos: list[BlockInfo]) -> list[str]:
    """Stages never decrease and each index is the block's position in its stage (local learning's LAM
    chains start at the blocks with index 0)."""
    problems, seen = [], {}
    for i, b in enumerate(infos):
        if i and b.stage < infos[i - 1].stage:
            problems.append(f"block_info[{i}] ({b.name}) is in stage {b.stage} after a block of stage "
                            f"{infos[i - 1].stage}: stages must not decrease along the list")
        want = seen[b.stage] = seen.get(b.stage, -1) + 1
        if b.index != want:
            problems.append(f"block_info[{i}] ({b.name}) has index {b.index}, but it is block {want} of stage "
                            f"{b.stage}: index counts the blocks of a stage from 0")
    return problems


def _runs_the_chain(cls: type) -> bool:
    """True when ``cls`` keeps BlockModel's forward (stem, blocks in order, head), so it needs no comparison."""
    return issubclass(cls, BlockModel) and all(
        getattr(cls, f) is getattr(BlockModel, f) for f in ("forward", "forward_features", "forward_head"))


def _width(shape: torch.Size) -> int:
    """Channels of a feature map (B, C, H, W), embedding width of tokens (B, N, D)."""
    return shape[1] if len(shape) == 4 else shape[-1]


@torch.no_grad()
def _probe_problems(model: BlockModel) -> list[str]:
    """Run stem -> blocks -> head once in eval mode and compare with forward, block_info and num_classes."""
    param = next(model.parameters(), None)
    kw = {"device": param.device, "dtype": param.dtype} if param is not None else {}
    size = model.image_size
    x = torch.zeros(1, 3, size, size, **kw)
    was_training = model.training
    model.eval()
    problems: list[str] = []
    try:
        step = "stem"
        try:
            h = model.stem(x)
            prev = h
            for i, (block, info) in enumerate(zip(model.blocks, model.block_info)):
                step = f"block {i} ({info.name})"
                out = block(prev)
                problems += _info_problems(i, info, prev.shape, out.shape)
                prev = out
            step = "head"
            logits = model.head(prev)
        except Exception as e:  # any failure here is a contract problem: say where it happened
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            return [f"running stem -> blocks -> head on a (1, 3, {size}, {size}) image failed at the {step}: {first} "
                    "(each block's input must be the previous block's output, the first block's the stem's; "
                    "image_size must be a size the model accepts)"]
        if tuple(logits.shape) != (1, model.num_classes):
            problems.append(f"head returned shape {tuple(logits.shape)} for one image, expected (1, num_classes="
                            f"{model.num_classes}): the head maps the last block's output to logits")
        elif not _runs_the_chain(type(model)) and not torch.allclose(model(x), logits, rtol=1e-4, atol=1e-5):
            problems.append("forward(x) differs from head(blocks(stem(x))): forward must run exactly stem, then "
                            "each block in order, then head (local learning trains only those; a layer outside "
                            "them would never be trained). Subclassing BlockModel gives that forward.")
    finally:
        model.train(was_training)
    return problems


def _info_problems(i: int, info: BlockInfo, shape_in: torch.Size, shape_out: torch.Size) -> list[str]:
    problems = []
    have_in, have_out = _width(shape_in), _width(shape_out)
    if (info.in_channels, info.out_channels) != (have_in, have_out):
        problems.append(f"block_info[{i}] ({info.name}) says {info.in_channels} -> {info.out_channels} channels, "
                        f"the block maps {have_in} -> {have_out} (shapes {tuple(shape_in[1:])} -> "
                        f"{tuple(shape_out[1:])})")
    if len(shape_in) == 4 and len(shape_out) == 4 and shape_out[-1]:
        stride = round(shape_in[-1] / shape_out[-1])  # 7 -> 4 px is stride 2 (padding rounds up)
        if stride != info.stride:
            problems.append(f"block_info[{i}] ({info.name}) says stride {info.stride}, the block has stride "
                            f"{stride} ({shape_in[-1]} -> {shape_out[-1]} px)")
    return problems
