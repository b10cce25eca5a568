"""Dev only: leanvision's YOLOv8n trainer against the reference implementation (ultralytics) on one dataset.

ultralytics is never a dependency of leanvision (AGPL-3.0); it lives in its own virtualenv outside the repo::

    python3 -m venv /work/ultra-venv
    /work/ultra-venv/bin/pip install -c requirements-lock.txt torch torchvision   # the same local torch wheels
    /work/ultra-venv/bin/pip install -c requirements-lock.txt ultralytics         # 8.4.190 when this was written

    .venv/bin/python scripts/compare_ultralytics.py --ultra-python /work/ultra-venv/bin/python

What it does, one implementation after the other (never in parallel), each in its own process with one
intra-op thread (OMP_NUM_THREADS=1 and torch.set_num_threads(1)) and no loader workers (ultralytics forces
workers=0 on CPU, so leanvision gets 0 too):

1. The data both read: ``--data data.yaml`` (a real dataset, e.g. the shared Construction Site Safety set), read
   by leanvision's reader and written out as OUT/data/data.yaml over absolute image lists, so that both tools see
   exactly the same files (``--subset N``: the first N training images by sorted name, a named shorter
   schedule); without ``--data``, ``leanvision detect synth`` makes a synthetic one.
2. Train yolov8n from scratch with the same settings: imgsz, batch, epochs, SGD (lr0, momentum, weight decay,
   nbs), warm-up (epochs, momentum, bias LR; no 100-iteration floor, as ultralytics 8.4), augmentation switches
   (mosaic, close_mosaic, HSV, fliplr, translate, scale), seed; ultralytics runs offline (YOLO_OFFLINE=1, built
   from yolov8n.yaml, pretrained=False, plots=False, amp=False).
3. Each implementation's own validation of its best.pt on the same val split (rectangular batches in both),
   timed end to end (data loading included), at the training size and, with --val-imgsz2, at a second size.
4. Timing rounds (--speed-rounds R, default 3): the two take turns, the first to go alternating each round,
   each training --speed-epochs (2) from scratch with mosaic on and then validating step 2's best.pt at each
   size; the report gives the median images/s and the range. Single runs on this shared machine swing by
   +-15 %, so speed claims rest on these medians; step 2's single timings are listed too.

Train images/s = train images x epochs / summed time of the training loops (data loading included,
validation excluded). Peak memory is the peak RSS of each training process (os.wait4), so it includes each
library's imports (ultralytics also loads cv2, matplotlib, polars). GFLOPs: torch's FlopCounterMode on one
forward at 640 for both (ultralytics' own thop figure in brackets). Writes OUT/compare.md and OUT/compare.json,
with per-class AP50 and AP50-95 of both on the val split. leanvision's mAP is COCO's (faster-coco-eval: 101-point
step interpolation), the reference's its own (trapezoid over an interpolated curve), which reads a few percent lower
on the same detections; so leanvision's detections are also scored by the reference's evaluator (its matching and
AP code, run in its venv): those rows compare like for like.

The reference's NMS gives up after 2 s + 0.05 s per image of a batch and keeps nothing for the rest of the batch;
on a busy CPU with an early, unconfident model (conf 0.001) it hits that limit and loses images, so its validation
runs here with the limit lifted (results unchanged otherwise).

Real photos, the issue-13 recipe (from scratch, 320 px, 15 epochs, batch 16, SGD lr0 0.01, seed 0)::

    .venv/bin/python scripts/compare_ultralytics.py --data /path/to/construction-site-safety/data.yaml \
        --imgsz 320 --batch 16 --nbs 64 --epochs 15 --close-mosaic 10 --val-imgsz2 0 --speed-rounds 0 --out OUT
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# runs inside leanvision's venv: train, then print a JSON line
LV_TRAIN = """
import json, sys, time, torch
torch.set_num_threads(1)
from leanvision.detect.config import DetectConfig
from leanvision.detect.train import train_detector
res = train_detector(DetectConfig(**json.loads(sys.argv[1])))
print("RESULT " + json.dumps({"run_dir": res["run_dir"], "best_epoch": res["best_epoch"]}))
"""

LV_VAL = """
import json, sys, time, torch
torch.set_num_threads(1)
from leanvision.detect.data.dataset import build_detection_loader
from leanvision.detect.train import load_detection_data
from leanvision.detect.val import load_detector, validate
from leanvision.engine.meter import count_parameters
from leanvision.models.yolo import model_gflops
a = json.loads(sys.argv[1])
model, cfg = load_detector(a["weights"])
splits, names = load_detection_data(a["data"])
dump = {"names": list(names), "images": []}
if a.get("dump"):  # keep every image's detections and ground truth (original pixels) for the reference's evaluator
    import leanvision.detect.val as val_mod
    class Recorder(val_mod.DetectionEvaluator):
        def update(self, preds, targets, image_ids=None, shapes=None):
            for p, g in zip(preds, targets):
                dump["images"].append({"det": p.tolist(), "gt_boxes": g["boxes"].tolist(), "gt_cls": g["cls"].tolist()})
            super().update(preds, targets, image_ids, shapes)
    val_mod.DetectionEvaluator = Recorder
