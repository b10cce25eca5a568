"""Replacement Learning as a model transform: swap selected blocks, report, export.

The transform composes with any training method: the ``replacement`` method is this transform plus
end-to-end training, local learning can apply it before cutting the block list into modules, and the
detector's trainer applies it to a detector's block list (its backbone Bottlenecks) before training
with the detection loss.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from torch import nn

from ...models.base import check_block_list
from ...ops.counting import count_parameters
from .block import ReplacedBlock, materialize_replaced
from .select import ineligibility, select_blocks

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

    @property
    def rebuild_options(self) -> dict:
        """What :func:`load_replaced_state` needs to rebuild this replacement on a fresh model (plain data,
        saved with a run's config): the interval, or the explicit block names, and the fusion options."""
        explicit = self.interval is None
        return {"interval": self.interval, "ids": self.names if explicit else None, **self.options}

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
    allow_none: bool = True,
) -> ReplacementReport:
    """Replace blocks of ``model.blocks`` in place by :class:`ReplacedBlock` (spec §1.3, §2.2).

    Args:
        model: a block-list model (``blocks`` and ``block_info``, :func:`~leanvision.models.check_block_list`):
            a classifier, or a detector, whose block list is its backbone's Bottlenecks.
        interval: k >= 2: every k-th eligible block per stage; ignored when ``ids`` is given.
        ids: explicit blocks, 0-based positions in ``model.blocks`` or "s.l" names.
        init: initial (a, b) (spec §1.2: (0.5, 0.5); ablation (1, 0)).
        detach_neighbors: stop-gradient into the neighbours through the fusion (ablation).
        convex: b = 1 − a, a = sigmoid(s) (our option).
        adapter: v2-style slicing/tiling for neighbours of another width (spec §2.4, our option).
        surrogate: ``"full"`` (default; v1, spec §1.3) or ``"lite"`` (a cheaper replaced block, our
            reconstruction of RepL v2, spec §2.5; see :mod:`.lite`). Selects nothing differently.
        allow_none: when no block is eligible, log a warning and leave the model as it is (True, default)
            or raise a ``ValueError`` that lists every block and why it is not eligible (False).

    Returns:
        A :class:`ReplacementReport` (also logged at INFO level).

    Raises:
        ValueError: for an ineligible explicit block, a block the surrogate does not support (the
            message names the block), or no eligible block with ``allow_none=False``. The model is left
            unchanged then.
    """
    check_block_list(model)
    before = count_parameters(model, trainable_only=True)
    chosen = select_blocks(model, interval, ids, adapter)
    if not chosen and not allow_none:
        raise ValueError(_none_eligible(model, adapter))
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


def _none_eligible(model: nn.Module, adapter: bool) -> str:
    """The error for a model with no eligible block: every block and why, and what to try."""
    infos = model.block_info
    stages: dict[int, int] = {}
    for info in infos:
        stages[info.stage] = stages.get(info.stage, 0) + 1
    per_stage = ", ".join(f"stage {s}: {n}" for s, n in stages.items())
    lines = [f"{info.name}: {why}" for info, why in zip(infos, ineligibility(model, adapter))]
    hint = ("" if adapter else "\nPass adapter=True (--replace-adapter) to let a block borrow from neighbours of "
            "another width or across other layers (spec §2.4).")
    return (f"Replacement Learning found no eligible block among the {len(infos)} blocks of this "
            f"{type(model).__name__} ({per_stage}): a replaced block needs a same-shape neighbour on both sides "
            "(spec §2.2).\n  " + "\n  ".join(lines) + hint)


def load_replaced_state(model: nn.Module, state_dict: dict, options: dict) -> nn.Module:
    """Load a state dict trained with replacement into a freshly built ``model``; returns the plain export.

    Args:
        model: built from the same spec as the trained model, no replacement applied yet.
        state_dict: the trained model's (or its EMA's) state dict, with ``...a``/``.b``/``.template.*`` keys.
        options: :attr:`ReplacementReport.rebuild_options` as saved with the run ("interval", "ids" and the
            fusion options; a missing "surrogate" means "full").

    Returns:
        :func:`export_model` of the loaded model: its ``state_dict`` keys are a fresh model's (for the
        "full" surrogate) and its eval outputs equal the trained model's.
    """
    opts = dict(options)
    interval, ids = opts.pop("interval", 2), opts.pop("ids", None)
    if "init" in opts:
        opts["init"] = tuple(opts["init"])
    apply_replacement(model, interval=interval, ids=ids, allow_none=False, **opts)
    model.load_state_dict(state_dict)
    return export_model(model)


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
