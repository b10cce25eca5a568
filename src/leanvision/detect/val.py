"""Validation of a detector (NMS + COCO mAP via faster-coco-eval) and loading detector checkpoints.

:func:`validate` runs a model over a loader of letterboxed images (square, or YOLOv8's rectangular
batches in aspect-ratio order; the batch's ``image_id`` keeps each result on its image), maps the
detections and the ground truth back to original-image pixels (so the numbers do not depend on the
input size's padding), and returns P, R (at the best-F1 confidence), mAP50, mAP50-95, per-class rows
and the speed per image.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..engine.checkpoint import CheckpointError, describe_checkpoint
from ..engine.progress import progress_bar
from ..engine.trainer import autocast, to_device
from ..methods.replacement import export_model, load_replaced_state
from ..models.yolo import Conv, DetectionModel, create_detector
from ..models.yolo_import import YoloWeights
from .data.augment import scale_boxes_to_original
from .evaluate import DetectionEvaluator
from .postprocess import VAL_SETTINGS, non_max_suppression
from .weights import foreign_detector, open_weights


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_original(boxes: torch.Tensor, ratio_pad, ori_shape) -> torch.Tensor:
    """Input-pixel xyxy boxes -> original-image pixels (identity when the image has no original)."""
    return boxes if ratio_pad is None else scale_boxes_to_original(boxes, ratio_pad, ori_shape)


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each Conv's BatchNorm folded into its convolution.

    As the reference fuses before validating: one op and one pass over the activations less per layer (about a
    quarter of CPU inference time at 640); outputs equal the unfused model's up to float rounding. The caller's
    model is not touched. Replaced blocks (Replacement Learning) are materialised first: their convs hold no
    weights of their own until a forward fuses the neighbours'.
    """
    fused = export_model(model).eval()  # a deep copy, with any replaced block materialised
    for m in fused.modules():
        if isinstance(m, Conv) and isinstance(m.bn, nn.BatchNorm2d):
            m.conv, m.bn = fuse_conv_bn_eval(m.conv, m.bn), nn.Identity()
    return fused


def resolve_channels_last(channels_last: bool | None, device: torch.device | str) -> bool:
    """None (auto): NHWC on CPU, where oneDNN's convolutions ran yolov8n's training step 9–11 % and its
    validation forward 17 % faster than NCHW here; NCHW elsewhere (not measured on GPUs yet)."""
    return torch.device(device).type == "cpu" if channels_last is None else bool(channels_last)


