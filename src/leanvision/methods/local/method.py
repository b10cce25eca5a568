"""Supervised local learning as a :class:`~leanvision.methods.base.Method`: DGL, InfoPro, greedy SL,
and MLAAN on top of DGL or InfoPro (spec: specs/local_learning.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leanvision.models.base import check_block_model

from ..base import Backward, Method
from .heads import Decoder, make_head
from .infopro import infopro_lambdas, lookup_lambdas
from .lam import LeapModule, general_chain, table_chain
from .losses import ClassifierLoss, InfoProLoss
from .split import STEM, arch_of, resolve_split
from .step import greedy_step, mlaan_step

CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
_BASES = ("dgl", "infopro", "greedy")
_DEFAULT_HEAD = {"dgl": "1c2f", "infopro": "1c2f", "greedy": "linear"}


class LocalLearning(Method):
    """Cut ``model``'s block list into K gradient-isolated modules, each trained by its own loss.

    Args:
        model: a block-list model (stem, ``blocks`` ModuleList, head, ``block_info``).
        modules: K in the MLAAN group's labelling (per-block ResNet-32 = 16, ResNet-110 = 55,
            ResNet-101 = 34) or the authors' code key (15, 54, 33); None = one block per module.
        base: "dgl" (1c2f head + CE, as in the MLAAN repo, §8.5), "infopro" (decoder + 1c2f,
            lambdas over depth) or "greedy" (GAP + Linear, greedy SL).
        mlaan: add Multilaminar Local Modules and Leap Augmented Modules (§3).
        split: see :func:`~.split.resolve_split` ("auto", "table", "blocks", "memory", a table
            name, or end blocks "1.2,2.1,3.0").
        head: classifier kind for the (independent) auxiliary heads: "linear", "1c2f", "mlp_sr",
            "dgl_mlp". Default: 1c2f for dgl/infopro, linear for greedy and DGL+MLAAN.
        cascade_head: MLAAN cascaded-head kind (default "linear" for DGL+MLAAN, "1c2f" for InfoPro).
        feature_dim / widen: 1c2f and dgl_mlp hidden sizes (128, 1).
        loss_mode: InfoPro task loss, "contrast" (SupCon, InfoPro default) or "softmax" (CE, the
            MLAAN runs' mode and the InfoPro+MLAAN default).
        lambdas: InfoPro (ixx_1, ixy_1, ixx_2, ixy_2); default from the published table for
            ``dataset`` and the split's code key, else (5, 0, 0.5, 1).
        dataset: "cifar10", "svhn" or "stl10", for the lambda table.
        lambda_index: "module" (correct) or "stage" (the InfoPro+MLAAN release's bug, §3.3 C).
        mean / std: the data normalisation; InfoPro reconstructs x * std + mean.
        span: MLAAN cascade span k (3 default, 2 = the CIFAR release).
        w_x / w_y: MLAAN independent / cascaded loss weights (0.001 / 0.999).
        ema_momentum: m (0.995). ema_update: "all" (default) or "last_only" (CIFAR release).
        ema_blocks: "first" (all code) or "all" (figure reading).
        lam_config: None (published table where one exists, else the general rule), "general",
            or {module index: [block names]}.
        bn_updates: "release" (BN running statistics move as if each module ran forward as many
            times as the release recomputes it, §8.11) or "once".
        recompute: MLAAN only. False (default): keep a module's graph until the last cascaded loss
            that reaches it is done. True: drop it as soon as only its parameter gradient is still
            owed and rebuild it then (one extra forward per module, less activation memory).
        image_size: probe size for building heads (default ``model.image_size``).
    """

    def __init__(
        self,
        model: nn.Module,
        modules: int | None = None,
        base: str = "dgl",
        mlaan: bool = False,
        split: str | None = None,
        *,
        head: str | None = None,
        cascade_head: str | None = None,
        feature_dim: int = 128,
        widen: int = 1,
        loss_mode: str | None = None,
        lambdas: tuple[float, float, float, float] | None = None,
        dataset: str = "cifar10",
        lambda_index: str = "module",
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        span: int = 3,
        w_x: float = 0.001,
        w_y: float = 0.999,
        ema_momentum: float = 0.995,
        ema_update: str = "all",
        ema_blocks: str = "first",
        lam_config=None,
        bn_updates: str = "release",
        recompute: bool = False,
        image_size: int | None = None,
    ):
        check_block_model(model)
        super().__init__(model)
        _check_choice("base", base, _BASES)
        if mlaan and base == "greedy":
            raise ValueError("MLAAN sits on top of base='dgl' or base='infopro', not 'greedy'")
        _check_choice("loss_mode", loss_mode or "softmax", ("softmax", "contrast"))
        _check_choice("lambda_index", lambda_index, ("module", "stage"))
        _check_choice("ema_update", ema_update, ("all", "last_only"))
        _check_choice("ema_blocks", ema_blocks, ("first", "all"))
        _check_choice("bn_updates", bn_updates, ("release", "once"))
        if span not in (2, 3):
            raise ValueError(f"span must be 2 (CIFAR release) or 3 (paper figure, default), got {span}")
        self.base, self.mlaan = base, mlaan
        self.name = base + ("+mlaan" if mlaan else "")
        self.split = resolve_split(model, modules, split, "mlaan" if mlaan else "baseline", image_size)
        self.split_description = self.split.describe()
        self.span, self.w_x, self.w_y, self.recompute = span, w_x, w_y, recompute
        self.ema_momentum, self.ema_update, self.ema_blocks, self.bn_updates = (
            ema_momentum,
            ema_update,
            ema_blocks,
            bn_updates,
        )
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

        shapes = _probe_shapes(model, image_size or model.image_size)
        if base == "infopro" and any(len(s) != 3 for s in shapes.values()):
            raise ValueError(
                "InfoPro's decoder reconstructs the image from conv feature maps (B, C, H, W); this "
                "model's blocks output tokens. Use base='dgl' or 'greedy' for ViTs."
            )
        self.final_width = shapes[len(model.blocks) - 1][0]
        self.head_kind = head or ("linear" if mlaan and base == "dgl" else _DEFAULT_HEAD[base])
        self.cascade_kind = cascade_head or ("linear" if base == "dgl" else "1c2f")
        self.loss_mode = loss_mode or ("contrast" if base == "infopro" and not mlaan else "softmax")
        k = len(self.split)
        self.lambdas = (
            tuple(lambdas)
            if lambdas is not None
            else lookup_lambdas(dataset, arch_of(model), self.split.code_key)
        )
        self.lambda_index = lambda_index
        self._feat = (feature_dim, widen)
        ends = [m[-1] for m in self.split.modules]

        if mlaan:
            self._build_mlaan(shapes, ends, lam_config)
        else:
            self.aux = nn.ModuleList(
                self._local_loss(i, shapes[ends[i]], self.head_kind) for i in range(k - 1)
            )
        self.to(next(model.parameters()).device)  # heads are built on the CPU; follow the model

    def _build_mlaan(self, shapes: dict, ends: list[int], lam_config) -> None:
        # Losses exist for modules span-1 .. K-2 (§3.3); only those LAMs and heads are built (§8.15).
        model = self.model
        self.loss_modules = list(range(self.span - 1, len(self.split) - 1))
        names = [b.name for b in model.block_info]
        self.lams, self.indep, self.casc = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        for i in self.loss_modules:
            chain = self._lam_chain(lam_config, i, ends[i], names)
            n_ema = 1 if self.ema_blocks == "first" else len(chain)
            lam = LeapModule([model.blocks[c] for c in chain], chain, n_ema)
            end_name = names[ends[i]] if ends[i] >= 0 else "stem"
            lam_shape = _check_lam(lam, shapes[ends[i]], end_name, chain, names)
            self.lams[str(i)] = lam
            self.indep[str(i)] = self._local_loss(i, shapes[ends[i]], self.head_kind)
            self.casc[str(i)] = self._local_loss(i, lam_shape, self.cascade_kind)

    # --- construction helpers -------------------------------------------------------------
    def _local_loss(self, i: int, shape: tuple[int, ...], kind: str) -> nn.Module:
        classes = self.model.num_classes
        feature_dim, widen = self._feat
        if self.base != "infopro":
            return ClassifierLoss(make_head(kind, shape, classes, self.final_width, feature_dim, widen))
        index = i
        if self.lambda_index == "stage":
            end = self.split.modules[i][-1]
            index = self.model.block_info[end].stage if end >= 0 else 0
        lam1, lam2 = infopro_lambdas(index, len(self.split), self.lambdas)
        out = feature_dim if self.loss_mode == "contrast" else classes
        decoder = Decoder(shape[0], widen) if lam1 else None
        classifier = make_head(kind, shape, out, self.final_width, feature_dim, widen) if lam2 else None
        return InfoProLoss(decoder, classifier, lam1, lam2, self.loss_mode)

    def _lam_chain(self, lam_config, i: int, end: int, names: list[str]) -> list[int]:
        if isinstance(lam_config, dict):
            if i not in lam_config:
                raise ValueError(
                    f"lam_config has no entry for module {i} (needs modules {self.loss_modules})"
                )
            unknown = [n for n in lam_config[i] if n not in names]
            if unknown:
                raise ValueError(
                    f"lam_config[{i}] names unknown blocks {unknown}; blocks are {names[0]}..{names[-1]}"
                )
            return [names.index(n) for n in lam_config[i]]
        if lam_config not in (None, "general"):
            raise ValueError(f"lam_config must be None, 'general' or a dict, got {lam_config!r}")
        chain = None
        if lam_config is None and end >= 0:
            chain = table_chain(arch_of(self.model), self.split.code_key, names[end], names)
        return chain if chain is not None else general_chain(self.model.block_info, end)

    # --- the Method contract --------------------------------------------------------------
    def pieces(self, j: int) -> list[nn.Module]:
        """The stem/blocks of module ``j``, in order."""
        return [self.model.stem if p == STEM else self.model.blocks[p] for p in self.split.modules[j]]

    def target_image(self, images: torch.Tensor) -> torch.Tensor | None:
        """InfoPro's reconstruction target: the un-normalised image x * std + mean (a constant)."""
        if self.base != "infopro":
            return None
        return (images.detach().float() * self.std.float() + self.mean.float()).clamp_(0, 1)

    def train_step(
        self, images: torch.Tensor, targets: torch.Tensor, backward: Backward
    ) -> dict[str, torch.Tensor]:
        return (
            mlaan_step(self, images, targets, backward)
            if self.mlaan
            else greedy_step(self, images, targets, backward)
        )

    def final_loss(self, h: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model.head(h)
        return F.cross_entropy(logits, targets), logits

    def before_optimizer_step(self) -> None:
        """EMA of every LAM (only the last with ``ema_update="last_only"``), from pre-step weights (§3.2)."""
        if not self.mlaan or not self.loss_modules:
            return
        chosen = self.loss_modules if self.ema_update == "all" else [len(self.split) - 2]
        for i in chosen:
            if str(i) in self.lams:
                self.lams[str(i)].update_ema(self.model.blocks, self.ema_momentum)

    def describe(self) -> str:
        parts = [f"{self.name}: {self.split_description}"]
        if self.mlaan:
            parts.append(f"heads: independent {self.head_kind}, cascaded {self.cascade_kind}")
            parts.append(
                f"span {self.span}, w_x {self.w_x}, w_y {self.w_y}, EMA m={self.ema_momentum} "
                f"({self.ema_update} LAMs, {self.ema_blocks} block(s)), BN updates {self.bn_updates}"
                + (", recompute" if self.recompute else "")
            )
        else:
            parts.append(f"head: {self.head_kind}")
        if self.base == "infopro":
            parts.append(f"InfoPro {self.loss_mode}, lambdas {self.lambdas} by {self.lambda_index} index")
        return "; ".join(parts)


def _check_choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(map(str, valid))}")


@torch.no_grad()
def _probe_shapes(model: nn.Module, image_size: int) -> dict[int, tuple[int, ...]]:
    """Output shape (without batch) of the stem (-1) and every block, from one eval-mode forward."""
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(2, 3, image_size, image_size, device=param.device, dtype=param.dtype)
        x = model.stem(x)
        shapes = {STEM: tuple(x.shape[1:])}
        for i, block in enumerate(model.blocks):
            x = block(x)
            shapes[i] = tuple(x.shape[1:])
    finally:
        model.train(was_training)
    return shapes


@torch.no_grad()
def _check_lam(lam: LeapModule, shape, end_name: str, chain: list[int], names: list[str]) -> tuple[int, ...]:
    """Run the LAM on a dummy module output; a clear error if its blocks do not chain."""
    param = next(lam.parameters())
    was_training = lam.training
    lam.eval()
    try:
        return tuple(lam(torch.zeros(2, *shape, device=param.device, dtype=param.dtype)).shape[1:])
    except RuntimeError as e:
        raise ValueError(
            f"LAM blocks {[names[c] for c in chain]} cannot follow the module ending at {end_name} "
            f"(output {tuple(shape)}): {e}"
        ) from e
    finally:
        lam.train(was_training)
