"""The ``replacement`` training method: :func:`apply_replacement`, then plain end-to-end training."""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .._registry import register_method
from ..base import Backward, Method
from .transform import apply_replacement, export_model


class ReplacementLearning(Method):
    """Replacement Learning (Zhang et al., arXiv 2410.01239): selected blocks are rebuilt on every
    forward as a·θ(prev) + b·θ(next) and keep only the two scalars (spec §1).

    Construction replaces the blocks of ``model`` in place and prints (on rank 0) which blocks were
    replaced and the trainable-parameter count before/after; ``self.report`` keeps it.

    Args:
        model: a block-list model.
        interval: k >= 2, every k-th eligible block per stage (default 2 when ``blocks`` is None).
        blocks: explicit blocks (0-based positions in ``model.blocks`` or "s.l" names; a list or a
            comma-separated string like "3,5,7"). Give ``interval`` or ``blocks``, not both.
        init / detach_neighbors / convex / adapter: see :func:`apply_replacement`.
        surrogate: ``"full"`` (default; v1) or ``"lite"``: a cheaper replaced block (one fused conv
            + BN + identity per BasicBlock, the fused MLP sub-layer alone per ViT block), our
            reconstruction of RepL v2 (spec §2.5; see :mod:`.lite`).
        verbose: print the report.
    """

    name = "replacement"

    def __init__(
        self,
        model: nn.Module,
        interval: int | None = None,
        blocks: str | list[int | str] | None = None,
        init: tuple[float, float] | str = (0.5, 0.5),
        detach_neighbors: bool = False,
        convex: bool = False,
        adapter: bool = False,
        surrogate: str = "full",
        verbose: bool = True,
    ):
        super().__init__(model)
        if interval is not None and blocks is not None:
            raise ValueError("give either a replace interval or an explicit block list, not both")
        if isinstance(blocks, str):
            blocks = [b for b in blocks.split(",") if b.strip()]
        if isinstance(init, str):
            init = tuple(float(v) for v in init.split(","))
        if len(init) != 2:
            raise ValueError(f"init must be two numbers a,b, got {init!r}")
        k = 2 if interval is None else interval
        self.report = apply_replacement(model, k, blocks, tuple(init), detach_neighbors, convex, adapter, surrogate)
        if verbose and (not dist.is_available() or not dist.is_initialized() or dist.get_rank() == 0):
            print(self.report)

    def train_step(
        self, images: torch.Tensor, targets: torch.Tensor, backward: Backward
    ) -> dict[str, torch.Tensor]:
        logits = self.model(images)
        loss = F.cross_entropy(logits, targets)
        backward(loss)
        return {"loss": loss.detach(), "logits": logits.detach()}

    def export_model(self) -> nn.Module:
        """A plain model: replaced blocks materialised, state_dict keys as the original model's."""
        return export_model(self.inference_model())

    def describe(self) -> str:
        r = self.report
        lite = ", lite surrogate" if r.options.get("surrogate") == "lite" else ""
        return (
            f"replacement{lite}: {len(r.replaced)}/{r.total_blocks} blocks ({', '.join(r.names) or 'none'}), "
            f"trainable {r.trainable_before:,} -> {r.trainable_after:,} ({100 * r.reduction:.1f}% fewer)"
        )


@register_method("replacement")
def replacement(model: nn.Module, interval: int | None = None, blocks=None, **options) -> ReplacementLearning:
    """Builder for the registry: ``create_method("replacement", model, interval=2)``."""
    return ReplacementLearning(model, interval=interval, blocks=blocks, **options)


def add_cli_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the ``--replace-*`` flags; :func:`options_from_args` turns them into builder options."""
    g = parser.add_argument_group("Replacement Learning (--method replacement)")
    ours = "[our choice: the paper is silent]"
    g.add_argument(
        "--replace-interval",
        type=int,
        default=None,
        metavar="K",
        help=f"replace every K-th eligible block per stage (K >= 2; default 2; spec 2.2) {ours}",
    )
    g.add_argument(
        "--replace-blocks",
        default=None,
        metavar="IDS",
        help="explicit blocks to replace instead of an interval: comma-separated 0-based positions "
        f"in the block list or s.l names (e.g. 3,5,7 or 1.1,2.2) {ours}",
    )
    g.add_argument(
        "--replace-init",
        default=None,
        metavar="A,B",
        help=f"initial a,b (default 0.5,0.5; ablation 1,0) {ours}",
    )
    g.add_argument(
        "--replace-detach-neighbors",
        action="store_true",
        default=None,
        help=f"stop-gradient into the neighbours through the fused weights (ablation; off) {ours}",
    )
    g.add_argument(
        "--replace-convex",
        action="store_true",
        default=None,
        help=f"convex form b = 1 - a with a = sigmoid(s) (off) {ours}",
    )
    g.add_argument(
        "--replace-adapter",
        action="store_true",
        default=None,
        help="v2-style shape adapter: slice/tile neighbours of another width so that blocks next to "
        f"a stage transition can be replaced (off; a reconstruction of RepL v2) {ours}",
    )
    g.add_argument(
        "--replace-surrogate",
        choices=["full", "lite"],
        default=None,
        help="what a replaced block computes: full = the whole block with fused weights (default; v1); "
        "lite = a cheaper block: one fused 3x3 conv (prev.conv2, next.conv1) + BN + identity + ReLU per "
        "BasicBlock, the fused MLP sub-layer alone per ViT block (a reconstruction of RepL v2, spec 2.5; "
        f"Bottlenecks are not supported) {ours}",
    )
    return g


def options_from_args(args: argparse.Namespace) -> dict:
    """Builder options from parsed ``--replace-*`` flags (None = method default, dropped by create_method)."""
    return {
        "interval": args.replace_interval,
        "blocks": args.replace_blocks,
        "init": args.replace_init,
        "detach_neighbors": args.replace_detach_neighbors,
        "convex": args.replace_convex,
        "adapter": args.replace_adapter,
        "surrogate": args.replace_surrogate,
    }
