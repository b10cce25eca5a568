"""Supervised local learning as a :class:`~leanvision.methods.base.Method`: DGL, InfoPro, greedy SL,
and MLAAN on top of DGL or InfoPro (spec: specs/local_learning.md)."""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from leanvision.models.base import check_block_model

from ..base import Backward, Method
from .heads import Decoder, make_head
from .infopro import DEFAULT_LAMBDAS, at_least_float32, infopro_lambdas, lookup_lambdas
from .lam import LeapModule, general_chain, table_chain
from .losses import ClassifierLoss, InfoProLoss
from .presets import RELEASE_RECIPE, resolve_options
from .split import STEM, arch_of, resolve_split
from .step import greedy_step, mlaan_step

CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
_BASES = ("dgl", "infopro", "greedy")
_CHOICES = {
    "loss_mode": ("softmax", "contrast"),
    "indep_loss_mode": ("softmax", "contrast"),
    "lambda_index": ("module", "stage"),
    "ema_update": ("all", "last_only"),
    "ema_blocks": ("first", "all"),
    "bn_updates": ("release", "once"),
    "head_init": ("torch", "release"),
}
_RELEASE_ARCHS = ("resnet32", "resnet110")  # the released CIFAR code asserts these


class LocalLearning(Method):
    """Cut ``model``'s block list into K gradient-isolated modules, each trained by its own loss.

    Options left at ``None`` take our default, or with ``preset="release"`` the authors' released
    value (:mod:`.presets`; docs/local_learning_release.md tables every difference).

    Args:
        model: a block-list model (stem, ``blocks`` ModuleList, head, ``block_info``).
        modules: K in the MLAAN group's labelling (per-block ResNet-32 = 16, ResNet-110 = 55,
            ResNet-101 = 34) or the authors' code key (15, 54, 33); None = one block per module.
        base: "dgl" (1c2f head + CE, as in the MLAAN repo, §8.5), "infopro" (decoder + 1c2f,
            lambdas over depth) or "greedy" (GAP + Linear, greedy SL).
        mlaan: add Multilaminar Local Modules and Leap Augmented Modules (§3).
        split: see :func:`~.split.resolve_split` ("auto" (default), "table", "blocks", "memory", a
            table name, or end blocks "1.2,2.1,3.0").
        preset: None (our defaults) or "release": every option the user leaves unset takes the
            authors' released value, and :meth:`recipe_defaults` asks for their LR rule. CIFAR
            ResNet-32/110 only, as the released code.
        head: classifier kind for the (independent) auxiliary heads: "linear", "1c2f", "mlp_sr",
            "dgl_mlp". Default: 1c2f for dgl/infopro, linear for greedy and DGL+MLAAN.
        cascade_head: MLAAN cascaded-head kind (default "linear" for DGL+MLAAN, "1c2f" for InfoPro).
        head_init: "torch" (default: PyTorch's layer init) or "release" (conv weights of the heads
            and decoders ~ N(0, 2/(k*k*C_out)), the backbone's rule, as the release's init loop).
        feature_dim / widen: 1c2f and dgl_mlp hidden sizes (128, 1).
        loss_mode: InfoPro task loss, "contrast" (SupCon, InfoPro default) or "softmax" (CE, the
            MLAAN runs' mode and the InfoPro+MLAAN default). For InfoPro+MLAAN it is the cascaded
            heads' loss; ``indep_loss_mode`` sets the independent heads' (default: the same; the
            release uses "contrast" there whatever its command line says).
        lambdas: InfoPro (ixx_1, ixy_1, ixx_2, ixy_2); default from the published table for
            ``dataset``, the architecture and the split's code key; without an entry,
            (5, 0, 0.5, 1) and a warning that says so.
        dataset: the training set's name ("cifar10", "svhn", "stl10", ...; ``leanvision train``
            passes it), used only to look up InfoPro's lambdas. None: unknown.
        lambda_index: "module" (correct) or "stage" (the InfoPro+MLAAN release's bug, §3.3 C).
        mean / std: the data normalisation; InfoPro reconstructs x * std + mean.
        span: MLAAN cascade span k (3 default, 2 = the CIFAR release).
        w_x / w_y: MLAAN independent / cascaded loss weights (0.001 / 0.999).
        ema_momentum: m (0.995). ema_update: "all" (default) or "last_only" (CIFAR release).
        ema_blocks: "first" (all code) or "all" (figure reading).
        ema_trainable: False (default: EMA copies are frozen) or True (InfoPro+MLAAN release: SGD
            also trains them, and the EMA rule overwrites the ones it updates).
        lam_config: None (published table where one exists, else the general rule), "general",
            or {module index: [block names]}.
        bn_updates: "release" (BN running statistics move as if each module ran forward as many
            times as the release recomputes it, §8.11) or "once".
        recompute: MLAAN only. False (default): keep a module's graph until the last cascaded loss
            that reaches it is done. True: drop it as soon as only its parameter gradient is still
            owed and rebuild it then (one extra forward per module, less activation memory).
        trim_host_memory: give freed heap pages back to the operating system once a module's graph
            is freed (glibc ``malloc_trim``: :func:`leanvision.ops.memory.trim_host_memory`). None
            (default): on when the step runs on the CPU, where PyTorch allocates with ``malloc`` and
            a freed module's pages would otherwise stay resident; a no-op without glibc.
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
        preset: str | None = None,
        head: str | None = None,
        cascade_head: str | None = None,
        head_init: str | None = None,
        feature_dim: int | None = None,
        widen: int | None = None,
        loss_mode: str | None = None,
        indep_loss_mode: str | None = None,
        lambdas: tuple[float, float, float, float] | None = None,
        dataset: str | None = None,
        lambda_index: str | None = None,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        span: int | None = None,
        w_x: float | None = None,
        w_y: float | None = None,
        ema_momentum: float | None = None,
        ema_update: str | None = None,
        ema_blocks: str | None = None,
        ema_trainable: bool | None = None,
        lam_config=None,
        bn_updates: str | None = None,
        recompute: bool = False,
        trim_host_memory: bool | None = None,
        image_size: int | None = None,
    ):
        check_block_model(model)
        super().__init__(model)
        _check_choice("base", base, _BASES)
        if mlaan and base == "greedy":
            raise ValueError("MLAAN sits on top of base='dgl' or base='infopro', not 'greedy'")
        self.base, self.mlaan = base, mlaan
        self.name = base + ("+mlaan" if mlaan else "")
        given = dict(
            split=split, head=head, cascade_head=cascade_head, head_init=head_init,
            feature_dim=feature_dim, widen=widen, loss_mode=loss_mode, indep_loss_mode=indep_loss_mode,
            lambdas=lambdas, lambda_index=lambda_index, span=span, w_x=w_x, w_y=w_y,
            ema_momentum=ema_momentum, ema_update=ema_update, ema_blocks=ema_blocks,
            ema_trainable=ema_trainable, bn_updates=bn_updates,
        )  # fmt: skip
        o, self.preset_overrides = resolve_options(self.name, preset, given)
        self.preset = preset
        if preset is not None and arch_of(model) not in _RELEASE_ARCHS:
            raise ValueError(
                f"preset={preset!r} reproduces the authors' CIFAR code, which builds only "
                f"{' and '.join(_RELEASE_ARCHS)}; this model's block layout is {arch_of(model) or 'another'}"
            )
        for name, valid in _CHOICES.items():
            if o[name] is not None:
                _check_choice(name, o[name], valid)
        if o["span"] not in (2, 3):
            raise ValueError(f"span must be 2 (CIFAR release) or 3 (paper figure, default), got {o['span']}")
        self.split = resolve_split(model, modules, o["split"], "mlaan" if mlaan else "baseline", image_size)
        self.split_description = self.split.describe()
        self.span, self.w_x, self.w_y, self.recompute = o["span"], o["w_x"], o["w_y"], recompute
        self.trim_host_memory = trim_host_memory
        self.ema_momentum, self.ema_update, self.ema_blocks = o["ema_momentum"], o["ema_update"], o["ema_blocks"]
        self.ema_trainable, self.bn_updates = bool(o["ema_trainable"]), o["bn_updates"]
        self.head_init = o["head_init"]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

        shapes = _probe_shapes(model, image_size or model.image_size)
        if base == "infopro" and any(len(s) != 3 for s in shapes.values()):
            raise ValueError(
                "InfoPro's decoder reconstructs the image from conv feature maps (B, C, H, W); this "
                "model's blocks output tokens. Use base='dgl' or 'greedy' for ViTs."
            )
        self.final_width = shapes[len(model.blocks) - 1][0]
        self.head_kind, self.cascade_kind = o["head"], o["cascade_head"]
        self.loss_mode = o["loss_mode"]
        self.indep_loss_mode = o["indep_loss_mode"] or self.loss_mode
        k = len(self.split)
        self.lambdas, self.lambda_source = tuple(o["lambdas"] or ()), "given"
        if base == "infopro" and o["lambdas"] is None:
            self.lambdas, self.lambda_source = _table_lambdas(dataset, arch_of(model), self.split.code_key)
        elif base == "infopro" and preset and "lambdas" not in self.preset_overrides:
            self.lambda_source = "release: the MLAAN run scripts' values"
        self.lambda_index = o["lambda_index"]
        self._feat = (o["feature_dim"], o["widen"])
        ends = [m[-1] for m in self.split.modules]

        if mlaan:
            self._build_mlaan(shapes, ends, lam_config)
        else:
            self.aux = nn.ModuleList(
                self._local_loss(i, shapes[ends[i]], self.head_kind, self.loss_mode) for i in range(k - 1)
            )
        if self.head_init == "release":
            for heads in (getattr(self, n, None) for n in ("aux", "indep", "casc")):
                if heads is not None:
                    release_conv_init(heads)
        self.to(next(model.parameters()).device)  # heads are built on the CPU; follow the model

    def recipe_defaults(self) -> dict:
        """Trainer fields this method's recipe fixes: the release's LR rule with ``preset="release"``."""
        return dict(RELEASE_RECIPE) if self.preset == "release" else {}

    def _build_mlaan(self, shapes: dict, ends: list[int], lam_config) -> None:
        # Losses exist for modules span-1 .. K-2 (§3.3); only those LAMs and heads are built (§8.15).
        model = self.model
        self.loss_modules = list(range(self.span - 1, len(self.split) - 1))
        names = [b.name for b in model.block_info]
        self.lams, self.indep, self.casc = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        for i in self.loss_modules:
            chain = self._lam_chain(lam_config, i, ends[i], names)
            n_ema = 1 if self.ema_blocks == "first" else len(chain)
            lam = LeapModule([model.blocks[c] for c in chain], chain, n_ema, self.ema_trainable)
            end_name = names[ends[i]] if ends[i] >= 0 else "stem"
            lam_shape = _check_lam(lam, shapes[ends[i]], end_name, chain, names)
            self.lams[str(i)] = lam
            self.indep[str(i)] = self._local_loss(i, shapes[ends[i]], self.head_kind, self.indep_loss_mode)
            self.casc[str(i)] = self._local_loss(i, lam_shape, self.cascade_kind, self.loss_mode)

    # --- construction helpers -------------------------------------------------------------
    def _local_loss(self, i: int, shape: tuple[int, ...], kind: str, mode: str) -> nn.Module:
        classes = self.model.num_classes
        feature_dim, widen = self._feat
        if self.base != "infopro":
            return ClassifierLoss(make_head(kind, shape, classes, self.final_width, feature_dim, widen))
        index = i
        if self.lambda_index == "stage":
            end = self.split.modules[i][-1]
            index = self.model.block_info[end].stage if end >= 0 else 0
        lam1, lam2 = infopro_lambdas(index, len(self.split), self.lambdas)
        out = feature_dim if mode == "contrast" else classes
        decoder = Decoder(shape[0], widen) if lam1 else None
        classifier = make_head(kind, shape, out, self.final_width, feature_dim, widen) if lam2 else None
        return InfoProLoss(decoder, classifier, lam1, lam2, mode)

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
        images = at_least_float32(images.detach())
        return (images * self.std.to(images.dtype) + self.mean.to(images.dtype)).clamp_(0, 1)

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
        if self.preset:
            over = f" (overridden: {', '.join(self.preset_overrides)})" if self.preset_overrides else ""
            parts.append(f"preset {self.preset}{over}")
        if self.mlaan:
            parts.append(f"heads: independent {self.head_kind}, cascaded {self.cascade_kind}")
            parts.append(
                f"span {self.span}, w_x {self.w_x}, w_y {self.w_y}, EMA m={self.ema_momentum} "
                f"({self.ema_update} LAMs, {self.ema_blocks} block(s)"
                + (", trained by SGD too" if self.ema_trainable else "")
                + f"), BN updates {self.bn_updates}"
                + (", recompute" if self.recompute else "")
            )
        else:
            parts.append(f"head: {self.head_kind}")
        if self.head_init != "torch":
            parts.append(f"head init {self.head_init}")
        if self.base == "infopro":
            mode = self.loss_mode if self.indep_loss_mode == self.loss_mode else (
                f"{self.indep_loss_mode} (independent) / {self.loss_mode} (cascaded)"
            )
            parts.append(
                f"InfoPro {mode}, lambdas {self.lambdas} ({self.lambda_source}) by {self.lambda_index} index"
            )
        return "; ".join(parts)


def _table_lambdas(dataset: str | None, arch: str | None, key: int | None) -> tuple[tuple, str]:
    """InfoPro's published lambdas and where they came from; without an entry, the default and a warning."""
    found = lookup_lambdas(dataset, arch, key)
    if found is not None:
        return found, f"published for {dataset}, {arch}, K={key}"
    where = f"dataset {dataset!r}" if dataset else "an unnamed dataset"
    warnings.warn(
        f"InfoPro: no published loss weights (ixx_1, ixy_1, ixx_2, ixy_2) for {where}, "
        f"{arch or 'this model'}, code key {key}; using {DEFAULT_LAMBDAS} (AugLocal's deep-split "
        f"setting). Choose with lambdas=[a, b, c, d] or dataset=cifar10|svhn|stl10 "
        f"(--method-opt on the command line).",
        stacklevel=3,
    )
    return DEFAULT_LAMBDAS, f"default: nothing published for {where}, {arch or 'this model'}, K={key}"


def release_conv_init(module: nn.Module) -> None:
    """Conv weights ~ N(0, 2/(k*k*C_out)), BN gamma 1 and beta 0: the release's init loop, which runs
    over its auxiliary heads and decoders as well as the backbone (biases keep PyTorch's init)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


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
