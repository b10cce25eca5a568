"""``leanvision detect train|val|predict|synth|convert|bench``: the detector commands.

Flags mirror ``leanvision train``: a ``--config`` YAML (keys of :class:`DetectConfig`) sets defaults, flags
override; a flag left out means "the config's value". ``--resume RUN`` (or ``RUN/last.pt``) continues with
the checkpoint's saved config; flags given with it may only extend ``--epochs`` or change ``--device``,
``--no-progress``, ``--no-plots`` (see :mod:`leanvision.engine.resume`).
"""

from __future__ import annotations

import argparse
import dataclasses

from ..config import RUN_NAME, ConfigError, argtype, at_least, between, build_config, field_names, multiple_of
from .config import DetectConfig

_TYPES = {"int": int, "float": float, "str": str}


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per DetectConfig field, grouped; defaults are None so only given flags override."""
    help_ = {
        "model": "detector: yolov8n/s/m/l/x or gso-yolo-n/s/m/l/x (default yolov8n)",
        "data": "data.yaml (YOLO), a COCO .json, or a Pascal VOC folder with Annotations/",
        "weights": "start from these weights: a leanvision best.pt, an ultralytics YOLOv8 .pt (yolov8n.pt; read "
                   "without running code or needing ultralytics) or a .safetensors; layers whose shapes differ "
                   "(the class layer when the class count differs) are re-initialised and listed",
        "epochs": "training epochs (default 100)", "batch": "global batch size (default 16)",
        "imgsz": "square input size, a multiple of 32 (default 640)",
        "box_loss": "box IoU loss: ciou (YOLOv8) | eiou | aiou (GSO-YOLO)",
        "amp": "auto (bf16 on CUDA, off on CPU) | none | bf16 | fp16",
        "device": "auto | cpu | cuda | cuda:N", "project": "parent folder of runs (default runs/detect)",
        "name": "run folder name (default train, numbered when it exists)",
        "resume": "continue a run (its folder or last.pt) with its saved config, in its folder; only --epochs (to "
                  "extend it), --device, --no-progress and --no-plots may be given with it",
        "patience": "early stop after N epochs without a better mAP50-95 (default 100)",
        "nbs": "nominal batch: gradients accumulate over round(nbs/batch) batches (default 64)",
        "close_mosaic": "turn mosaic off for the last N epochs (default 10)",
        "mosaic_buffer": "mosaic partners come from the last N decoded images (default min(n, 8*batch, 1000), "
                         "YOLOv8's buffer); 0: from the whole dataset, results independent of --workers",
        "warmup_min_iters": "at least this many warm-up iterations: 100 (original YOLOv8, default) or 0 (8.4)",
        "on_error": "bad labels or images: skip (warn) | fail", "steps_per_epoch": "cap on batches per epoch",
        "method": "e2e | replacement (Replacement Learning on the backbone's Bottlenecks). Local learning is not "
                  "offered for detectors: its auxiliary losses classify whole images, a detection batch has boxes",
        "tal_min_gt_size": "assigner: GT sides shorter than this (px) count as this long when anchors are picked, "
                           "so boxes under a stride are learned (default 16, as ultralytics 8.4; 0: YOLOv8.0)",
    }
    choices = {"box_loss": ["ciou", "eiou", "aiou", "diou", "giou", "iou"], "amp": ["auto", "none", "bf16", "fp16"],
               "on_error": ["skip", "fail"], "method": ["e2e", "replacement"]}
    groups = {}
    for f in dataclasses.fields(DetectConfig):
        grp = ("model and data" if f.name in ("model", "data", "weights", "on_error", "box_loss", "gom", "scm") else
               "output" if f.name in ("project", "name", "resume", "overwrite", "plots", "progress") else "training")
        g = groups.setdefault(grp, p.add_argument_group(grp))
        flag = "--" + f.name.replace("_", "-")
        tname = str(f.type).replace(" | None", "")
        if tname.startswith("bool"):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help={"gom": "GSO-YOLO: Global Optimization Module on/off",
                                 "scm": "GSO-YOLO: Steady Capture Module on/off",
                                 "rect": "rectangular validation batches in aspect-ratio order, as YOLOv8's val "
                                         "(default on; training batches stay square)",
                                 "channels_last": "NHWC memory format for training and validation (default: on for "
                                                  "CPU, where it is faster; off on CUDA)"}.get(f.name))
        else:
            g.add_argument(flag, type=_TYPES.get(tname, str), default=None, choices=choices.get(f.name),
                           help=help_.get(f.name))


def config_from_args(args: argparse.Namespace) -> DetectConfig:
    """The run's config: a --config YAML overridden by the flags given, or, with --resume, the saved run's."""
    flags = {name: getattr(args, name, None) for name in field_names(DetectConfig)}
    if getattr(args, "resume", None):
        from ..engine.resume import config_for_resume
        from .train import upgrade_saved_config

        if getattr(args, "config", None):
            raise ConfigError("--resume restores the run's own config; drop --config (a config with a new "
                              "--name starts a new run)")
        return config_for_resume(DetectConfig, args.resume, flags, upgrade=upgrade_saved_config)
    return build_config(DetectConfig, args.config, flags)


def cmd_train(args) -> int:
    from ..engine.distributed import is_main_process
    from .train import train_detector

    cfg = config_from_args(args)
    if not cfg.data:
        raise ConfigError("give --data (a data.yaml, COCO .json or VOC folder)")
    res = train_detector(cfg)
    if "val" in res and is_main_process():
        v = res["val"]
        print(f"results in {res['run_dir']}: P {v['precision']:.3f} R {v['recall']:.3f} mAP50 {v['map50']:.3f} "
              f"mAP50-95 {v['map']:.3f} (best.pt, epoch {res['best_epoch']})")
    return 0


def cmd_val(args) -> int:
    from ..engine.distributed import resolve_device
    from ..engine.run_folder import write_json
    from .data.dataset import build_detection_loader
    from .evaluate import format_results
    from .train import resolve_amp
    from .val import load_detector, load_eval_split, validate

    if args.plots and not RUN_NAME.ok(args.name):  # before the validation, which can take long
        raise ConfigError(f"--name must be {RUN_NAME.text}, got {args.name!r}")
    device = resolve_device(args.device)
    model, cfg = load_detector(args.weights, device)
    names = cfg["detector"]["names"]
    data = args.data or cfg.get("data", "")
    if not data:
        raise ConfigError(f"{args.weights} does not name its dataset; pass --data")
    samples, data_names = load_eval_split(data, args.split, on_error="skip")
    if len(data_names) != len(names):
        raise ConfigError(f"{data}: {len(data_names)} classes, but {args.weights} was trained on {len(names)}")
    imgsz = args.imgsz or int(cfg.get("imgsz", 640))
    loader = build_detection_loader(samples, imgsz, args.batch, augment=False, workers=args.workers, distributed=False,
                                    rect=args.rect)
    res = validate(model, loader, names, device, resolve_amp("auto", device), conf=args.conf, iou=args.iou,
                   progress=args.progress, curves=args.plots)
    print(format_results(res))
    sp = res["speed"]
    print(f"speed: {sp['preprocess']:.1f} ms preprocess, {sp['inference']:.1f} ms inference, {sp['nms']:.1f} ms NMS "
          f"per image at {imgsz} on {device}")
    if args.json:
        write_json(args.json, {k: v for k, v in res.items() if k not in ("predictions", "curves")})
    if args.plots:
        from ..engine.run_folder import output_folder
        from .plots import write_val_plots

        out = output_folder(args.project, args.name, args.overwrite)
        write_val_plots(res, names, out)
        print(f"PR_curve.png, F1_curve.png and confusion_matrix_normalized.png written to {out}")
    return 0


def cmd_predict(args) -> int:
    from pathlib import Path

    from ..engine.run_folder import output_folder
    from .predict import predict
    from .video import is_video

    if not RUN_NAME.ok(args.name):
        raise ConfigError(f"--name must be {RUN_NAME.text}, got {args.name!r}")
    src = Path(args.source)
    if is_video(src) or (src.is_dir() and args.fps is not None):
        return _predict_stream(args, output_folder(args.project, args.name, args.overwrite))
    if args.alert or args.fps is not None:
        flag = "--alert" if args.alert else "--fps"
        raise ConfigError(f"{flag} applies to a stream of frames: give a video file or a folder of frames with --fps "
                          f"(--source {args.source} is read as separate images)")
    out = output_folder(args.project, args.name, args.overwrite)
    recs = predict(args.weights, args.source, out, args.imgsz, args.conf, args.iou, save_txt=args.save_txt,
                   save_json=not args.no_json, device=args.device, classes=args.classes)
    print(f"{len(recs)} detections; images{', predictions.json' if not args.no_json else ''}"
          f"{', labels/*.txt' if args.save_txt else ''} written to {out}")
    return 0


def _predict_stream(args, out) -> int:
    import sys

    from .predict import load_for_predict
    from .stream import predict_stream

    if args.save_txt:
        raise ConfigError("--save-txt writes one label file per image; a video's detections are in frames.jsonl")
    det = load_for_predict(args.weights, args.device, args.imgsz)
    res = predict_stream(det, args.source, out, conf=args.conf, iou=args.iou, classes=args.classes, alert=args.alert,
                         alert_gap=args.alert_gap, fps=args.fps, batch=args.batch, save_json=not args.no_json,
                         save_video=not args.no_video, progress=not args.no_progress)
    if res["warning"]:
        print(f"leanvision detect: warning: {res['warning']}", file=sys.stderr)
    written = ", ".join(p.name for p in res["outputs"].values()) or "nothing (--no-json --no-video)"
    alerts = f", {len(res['events'])} alert events" if args.alert else ""
    print(f"{res['frames']} frames in {res['seconds']:.1f} s ({res['fps']:.1f} frames/s at {det.imgsz} px on "
          f"{det.device}, video {res['video_fps']:g} fps); {res['detections']} detections{alerts}; wrote {written} "
          f"to {out}")
    return 0


def cmd_synth(args) -> int:
    from .data.synth import generate_synthetic_dataset

    path = generate_synthetic_dataset(args.out, images=args.images, imgsz=args.imgsz, seed=args.seed,
                                      val_fraction=args.val_fraction)
    print(f"wrote {args.images} synthetic construction-site images; train with: "
          f"leanvision detect train --data {path} --imgsz {args.imgsz - args.imgsz % 32 or 32}")
    return 0


def cmd_convert(args) -> int:
    from .data.convert import convert_dataset

    path = convert_dataset(args.src, fmt=args.format, out=args.out, keep_difficult=args.keep_difficult,
                           keep_crowd=args.keep_crowd, seed=args.seed, copy_images=args.copy_images,
                           on_error=args.on_error)
    print(f"wrote {path}")
    return 0


def add_detect_parser(sub) -> argparse._SubParsersAction:
    """Register ``detect`` and its sub-commands; returns them so that ``detect bench`` (in bench/) can join."""
    p = sub.add_parser("detect", help="object detectors (YOLOv8, GSO-YOLO): train, val, predict, synth, convert, bench",
                       description="YOLOv8-style detectors in plain PyTorch.")
    dsub = p.add_subparsers(dest="detect_command", required=True)

    t = dsub.add_parser("train", help="train a detector",
                        description="Train a detector on a YOLO data.yaml, COCO json or VOC folder. A --config YAML "
                                    "(DetectConfig keys) sets defaults; flags override. Example: leanvision detect "
                                    "train --model yolov8n --data data.yaml --epochs 100 --imgsz 640")
    t.add_argument("--config", help="YAML file of train options: keys as the flags, with _ or - (either spelling "
                   "of a flag with an alias: batch or batch_size, lr0 or lr, imgsz or img_size)")
    _add_config_flags(t)
    t.set_defaults(func=cmd_train)

    v = dsub.add_parser("val", help="P, R, mAP50, mAP50-95 of a checkpoint, overall and per class",
                        description="Validate best.pt/last.pt on a dataset (default: the one it was trained on).")
    v.add_argument("--weights", required=True, help="a best.pt or last.pt of `leanvision detect train`, an "
                   "ultralytics YOLOv8 .pt (e.g. yolov8n.pt, with --data) or a .safetensors")
    v.add_argument("--data", help="data.yaml, COCO json or VOC folder (default: the training data)")
    v.add_argument("--split", default="val", help="val (default), train or test")
    v.add_argument("--imgsz", type=argtype(int, multiple_of(32)), help="default: the training size")
    v.add_argument("--batch", type=argtype(int, at_least(1)), default=16)
    v.add_argument("--rect", action=argparse.BooleanOptionalAction, default=True,
                   help="rectangular batches: images in aspect-ratio order, each batch letterboxed to one stride-32 "
                        "shape with a half-stride border, as YOLOv8's val (default on; --no-rect: squares of imgsz)")
    v.add_argument("--conf", type=argtype(float, between(0, 1)), default=0.001)
    v.add_argument("--iou", type=argtype(float, between(0, 1)), default=0.7)
    v.add_argument("--device", default="auto")
    v.add_argument("--workers", type=argtype(int, at_least(0)), default=2)
    v.add_argument("--json", help="also write the metrics here")
    v.add_argument("--project", default="runs/detect", help="parent folder of the plots (default runs/detect)")
    v.add_argument("--name", default="val", help="folder of the plots (default val, numbered when it exists)")
    v.add_argument("--overwrite", action="store_true", help="write into an existing PROJECT/NAME")
    v.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="PR_curve.png, F1_curve.png and confusion_matrix_normalized.png in PROJECT/NAME (default on)")
    v.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar (also off when the "
                   "output is not a terminal)")
    v.set_defaults(func=cmd_val)

    q = dsub.add_parser("predict", help="detect objects in images, a video or a folder of frames",
                        description="Images: writes them with boxes drawn and predictions.json (boxes xyxy in "
                                    "original-image pixels) to PROJECT/NAME. A video file (mp4, avi, mov, mkv, ...) or "
                                    "a folder of frames with --fps: writes frames.jsonl (one line per frame: frame, "
                                    "time in s, detections), the annotated video STEM.mp4 and, with --alert, "
                                    "events.jsonl. Example: leanvision detect predict --weights best.pt --source "
                                    "site.mp4 --alert 'NO-Hardhat,NO-Safety Vest'")
    q.add_argument("--weights", required=True, help="a best.pt or last.pt of `leanvision detect train`, an "
                   "ultralytics YOLOv8 .pt (e.g. yolov8n.pt) or a .safetensors")
    q.add_argument("--source", required=True, help="an image, a folder of images, a video file, or a folder of "
                                                   "frames (with --fps)")
    q.add_argument("--imgsz", type=argtype(int, multiple_of(32)), help="default: the training size")
    q.add_argument("--conf", type=argtype(float, between(0, 1)), default=0.25)
    q.add_argument("--iou", type=argtype(float, between(0, 1)), default=0.7)
    q.add_argument("--classes", action="append", metavar="NAME|ID[,...]",
                   help="keep only these classes: names or ids, comma-separated or repeated ('NO-Safety Vest,Person')")
    q.add_argument("--alert", action="append", metavar="NAME|ID[,...]",
                   help="video/frames: an event line (time, frame, class, score, box) in events.jsonl, printed too, "
                        "each time one of these classes appears")
    q.add_argument("--alert-gap", type=argtype(float, at_least(0)), default=3.0, metavar="SECONDS",
                   help="a class counts as appearing again only after this long undetected (default 3): a person "
                        "in view for 10 s is one event")
    q.add_argument("--fps", type=argtype(float, between(0, 1000, lo_open=True)),
                   help="read a folder as the frames of one video at this rate; for a video: override its own")
    q.add_argument("--batch", type=argtype(int, at_least(1)), default=8, help="video frames per forward (default 8)")
    q.add_argument("--save-txt", action="store_true", help="images: also write YOLO txt labels (with confidence)")
    q.add_argument("--no-json", action="store_true", help="do not write predictions.json / frames.jsonl")
    q.add_argument("--no-video", action="store_true", help="video/frames: do not write the annotated video")
    q.add_argument("--no-progress", action="store_true", help="no progress bar (none is shown off a terminal)")
    q.add_argument("--project", default="runs/detect")
    q.add_argument("--name", default="predict")
    q.add_argument("--overwrite", action="store_true", help="write into an existing PROJECT/NAME")
    q.add_argument("--device", default="auto")
    q.set_defaults(func=cmd_predict)

    s = dsub.add_parser("synth", help="write a synthetic construction-site dataset in YOLO format")
    s.add_argument("--out", required=True)
    s.add_argument("--images", type=argtype(int, at_least(1)), default=200)
    s.add_argument("--imgsz", type=argtype(int, at_least(32)), default=320, help="side of the square images")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--val-fraction", type=argtype(float, between(0, 1, hi_open=True)), default=0.2)
    s.set_defaults(func=cmd_synth)

    c = dsub.add_parser("convert", help="convert VOC / COCO / SODA / MOCS / CIS to a YOLO dataset",
                        description="Writes images/, labels/ and data.yaml under --out (images are symlinked).")
    c.add_argument("src", help="VOC/SODA root, or a COCO json / folder of train/val/test jsons")
    c.add_argument("--format", required=True, choices=["voc", "coco", "soda", "mocs", "cis"])
    c.add_argument("--out", required=True)
    c.add_argument("--keep-difficult", action="store_true")
    c.add_argument("--keep-crowd", action="store_true")
    c.add_argument("--copy-images", action="store_true")
    c.add_argument("--seed", type=int, default=0, help="seed of the 8:1:1 split when the source has none")
    c.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    c.set_defaults(func=cmd_convert)
    return dsub
