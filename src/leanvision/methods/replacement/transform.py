"""Replacement Learning as a model transform: swap selected blocks, report, export.

The transform composes with any training method: the ``replacement`` method is this transform plus
end-to-end training, and local learning can apply it before cutting the block list into modules.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from torch import nn

from ...models.base import check_block_model
from ...ops.counting import count_parameters
from .block import ReplacedBlock, materialize_replaced
from .select import select_blocks

log = logging.getLogger("leanvision.replacement")


@dataclass(kw_only=True)
class SavingsReport:
    """Trainable-parameter arithmetic of a replacement (spec §3.3), shared by the block-list and
    detector reports.

    Attributes:
        trainable_before / trainable_after: trainable parameter elements, each tensor once.
        removed: parameter elements the replaced blocks no longer hold.
        added: learnable scalars added (2 per block, 1 with ``convex``).
        options: the options used.
    """

    trainable_before: int
    trainable_after: int
    removed: int
    added: int
    options: dict = field(default_factory=dict)

    @property
    def reduction(self) -> float:
        """Fraction of trainable parameters removed."""
        return 1 - self.trainable_after / self.trainable_before if self.trainable_before else 0.0

    def savings(self) -> str:
        return (f"trainable parameters: {self.trainable_before:,} -> {self.trainable_after:,} "
                f"(-{self.removed:,} block weights, +{self.added} scalars; {100 * self.reduction:.1f}% fewer)")


@dataclass
class ReplacementReport(SavingsReport):
    """What :func:`apply_replacement` did: the :class:`SavingsReport` figures and

    Attributes:
        replaced: (position in ``model.blocks``, "s.l" name) of every replaced block.
        total_blocks: length of ``model.blocks``.
        interval: k when selected by interval, None for an explicit list.
    """

    replaced: list[tuple[int, str]]
    total_blocks: int
    interval: int | None

    @property
    def names(self) -> list[str]:
        return [name for _, name in self.replaced]

    def __str__(self) -> str:
        how = f"interval {self.interval}" if self.interval is not None else "explicit list"
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        blocks = ", ".join(f"{name} (#{i})" for i, name in self.replaced) or "none"
        return (
            f"Replacement Learning: {len(self.replaced)}/{self.total_blocks} blocks replaced "
            f"({how}; {opts}): {blocks}\n{self.savings()}"
        )


def apply_replacement(
    model: nn.Module,
    interval: int | None = 2,
    ids: Iterable[int | str] | None = None,
    init: tuple[float, float] = (0.5, 0.5),
    detach_neighbors: bool = False,
    convex: bool = False,
    adapter: bool = False,
    surrogate: str = "full",
) -> ReplacementReport:
    """Replace blocks of ``model.blocks`` in place by :class:`ReplacedBlock` (spec §1.3, §2.2).

    Args:
        model: a block-list model (``stem``, ``blocks``, ``head``, ``block_info``).
        interval: k >= 2: every k-th eligible block per stage; ignored when ``ids`` is given.
        ids: explicit blocks, 0-based positions in ``model.blocks`` or "s.l" names.
        init: initial (a, b) (spec §1.2: (0.5, 0.5); ablation (1, 0)).
        detach_neighbors: stop-gradient into the neighbours through the fusion (ablation).
        convex: b = 1 − a, a = sigmoid(s) (our option).
        adapter: v2-style slicing/tiling for neighbours of another width (spec §2.4, our option).
        surrogate: ``"full"`` (default; v1, spec §1.3) or ``"lite"`` (a cheaper replaced block, our
            reconstruction of RepL v2, spec §2.5; see :mod:`.lite`). Selects nothing differently.

    Returns:
        A :class:`ReplacementReport` (also logged at INFO level).

    Raises:
        ValueError: for an ineligible explicit block, or a block the surrogate does not support (the
            message names the block). The model is left unchanged then.
    """
    check_block_model(model)
    before = count_parameters(model, trainable_only=True)
    chosen = select_blocks(model, interval, ids, adapter)
    options = dict(
        init=tuple(init), detach_neighbors=detach_neighbors, convex=convex, adapter=adapter, surrogate=surrogate
    )
    built = {}  # every block is built before any is swapped in, so an error leaves the model as it was
    for i in chosen:
        try:
            built[i] = ReplacedBlock(model.blocks[i - 1], model.blocks[i], model.blocks[i + 1], **options)
        except ValueError as e:
            raise ValueError(f"cannot replace block {i} ({model.block_info[i].name}): {e}") from None
    removed = added = 0
    for i, block in built.items():
        removed += sum(p.numel() for p in model.blocks[i].parameters() if p.requires_grad)
        added += sum(p.numel() for p in block.parameters())
        model.blocks[i] = block
    report = ReplacementReport(
        replaced=[(i, model.block_info[i].name) for i in chosen],
        total_blocks=len(model.blocks),
        interval=None if ids is not None else interval,
        trainable_before=before,
        trainable_after=count_parameters(model, trainable_only=True),
        removed=removed,
        added=added,
        options=options,
    )
    log.info("%s", report)
    if not chosen:
        log.warning(
            "Replacement Learning replaced no block of %s: no block is eligible (spec §2.2). "
            "Try adapter=True (--replace-adapter) to allow blocks next to a stage transition.",
            type(model).__name__,
        )
    return report


def export_model(model: nn.Module) -> nn.Module:
    """A plain copy of ``model`` with every replaced block materialised (spec §1.3 "Inference and export").

    The copy holds no :class:`ReplacedBlock`, and its outputs equal ``model``'s in eval mode.
    ``model`` itself is not changed.

    - ``surrogate="full"``: its ``state_dict`` keys equal the original model's, so the checkpoint
      loads into a freshly built model without leanvision's method code.
    - ``surrogate="lite"``: each replaced block becomes the lite block, a ``torch.fx.GraphModule`` of
      plain torch layers with its own keys (``blocks.i.conv.weight``, ...). ``torch.save`` of the
      whole exported model loads without leanvision's method code; a bare state_dict loads into
      ``export_model`` of a model rebuilt with the same options (see :mod:`.lite`).
    """
    return materialize_replaced(copy.deepcopy(model))
