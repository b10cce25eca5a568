"""``leanvision detect bench`` (also ``leanvision bench detect``): detectors side by side.

Two kinds of rows:

* resource rows (``--steps N``): each (model, imgsz) trains N timed steps on one random batch with boxes,
  through the foundation :class:`~leanvision.engine.trainer.Trainer`'s ``train_step`` and
  :class:`~leanvision.engine.meter.ResourceMeter` (training images/s, peak memory), then times N
  validation forwards + NMS of the EMA model (validation images/s);
* training rows (``--data D --epochs E``): each row trains for real with :func:`train_detector` and reports
  P, R, mAP50, mAP50-95 of its best.pt beside params, GFLOPs, images/s and peak memory.

``--ablation`` adds the GSO-YOLO ablation rows at one scale: YOLOv8, +GOM, +SCM, +GOM+SCM, +AIoU, full.
Writes ``bench.md``, ``bench.json`` (rows + environment + the command) and ``bench.png`` (the table's main
columns as bars) to ``--out``.
"""

from __future__ import annotations

import functools
import math
import shlex
import sys
import time
from pathlib import Path

import torch
import yaml

from ..config import ConfigError, argtype, at_least, field_names, multiple_of, sort_spellings
from ..detect.config import DetectConfig
from ..detect.method import DetectionMethod
from ..detect.postprocess import VAL_SETTINGS, non_max_suppression
from ..detect.schedule import YoloSchedule
from ..detect.val import build_detector, detector_spec, inference_net, resolve_channels_last
from ..engine.checkpoint import atomic_write_text
from ..engine.distributed import resolve_device
from ..engine.progress import progress_bar
from ..engine.run_folder import write_json
from ..engine.trainer import Trainer, to_device
from ..methods.replacement import apply_replacement
from ..models.yolo import count_parameters, model_gflops
from .report import busy_warning, environment, plot_bars

# the main columns of the detector bench table, drawn by bench.png
PANELS = [("map", "mAP50-95", 1.0), ("map50", "mAP50", 1.0), ("train_images_per_s", "train images/s", 1.0),
          ("peak_memory_bytes", "peak memory (MB)", 2.0**-20), ("val_images_per_s", "val images/s", 1.0),
          ("params", "params (M)", 1e-6)]


def ablation_rows(scale: str = "n") -> list[str]:
    """The paper's ablation grid (spec §4.2) at one scale; YOLOv8 rows use the plain v8 table."""
    return [f"yolov8{scale}", f"gso-yolo-{scale}:gom=true,scm=false", f"gso-yolo-{scale}:gom=false,scm=true",
            f"gso-yolo-{scale}:gom=true,scm=true", f"yolov8{scale}:box_loss=aiou", f"gso-yolo-{scale}:box_loss=aiou"]


def parse_row(text: str) -> tuple[str, dict]:
    """``MODEL[:key=value,...]`` -> (model, options); keys are DetectConfig fields (gom, scm, box_loss, ...)."""
    model, _, rest = text.partition(":")
    items = []
    for item in filter(None, rest.split(",")):
        if "=" not in item:
            raise ConfigError(f"bench row {text!r}: expected key=value after the model, got {item!r}")
        key, v = item.split("=", 1)
        items.append((key.strip(), yaml.safe_load(v)))
    # DetectConfig fields in any spelling the flags take (batch / batch_size, lr0 / lr, imgsz ...)
    opts, _, unknown = sort_spellings(items, field_names(DetectConfig), f"bench row {text!r}")
    if unknown:
        raise ConfigError(f"bench row {text!r}: unknown option {next(iter(unknown))!r}; use DetectConfig keys (gom, "
                          f"scm, box_loss, ...)")
    return model, opts