t = time.perf_counter()
loader = build_detection_loader(splits["val"], a["imgsz"], a["batch"], workers=0, distributed=False, rect=a["rect"])
r = validate(model, loader, names)
wall = time.perf_counter() - t
if a.get("dump"):
    open(a["dump"], "w").write(json.dumps(dump))
print("RESULT " + json.dumps({"images": r["images"], "val_s": wall, "P": r["precision"], "R": r["recall"],
                              "mAP50": r["map50"], "mAP50-95": r["map"], "params": count_parameters(model),
                              "gflops640": model_gflops(model, 640),
                              "per_class": {c["name"]: {"P": c["precision"], "R": c["recall"], "AP50": c["ap50"],
                                                        "AP50-95": c["ap"], "instances": c["instances"]}
                                            for c in r["per_class"] if c["instances"]}}))
"""

# runs inside the ultralytics venv
ULTRA_TRAIN = """
import json, sys, time, torch
torch.set_num_threads(1)
from ultralytics import YOLO
import ultralytics.utils.nms as nms
_nms = nms.non_max_suppression
nms.non_max_suppression = lambda *p, **k: _nms(*p, **{**k, "max_time_img": 1e3})  # no time limit (see docstring)
a = json.loads(sys.argv[1])
model, clock = YOLO("yolov8n.yaml"), {"train_s": 0.0}
def one_thread(trainer):  # select_device() resets torch's threads to min(8, cores - 1)
    torch.set_num_threads(1)
def epoch_start(trainer):
    clock["t"] = time.perf_counter()
def epoch_end(trainer):  # fires after the batch loop, before validation
    clock["train_s"] += time.perf_counter() - clock["t"]
model.add_callback("on_pretrain_routine_end", one_thread)
model.add_callback("on_train_epoch_start", epoch_start)
model.add_callback("on_train_epoch_end", epoch_end)
model.train(**a)
print("RESULT " + json.dumps({"train_s": clock["train_s"], "threads": torch.get_num_threads(),
                              "save_dir": str(model.trainer.save_dir)}))
"""

ULTRA_VAL = """
import json, sys, time, torch
torch.set_num_threads(1)
from torch.utils.flop_counter import FlopCounterMode
from ultralytics import YOLO
import ultralytics.utils.nms as nms
_nms = nms.non_max_suppression
nms.non_max_suppression = lambda *p, **k: _nms(*p, **{**k, "max_time_img": 1e3})  # no time limit (see docstring)
a = json.loads(sys.argv[1])
model, n_images = YOLO(a.pop("weights")), a.pop("n_images")
net = model.model.float().eval()  # unfused, as leanvision counts
params = sum(p.numel() for p in net.parameters())
with FlopCounterMode(display=False) as fc, torch.no_grad():
    net(torch.zeros(1, 3, 640, 640))
gflops = model.info(verbose=True)[3]  # ultralytics' own (thop) figure
t = time.perf_counter()
m = model.val(**a)
wall = time.perf_counter() - t
print("RESULT " + json.dumps({"images": n_images, "val_s": wall,
                              "P": m.box.mp, "R": m.box.mr, "mAP50": m.box.map50, "mAP50-95": m.box.map,
                              "params": params, "gflops640": fc.get_total_flops() / 1e9, "thop_gflops640": gflops,
                              "speed_ms": m.speed,
                              "per_class": {model.names[int(c)]: {"P": float(m.box.p[i]), "R": float(m.box.r[i]),
                                                                  "AP50": float(m.box.ap50[i]),
                                                                  "AP50-95": float(m.box.ap[i])}
                                            for i, c in enumerate(m.box.ap_class_index)}}))
