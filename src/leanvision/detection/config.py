"""Detector training configuration: a dataclass with commented defaults (YOLOv8's, spec §5.6).

A YAML file sets it (:func:`leanvision.config.load_yaml` with ``cls=DetectConfig``: unknown keys are an
error), ``leanvision detect train`` flags override it. ``None`` means "the model's or device's default".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DetectConfig:
    # what to train
    model: str = "yolov8n"  # a name from list_detectors(): yolov8n/s/m/l/x, gso-yolo-n/s/m/l/x
    data: str = ""  # data.yaml (YOLO) | COCO .json | VOC root folder (holding Annotations/)
    on_error: str = "skip"  # bad labels/images in the data: skip (warn) | fail (list them all)
    box_loss: str = "ciou"  # ciou (YOLOv8) | eiou | aiou (GSO-YOLO)
    gom: bool | None = None  # GSO-YOLO: Global Optimization Module on/off (None: the model's default, on)
    scm: bool | None = None  # GSO-YOLO: Steady Capture Module on/off (None: on)
    method: str = "e2e"  # e2e | replacement (Replacement Learning on backbone Bottlenecks, detection/replacement.py)
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
