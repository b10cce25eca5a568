"""Replacement Learning on a detector's backbone (specs/replacement_learning.md applied to YOLOv8 / GSO-YOLO).

Which blocks are candidates. The detector's "block list" (DESIGN.md) is its backbone, but the backbone
rows are not interchangeable: Conv rows change width and stride, and the C2f rows differ from each other
in width *and* in their number of Bottlenecks (so their tensors do not even share names). The units of
equal shape are the Bottlenecks inside one C2f's ``.m`` list (c -> c, 3×3 + 3×3, stride 1). So:

* **default (v1 rule, spec §2.2)**: a Bottleneck is eligible when its previous and next Bottleneck are in
  the same C2f (it is neither the first nor the last of its list) — then all three have identical
  shapes. Every k-th eligible Bottleneck of each C2f is replaced, starting at the first eligible one,
  never two adjacent ones. Backbone C2f repeats are round(3|6|6|3 · depth): n/s 1,2,2,1 (no Bottleneck
  has two neighbours, **no candidates**), m 2,4,4,2 (k=2: 2 replaced), l/x 3,6,6,3 (k=2: 6 replaced).
* **adapter=True (v2-style, spec §2.4, our design)**: the backbone's Bottlenecks are read as one chain
  in forward order, and the first/last Bottleneck of a C2f may take the nearest Bottleneck of the
  previous/next backbone C2f as its neighbour; tensors of another width are sliced or tiled by
  :func:`~leanvision.methods.replacement.adapt`. This gives candidates at every scale (n/s, k=2: the
  first Bottleneck of C2f rows 4 and 6). The very first and last backbone Bottleneck are never replaced.

The neck C2fs (shortcut=False) belong to the detector's head and are left alone. The GOM/SCM rows have
no same-class neighbours. A replaced Bottleneck keeps its own BatchNorm statistics (spec §1.2).

Public API: :func:`apply_detector_replacement`, :func:`export_detector`, :func:`load_replaced_state`,
:func:`detector_candidates`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from ..engine.meter import count_parameters
from ..methods.replacement import ReplacedBlock, export_model, replace_module
from ..methods.replacement.block import shape_mismatch
from ..methods.replacement.transform import SavingsReport
from ..models.yolo import C2f, DetectionModel

log = logging.getLogger("leanvision.detection.replacement")


@dataclass
class Slot:
    """One backbone Bottleneck: ``model.model[row].m[index]``, named "row.m.index" (its state_dict prefix)."""

    row: int
    index: int
    c2f: C2f

    @property
    def name(self) -> str:
        return f"{self.row}.m.{self.index}"

    @property
    def module(self) -> nn.Module:
        return self.c2f.m[self.index]


def _slots(model: DetectionModel) -> list[Slot]:
    """Every Bottleneck of the backbone's C2f rows, in forward order."""
    return [Slot(row, j, block) for row, block in enumerate(model.backbone_blocks()) if isinstance(block, C2f)
            for j in range(len(block.m))]


def _neighbours(slots: list[Slot], i: int, adapter: bool) -> tuple[Slot, Slot] | str:
    """The (previous, next) Bottleneck of ``slots[i]``, or why it has none."""
    s = slots[i]
    if i == 0 or i == len(slots) - 1:
        return f"it is the {'first' if i == 0 else 'last'} Bottleneck of the backbone"
    prev, nxt = slots[i - 1], slots[i + 1]
    if not adapter and (prev.row != s.row or nxt.row != s.row):
        where = "first" if prev.row != s.row else "last"
        return (f"it is the {where} of the {len(s.c2f.m)} Bottleneck(s) of C2f row {s.row}, so it has no "
                f"same-shape neighbour on that side")
    return prev, nxt


def detector_candidates(model: DetectionModel, adapter: bool = False) -> list[tuple[str, str | None]]:
    """(name, None if eligible else the reason) for every backbone Bottleneck, in forward order."""
    slots = _slots(model)
    out = []
    for i, s in enumerate(slots):
        if isinstance(s.module, ReplacedBlock):
            out.append((s.name, "it is already replaced"))
            continue
        nb = _neighbours(slots, i, adapter)
        out.append((s.name, nb if isinstance(nb, str) else shape_mismatch(nb[0].module, s.module, nb[1].module,
                                                                           adapter)))
    return out


@dataclass
class DetectorReplacementReport(SavingsReport):
    """What :func:`apply_detector_replacement` did: the :class:`SavingsReport` figures (options:
    interval, adapter and the fusion options, what :func:`load_replaced_state` needs) and

    Attributes:
        replaced: "row.m.index" names of the replaced Bottlenecks (state_dict prefixes under ``model.``).
        candidates: eligible Bottlenecks before selection.
        bottlenecks: Bottlenecks in the backbone.
    """

    replaced: list[str]
    candidates: list[str]
    bottlenecks: int

    def __str__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return (f"Replacement Learning (detector backbone; {opts}): {len(self.replaced)}/{self.bottlenecks} "
                f"Bottlenecks replaced ({len(self.candidates)} eligible): {', '.join(self.replaced)}\n"
                f"{self.savings()}")