"""


# runs inside the ultralytics venv: the reference's matching and AP (DetMetrics) on leanvision's detections
ULTRA_EVAL = """
import json, sys, numpy as np, torch
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils.metrics import DetMetrics, box_iou
a = json.loads(sys.argv[1])
d = json.load(open(a["preds"]))
v = DetectionValidator()
v.iouv = torch.linspace(0.5, 0.95, 10)
m = DetMetrics(names=dict(enumerate(d["names"])))
for k, im in enumerate(d["images"]):
    det = torch.tensor(im["det"], dtype=torch.float32).view(-1, 6)
    det = det[det[:, 4].argsort(descending=True)]
    gt = torch.tensor(im["gt_boxes"], dtype=torch.float32).view(-1, 4)
    gcls = torch.tensor(im["gt_cls"], dtype=torch.float32).view(-1)
    tp = (v.match_predictions(det[:, 5], gcls, box_iou(gt, det[:, :4])).cpu().numpy() if len(det) and len(gt)
          else np.zeros((len(det), 10), bool))
    m.update_stats({"tp": tp, "conf": det[:, 4].numpy(), "pred_cls": det[:, 5].numpy(), "target_cls": gcls.numpy(),
                    "target_img": np.unique(gcls.numpy()), "im_name": str(k)})
m.process()
print("RESULT " + json.dumps({"P": m.box.mp, "R": m.box.mr, "mAP50": m.box.map50, "mAP50-95": m.box.map}))
"""


def run(python: str, code: str, args: dict, log: Path) -> tuple[dict, float, float]:
    """Run ``code`` in a fresh process; returns (its RESULT json, wall seconds, peak RSS in MB)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "YOLO_OFFLINE": "1",
           "PYTHONPATH": str(ROOT / "src")}
    t = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen([python, "-c", code, json.dumps(args)], stdout=f, stderr=subprocess.STDOUT, env=env,
                             cwd=log.parent)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    lines = [s for s in log.read_text(errors="replace").splitlines() if s.startswith("RESULT ")]
    if p.returncode or not lines:
        raise SystemExit(f"{python} failed (exit {p.returncode}); see {log}")
    return json.loads(lines[-1][7:]), wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def train_side(side: str, args, common: dict, data: Path, out: Path, name: str, **over) -> tuple[dict, Path]:
    """Train one implementation from scratch in its own process: ({train_s, train_wall_s, peak_rss_mb}, best.pt)."""
    log = out / f"{side}_{name}.log"
    if side == "leanvision":
        cfg = dict(common, model="yolov8n", data=str(data), warmup_min_iters=0, device="cpu", amp="none",
                   project=str(out / "lv_runs"), name=name, overwrite=True, plots=False, progress=False, **over)
        res, wall, rss = run(sys.executable, LV_TRAIN, cfg, log)
        run_dir = Path(res["run_dir"])
        rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
        return {"train_s": sum(float(r["epoch_s"]) for r in rows), "train_wall_s": wall, "peak_rss_mb": rss}, \
            run_dir / "best.pt"
    cfg = dict(common, data=str(data), optimizer="SGD", device="cpu", amp=False,
               plots=False, pretrained=False, deterministic=True, mixup=0.0, cutmix=0.0, copy_paste=0.0,
               flipud=0.0, project=str(out / "ultra_runs"), name=name, exist_ok=True, verbose=False, **over)
    res, wall, rss = run(args.ultra_python, ULTRA_TRAIN, cfg, log)
    return {"train_s": res["train_s"], "train_wall_s": wall, "peak_rss_mb": rss, "threads": res["threads"]}, \
        Path(res["save_dir"]) / "weights" / "best.pt"


def weights_of(side: str, out: Path, name: str = "train") -> Path:
    return out / "lv_runs" / name / "best.pt" if side == "leanvision" else out / "ultra_runs" / name / "weights/best.pt"


def val_side(side: str, args, data: Path, weights: Path, sz: int, rect: bool, out: Path, key: str, n_val: int) -> dict:
    """Validate ``weights`` with the implementation's own val, timed end to end in a fresh process."""
    log = out / f"{side}_{key}.log"
    if side == "leanvision":
        dump = out / f"leanvision_{key}_preds.json"
        a = dict(weights=str(weights), data=str(data), imgsz=sz, batch=args.batch * 2, rect=rect,
                 dump=str(dump) if key == f"val{args.imgsz}" else None)
        res = run(sys.executable, LV_VAL, a, log)[0]
        if a["dump"]:  # like for like: leanvision's detections scored by the reference's evaluator too
            res["by_reference_evaluator"] = run(args.ultra_python, ULTRA_EVAL, {"preds": str(dump)},
                                                out / f"leanvision_{key}_ref_eval.log")[0]
        return res
    a = dict(weights=str(weights), data=str(data), imgsz=sz, batch=args.batch * 2, device="cpu", workers=0,
             plots=False, verbose=False, project=str(out / "ultra_runs"), name=key, exist_ok=True, n_images=n_val)
    return run(args.ultra_python, ULTRA_VAL, a, log)[0]