def inference_net(model: nn.Module, fuse: bool = True, channels_last: bool = False) -> nn.Module:
    """The network validation runs: a BatchNorm-folded copy (``fuse``), in channels_last memory if asked
    (only the copy is converted; with ``fuse=False`` the model is used as it is)."""
    net = fuse_conv_bn(model) if fuse else model
    return net.to(memory_format=torch.channels_last) if channels_last and fuse else net


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: Iterable,
    names: Sequence[str],
    device: torch.device | str = "cpu",
    amp: str = "none",
    conf: float = VAL_SETTINGS["conf"],
    iou: float = VAL_SETTINGS["iou"],
    max_det: int = VAL_SETTINGS["max_det"],
    eval_max_det: int = 100,
    progress: bool = False,
    keep_predictions: int = 0,
    fuse: bool = True,
    channels_last: bool | None = None,
    curves: bool = False,
) -> dict:
    """Evaluate ``model`` on ``loader`` (batches from :func:`~leanvision.detect.data.dataset.collate_fn`).

    Args:
        model: a detector; evaluated in eval mode (its own mode is restored afterwards).
        names: class names, index = class id.
        amp: none | bf16 | fp16 autocast for the forward pass.
        conf, iou, max_det: NMS settings (YOLOv8 validation: 0.001, 0.7, 300; multi-label).
        eval_max_det: detections per image the COCO evaluator counts (COCO standard: 100).
        keep_predictions: also return the first N images' detections (input pixels) for plots.
        fuse: run a copy with BatchNorm folded into the convolutions (:func:`fuse_conv_bn`).
        channels_last: feed NHWC images (and convert the fused copy); None: :func:`resolve_channels_last`.
        curves: also return ``"curves"`` for the PR, F1 and confusion-matrix plots
            (:meth:`~.evaluate.DetectionEvaluator.compute`; numpy arrays, left out of JSON files).

    Returns:
        ``{"precision", "recall", "map50", "map", "fitness" (= mAP50-95), "per_class": [...], "images",
        "instances", "speed": {"preprocess", "inference", "nms"} in ms per image, "predictions": [...]}``.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    channels_last = resolve_channels_last(channels_last, device)
    net = inference_net(model, fuse, channels_last)
    ev = DetectionEvaluator(names, max_det=eval_max_det)
    t = {"preprocess": 0.0, "inference": 0.0, "nms": 0.0}
    seen, kept = 0, []
    loader = progress_bar(loader, show=progress, desc="val")  # shown only on a terminal
    for images, batch in loader:
        t0 = time.perf_counter()
        x = to_device(images.to(device, non_blocking=True).float() / 255, device, channels_last)  # [0, 1]
        _sync(device)
        t1 = time.perf_counter()
        with autocast(device, amp):
            preds = net(x)  # (B, 4 + nc, A)
        _sync(device)
        t2 = time.perf_counter()
        dets = non_max_suppression(preds.float(), conf=conf, iou=iou, multi_label=True, max_det=max_det)
        _sync(device)
        t3 = time.perf_counter()
        t["preprocess"] += t1 - t0
        t["inference"] += t2 - t1
        t["nms"] += t3 - t2
        out, gts = [], []
        for i, d in enumerate(dets):
            d = d.cpu()
            if len(kept) < keep_predictions:
                kept.append({"image": images[i], "pred": d.clone(), "im_file": batch["im_file"][i]})
            rp, shape = batch["ratio_pad"][i], batch["ori_shape"][i]
            d[:, :4] = to_original(d[:, :4], rp, shape)
            m = batch["img_idx"] == i
            gts.append({"cls": batch["cls"][m], "boxes": to_original(batch["boxes"][m].float(), rp, shape)})
            out.append(d)
        ids = batch.get("image_id") or range(seen + 1, seen + 1 + len(dets))  # the dataset's ids survive rect order
        ev.update(out, gts, image_ids=ids, shapes=batch["ori_shape"])
        seen += len(dets)
    # no ev.gather(): under DDP only rank 0 validates, on the whole val set (the trainer's contract)
    res = ev.compute(curves=curves)
    model.train(was_training)
    res["fitness"] = res["map"]
    res["speed"] = {k: 1000 * v / max(seen, 1) for k, v in t.items()}
    res["predictions"] = kept
    return res


EVAL_SPLITS = ("train", "val", "test")


def load_eval_split(data: str | Path, split: str, on_error: str = "skip") -> tuple[list[dict], list[str]]:
    """Checked samples of one split of a dataset, and its class names (``detect val --split``).

    * YOLO data.yaml: only the yaml's ``train``, ``val`` or ``test`` entry is read.
    * any other layout (:func:`.data.exports.read_export`): train and val as training sees them
      (:func:`train.load_detection_data`); test only where the export has one (a sibling COCO json with
      ``train`` or ``val`` replaced by ``test`` in its name or in a ``test/`` folder, VOC's
      ``ImageSets/Main/test.txt``).

    Raises:
        ConfigError: ``split`` is not train/val/test, or the dataset has no such split (names both).
    """
    from ..config import ConfigError
    from .data.check import check_dataset, load_yolo_dataset
    from .data.exports import read_export
    from .data.formats import MissingSplitError
    from .train import load_detection_data, resolve_data_path

    if split not in EVAL_SPLITS:
        raise ConfigError(f"--split {split}: unknown split of {data}; use one of {', '.join(EVAL_SPLITS)}")
    path = resolve_data_path(data)
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            return load_yolo_dataset(path, split, on_error=on_error)
        except MissingSplitError:
            raise ConfigError(f"--split {split}: {path} has no '{split}:' entry (or it lists no images); add it "
                              f"to the yaml or pick another split") from None
    if split != "test":
        splits, names = load_detection_data(path, on_error=on_error)
        return splits[split], names
    splits, names, layout = read_export(path)
    if "test" not in splits:
        raise ConfigError(f"--split test: {path} ({layout}) has no test split (a COCO json named with 'test' in "
                          f"place of 'train', a test/ folder, or VOC's ImageSets/Main/test.txt); pass the test data "
                          f"as --data with --split val, or pick another split")
    return check_dataset(splits["test"], len(names), on_error=on_error, what=f"{path} [test]")[0], names


def scalar_metrics(res: dict) -> dict:
    """The per-epoch columns of metrics.csv: P, R, mAP50, mAP50-95 and the inference time."""
    return {"precision": res["precision"], "recall": res["recall"], "map50": res["map50"], "map": res["map"],
            "ms_per_img": round(sum(res["speed"].values()), 3)}


# ------------------------------------------------------------------------------------ checkpoints


def detector_spec(name: str, names: Sequence[str], overrides: dict) -> dict:
    """What :func:`load_detector` needs to rebuild the network; saved in every checkpoint's config."""
    return {"name": name, "nc": len(names), "names": list(names), "overrides": dict(overrides)}


def build_detector(spec: dict) -> DetectionModel:
    return create_detector(spec["name"], nc=spec["nc"], names=spec["names"], **spec.get("overrides", {}))


def load_detector(weights: str | Path, device: torch.device | str = "cpu",
                  use_ema: bool = True) -> tuple[DetectionModel, dict]:
    """Rebuild a detector from a ``leanvision detect train`` checkpoint (``best.pt`` / ``last.pt``), an ultralytics
    YOLOv8 checkpoint or a ``.safetensors`` (:mod:`.weights`).

    Loads with ``weights_only=True`` or the restricted unpickler (no code runs). The network comes from the detector
    spec saved in the checkpoint's config; the weights are the EMA's when present (what validation measured).

    Returns:
        (model in eval mode on ``device``, the checkpoint's config dict).
    """
    ckpt = open_weights(weights)
    if isinstance(ckpt, YoloWeights):  # ultralytics' YOLOv8 .pt or a .safetensors: the detector it describes
        return foreign_detector(ckpt, device)
    cfg = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    spec = cfg.get("detector")
    state = ckpt.get("method")
    if not isinstance(spec, dict) or not isinstance(state, dict):
        raise CheckpointError(f"{weights}: {describe_checkpoint(ckpt)[1]}; expected a detector checkpoint (the best.pt "
                              "or last.pt of `leanvision detect train`)")
    prefix = "ema_model." if use_ema and any(k.startswith("ema_model.") for k in state) else "model."
    weights_sd = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    model = build_detector(spec)
    try:
        if spec.get("replacement"):  # trained with Replacement Learning: rebuild, load, materialise (plain model)
            model = load_replaced_state(model, weights_sd, spec["replacement"])
        else:
            model.load_state_dict(weights_sd)
    except RuntimeError as e:
        raise CheckpointError(f"{weights}: weights do not fit {spec['name']} ({str(e).splitlines()[0]})") from e
    return model.to(device).eval(), cfg
