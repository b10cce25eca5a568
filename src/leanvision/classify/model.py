"""A trained classifier as one plain module, rebuilt from a ``leanvision train`` checkpoint alone.

The checkpoint's config names the model and the method, and (since this version) holds the class names
and the dataset recipe (``config["classifier"]``, see :func:`leanvision.classify.train.classifier_spec`). The
method is rebuilt exactly as training built it, its whole state is loaded, and its exported model is kept:
Replacement Learning's replaced blocks are materialised into plain weights, local learning's auxiliary
networks are left behind. Checkpoints of earlier versions lack the class names and the recipe; they are
read from the evaluation dataset given, or from the training data the config names.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..config import ConfigError, TrainConfig
from ..data import ArrayDataset, DatasetError, DataSpec, FolderDataset, build_dataset
from ..data.loader import stream_transform
from ..engine.checkpoint import CheckpointError, describe_checkpoint, load_checkpoint
from ..engine.resume import saved_values
from ..methods.replacement import export_model
from .train import build_method, build_model, upgrade_saved_config

CLASSIFIER_EXPECTED = "expected a classifier checkpoint (the best.pt or last.pt of `leanvision train`)"


class Classifier(nn.Module):
    """A trained classifier ready to use: RGB images in [0, 1] in, logits out; the normalisation is inside.

    Args:
        net: the plain network (``create_model``'s class, no method code): normalised images -> logits.
        classes: class names, index = label.
        data_spec: the training dataset's recipe; its mean/std normalise the input, its evaluation
            resize/crop define :meth:`transform`.

    Forward:
        (B, 3, H, W) float in [0, 1] -> (B, num_classes) logits; H = W = :attr:`image_size` as trained.
    """

    def __init__(self, net: nn.Module, classes: Sequence[str], data_spec: DataSpec):
        super().__init__()
        self.net, self.classes, self.data_spec = net, [str(c) for c in classes], data_spec
        self.register_buffer("mean", torch.tensor(data_spec.mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(data_spec.std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        """Side of the square input the network was trained on (the recipe's crop)."""
        return self.data_spec.crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def transform(self, image) -> torch.Tensor:
        """One PIL image -> (3, image_size, image_size) float in [0, 1], as evaluation saw its images.

        Streamed recipes (ImageNet) resize the shorter side to ``resize`` and centre-crop; in-memory ones (CIFAR,
        SVHN, small folder trees) used their images as they were, so an image of another size is resized
        (shorter side) and centre-cropped to ``image_size``, and one of that size passes unchanged.
        """
        from torchvision.transforms import v2

        spec = self.data_spec
        if spec.resize:
            geometry = stream_transform(spec, augment=False)
        else:
            geometry = v2.Compose([v2.ToImage(), v2.Resize(spec.crop, antialias=True), v2.CenterCrop(spec.crop)])
        x = geometry(image.convert("RGB"))
        return x.as_subclass(torch.Tensor).float().div_(255)


def read_classifier_checkpoint(weights: str | Path, ckpt: dict | None = None) -> tuple[dict, TrainConfig]:
    """The checkpoint dict and its training config; CheckpointError naming the file when it is not a classifier's.

    Args:
        weights: the checkpoint's path.
        ckpt: the dict already read from it (else it is read here).
    """
    ckpt = load_checkpoint(weights) if ckpt is None else ckpt
    task, what = describe_checkpoint(ckpt)
    if task != "classify":
        hint = "; for detectors use `leanvision detect val` / `leanvision detect predict`" if task == "detect" else ""
        raise CheckpointError(f"{weights}: {what}; {CLASSIFIER_EXPECTED}{hint}")
    raw = upgrade_saved_config(ckpt["config"])
    try:
        cfg = TrainConfig(**saved_values(TrainConfig, {"config": raw}, Path(weights)))
    except ConfigError as e:
        raise CheckpointError(f"{weights}: its saved config cannot be read ({e})") from None
    ckpt["config"] = raw
    return ckpt, cfg


def classes_and_spec(ckpt: dict, cfg: TrainConfig, weights: str | Path,
                     dataset: ArrayDataset | FolderDataset | None = None) -> tuple[list[str], DataSpec]:
    """Class names and recipe of a checkpoint: saved in its config, else (older checkpoints) from ``dataset`` or
    from the training data its config names."""
    info = ckpt["config"].get("classifier")
    if info is not None:
        try:
            spec = {k: tuple(v) if isinstance(v, list) else v for k, v in info["data_spec"].items()}
            return [str(c) for c in info["classes"]], DataSpec(**spec)
        except (KeyError, TypeError, AttributeError, DatasetError) as e:
            raise CheckpointError(f"{weights}: its saved class names and recipe (config 'classifier') are damaged "
                                  f"({type(e).__name__}: {e})") from None
    if dataset is None:
        try:
            dataset = build_dataset(cfg.data, train=False, root=cfg.data_dir)
        except (DatasetError, ConfigError, OSError) as e:
            raise CheckpointError(
                f"{weights}: saved by an older leanvision without its class names and normalisation, and its "
                f"training data ({cfg.data}) cannot be read here to recover them ({e}); put the data back where the "
                "run read it, evaluate with `leanvision val --data DATA`, or retrain with this version") from None
    return list(dataset.classes), dataset.spec


def load_classifier(weights: str | Path, device: torch.device | str = "cpu",
                    dataset: ArrayDataset | FolderDataset | None = None) -> Classifier:
    """The classifier of a ``leanvision train`` checkpoint, as a plain :class:`Classifier` in eval mode.

    Args:
        weights: a ``best.pt`` / ``last.pt``; read with ``weights_only=True`` (no code runs).
        device: where the module goes.
        dataset: only for checkpoints of earlier versions: where the class names and recipe come from.
    """
    ckpt, cfg = read_classifier_checkpoint(weights)
    return classifier_from_checkpoint(ckpt, cfg, weights, dataset).to(device)


def classifier_from_checkpoint(ckpt: dict, cfg: TrainConfig, weights: str | Path,
                               dataset: ArrayDataset | FolderDataset | None = None) -> Classifier:
    """:func:`load_classifier` of a checkpoint already read by :func:`read_classifier_checkpoint` (CPU)."""
    classes, spec = classes_and_spec(ckpt, cfg, weights, dataset)
    try:
        # the method exactly as training built it, so its state loads whole; its report is training's business
        with contextlib.redirect_stdout(io.StringIO()):
            method = build_method(cfg, build_model(cfg, len(classes)), spec.mean, spec.std)
    except ConfigError as e:
        raise CheckpointError(f"{weights}: its model cannot be rebuilt here ({e})") from None
    try:
        method.load_state_dict(ckpt["method"])
    except RuntimeError as e:
        raise CheckpointError(f"{weights}: its weights do not fit {cfg.model} with method {cfg.method} "
                              f"({str(e).splitlines()[0]})") from None
    net = export_model(method.export_model())  # any replaced block left (replacement inside a local method) made plain
    return Classifier(net, classes, spec).eval()