def speed_rounds(args, common: dict, data: Path, out: Path, sizes: list[int], n_train: int, n_val: int) -> dict:
    """Both implementations, taking turns (the first to go alternates each round), so that the shared
    machine's drifting load falls on both alike: per round, ``--speed-epochs`` of training with mosaic on, then
    validation of the accuracy runs' best.pt at each size. Returns images/s lists and their medians."""
    sides = ("leanvision", "ultralytics")
    speed = {s: {"train": [], **{f"val{sz}": [] for sz in sizes}} for s in sides}
    for r in range(args.speed_rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            print(f"round {r + 1}/{args.speed_rounds}: {side} ...", flush=True)
            t, _ = train_side(side, args, common, data, out, f"speed{r}", epochs=args.speed_epochs, close_mosaic=0)
            speed[side]["train"].append(n_train * args.speed_epochs / t["train_s"])
            for sz in sizes:
                v = val_side(side, args, data, weights_of(side, out), sz, True, out, f"speed{r}_val{sz}", n_val)
                speed[side][f"val{sz}"].append(v["images"] / v["val_s"])
    return {s: {k: {"runs": v, "median": statistics.median(v)} for k, v in d.items()} for s, d in speed.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ultra-python", default="/work/ultra-venv/bin/python", help="python of the ultralytics venv")
    ap.add_argument("--out", default="/tmp/compare_ultralytics", help="data, runs and the report (not in the repo)")
    ap.add_argument("--data", help="a real dataset (YOLO data.yaml, COCO json or VOC folder); default: synthetic")
    ap.add_argument("--subset", type=int, default=0, help="with --data: train on the first N images by name (0: all)")
    ap.add_argument("--images", type=int, default=250, help="synthetic images (20 %% val)")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--nbs", type=int, default=8, help="nominal batch (nbs = batch: one optimizer step per batch)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--close-mosaic", type=int, default=3)
    ap.add_argument("--val-imgsz2", type=int, default=640, help="also time val at this size (0: skip)")
    ap.add_argument("--only", choices=["leanvision", "ultralytics"], help="run one side (the other's json is reused)")
    ap.add_argument("--val-only", action="store_true", help="re-measure validation of the runs already in OUT")
    ap.add_argument("--speed-rounds", type=int, default=3,
                    help="interleaved timing rounds after the accuracy runs (0: none; needs both sides' runs)")
    ap.add_argument("--speed-epochs", type=int, default=2, help="training epochs per timing round")
    ap.add_argument("--speed-only", action="store_true", help="only the timing rounds (accuracy runs already in OUT)")
    ap.add_argument("--merge", nargs=2, metavar=("LV_OUT", "ULTRA_OUT"),
                    help="write OUT/compare.md from two --only runs (one side each, e.g. run side by side)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merge_sides(*map(Path, args.merge), out, args.imgsz)
        return

    data = out / "data" / "data.yaml"
    if args.data:
        n_train, n_val = write_shared_lists(args.data, data, args.subset)
    else:
        if not data.is_file():
            subprocess.run([sys.executable, "-m", "leanvision", "detect", "synth", "--out", str(data.parent),
                            "--images", str(args.images), "--imgsz", str(args.imgsz), "--seed", "0",
                            "--val-fraction", "0.2"], check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        n_train = len(list((data.parent / "images" / "train").iterdir()))
        n_val = len(list((data.parent / "images" / "val").iterdir()))

    common = dict(epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, nbs=args.nbs, lr0=0.01, lrf=0.01,
                  momentum=0.937, weight_decay=5e-4, warmup_epochs=3.0, warmup_momentum=0.8, warmup_bias_lr=0.1,
                  mosaic=1.0, close_mosaic=args.close_mosaic, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, fliplr=0.5,
                  degrees=0.0, translate=0.1, scale=0.5, shear=0.0, perspective=0.0, seed=0, workers=0)
    results = json.loads((out / "compare.json").read_text()) if (out / "compare.json").is_file() else {}
    sizes = [args.imgsz] + ([args.val_imgsz2] if args.val_imgsz2 else [])

    for side in ("leanvision", "ultralytics"):
        if args.speed_only or args.only not in (None, side):
            continue
        print(f"{side}: training ...", flush=True)
        if args.val_only:
            res = {k: v for k, v in results[side].items() if not k.startswith("val")}
        else:
            res, _ = train_side(side, args, common, data, out, "train")
        for sz in sizes:  # leanvision also reports square batches at the training size (ultralytics: rect only)
            for rect in (True, False) if sz == args.imgsz and side == "leanvision" else (True,):
                key = f"val{sz}" + ("" if rect else "_square")
                print(f"{side}: {key} ...", flush=True)
                res[key] = val_side(side, args, data, weights_of(side, out), sz, rect, out, key, n_val)
        results[side] = res
        (out / "compare.json").write_text(json.dumps(results, indent=2))

    if args.speed_rounds and args.only is None:
        results["speed"] = speed_rounds(args, common, data, out, sizes, n_train, n_val)
    results["env"] = {"data": args.data or "synthetic", "subset": args.subset,
                      "date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
                      "cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
                      "train_images": n_train, "val_images": n_val, "speed_epochs": args.speed_epochs,
                      **{k: v for k, v in common.items()}}
    (out / "compare.json").write_text(json.dumps(results, indent=2))
    md = render(results, args.imgsz, sizes)
    (out / "compare.md").write_text(md)
    print(md)


def merge_sides(lv_out: Path, ultra_out: Path, out: Path, imgsz: int) -> None:
    """One report from two ``--only`` runs: leanvision's side from ``lv_out``, the reference's from ``ultra_out``
    (the setting lines must agree: same data and recipe)."""
    lv, ul = (json.loads((d / "compare.json").read_text()) for d in (lv_out, ultra_out))
    same = ("data", "subset", "train_images", "val_images", "epochs", "imgsz", "batch", "nbs", "close_mosaic", "seed")
    differ = [k for k in same if lv["env"].get(k) != ul["env"].get(k)]
    if differ:
        raise SystemExit(f"--merge: the two runs differ in {', '.join(differ)}")
    loads = f"{lv['env']['load_avg_1m_at_end']} / {ul['env']['load_avg_1m_at_end']}"
    env = {**lv["env"], "merged": True, "load_avg_1m_at_end": loads}
    results = {"leanvision": lv["leanvision"], "ultralytics": ul["ultralytics"], "env": env}
    (out / "compare.json").write_text(json.dumps(results, indent=2))
    md = render(results, imgsz, [imgsz])
    (out / "compare.md").write_text(md)
    print(md)


def write_shared_lists(data: str, out_yaml: Path, subset: int = 0) -> tuple[int, int]:
    """Read ``data`` with leanvision's reader and write ``out_yaml`` over absolute image lists (train.txt, val.txt
    beside it), the files both tools then read. ``subset``: keep the first N training images by sorted path."""
    import yaml

    sys.path.insert(0, str(ROOT / "src"))
    from leanvision.detect.train import load_detection_data

    splits, names = load_detection_data(data)
    train = sorted(s["im_file"] for s in splits["train"])
    train = train[:subset] if subset else train
    val = sorted(s["im_file"] for s in splits["val"])
    out_yaml.parent.mkdir(parents=True, exist_ok=True)
    for name, files in (("train", train), ("val", val)):
        (out_yaml.parent / f"{name}.txt").write_text("".join(str(Path(f).resolve()) + "\n" for f in files))
    out_yaml.write_text(yaml.safe_dump({"train": str(out_yaml.parent / "train.txt"),
                                        "val": str(out_yaml.parent / "val.txt"), "names": list(names)}))
    return len(train), len(val)


def render(results: dict, imgsz: int, sizes: list[int]) -> str:
    env = results["env"]
    sides = [s for s in ("leanvision", "ultralytics") if s in results]

    def cell(side: str, key: str, fmt: str) -> str:
        v = results[side]
        for k in key.split("/"):
            v = v.get(k) if isinstance(v, dict) else None
        return "–" if v is None else format(v, fmt)

    epochs, n_train = env["epochs"], env["train_images"]
    lines = [f"| metric | {' | '.join(sides)} |", "| --- |" + " --- |" * len(sides)]

    def row(name: str, fn) -> None:
        lines.append(f"| {name} | " + " | ".join(fn(s) for s in sides) + " |")

    row("train images/s (training loops, data included)", lambda s: f"{n_train * epochs / results[s]['train_s']:.2f}")
    row("train wall (min, incl. per-epoch val + checkpoints)", lambda s: f"{results[s]['train_wall_s'] / 60:.1f}")
    row("peak RSS of the training process (MB)", lambda s: f"{results[s]['peak_rss_mb']:.0f}")
    for sz in sizes:
        key = f"val{sz}"
        row(f"val images/s at {sz} (rect, end to end)",
            lambda s, k=key: f"{results[s][k]['images'] / results[s][k]['val_s']:.1f}" if k in results[s] else "–")
    for m in ("P", "R", "mAP50", "mAP50-95"):
        row(f"{m} (own val of best.pt, {imgsz}, rect)", lambda s, m=m: cell(s, f"val{imgsz}/{m}", ".3f"))
    for m in ("P", "R", "mAP50", "mAP50-95"):  # like for like: the same evaluator for both
        ref_key = {"ultralytics": f"val{imgsz}/{m}", "leanvision": f"val{imgsz}/by_reference_evaluator/{m}"}
        row(f"{m} by the reference's evaluator (its matching and AP)", lambda s, k=ref_key: cell(s, k[s], ".4f"))
    for m in ("mAP50", "mAP50-95"):
        row(f"{m} with square val batches ({imgsz})", lambda s, m=m: cell(s, f"val{imgsz}_square/{m}", ".3f"))
    if "speed" in results:
        sp = results["speed"]

        def speed_cell(side: str, key: str) -> str:
            runs = sp[side][key]["runs"]
            return f"{sp[side][key]['median']:.2f} ({min(runs):.2f}–{max(runs):.2f})"

        n_rounds = len(sp["leanvision"]["train"]["runs"])
        row(f"**train images/s, median of {n_rounds} interleaved rounds of {env['speed_epochs']} epochs** (range)",
            lambda s: speed_cell(s, "train") if s in sp else "–")
        for sz in sizes:
            row(f"**val images/s at {sz}, median of {n_rounds} interleaved rounds** (range)",
                lambda s, k=f"val{sz}": speed_cell(s, k) if s in sp else "–")
    row("parameters", lambda s: cell(s, f"val{imgsz}/params", ","))
    row("GFLOPs at 640 (FlopCounterMode; ultralytics' thop figure)",
        lambda s: cell(s, f"val{imgsz}/gflops640", ".2f") + (f" ({cell(s, f'val{imgsz}/thop_gflops640', '.1f')})"
                                                            if s == "ultralytics" else ""))
    what = ("synthetic images (`leanvision detect synth`)" if env.get("data", "synthetic") == "synthetic" else
            f"images of {env['data']}" + (f" (the first {env['subset']} training images by name)"
                                         if env.get("subset") else ""))
    head = (f"yolov8n from scratch on {n_train} train / {env['val_images']} val {what}, "
            f"imgsz {imgsz}, batch {env['batch']} (nbs {env['nbs']}), {epochs} epochs, "
            f"SGD lr0 {env['lr0']} momentum {env['momentum']} wd {env['weight_decay']}, warm-up "
            f"{env['warmup_epochs']} epochs, mosaic {env['mosaic']} (off for the last {env['close_mosaic']}), "
            f"seed {env['seed']}; one intra-op thread, workers 0, "
            f"{'two --only runs merged' if env.get('merged') else 'one implementation at a time'}; "
            f"{env['date']}, {env['cpus']} CPUs (shared), load average {env['load_avg_1m_at_end']} at the end.")
    return head + "\n\n" + "\n".join(lines) + "\n" + per_class_table(results, imgsz, sides)


def per_class_table(results: dict, imgsz: int, sides: list[str]) -> str:
    """Per-class AP50 / AP50-95 (and R) of each side's own validation at the training size."""
    per = {s: results[s].get(f"val{imgsz}", {}).get("per_class") or {} for s in sides}
    names = list(dict.fromkeys(n for s in sides for n in per[s]))
    if not names:
        return ""
    head = "| class | " + " | ".join(f"{s} AP50 | {s} AP50-95 | {s} R" for s in sides) + " |"
    rows = [f"\nPer class (val split, {imgsz}, each tool's own evaluator):\n", head,
            "| --- |" + " --- | --- | --- |" * len(sides)]
    for n in names:
        cells = []
        for s in sides:
            c = per[s].get(n)
            cells += [f"{c['AP50']:.3f}", f"{c['AP50-95']:.3f}", f"{c['R']:.3f}"] if c else ["–"] * 3
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