def _select(model: DetectionModel, interval: int | None, ids: Iterable[str] | None, adapter: bool) -> list[int]:
    why = detector_candidates(model, adapter)
    names = [n for n, _ in why]
    slots = _slots(model)
    if ids is not None:
        chosen = []
        for raw in ids:
            if raw not in names:
                raise ValueError(f"unknown backbone Bottleneck {raw!r}; valid names: {', '.join(names)}")
            chosen.append(names.index(raw))
        chosen = sorted(set(chosen))
        errors = [f"{names[i]}: {why[i][1]}" for i in chosen if why[i][1]]
        errors += [f"{names[i]} and {names[j]} are adjacent: two replaced blocks are never neighbours (spec §2.2)"
                   for i, j in zip(chosen, chosen[1:]) if j == i + 1]
        if errors:
            ok = ", ".join(n for n, w in why if w is None) or "none"
            raise ValueError("cannot replace the requested Bottlenecks:\n  " + "\n  ".join(errors)
                             + f"\neligible: {ok}")
        return chosen
    if interval is None or int(interval) < 2:
        raise ValueError(f"replace interval must be an integer >= 2 (spec §2.2), got {interval}")
    k, chosen, first = int(interval), [], {}
    for i, (_, reason) in enumerate(why):
        if reason is not None:
            continue
        start = first.setdefault(slots[i].row, i)  # k counts within each C2f, like stages in §2.2
        if (i - start) % k or (i - 1) in chosen:
            continue
        chosen.append(i)
    return chosen


def apply_detector_replacement(
    model: DetectionModel,
    interval: int | None = 2,
    adapter: bool = False,
    ids: Iterable[str] | None = None,
    init: tuple[float, float] = (0.5, 0.5),
    detach_neighbors: bool = False,
    convex: bool = False,
    verbose: bool = True,
) -> DetectorReplacementReport:
    """Replace backbone Bottlenecks of ``model`` in place by :class:`ReplacedBlock` (see the module doc).

    Args:
        model: a :class:`~leanvision.models.yolo.DetectionModel` (YOLOv8 or GSO-YOLO, any scale).
        interval: k >= 2: every k-th eligible Bottleneck of each backbone C2f; ignored when ``ids`` is given.
        adapter: let the first/last Bottleneck of a C2f borrow from the neighbouring C2f's Bottleneck of
            another width (v2-style slicing/tiling, spec §2.4); needed at scales n and s.
        ids: explicit "row.m.index" names (e.g. ``["4.m.1"]``) instead of the interval rule.
        init, detach_neighbors, convex: fusion options of :class:`ReplacedBlock` (spec §1.2).
        verbose: print the report (it is also logged).

    Returns:
        A :class:`DetectorReplacementReport`.

    Raises:
        ValueError: when no Bottleneck is eligible (the message names the scales that have candidates and
            the adapter option), or when ``ids`` names an ineligible one.
    """
    if not isinstance(model, DetectionModel):
        raise TypeError(f"apply_detector_replacement needs a DetectionModel, got {type(model).__name__}; "
                        "for block-list classifiers use leanvision.methods.replacement.apply_replacement")
    slots = _slots(model)
    before = count_parameters(model, trainable_only=True)
    chosen = _select(model, interval, ids, adapter)
    candidates = [n for n, w in detector_candidates(model, adapter) if w is None]
    if not chosen:
        per_row = ", ".join(f"row {r}: {len(b.m)}" for r, b in enumerate(model.backbone_blocks())
                            if isinstance(b, C2f))
        raise ValueError(
            f"Replacement Learning found no eligible Bottleneck in this scale-{model.scale} detector's backbone "
            f"(Bottlenecks per C2f: {per_row}): without the adapter a replaced Bottleneck needs a same-shape "
            "neighbour on both sides inside its C2f, i.e. a C2f of >= 3 Bottlenecks, which the backbone has "
            "from scale m up (m: 2,4,4,2; l/x: 3,6,6,3; n/s: 1,2,2,1). Use scale m, l or x, or pass "
            "adapter=True (--replace-adapter) to let the first/last Bottleneck of a C2f borrow from the "
            "neighbouring C2f's Bottleneck of another width (spec §2.4)."
        )
    options = dict(init=tuple(float(v) for v in init), detach_neighbors=detach_neighbors, convex=convex,
                   adapter=adapter)
    removed = added = 0
    for i in chosen:
        s = slots[i]
        target = s.module
        removed += sum(p.numel() for p in target.parameters() if p.requires_grad)
        prev = slots[i - 1].module
        nxt = slots[i + 1].module
        block = replace_module(prev, target, nxt, **options)
        added += sum(p.numel() for p in block.parameters())
        s.c2f.m[s.index] = block
    report = DetectorReplacementReport(
        replaced=[slots[i].name for i in chosen], candidates=candidates, bottlenecks=len(slots),
        trainable_before=before, trainable_after=count_parameters(model, trainable_only=True),
        removed=removed, added=added,
        options={"interval": None if ids is not None else interval, "ids": [slots[i].name for i in chosen]
                 if ids is not None else None, **options},
    )
    log.info("%s", report)
    if verbose:
        print(report)
    return report


def export_detector(model: nn.Module) -> nn.Module:
    """A plain copy of ``model`` with every replaced Bottleneck materialised (fused weights stored).

    Its ``state_dict`` keys equal a freshly built detector's and its eval outputs equal ``model``'s.
    """
    return export_model(model)


def load_replaced_state(model: DetectionModel, state_dict: dict, options: dict) -> DetectionModel:
    """Load a checkpoint trained with replacement into a freshly built ``model``; returns the plain export.

    Args:
        model: built from the same detector spec (no replacement applied yet).
        state_dict: the trained model's (or its EMA's) state dict, with ``...m.j.a``/``.b``/``.template.*`` keys.
        options: :attr:`DetectorReplacementReport.options` (saved with the run's config).
    """
    opts = dict(options)
    interval, ids = opts.pop("interval", 2), opts.pop("ids", None)
    opts["init"] = tuple(opts.get("init", (0.5, 0.5)))
    apply_detector_replacement(model, interval=interval, ids=ids, verbose=False, **opts)
    model.load_state_dict(state_dict)
    return export_detector(model)
