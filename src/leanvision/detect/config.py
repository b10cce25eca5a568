"""Detector training configuration: a dataclass with commented defaults (YOLOv8's, spec §5.6).

A YAML file sets it (:func:`leanvision.config.load_yaml` with ``cls=DetectConfig``: unknown keys are an
error; a key may be any spelling of its flag, ``batch_size`` for ``batch``, ``lr`` for ``lr0``, ``img_size`` for
``imgsz``), ``leanvision detect train`` flags override it. ``None`` means "the model's or device's default".
Every value is checked by the classifier config's layer (:class:`leanvision.config.Checked`) against the
field's type and the ``RULES`` below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import DEVICE, NONEMPTY, RUN_NAME, SEED, Checked, Rule, at_least, between, multiple_of, one_of, positive

BOX_LOSSES = ("ciou", "eiou", "aiou", "diou", "giou", "iou")

# Why local learning is refused for detectors (issue 14): part of the refusal of `method: dgl` and of --help.
LOCAL_REFUSED = (
    "local learning (dgl, infopro, greedy, +mlaan) is not offered for detectors: its auxiliary losses classify "
    "whole images, and a detection batch has boxes, not one label per image; and the backbone is no single chain "
    "(the neck reads P3 and P4 from inside it), so cutting it into gradient-isolated modules would either let "
    "the detection loss's gradient cross the cuts (no memory saved) or leave the early modules without any box "
    "signal"
)
DETECT_METHOD = Rule(f"e2e or replacement ({LOCAL_REFUSED})", lambda v: v in ("e2e", "replacement"))


@dataclass
class DetectConfig(Checked):
    # what to train
    model: str = "yolov8n"  # a name from list_detectors(): yolov8n/s/m/l/x, gso-yolo-n/s/m/l/x
    data: str = ""  # data.yaml (YOLO) | COCO .json | VOC root folder (holding Annotations/)
    on_error: str = "skip"  # bad labels/images in the data: skip (warn) | fail (list them all)
    box_loss: str = "ciou"  # ciou (YOLOv8) | eiou | aiou (GSO-YOLO)
    gom: bool | None = None  # GSO-YOLO: Global Optimization Module on/off (None: the model's default, on)
    scm: bool | None = None  # GSO-YOLO: Steady Capture Module on/off (None: on)
    weights: str | None = None  # start from these weights: leanvision's best.pt, ultralytics' yolov8n.pt, .safetensors
    method: str = "e2e"  # e2e | replacement (Replacement Learning on the backbone's Bottlenecks, methods/replacement)
    replace_interval: int = 2  # replacement: every k-th eligible Bottleneck of each backbone C2f (k >= 2)
    replace_adapter: bool = False  # replacement: may borrow from the neighbouring C2f's width (needed at n and s)
    # schedule
    epochs: int = 100
    patience: int = 100  # early stop after this many epochs without a better mAP50-95
    batch: int = 16  # global batch (split over processes)
    imgsz: int = 640  # square input side, a multiple of 32
    nbs: int = 64  # nominal batch: gradients are accumulated over round(nbs / batch) batches
    # optimizer: SGD with Nesterov momentum, always explicit (never "auto", spec §4.1)
    lr0: float = 0.01  # initial learning rate
    lrf: float = 0.01  # final LR = lr0 · lrf (linear decay)
    momentum: float = 0.937
    weight_decay: float = 5e-4  # scaled by batch · accumulate / nbs; never on biases or norm weights
    warmup_epochs: float = 3.0  # at least warmup_min_iters iterations
    warmup_min_iters: int = 100  # floor on warm-up iterations: 100 in original YOLOv8, 0 in ultralytics 8.4
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    # loss gains
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    tal_min_gt_size: float = 16.0  # assigner: shorter GT sides count as this long (px) when picking anchors; 0: v8.0
    # augmentation (YOLOv8 defaults)
    augment: bool = True  # False: plain letterbox (overfit checks)
    mosaic: float = 1.0  # probability
    close_mosaic: int = 10  # mosaic off for the last N epochs
    mosaic_buffer: int | None = None  # partners from the last N decoded images; None: min(n, 8·batch, 1000); 0: any
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    shear: float = 0.0
    perspective: float = 0.0
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    fliplr: float = 0.5
    # execution
    amp: str = "auto"  # auto (bf16 on CUDA, none on CPU) | none | bf16 | fp16
    channels_last: bool | None = None  # NHWC memory; None: on for CPU (faster there), off on CUDA
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int = 4  # loader processes
    seed: int = 0
    steps_per_epoch: int | None = None  # cap on batches per epoch (smoke runs)
    val: bool = True  # validate every epoch (False: only at the end)
    rect: bool = True  # rectangular validation batches (YOLOv8's val); training batches stay square
    # output
    project: str = "runs/detect"  # runs are written to project/name
    name: str | None = None  # default "train"; an existing folder gets a number (train2, train3, ...)
    resume: str | None = None  # path of last.pt to continue from
    overwrite: bool = False  # reuse an existing run folder
    plots: bool = True  # results.png and a val-batch prediction image
    progress: bool = True  # progress bar

    RULES: ClassVar[dict[str, Rule]] = {
        "model": NONEMPTY, "on_error": one_of("skip", "fail"), "box_loss": one_of(*BOX_LOSSES),
        "method": DETECT_METHOD, "replace_interval": at_least(2), "epochs": at_least(1),
        "patience": at_least(1), "batch": at_least(1), "imgsz": multiple_of(32), "nbs": at_least(1),
        "lr0": positive(), "lrf": at_least(0), "momentum": between(0, 1, lo_open=True, hi_open=True),
        "weight_decay": at_least(0), "warmup_epochs": at_least(0), "warmup_min_iters": at_least(0),
        "warmup_momentum": between(0, 1, hi_open=True), "warmup_bias_lr": at_least(0), "box": at_least(0),
        "cls": at_least(0), "dfl": at_least(0), "mosaic": between(0, 1), "close_mosaic": at_least(0),
        "mosaic_buffer": at_least(0), "translate": between(0, 1), "scale": between(0, 1, hi_open=True),
        "perspective": at_least(0), "hsv_h": between(0, 1), "hsv_s": between(0, 1), "hsv_v": between(0, 1),
        "fliplr": between(0, 1), "amp": one_of("auto", "none", "bf16", "fp16"), "device": DEVICE,
        "workers": at_least(0), "seed": SEED, "steps_per_epoch": at_least(1), "project": NONEMPTY,
        "name": RUN_NAME,
    }
