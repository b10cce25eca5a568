"""Cutting a block list into K gradient-isolated modules (spec §1.3, §1.4).

A *piece* is the stem (index -1) or one body block (index 0..N-1). A split is a list of modules,
each a run of consecutive pieces. The published tables are written with module end points in the
models' "s.l" block names; where no table exists the pieces are balanced by count or by measured
activation memory.

K labelling (§1.4): the MLAAN group counts the stem as a layer, so its per-block "K=16" on
ResNet-32 is code key 15 (15 modules, stem merged into the first) and "K=55" on ResNet-110 is code
key 54; "K=34" on ResNet-101 is code key 33. The InfoPro/DGL baseline table (``configs.py``) has a
real key 16 on ResNet-32 that isolates the stem. ``modules=`` accepts the group's label and the code
key; :class:`Split` records both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

STEM = -1

# Architectures are recognised by their block layout (stage depths, final width), never by class.
_ARCHS = {
    ((5, 5, 5), 64): "resnet32",
    ((18, 18, 18), 64): "resnet110",
    ((3, 4, 6, 3), 512): "resnet34",
    ((3, 4, 23, 3), 2048): "resnet101",
}

# InfoPro's configs.py (also the MLAAN repo's baseline table): cut points = block after which a
# cut is made; "stem" = cut right after the stem. ResNet-110 K=32/54 come from config2 below.
_CUTS = {
    "resnet32": {
        2: "2.1",
        3: "1.4 2.4",
        4: "1.2 2.1 3.0",
        8: "1.0 1.2 1.4 2.1 2.3 3.0 3.2",
        16: "stem 1.0 1.1 1.2 1.3 1.4 2.0 2.1 2.2 2.3 2.4 3.0 3.1 3.2 3.3",
    },
    "resnet110": {
        2: "2.8",
        3: "1.17 2.17",
        4: "1.11 2.7 3.3",
        8: "1.4 1.11 2.0 2.7 2.14 3.3 3.10",
        16: "1.1 1.4 1.7 1.10 1.13 1.16 2.1 2.4 2.7 2.11 2.15 3.1 3.5 3.9 3.13",
        32: "1.1 1.2 1.4 1.5 1.7 1.9 1.11 1.13 1.14 1.16 1.17 2.1 2.2 2.4 2.5 2.7 2.9 2.11 2.13 2.14 "
        "2.16 2.17 3.1 3.3 3.4 3.6 3.7 3.9 3.11 3.13 3.15",
    },
}
# InfoPro* "balanced memory" splits, ResNet-110 (CIFAR-10; STL-10 differs only at K=3).
_BALANCED = {
    "cifar10": {2: "1.14", 3: "1.9 2.2", 4: "1.6 1.14 2.8"},
    "stl10": {2: "1.14", 3: "1.8 2.1", 4: "1.6 1.14 2.8"},
}

# Per-block splits with the stem merged (MLAAN config2 15/54, ImageNet configs 16/33), by code key.
_PER_BLOCK_KEYS = {"resnet32": 15, "resnet110": 54, "resnet34": 16, "resnet101": 33}
# Keys the spec lists for MLAAN's own config2.py.
_CONFIG2_KEYS = {"resnet32": {2, 4, 8, 15}, "resnet110": {16, 32, 54}}
# The group's label -> code key, where they differ (§1.4).
_LABELS = {"resnet32": {16: 15}, "resnet110": {55: 54}, "resnet101": {34: 33}}
TABLE_NAMES = (*_ARCHS.values(), "infopro*", "infopro*-stl10")
SPLIT_WORDS = ("auto", "table", "blocks", "memory", *TABLE_NAMES)


@dataclass(frozen=True)
class Split:
    """A resolved split.

    Attributes:
        modules: piece indices of each module (``-1`` is the stem), in order.
        source: where it came from ("table resnet32", "balanced blocks", ...).
        code_key: the authors' config key, when a table was used.
        label: the K the user asked for (the group's labelling).
    """

    modules: tuple[tuple[int, ...], ...]
    source: str
    code_key: int | None
    label: int | None
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.modules)

    @property
    def stem_alone(self) -> bool:
        return self.modules[0] == (STEM,)

    def describe(self) -> str:
        def span(m):
            a, b = (self.names[i + 1] for i in (m[0], m[-1]))
            return a if a == b else f"{a}..{b}"

        stem = "stem isolated" if self.stem_alone else "stem merged into module 0"
        key = f", code key {self.code_key}" if self.code_key is not None else ""
        label = f"K={self.label} -> " if self.label is not None and self.label != len(self) else ""
        return f"{label}{len(self)} modules ({self.source}{key}; {stem}): " + " | ".join(
            span(m) for m in self.modules
        )


def arch_of(model: nn.Module) -> str | None:
    """The table architecture ``model``'s block layout matches, or None."""
    depths: dict[int, int] = {}
    for b in model.block_info:
        depths[b.stage] = depths.get(b.stage, 0) + 1
    key = (tuple(depths[s] for s in sorted(depths)), model.block_info[-1].out_channels)
    return _ARCHS.get(key)


def _from_ends(ends: list[int], n: int) -> tuple[tuple[int, ...], ...]:
    mods, start = [], STEM
    for e in ends:
        mods.append(tuple(range(start, e + 1)))
        start = e + 1
    return tuple(mods)


def _looks_like_block(token: str) -> bool:
    """"stem" or a block name "s.l" (digits around one dot)."""
    stage, dot, index = token.partition(".")
    return token == "stem" or (dot == "." and stage.isdigit() and index.isdigit())


def _parse_cuts(text: str, names: list[str], n: int) -> list[int]:
    index = {name: i for i, name in enumerate(names)}
    ends = []
    for tok in text.replace(",", " ").split():
        if tok == "stem":
            ends.append(STEM)
        elif tok in index:
            ends.append(index[tok])
        else:
            raise ValueError(
                f"split names block {tok!r}, which this model does not have (blocks {names[0]}..{names[-1]})"
            )
    if ends[-1] != n - 1:
        ends.append(n - 1)
    if any(b <= a for a, b in zip(ends, ends[1:])):
        raise ValueError(f"split end points {text!r} are not in increasing block order")
    return ends


def balanced_runs(weights: list[float], k: int) -> list[int]:
    """Cut items with ``weights`` into ``k`` contiguous non-empty runs minimising the heaviest run; returns
    each run's length. Of equally heavy cuts, the one with the shorter earlier runs is chosen.

    Used for modules (pieces into modules) and for pipeline stages (modules into stages).
    """
    n = len(weights)
    prefix = [0.0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    inf = float("inf")
    # best[j][i]: minimal max-run cost of items[i:] cut into j runs; choose[j][i]: first run's end.
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    choose = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][n] = 0.0
    for j in range(1, k + 1):
        for i in range(n - j, -1, -1):
            for e in range(i + 1, n - j + 2):
                cost = max(prefix[e] - prefix[i], best[j - 1][e])
                if cost < best[j][i]:
                    best[j][i], choose[j][i] = cost, e
    runs, i = [], 0
    for j in range(k, 0, -1):
        runs.append(choose[j][i] - i)
        i = choose[j][i]
    return runs


def balanced_ends(weights: list[float], k: int) -> list[int]:
    """Cut pieces with ``weights`` (stem first) into ``k`` runs minimising the heaviest run.

    Returns each run's end as a block index (-1 = the stem alone).
    """
    ends, end = [], 0
    for n in balanced_runs(weights, k):
        end += n
        ends.append(end - 2)  # piece end-1 is block end-2
    return ends


def piece_memory(model: nn.Module, image_size: int) -> list[float]:
    """Saved-activation bytes of each piece (stem first), from one train-mode forward at batch 2.

    BN running statistics are restored afterwards, so measuring does not change the model.
    """
    from ...ops.saved_tensors import SavedTensorMeter

    param = next(model.parameters())
    buffers = [b.clone() for b in model.buffers()]
    x = torch.zeros(2, 3, image_size, image_size, device=param.device, dtype=param.dtype)
    out = []
    try:
        for piece in [model.stem, *model.blocks]:
            with SavedTensorMeter(exclude=model) as m:
                x = piece(x.detach())
            out.append(float(m.peak_bytes) or 1.0)
    finally:
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
    return out


def resolve_split(
    model: nn.Module,
    modules: int | None,
    split: str | None = None,
    family: str = "baseline",
    image_size: int | None = None,
) -> Split:
    """Choose the modules for ``model``.

    Args:
        model: a block-list model (``stem``, ``blocks``, ``block_info``).
        modules: K in the group's labelling (or the authors' code key). None: per-block.
        split: None or "auto" (published table if one exists, else balanced block counts),
            "table" (a table must exist), "blocks", "memory" (balance measured activation bytes),
            a table name ("resnet32", "resnet110", "resnet34", "resnet101", "infopro*",
            "infopro*-stl10"), or explicit end blocks such as "1.2,2.1,3.0" ("stem" first isolates it).
        family: "baseline" (DGL/InfoPro, ``configs.py``) or "mlaan" (``config2.py``, stem always merged).
    """
    names = [b.name for b in model.block_info]
    n = len(names)
    arch = arch_of(model)
    kmax = n + 1
    split = split or "auto"
    if modules is not None and not 1 <= modules <= kmax:
        raise ValueError(
            f"modules={modules} is out of range for a model with {n} blocks: valid K is 1..{kmax} "
            f"({kmax} = one block per module, counting the stem as in the MLAAN group's labelling)"
        )
    all_names = ("stem", *names)

    if split not in SPLIT_WORDS:
        if not any(_looks_like_block(t) for t in split.replace(",", " ").split()):
            raise ValueError(
                f"split {split!r} is not a split name or a list of end blocks; valid names: "
                f"{', '.join(SPLIT_WORDS)} (blocks = balanced block counts, memory = balanced "
                f"activation memory), or end blocks such as '1.2,2.1,3.0'"
            )
        ends = _parse_cuts(split, names, n)
        if modules is not None and len(ends) != modules:
            raise ValueError(f"split {split!r} has {len(ends)} modules but modules={modules}")
        return Split(_from_ends(ends, n), "explicit", None, modules, all_names)

    k = kmax if modules is None else modules
    want_table = split not in ("blocks", "memory")
    if want_table:
        table_arch = arch if split in ("auto", "table") else split
        if split.startswith("infopro*"):
            table_arch = "resnet110"
        if split not in ("auto", "table") and table_arch != arch:
            raise ValueError(
                f"split table {split!r} is for {table_arch}, but this model's block layout is "
                f"{arch or 'not a published architecture'}; use split='blocks' or 'memory'"
            )
        found = _table_lookup(arch, k, split, family, names, n) if arch else None
        if found is not None:
            key, ends, source = found
            return Split(_from_ends(ends, n), source, key, modules, all_names)
        if split != "auto":
            valid = sorted(_table_keys(arch, split, family)) if arch else []
            raise ValueError(
                f"no published split for K={k} on {arch or 'this model'} (table {split!r}); "
                f"valid K: {valid or 'none'}; use split='blocks' or 'memory' for other K"
            )
    # General rule: pieces are the stem plus every block. MLAAN keeps the stem merged, so its
    # per-piece K (the group's label N+1) means N modules, one block each (§1.4).
    if family == "mlaan" and k == kmax:
        return Split(_from_ends(list(range(n)), n), "per-block", None, k, all_names)
    if split == "memory":
        ends = balanced_ends(piece_memory(model, image_size or model.image_size), k)
        return Split(_from_ends(ends, n), "balanced activation memory", None, k, all_names)
    # Equal piece counts; the longer modules go last, where ResNet blocks hold fewer activations.
    # A stem-only first module is kept for K = N+1 alone: otherwise the blocks are balanced and
    # the stem joins the first module, as in every table but the per-piece ones.
    pieces, offset = (kmax, 2) if kmax // k > 1 or kmax % k == 0 else (n, 1)
    sizes = [pieces // k + (j >= k - pieces % k) for j in range(k)]
    ends = [sum(sizes[: j + 1]) - offset for j in range(k)]
    return Split(_from_ends(ends, n), "balanced block counts", None, k, all_names)


def _table_keys(arch: str, split: str, family: str) -> set[int]:
    if split.startswith("infopro*"):
        return (
            set(_BALANCED["stl10" if split.endswith("stl10") else "cifar10"])
            if arch == "resnet110"
            else set()
        )
    keys = set(_CUTS.get(arch, {})) | {_PER_BLOCK_KEYS[arch]}
    if family == "mlaan" and arch == "resnet32":
        keys.discard(16)  # config2 has no stem-isolated split
    labels = {lab for lab, key in _LABELS.get(arch, {}).items() if key in keys}
    return keys | labels | {1}


def _table_lookup(arch, k, split, family, names, n):
    """(code key, module ends, source) from the tables, or None."""
    if k == 1:
        return 1, [n - 1], f"table {arch}"
    if split.startswith("infopro*"):
        if arch != "resnet110":
            return None
        table = _BALANCED["stl10" if split.endswith("stl10") else "cifar10"]
        return (k, _parse_cuts(table[k], names, n), f"table {split}") if k in table else None
    cuts = _CUTS.get(arch, {})
    per_block = _PER_BLOCK_KEYS[arch]
    baseline_16 = family == "baseline" and arch == "resnet32" and k == 16
    key = k if baseline_16 else _LABELS.get(arch, {}).get(k, k)
    if arch in ("resnet34", "resnet101"):
        source = f"table {arch} (ImageNet configs.py)"
    elif family == "mlaan" and key in _CONFIG2_KEYS[arch]:
        source = f"table {arch} (config2.py)"
    else:  # the baselines' table, which config2.py repeats where the spec lists no entry of its own
        source = f"table {arch} (configs.py)"
    if key == per_block:
        return key, list(range(n)), source
    if key in cuts and not (family == "mlaan" and key == 16 and arch == "resnet32"):
        return key, _parse_cuts(cuts[key], names, n), source
    return None
