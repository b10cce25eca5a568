"""YOLOv8 and GSO-YOLO detectors in plain PyTorch, built from ultralytics-style layer tables.

Written from the facts in specs/gso_yolo.md §5 (no ultralytics code or dependency). A model is a table
of rows ``[from, repeats, module, args]``: ``from`` is -1 (previous row) or a list of earlier row
indices, ``repeats`` is scaled by the depth factor, and the first arg of Conv/C2f/SPPF is a base width
scaled by the width factor. The module names (``model.N.cv1.conv.weight`` ...) follow the ultralytics
layout so user-supplied YOLOv8 state dicts can be mapped.

GSO-YOLO (arXiv 2407.00906) is the YOLOv8 table plus two rows: GOM at index 9 before SPPF and SCM at
index 11 after it (specs/gso_yolo.md §1.2). Switching a module off turns its row into ``Identity`` so
every ablation keeps the same indices and ``from`` wiring.

Build with ``create_detector("yolov8n", nc=80)`` or ``create_detector("gso-yolo-s", nc=15, gom=False)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from leanvision.models.base import BlockInfo, BlockSlots
from leanvision.models.gso import GOM, SCM
from leanvision.ops.boxes import dist2bbox, make_anchors
from leanvision.ops.counting import count_parameters, model_gflops  # noqa: F401  (re-exported for the detector's callers)
from leanvision.registry import Registry

# [depth, width, max_channels] per scale (params / GFLOPs at 640, 80 classes, as ultralytics reports them)
SCALES: dict[str, tuple[float, float, int]] = {
    "n": (0.33, 0.25, 1024),  # 3,157,200 params, 8.9 GFLOPs
    "s": (0.33, 0.50, 1024),  # 11,166,560 params, 28.8 GFLOPs
    "m": (0.67, 0.75, 768),  # 25,902,640 params, 79.3 GFLOPs
    "l": (1.00, 1.00, 512),  # 43,691,520 params, 165.7 GFLOPs
    "x": (1.00, 1.25, 512),  # ~68.2 M params
}

# ---------------------------------------------------------------- building blocks


class Conv(nn.Module):
    """Conv2d (no bias, "same" padding) -> BatchNorm2d (eps 1e-3, momentum 0.03) -> SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        if not torch.is_grad_enabled() and isinstance(self.act, nn.SiLU):
            return F.silu(y, inplace=True)  # y is fresh and no graph keeps it: reuse its memory (val, predict)
        return self.act(y)  # out of place: an in-place SiLU on a tensor autograd saved would cost a copy


class Bottleneck(nn.Module):
    """Two 3×3 Convs, plus the input when ``shortcut`` and the widths match."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 1.0):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 3)
        self.cv2 = Conv(c_, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block with two convs: split cv1's output, chain n Bottlenecks on one half, concat all, cv2.

    Args:
        c1, c2: in/out widths. n: Bottlenecks. shortcut: residual Bottlenecks (backbone True, neck False).
        e: hidden width ratio, c = c2·e.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))  # (B, (2+n)·c, H, W) -> (B, c2, H, W)


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: cv1 (c1 -> c1/2, SiLU as in original v8), 3 chained k×k max-pools."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Concat(nn.Module):
    """Concatenate a list of maps along channels."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