def random_batch(batch: int, imgsz: int, nc: int, per_image: int = 6, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """uint8 images (B, 3, imgsz, imgsz) and ``per_image`` random boxes each (10–50 % of the side)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, imgsz, imgsz), dtype=torch.uint8, generator=g)
    n = batch * per_image
    wh = (0.1 + 0.4 * torch.rand(n, 2, generator=g)) * imgsz
    xy = torch.rand(n, 2, generator=g) * (imgsz - wh)
    targets = {"img_idx": torch.arange(batch).repeat_interleave(per_image),
               "cls": torch.randint(0, nc, (n,), generator=g), "boxes": torch.cat((xy, xy + wh), 1)}
    return images, targets


def resource_row(model_name: str, opts: dict, imgsz: int, batch: int, steps: int, device: torch.device,
                 amp: str = "none", nc: int = 6, out: Path = Path("runs/detect-bench")) -> dict:
    """Training images/s and peak memory (ResourceMeter over Trainer.train_step) and validation images/s."""
    from ..detect.train import model_overrides

    cfg = DetectConfig(model=model_name, **opts)
    spec = detector_spec(model_name, [f"c{i}" for i in range(nc)], model_overrides(cfg))
    torch.manual_seed(0)
    model = build_detector(spec)
    if cfg.method == "replacement":  # a row such as gso-yolo-n:method=replacement,replace_adapter=true
        apply_replacement(model, cfg.replace_interval, adapter=cfg.replace_adapter, allow_none=False)
    channels_last = resolve_channels_last(cfg.channels_last, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    method = DetectionMethod(model, cfg.box_loss).to(device)
    opt = torch.optim.SGD(method.param_groups(cfg.weight_decay), lr=cfg.lr0, momentum=cfg.momentum, nesterov=True)
    trainer = Trainer(method, opt, YoloSchedule(epochs=1), [], lambda m: {}, out / "scratch", 1, {}, device,
                      amp=amp, channels_last=channels_last, progress=False, meter_warmup=2,
                      meter_track_steps=0 if device.type == "cuda" else 1)
    images, targets = random_batch(batch, imgsz, nc)
    images = images.to(device)
    targets = {k: v.to(device) for k, v in targets.items()}
    method.train()
    total = trainer.meter.warmup + trainer.meter.track_steps + steps
    for i in range(total):
        trainer.schedule.apply(opt, 0, i, total)
        trainer.meter.measure(functools.partial(trainer.train_step, images, targets, 0, i), batch, opt)
    st = trainer.meter.stats()
    # validation speed: forward + NMS of the EMA model as validate() runs it (BN folded, same memory format)
    ema = inference_net(method.inference_model().eval(), fuse=True, channels_last=channels_last)
    x = to_device(images.float() / 255, device, channels_last)
    secs = 0.0
    with torch.no_grad():
        for i in range(steps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            non_max_suppression(ema(x), **VAL_SETTINGS)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            secs += (time.perf_counter() - t0) if i else 0.0
    return {"model": model_name, "settings": _settings(opts), "imgsz": imgsz, "batch": batch,
            "params": count_parameters(model), "gflops": round(model_gflops(model, imgsz), 2),
            "train_images_per_s": st.images_per_s, "ms_per_step": st.ms_per_step,
            "peak_memory_bytes": st.peak_memory_bytes, "memory_source": st.memory_source,
            "val_images_per_s": steps * batch / secs if secs else float("nan"), "device": st.device}


def training_row(model_name: str, opts: dict, imgsz: int, args, out: Path) -> dict:
    """Train the row for real on ``args.data``; metrics of its best.pt."""
    from ..detect.train import train_detector

    label = (model_name + ("-" + _settings(opts).replace("=", "").replace(",", "-") if opts else "")) + f"-{imgsz}"
    values = dict(model=model_name, data=args.data, epochs=args.epochs, imgsz=imgsz, batch=args.batch,
                  project=str(out / "runs"), name=label, overwrite=True, progress=args.progress, workers=args.workers,
                  device=args.device, amp=args.amp or "auto", seed=args.seed, plots=False)
    if args.steps_per_epoch:
        values["steps_per_epoch"] = args.steps_per_epoch
    res = train_detector(DetectConfig(**{**values, **opts}))
    v, rsc = res["val"], res["resources"]
    model = build_detector(_spec_from_run(Path(res["run_dir"])))  # for GFLOPs (fused weights cost the same)
    return {"model": model_name, "settings": _settings(opts), "imgsz": imgsz, "batch": args.batch,
            "epochs": args.epochs, "precision": v["precision"], "recall": v["recall"], "map50": v["map50"],
            "map": v["map"], "params": rsc["trainable_params"],  # trainable: what Replacement Learning reduces
            "gflops": round(model_gflops(model, imgsz), 2), "train_images_per_s": rsc["images_per_s"],
            "ms_per_step": rsc["ms_per_step"],
            "peak_memory_bytes": rsc["peak_memory_bytes"], "memory_source": rsc["memory_source"],
            "val_images_per_s": 1000 / sum(v["speed"].values()) if sum(v["speed"].values()) else float("nan"),
            "device": rsc["device"], "run_dir": res["run_dir"]}


def _spec_from_run(run_dir: Path) -> dict:
    from ..engine.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "last.pt")["config"]["detector"]


def _settings(opts: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in opts.items())


def _fmt(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def render_markdown(rows: list[dict], title: str, env: dict, command: str) -> str:
    """A detection-shaped table in the classification bench's style (environment and command on top)."""
    lines = [f"### {title}", "", f"`{command}`", "", "; ".join(f"{k}: {v}" for k, v in env.items()), "",
             "| model | settings | imgsz | batch | P | R | mAP50 | mAP50-95 | params (M) | GFLOPs | train images/s "
             "| ms/step | peak memory (MB) | val images/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['settings']} | {r['imgsz']} | {r['batch']} | {_fmt(r.get('precision'), '.3f')} | "
            f"{_fmt(r.get('recall'), '.3f')} | {_fmt(r.get('map50'), '.3f')} | {_fmt(r.get('map'), '.3f')} | "
            f"{r['params'] / 1e6:.2f} | {r['gflops']:.1f} | {_fmt(r['train_images_per_s'], '.1f')} | "
            f"{_fmt(r['ms_per_step'], '.0f')} | {r['peak_memory_bytes'] / 2**20:.0f} | "
            f"{_fmt(r['val_images_per_s'], '.1f')} |")
    src = rows[0]["memory_source"] if rows else ""
    lines += ["", f"Peak memory source: {src}. GFLOPs: one eval forward at imgsz (convs/linears, BN unfused). "
              "Validation images/s: forward + NMS (conf 0.001, IoU 0.7, max 300) of the EMA model, BatchNorm "
              "folded and in the training memory format, as validate() runs it. "
              "mAP: COCO-style by faster-coco-eval on the val split; P and R at the best-F1 confidence."]
    return "\n".join(lines) + "\n"


def add_bench_arguments(p) -> None:
    p.add_argument("rows", nargs="*", help="MODEL[:key=value,...], e.g. yolov8n gso-yolo-n:scm=false,box_loss=aiou")
    p.add_argument("--imgsz", type=argtype(int, multiple_of(32)), nargs="+", default=[640],
                   help="input sizes (each row runs at each)")
    p.add_argument("--steps", type=argtype(int, at_least(1)), help="resource rows: timed steps per row after warm-up")
    p.add_argument("--batch", type=argtype(int, at_least(1)), default=8)
    p.add_argument("--data", help="training rows: a data.yaml / COCO json / VOC folder")
    p.add_argument("--epochs", type=argtype(int, at_least(1)), help="training rows: epochs per row")
    p.add_argument("--steps-per-epoch", type=argtype(int, at_least(1)))
    p.add_argument("--ablation", action="store_true", help="add the GSO-YOLO ablation rows (YOLOv8 ... full)")
    p.add_argument("--scale", default="n", choices=list("nsmlx"), help="scale of the ablation rows")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=["auto", "none", "bf16", "fp16"])
    p.add_argument("--workers", type=argtype(int, at_least(0)), default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/detect-bench", help="folder for bench.md, bench.json, bench.png and runs")
    p.add_argument("--title", default="leanvision detect bench")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars (also off when the output is not a terminal)")


def cmd_bench(args) -> int:
    rows = list(args.rows) + (ablation_rows(args.scale) if args.ablation else [])
    if not rows:
        raise ConfigError("give detector rows (e.g. yolov8n yolov8s) or --ablation")
    if not args.steps and not (args.data and args.epochs):
        raise ConfigError("give --steps N (resource rows) or --data D --epochs N (training rows)")
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    busy = busy_warning() if args.steps and not args.data else None  # resource rows are timings
    if busy:
        print(busy, file=sys.stderr, flush=True)
    bar = progress_bar(total=len(rows) * len(args.imgsz), show=args.progress, desc="bench rows", unit="row",
                       leave=True)
    for text in rows:
        model, opts = parse_row(text)
        for imgsz in args.imgsz:
            if args.data and args.epochs:
                r = training_row(model, opts, imgsz, args, out)
            else:
                amp = {"auto": "bf16" if device.type == "cuda" else "none", None: "none"}.get(args.amp, args.amp)
                r = resource_row(model, opts, imgsz, args.batch, args.steps, device, amp, out=out)
            done.append(r)
            bar.update(1)
            bar.write(f"  done: {text} @ {imgsz}: {r['train_images_per_s']:.1f} train images/s, "
                      f"{r['peak_memory_bytes'] / 2**20:.0f} MB, {r['val_images_per_s']:.1f} val images/s")
    bar.close()
    command = "leanvision detect bench " + " ".join(shlex.quote(a) for a in _bench_argv())
    env = environment()
    md = render_markdown(done, args.title, env, command)
    atomic_write_text(out / "bench.md", md)
    write_json(out / "bench.json", {"command": command, "environment": env, "rows": done})
    labels = [f"{r['model']}" + (f"\n{r['settings']}" if r["settings"] else "") + f"\n@{r['imgsz']}" for r in done]
    plot_bars(done, labels, PANELS, out / "bench.png", args.title)
    print(md)
    print(f"wrote {out / 'bench.md'}, {out / 'bench.json'} and {out / 'bench.png'}")
    return 0


def _bench_argv() -> list[str]:
    argv = sys.argv[1:]
    for i in range(len(argv) - 1):
        if argv[i : i + 2] in (["detect", "bench"], ["bench", "detect"]):
            return argv[i + 2 :]
    return argv


def add_detect_bench_parser(dsub) -> None:
    """``leanvision detect bench`` (also ``leanvision bench detect``), registered into ``detect``'s sub-commands."""
    b = dsub.add_parser("bench", help="detectors side by side: training images/s, peak memory, val speed, mAP",
                        description="Rows are MODEL[:key=value,...] (e.g. yolov8n gso-yolo-n:gom=false). With --steps "
                                    "N each row times N training steps on random batches per --imgsz; with --data "
                                    "and --epochs each row trains for real. --ablation runs the GSO-YOLO ablation.")
    add_bench_arguments(b)
    b.set_defaults(func=cmd_bench)