class DFL(nn.Module):
    """Distribution Focal Loss decoder: softmax over reg_max bins, expectation Σ i·p_i (GFL, Li et al. 2020).

    The expectation is a fixed 1×1 conv with weights 0..reg_max-1. It stays a (frozen) parameter, not a
    buffer, because the reference parameter counts (3,157,200 for YOLOv8n) include its 16 weights.
    """

    def __init__(self, reg_max: int = 16):
        super().__init__()
        self.reg_max = reg_max
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape  # (B, 4·reg_max, A) -> (B, 4, A) distances in bins
        return self.conv(x.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class Detect(nn.Module):
    """Anchor-free decoupled head of YOLOv8 (legacy v8 class branch with full 3×3 Convs).

    Per level: box branch Conv3×3 -> Conv3×3 -> Conv2d 1×1 (4·reg_max), class branch Conv3×3 ->
    Conv3×3 -> Conv2d 1×1 (nc). Biases start as in original YOLOv8: box 1.0, class
    log(5 / nc / (640 / stride)²), i.e. about 5 objects per 640² image at the start.

    Args:
        nc: classes. ch: input widths of P3/P4/P5. strides: their strides. reg_max: DFL bins per side.
    """

    def __init__(self, nc: int, ch: list[int], strides: list[int], reg_max: int = 16):
        super().__init__()
        self.nc, self.nl, self.reg_max, self.no = nc, len(ch), reg_max, nc + 4 * reg_max
        c2, c3 = max(16, ch[0] // 4, 4 * reg_max), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(c, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for c in ch
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(Conv(c, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for c in ch
        )
        self.dfl = DFL(reg_max)
        self.level_strides = [float(s) for s in strides]  # python floats: decoding needs no device sync
        self.register_buffer("stride", torch.tensor(strides, dtype=torch.float), persistent=False)
        with torch.no_grad():
            for box, cls, s in zip(self.cv2, self.cv3, strides):
                box[-1].bias.fill_(1.0)
                cls[-1].bias.fill_(math.log(5 / nc / (640 / s) ** 2))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.cat((box(x), cls(x)), 1) for x, box, cls in zip(xs, self.cv2, self.cv3)]

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """Raw maps (B, 4·reg_max+nc, H, W) per level -> (B, 4+nc, A): xywh pixels, sigmoid scores."""
        b = raw[0].shape[0]
        x = torch.cat([r.view(b, self.no, -1) for r in raw], 2)  # (B, no, A)
        box, cls = x.split((4 * self.reg_max, self.nc), 1)
        anchors, strides = make_anchors(raw, self.level_strides, 0.5)  # (A, 2), (A, 1) in grid units
        xywh = dist2bbox(self.dfl(box), anchors.T.unsqueeze(0), xywh=True, dim=1) * strides.T
        return torch.cat((xywh, cls.sigmoid()), 1)


# ---------------------------------------------------------------- layer tables

# Rows: [from, repeats, module, args]. Comments give the row index and stride (P3/8 = stride 8).
YOLOV8_TABLE: dict[str, list] = {
    "backbone": [
        [-1, 1, "Conv", [64, 3, 2]],  # 0-P1/2
        [-1, 1, "Conv", [128, 3, 2]],  # 1-P2/4
        [-1, 3, "C2f", [128, True]],  # 2
        [-1, 1, "Conv", [256, 3, 2]],  # 3-P3/8
        [-1, 6, "C2f", [256, True]],  # 4
        [-1, 1, "Conv", [512, 3, 2]],  # 5-P4/16
        [-1, 6, "C2f", [512, True]],  # 6
        [-1, 1, "Conv", [1024, 3, 2]],  # 7-P5/32
        [-1, 3, "C2f", [1024, True]],  # 8
        [-1, 1, "SPPF", [1024, 5]],  # 9
    ],
    "head": [
        [-1, 1, "Upsample", [2]],  # 10
        [[-1, 6], 1, "Concat", []],  # 11 cat backbone P4
        [-1, 3, "C2f", [512]],  # 12
        [-1, 1, "Upsample", [2]],  # 13
        [[-1, 4], 1, "Concat", []],  # 14 cat backbone P3
        [-1, 3, "C2f", [256]],  # 15 (P3/8 out)
        [-1, 1, "Conv", [256, 3, 2]],  # 16
        [[-1, 12], 1, "Concat", []],  # 17 cat head P4
        [-1, 3, "C2f", [512]],  # 18 (P4/16 out)
        [-1, 1, "Conv", [512, 3, 2]],  # 19
        [[-1, 9], 1, "Concat", []],  # 20 cat head P5 (SPPF)
        [-1, 3, "C2f", [1024]],  # 21 (P5/32 out)
        [[15, 18, 21], 1, "Detect", ["nc"]],  # 22
    ],
}


def gso_yolo_table(
    gom: bool = True,
    scm: bool = True,
    gom_groups: int = 1,
    gom_sigmoid: bool = True,
    scm_groups: int = 8,
    p5_lateral: str = "scm",
) -> dict[str, list]:
    """GSO-YOLO's table: the YOLOv8 rows plus GOM (row 9) and SCM (row 11), specs/gso_yolo.md §1.2.

    Args:
        gom, scm: ablation switches; a switched-off module's row becomes ``Identity`` (indices unchanged).
        gom_groups, gom_sigmoid: :class:`~leanvision.models.gso.GOM` options (dense conv, sigmoid kept).
        scm_groups: G of :class:`~leanvision.models.gso.SCM`.
        p5_lateral: which output the P5 lateral concat (row 22) takes: ``"scm"`` (row 11, default) or
            ``"sppf"`` (row 10, the wiring ablation). The top-down path (row 12) always takes row 11.
    """
    if p5_lateral not in ("scm", "sppf"):
        raise ValueError(f"p5_lateral must be 'scm' or 'sppf', got {p5_lateral!r}")
    gom_row = [-1, 1, "GOM", {"reduction": 4, "groups": gom_groups, "channel_sigmoid": gom_sigmoid}]
    scm_row = [-1, 1, "SCM", {"groups": scm_groups}]
    return {
        "backbone": [
            [-1, 1, "Conv", [64, 3, 2]],  # 0-P1/2
            [-1, 1, "Conv", [128, 3, 2]],  # 1-P2/4
            [-1, 3, "C2f", [128, True]],  # 2
            [-1, 1, "Conv", [256, 3, 2]],  # 3-P3/8
            [-1, 6, "C2f", [256, True]],  # 4
            [-1, 1, "Conv", [512, 3, 2]],  # 5-P4/16
            [-1, 6, "C2f", [512, True]],  # 6
            [-1, 1, "Conv", [1024, 3, 2]],  # 7-P5/32
            [-1, 3, "C2f", [1024, True]],  # 8
            gom_row if gom else [-1, 1, "Identity", []],  # 9 new: GOM (GAM) before SPPF
            [-1, 1, "SPPF", [1024, 5]],  # 10
            scm_row if scm else [-1, 1, "Identity", []],  # 11 new: SCM (EMA) after SPPF
        ],
        "head": [
            [-1, 1, "Upsample", [2]],  # 12 top-down path from the SCM output
            [[-1, 6], 1, "Concat", []],  # 13 cat backbone P4
            [-1, 3, "C2f", [512]],  # 14
            [-1, 1, "Upsample", [2]],  # 15
            [[-1, 4], 1, "Concat", []],  # 16 cat backbone P3
            [-1, 3, "C2f", [256]],  # 17 (P3/8 out)
            [-1, 1, "Conv", [256, 3, 2]],  # 18
            [[-1, 14], 1, "Concat", []],  # 19 cat head P4
            [-1, 3, "C2f", [512]],  # 20 (P4/16 out)
            [-1, 1, "Conv", [512, 3, 2]],  # 21
            [[-1, 11 if p5_lateral == "scm" else 10], 1, "Concat", []],  # 22 P5 lateral
            [-1, 3, "C2f", [1024]],  # 23 (P5/32 out)
            [[17, 20, 23], 1, "Detect", ["nc"]],  # 24
        ],
    }


def _width(c: int, width: float, max_channels: int) -> int:
    """Scale a base width: cap at max_channels, multiply by width, round up to a multiple of 8."""
    return int(math.ceil(min(c, max_channels) * width / 8) * 8)


def _build_row(name: str, args, c_in, n: int, width: float, max_ch: int, nc: int, reg_max: int, strides):
    """One table row -> (module, out channels, stride factor); ``c_in`` is a list for Concat/Detect."""
    if name in ("Conv", "C2f", "SPPF"):
        c2 = _width(args[0], width, max_ch)
        if name == "C2f":  # the repeats go inside the block, as Bottlenecks
            return C2f(c_in, c2, n, *args[1:]), c2, 1.0
        make = (lambda: Conv(c_in, c2, *args[1:])) if name == "Conv" else (lambda: SPPF(c_in, c2, *args[1:]))
        s = args[2] if name == "Conv" and len(args) > 2 else 1
    elif name == "Upsample":
        make, c2, s = (lambda: nn.Upsample(scale_factor=args[0], mode="nearest")), c_in, 1 / args[0]
    elif name == "Concat":
        make, c2, s = Concat, sum(c_in), 1.0
    elif name == "Identity":
        make, c2, s = nn.Identity, c_in, 1.0
    elif name in ("GOM", "SCM"):  # channel-preserving attention: learns C from its input
        cls = GOM if name == "GOM" else SCM
        make, c2, s = (lambda: cls(c_in, **args)), c_in, 1.0
    elif name == "Detect":
        return Detect(nc, c_in, strides, reg_max), None, 1.0
    else:
        raise ValueError(f"unknown module {name!r} in layer table")
    module = make() if n == 1 else nn.Sequential(*(make() for _ in range(n)))
    return module, c2, s


# ---------------------------------------------------------------- the model


class DetectionModel(nn.Module):
    """A YOLOv8-style detector built from a layer table.

    ``model`` holds the rows as an ``nn.ModuleList``; the wiring (``froms``) is kept beside it, not on the
    modules, so a method may swap ``model[i]`` for a block of the same shape without rewiring.

    Args:
        table: ``{"backbone": rows, "head": rows}``, e.g. :data:`YOLOV8_TABLE` or :func:`gso_yolo_table`.
        scale: ``"n" | "s" | "m" | "l" | "x"`` (see :data:`SCALES`).
        nc: number of classes (taken from ``names`` when that is given).
        names: optional class names.
        reg_max: DFL bins per box side.
        in_channels: image channels.

    Forward:
        train mode: list of raw per-level maps (B, 4·reg_max + nc, H/s, W/s) for s in 8, 16, 32.
        eval mode: (B, 4 + nc, A) decoded predictions, boxes xywh in input pixels and sigmoid class scores,
        A = Σ H/s·W/s (8400 at 640). :meth:`forward_raw` and :meth:`decode` give both in any mode.
    """

    def __init__(self, table: dict, scale: str = "n", nc: int = 80, names: list[str] | None = None,
                 reg_max: int = 16, in_channels: int = 3):
        super().__init__()
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
        if names is not None:
            nc = len(names)
        self.nc, self.reg_max, self.scale = nc, reg_max, scale
        self.names = dict(enumerate(names)) if names is not None else {i: f"class{i}" for i in range(nc)}
        depth, width, max_ch = SCALES[scale]
        rows = table["backbone"] + table["head"]
        self.num_backbone = len(table["backbone"])
        layers, self.froms, outs, strides = [], [], [], []
        for f, n, name, args in rows:
            n = max(round(n * depth), 1) if n > 1 else n
            if isinstance(f, int):
                c_in, s_in = (outs[f], strides[f]) if outs else (in_channels, 1)
            else:
                c_in, s_in = [outs[j] for j in f], strides[f[0]]
            level_strides = [strides[j] for j in f] if name == "Detect" else None
            module, c2, s = _build_row(name, args, c_in, n, width, max_ch, nc, reg_max, level_strides)
            layers.append(module)
            self.froms.append(f)
            outs.append(c2)
            strides.append(s_in * s)
        self.model = nn.ModuleList(layers)
        self.channels, self.strides = outs, strides  # per row: out width and stride
        self.save = {j for f in self.froms if not isinstance(f, int) for j in f if j != -1}
        self.save |= {f for f in self.froms if isinstance(f, int) and f != -1}
        self.register_buffer("stride", self.head.stride.clone(), persistent=False)
        for m in self.modules():  # YOLOv8 uses these BN settings everywhere, GOM's BNs included
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = 1e-3, 0.03

    @property
    def head(self) -> Detect:
        return self.model[-1]

    def forward_raw(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, C, H, W), H and W multiples of 32 -> raw per-level maps (B, 4·reg_max + nc, h, w)."""
        outs: list[torch.Tensor | None] = []
        for i, (layer, f) in enumerate(zip(self.model, self.froms)):
            if f != -1:
                x = outs[f] if isinstance(f, int) else [x if j == -1 else outs[j] for j in f]
            x = layer(x)
            outs.append(x if i in self.save else None)
        return x

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """Raw maps -> (B, 4 + nc, A), xywh boxes in input pixels and sigmoid class scores."""
        return self.head.decode(raw)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        raw = self.forward_raw(x)
        return raw if self.training else self.decode(raw)

    def backbone_blocks(self) -> list[nn.Module]:
        """The backbone rows in order (the rest, neck + Detect, is the detector's "head", DESIGN.md)."""
        return list(self.model[: self.num_backbone])

    def backbone_info(self) -> list[BlockInfo]:
        """One :class:`BlockInfo` per backbone row; the stage is the row's output level (P1..P5)."""
        info, counts = [], {}
        for i in range(self.num_backbone):
            c_in = self.channels[i - 1] if i else 3
            s_in = self.strides[i - 1] if i else 1
            stage = int(math.log2(self.strides[i]))
            idx = counts[stage] = counts.get(stage, -1) + 1
            c_out, s_out = self.channels[i], self.strides[i]
            info.append(BlockInfo(f"{stage}.{idx}", stage, idx, c_in, c_out, int(s_out / s_in),
                                  c_in != c_out or s_out != s_in))
        return info

    # ------------------------------------------------------------ the block-list seam (models/base.py)

    def _c2f_rows(self) -> list[int]:
        return [i for i in range(self.num_backbone) if isinstance(self.model[i], C2f)]

    @property
    def blocks(self) -> BlockSlots:
        """The detector's block list: every Bottleneck of the backbone's C2f rows, in forward order.

        These are the backbone's units of equal shape (c -> c, two 3×3 Convs, stride 1); the rows themselves
        (Conv, C2f, SPPF, GOM, SCM) differ in width, stride and depth, so none could borrow a neighbour's
        weights. The neck's C2fs belong to the detector's "head" (DESIGN.md) and are not listed. Assigning
        ``blocks[i]`` swaps the Bottleneck inside its C2f (``model.<row>.m.<j>``), so Replacement Learning
        (:func:`~leanvision.methods.replacement.apply_replacement`) works on a detector as on a classifier.
        """
        slots = [(self.model[r].m, j) for r in self._c2f_rows() for j in range(len(self.model[r].m))]
        return BlockSlots(slots, "the Bottlenecks inside the backbone's C2f rows, with the strided Convs and "
                                 "the C2fs' own convs between them and the neck reading P3 and P4 from inside")

    @property
    def block_info(self) -> list[BlockInfo]:
        """One :class:`BlockInfo` per entry of :attr:`blocks`: named "row.m.j" (its state_dict path), stage =
        its feature level (P2 -> 2), and ``chained=False`` for the first Bottleneck of each C2f, whose
        previous Bottleneck sits in another C2f behind a strided Conv."""
        info = []
        for r in self._c2f_rows():
            c2f, level = self.model[r], int(math.log2(self.strides[r]))
            info += [BlockInfo(f"{r}.m.{j}", level, j, c2f.c, c2f.c, chained=j > 0) for j in range(len(c2f.m))]
        return info


# ---------------------------------------------------------------- registry

DETECTORS: Registry[DetectionModel] = Registry("detector", normalize=lambda name: name.lower().replace("-", "_"))


def register_detector(fn: Callable[..., DetectionModel]) -> Callable[..., DetectionModel]:
    """File ``fn`` under its own name; a second detector of the same name is refused."""
    return DETECTORS.register(fn)


def list_detectors(pattern: str = "*") -> list[str]:
    """Registered detector names matching a shell-style wildcard, sorted."""
    return DETECTORS.names(pattern)


def create_detector(name: str, nc: int = 80, **overrides) -> DetectionModel:
    """Build a registered detector; ``gso-yolo-n`` and ``gso_yolo_n`` are the same name.

    Overrides that are ``None`` mean "the model's default" (so CLI defaults can pass through).
    """
    return DETECTORS.create(name, nc=nc, **overrides)


def _yolov8(scale: str, **kwargs) -> DetectionModel:
    return DetectionModel(YOLOV8_TABLE, scale=scale, **kwargs)


def _gso_yolo(scale: str, gom: bool = True, scm: bool = True, gom_groups: int = 1, gom_sigmoid: bool = True,
              scm_groups: int = 8, p5_lateral: str = "scm", **kwargs) -> DetectionModel:
    table = gso_yolo_table(gom, scm, gom_groups, gom_sigmoid, scm_groups, p5_lateral)
    return DetectionModel(table, scale=scale, **kwargs)


@register_detector
def yolov8n(**kwargs) -> DetectionModel:
    return _yolov8("n", **kwargs)


@register_detector
def yolov8s(**kwargs) -> DetectionModel:
    return _yolov8("s", **kwargs)


@register_detector
def yolov8m(**kwargs) -> DetectionModel:
    return _yolov8("m", **kwargs)


@register_detector
def yolov8l(**kwargs) -> DetectionModel:
    return _yolov8("l", **kwargs)


@register_detector
def yolov8x(**kwargs) -> DetectionModel:
    return _yolov8("x", **kwargs)


@register_detector
def gso_yolo_n(**kwargs) -> DetectionModel:
    return _gso_yolo("n", **kwargs)


@register_detector
def gso_yolo_s(**kwargs) -> DetectionModel:
    return _gso_yolo("s", **kwargs)


@register_detector
def gso_yolo_m(**kwargs) -> DetectionModel:
    return _gso_yolo("m", **kwargs)


@register_detector
def gso_yolo_l(**kwargs) -> DetectionModel:
    return _gso_yolo("l", **kwargs)


@register_detector
def gso_yolo_x(**kwargs) -> DetectionModel:
    return _gso_yolo("x", **kwargs)
