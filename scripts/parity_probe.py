"""Dev only: compare leanvision's YOLOv8 pieces with the reference implementation (ultralytics) on one real batch.

ultralytics is never imported here: it runs in its own virtualenv (``--ultra-python``, AGPL-3.0, never a
dependency), as a subprocess that writes plain tensors to a file; this script (leanvision's venv) reads them
with ``torch.load(weights_only=True)`` and runs leanvision's code on exactly the same input.

Probes (``python scripts/parity_probe.py PROBE --data data.yaml``):

* ``batch``: one augmented training batch built by the reference's loader, the reference's freshly initialised
  yolov8n weights loaded into leanvision's yolov8n; compares the raw head output, the assigner (positives, GTs
  with no positive anchor, target-score sum), each loss term and the gradient norms per parameter group.
* ``mosaic``: mosaic + affine of both loaders on the same four images with the same draws (``--batches`` cases):
  the boxes must agree box for box; the geometry check behind ``targets``' statistics.
* ``targets``: augmented training targets of both loaders over ``--batches`` batches (distributions: boxes per
  image, box sides, share of boxes under 8/16 px, class counts); the random draws differ, the statistics should not.
* ``schedule``: per-iteration LR (bias and weight groups), momentum, optimizer steps and EMA updates of a tiny
  training run of each (``--subset`` images, ``--epochs``), side by side.
* ``val``: one checkpoint (``--weights``: a ``best.pt`` of either tool) validated by both: the reference's own
  val, leanvision's validate() on the same weights, and each evaluator on the other's predictions.

Everything runs with one intra-op thread and no loader workers. Writes OUT/PROBE.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------- reference side

ULTRA_COMMON = r"""
import json, random, sys, numpy as np, torch
torch.set_num_threads(1)
from ultralytics.cfg import get_cfg
from ultralytics.data import build_yolo_dataset
from ultralytics.data.utils import check_det_dataset
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.torch_utils import init_seeds
a = json.loads(sys.argv[1])
hyp = dict(imgsz=a["imgsz"], batch=a["batch"], seed=0, data=a["data"], mixup=0.0, cutmix=0.0, copy_paste=0.0,
           flipud=0.0, optimizer="SGD", **a.get("hyp", {}))
cfg = get_cfg(overrides=hyp)
data = check_det_dataset(a["data"])
"""

ULTRA_BATCH = ULTRA_COMMON + r"""
init_seeds(1, deterministic=True)  # the reference trainer seeds with seed + 1 before building the model
model = DetectionModel("yolov8n.yaml", nc=data["nc"], verbose=False)
if a.get("weights"):  # a trained state (the EMA of a reference checkpoint) instead of the fresh initialisation
    from ultralytics.nn.tasks import load_checkpoint
    model.load_state_dict(load_checkpoint(a["weights"])[0].float().state_dict())
model.args = cfg
state = {k: v.clone() for k, v in model.state_dict().items()}
ds = build_yolo_dataset(cfg, data["train"], a["batch"], data, mode="train")
random.seed(a["seed"]); np.random.seed(a["seed"]); torch.manual_seed(a["seed"])
idx = random.Random(a["seed"]).sample(range(len(ds)), a["batch"])
batch = ds.collate_fn([ds[i] for i in idx])
img = batch["img"].float() / 255
model.train()
crit = model.init_criterion()
captured = {}
assigner = crit.assigner
def capture(*args, **kw):
    out = assigner(*args, **kw)
    captured["target_scores"], captured["fg"], captured["gt_idx"] = out[2].float(), out[3], out[4]
    captured["mask_gt"] = args[5]
    return out
crit.assigner = capture
preds = model(img)
loss, items = crit(preds, batch)
loss.sum().backward()
groups = {"weights": [], "norm": [], "bias": []}
for mn, m in model.named_modules():
    for pn, p in m.named_parameters(recurse=False):
        if p.grad is None:
            continue
        key = "bias" if pn == "bias" else "norm" if isinstance(m, torch.nn.BatchNorm2d) else "weights"
        groups[key].append(p.grad.norm())
fg, gt_idx, mask_gt = captured["fg"], captured["gt_idx"], captured["mask_gt"].squeeze(-1).bool()
pos_per_gt = torch.zeros(mask_gt.shape, dtype=torch.long)
score_per_gt = torch.zeros(mask_gt.shape)
ts = captured["target_scores"].sum(-1)
for b in range(fg.shape[0]):
    pos_per_gt[b] += torch.bincount(gt_idx[b][fg[b]], minlength=mask_gt.shape[1])[: mask_gt.shape[1]]
    m = mask_gt.shape[1]
    score_per_gt[b] += torch.bincount(gt_idx[b][fg[b]], weights=ts[b][fg[b]], minlength=m)[:m]
torch.save({
    "state": state, "img": batch["img"], "cls": batch["cls"].view(-1).long(), "bboxes": batch["bboxes"],
    "batch_idx": batch["batch_idx"].long(), "im_file": list(batch["im_file"]),
    "raw_boxes": preds["boxes"].detach(), "raw_scores": preds["scores"].detach(),
    "items": {k: float(v) for k, v in items.items()}, "total": float(loss.sum()),
    "fg": int(fg.sum()), "target_scores_sum": float(captured["target_scores"].sum()),
    "pos_per_gt": pos_per_gt[mask_gt], "score_per_gt": score_per_gt[mask_gt],
    "grad_norm": {k: float(torch.stack(v).norm()) for k, v in groups.items()},
}, a["out"])
print("RESULT {}")
"""

ULTRA_TARGETS = ULTRA_COMMON + r"""
ds = build_yolo_dataset(cfg, data["train"], a["batch"], data, mode="train")
init_seeds(a["seed"])
order = list(range(len(ds)))
random.Random(a["seed"]).shuffle(order)
cls, wh, per_img = [], [], []
for b in range(a["batches"]):
    items = [ds[i] for i in order[b * a["batch"]:(b + 1) * a["batch"]]]
    for it in items:
        bx = it["bboxes"] * a["imgsz"]  # normalised xywh -> pixels
        per_img.append(len(bx))
        wh.append(bx[:, 2:4]); cls.append(it["cls"].view(-1))
torch.save({"cls": torch.cat(cls).long(), "wh": torch.cat(wh).float(), "per_img": torch.tensor(per_img)}, a["out"])
print("RESULT {}")
"""

ULTRA_MOSAIC = ULTRA_COMMON + r"""
import random as _random
ds = build_yolo_dataset(cfg, data["train"], a["batch"], data, mode="train")
mosaic = ds.transforms.transforms[0].transforms[0]
real_uniform, out = _random.uniform, []
for c in a["cases"]:
    mosaic.get_indexes = lambda c=c: list(c["others"])
    queue = [c["yc"], c["xc"], *c["affine"]]  # the mosaic centre (y first), then RandomPerspective's 8 draws
    def uniform(lo, hi, queue=queue):
        return 0.5 if (lo, hi) == (0, 1) else queue.pop(0)  # 0.5 runs the p=1 mosaic, skips every p=0 transform
    _random.uniform = uniform
    item = ds[c["i"]]
    _random.uniform = real_uniform
    b = item["bboxes"].numpy() * a["imgsz"]
    xyxy = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
    out.append({"files": [ds.im_files[j] for j in [c["i"], *c["others"]]], "cls": item["cls"].view(-1).tolist(),
                "boxes": xyxy.tolist()})
print("RESULT " + json.dumps(out))
"""

ULTRA_SCHEDULE = r"""
import json, sys, torch
torch.set_num_threads(1)
from ultralytics import YOLO
a = json.loads(sys.argv[1])
log = []
model = YOLO("yolov8n.yaml")
def one_thread(trainer):
    torch.set_num_threads(1)
def batch_end(trainer):
    g = {x.get("param_group"): x for x in trainer.optimizer.param_groups}
    log.append({"lr_bias": g["bias"]["lr"], "lr_weight": g["weight"]["lr"], "momentum": g["weight"]["momentum"],
                "accumulate": trainer.accumulate, "ema_updates": trainer.ema.updates})
model.add_callback("on_pretrain_routine_end", one_thread)
model.add_callback("on_train_batch_end", batch_end)
model.train(**a["train"])
print("RESULT " + json.dumps(log))
"""

ULTRA_VAL = r"""
import json, sys, torch
torch.set_num_threads(1)
from ultralytics import YOLO
import ultralytics.utils.nms as nms
_nms = nms.non_max_suppression  # no NMS time limit: on a busy CPU it drops images (results otherwise unchanged)
nms.non_max_suppression = lambda *p, **k: _nms(*p, **{**k, "max_time_img": 1e3})
from ultralytics.models.yolo.detect import DetectionValidator
a = json.loads(sys.argv[1])
preds = []
class Recorder(DetectionValidator):  # keeps every image's post-NMS predictions in original-image pixels
    def update_metrics(self, preds_batch, batch):
        super().update_metrics(preds_batch, batch)
        for si, pred in enumerate(preds_batch):
            pbatch = self._prepare_batch(si, batch)
            p = self._prepare_pred(pred)
            boxes = self.scale_preds(p, pbatch)["bboxes"] if hasattr(self, "scale_preds") else p["bboxes"]
            preds.append({"im_file": batch["im_file"][si],
                          "det": torch.cat([boxes, p["conf"][:, None], p["cls"][:, None]], 1).tolist()})
state = a.pop("state", None)
if state:  # a leanvision state dict (same layer names): wrap it as a reference checkpoint the reference can load
    from ultralytics.nn.tasks import DetectionModel
    sd = torch.load(state, weights_only=True)
    net = DetectionModel("yolov8n.yaml", nc=a.pop("nc"), verbose=False)
    net.load_state_dict(sd)
    net.names = dict(enumerate(a.pop("names")))
    torch.save({"model": net, "train_args": {"imgsz": a["imgsz"], "task": "detect"}}, a["weights"])
model = YOLO(a.pop("weights"))
if a.pop("dump_state", False):
    net = model.model.float()
    torch.save({k: v.clone() for k, v in net.state_dict().items()}, a["project"] + "/ultra_state.pt")
m = model.val(validator=Recorder, **a)
per_class = {model.names[int(c)]: {"P": float(m.box.p[i]), "R": float(m.box.r[i]), "ap50": float(m.box.ap50[i]),
             "ap": float(m.box.ap[i])} for i, c in enumerate(m.box.ap_class_index)}
print("RESULT " + json.dumps({"P": m.box.mp, "R": m.box.mr, "mAP50": m.box.map50, "mAP50-95": m.box.map,
                              "per_class": per_class, "preds": preds}))
"""

ULTRA_EVAL_PREDS = r"""
import json, sys, numpy as np, torch
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils.metrics import DetMetrics, box_iou
a = json.loads(sys.argv[1])
d = json.load(open(a["preds"]))
v = DetectionValidator()
v.iouv = torch.linspace(0.5, 0.95, 10)
m = DetMetrics(names={i: n for i, n in enumerate(d["names"])})
for k, im in enumerate(d["images"]):
    det = torch.tensor(im["det"], dtype=torch.float32).view(-1, 6)
    det = det[det[:, 4].argsort(descending=True)]
    gt = torch.tensor(im["gt_boxes"], dtype=torch.float32).view(-1, 4)
    gcls = torch.tensor(im["gt_cls"], dtype=torch.float32).view(-1)
    if len(det) and len(gt):  # the reference validator's own matching
        tp = v.match_predictions(det[:, 5], gcls, box_iou(gt, det[:, :4])).cpu().numpy()
    else:
        tp = np.zeros((len(det), 10), bool)
    m.update_stats({"tp": tp, "conf": det[:, 4].numpy(), "pred_cls": det[:, 5].numpy(), "target_cls": gcls.numpy(),
                    "target_img": np.unique(gcls.numpy()), "im_name": str(k)})
m.process()
print("RESULT " + json.dumps({"P": m.box.mp, "R": m.box.mr, "mAP50": m.box.map50, "mAP50-95": m.box.map}))
"""


ULTRA_STEP = r"""
import json, sys, time, torch
torch.set_num_threads(1)
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel
a = json.loads(sys.argv[1])
ref = torch.load(a["batch"], weights_only=True)
model = DetectionModel("yolov8n.yaml", nc=ref["raw_scores"].shape[1], verbose=False)
model.load_state_dict(ref["state"])
model.args = get_cfg()
model.train()
crit = model.init_criterion()
batch = {"batch_idx": ref["batch_idx"].float(), "cls": ref["cls"].float().view(-1, 1), "bboxes": ref["bboxes"]}
times = []
for i in range(a["reps"] + 2):
    t = time.perf_counter()
    x = ref["img"].float() / 255
    loss, _ = crit(model(x), batch)
    loss.sum().backward()
    model.zero_grad(set_to_none=True)
    if i >= 2:
        times.append(time.perf_counter() - t)
print("RESULT " + json.dumps(times))
"""


def run_ultra(python: str, code: str, args: dict, log: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "YOLO_OFFLINE": "1",
           "YOLO_AUTOINSTALL": "0", "YOLO_CONFIG_DIR": str(log.parent / "ultra_cfg")}
    with open(log, "w") as f:
        p = subprocess.run([python, "-c", code, json.dumps(args)], stdout=f, stderr=subprocess.STDOUT, env=env,
                           cwd=log.parent)
    lines = [s for s in log.read_text(errors="replace").splitlines() if s.startswith("RESULT ")]
    if p.returncode or not lines:
        raise SystemExit(f"reference side failed (exit {p.returncode}); see {log}")
    return json.loads(lines[-1][7:])


# ---------------------------------------------------------------------------------------------- leanvision side


def lv_model(nc: int, state: dict | None = None, **overrides):
    from leanvision.models.yolo import create_detector

    torch.manual_seed(0)
    model = create_detector("yolov8n", nc=nc, **overrides)
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise SystemExit(f"weights do not map: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def probe_batch(args, out: Path) -> dict:
    from leanvision.detect.method import yolo_param_groups
    from leanvision.models.yolo import YOLOV8_TABLE  # noqa: F401  (import check)
    from leanvision.ops.boxes import box_convert

    f = out / "batch_ref.pt"
    run_ultra(args.ultra_python, ULTRA_BATCH, {"data": args.data, "imgsz": args.imgsz, "batch": args.batch,
                                                "seed": args.seed, "out": str(f), "weights": args.weights},
              out / "batch_ref.log")
    ref = torch.load(f, weights_only=True)
    nc = ref["raw_scores"].shape[1]
    model = lv_model(nc, ref["state"]).train()
    x = ref["img"].float() / 255
    h, w = x.shape[2:]
    boxes = box_convert(ref["bboxes"] * torch.tensor([w, h, w, h]), "cxcywh", "xyxy")
    targets = {"img_idx": ref["batch_idx"], "cls": ref["cls"], "boxes": boxes}
    from leanvision.detect.loss import DetectionLoss, pad_targets

    crit = DetectionLoss(model, **args.loss_kwargs)
    captured = {}
    forward = crit.assigner.forward

    def capture(*a, **kw):
        res = forward(*a, **kw)
        captured.update(target_scores=res[2], fg=res[3], gt_idx=res[4])
        return res

    crit.assigner.forward = capture
    raw = model(x)
    flat = torch.cat([r.flatten(2) for r in raw], 2)
    total, items = crit(raw, targets)
    total.backward()
    grads = {}
    for g in yolo_param_groups(model, 0.0):
        grads[g["name"]] = float(torch.stack([p.grad.norm() for p in g["params"] if p.grad is not None]).norm())
    _, _, mask_gt = pad_targets(targets, x.shape[0], x.device)
    mask_gt = mask_gt.squeeze(-1)
    fg, gt_idx = captured["fg"], captured["gt_idx"]
    pos = torch.zeros(mask_gt.shape, dtype=torch.long)
    score = torch.zeros(mask_gt.shape)
    ts = captured["target_scores"].sum(-1)
    for b in range(fg.shape[0]):
        pos[b] += torch.bincount(gt_idx[b][fg[b]], minlength=mask_gt.shape[1])[: mask_gt.shape[1]]
        m = mask_gt.shape[1]
        score[b] += torch.bincount(gt_idx[b][fg[b]], weights=ts[b][fg[b]], minlength=m)[:m]
    pos, score = pos[mask_gt], score[mask_gt]
    # the reference pads GTs in batch_idx order like pad_targets; the per-GT lists line up when both keep order
    lv = {"items": {f"{k}_loss": float(v) for k, v in items.items()}, "total": float(total),
          "fg": int(fg.sum()), "target_scores_sum": float(captured["target_scores"].sum()),
          "gts": int(mask_gt.sum()), "gts_without_positive": int((pos == 0).sum()), "grad_norm": grads}
    ur = {"items": ref["items"], "total": ref["total"], "fg": ref["fg"], "target_scores_sum": ref["target_scores_sum"],
          "gts": int(len(ref["pos_per_gt"])), "gts_without_positive": int((ref["pos_per_gt"] == 0).sum()),
          "grad_norm": ref["grad_norm"]}
    side = {"raw_box_maxdiff": float((flat[:, : 4 * model.reg_max] - ref["raw_boxes"]).abs().max()),
            "raw_cls_maxdiff": float((flat[:, 4 * model.reg_max:] - ref["raw_scores"]).abs().max())}
    small = (boxes[:, 2:] - boxes[:, :2]).min(1).values
    side["gt_min_side_lt8"] = int((small < 8).sum())
    side["gt_min_side_lt16"] = int((small < 16).sum())
    side["pos_per_gt_equal"] = bool(torch.equal(pos, ref["pos_per_gt"]))
    for name, p, sc in (("leanvision", pos, score), ("ultralytics", ref["pos_per_gt"], ref["score_per_gt"])):
        res_side = lv if name == "leanvision" else ur
        res_side["target_score_by_min_side"] = {  # the learning signal each size class gets
            "<8": float(sc[small < 8].sum()), "8-16": float(sc[(small >= 8) & (small < 16)].sum()),
            ">=16": float(sc[small >= 16].sum())}
        res_side["gts_with_no_target_score"] = int((sc == 0).sum())
        res_side["gts_without_positive_by_min_side"] = {
            "<8": int(((p == 0) & (small < 8)).sum()), "8-16": int(((p == 0) & (small >= 8) & (small < 16)).sum()),
            ">=16": int(((p == 0) & (small >= 16)).sum())}
        res_side["mean_positives_per_gt_by_min_side"] = {
            "<8": float(p[small < 8].float().mean()), "8-16": float(p[(small >= 8) & (small < 16)].float().mean()),
            ">=16": float(p[small >= 16].float().mean())}
    res = {"leanvision": lv, "ultralytics": ur, "same_input": side, "loss_kwargs": args.loss_kwargs}
    print(json.dumps(res, indent=1))
    return res


def lv_targets(args) -> dict:
    import random

    import numpy as np

    from leanvision.detect.data.dataset import DetectionDataset
    from leanvision.detect.train import load_detection_data

    splits, _ = load_detection_data(args.data)
    hyp = dict(args.hyp)
    if "mosaic" in hyp:  # the reference's probability -> leanvision's switch and probability
        hyp["mosaic_p"] = hyp["mosaic"]
        hyp["mosaic"] = hyp["mosaic"] > 0
    samples = sorted(splits["train"], key=lambda s: s["im_file"])  # the reference's order: same images drawn
    ds = DetectionDataset(samples, imgsz=args.imgsz, augment=True, seed=args.seed, batch_size=args.batch, **hyp)
    order = list(range(len(ds)))
    random.Random(args.seed).shuffle(order)
    cls, wh, per_img = [], [], []
    for i in order[: args.batches * args.batch]:
        _, t = ds[i]
        b = t["boxes"]
        per_img.append(len(b))
        wh.append(b[:, 2:] - b[:, :2])
        cls.append(t["cls"])
    del np
    return {"cls": torch.cat(cls), "wh": torch.cat(wh), "per_img": torch.tensor(per_img)}


def target_stats(t: dict, nc: int) -> dict:
    m = t["wh"].min(1).values
    return {"images": len(t["per_img"]), "boxes": int(len(t["cls"])),
            "boxes_per_image": float(t["per_img"].float().mean()),
            "median_w": float(t["wh"][:, 0].median()), "median_h": float(t["wh"][:, 1].median()),
            "share_min_side_lt8": float((m < 8).float().mean()), "share_min_side_lt16": float((m < 16).float().mean()),
            "class_counts": torch.bincount(t["cls"], minlength=nc).tolist()}


def probe_targets(args, out: Path) -> dict:
    f = out / "targets_ref.pt"
    run_ultra(args.ultra_python, ULTRA_TARGETS, {"data": args.data, "imgsz": args.imgsz, "batch": args.batch,
                                                  "seed": args.seed, "batches": args.batches, "out": str(f),
                                                  "hyp": args.hyp},
              out / "targets_ref.log")
    ref = torch.load(f, weights_only=True)
    nc = int(max(ref["cls"].max(), 0)) + 1
    res = {"ultralytics": target_stats(ref, nc), "leanvision": target_stats(lv_targets(args), nc)}
    print(json.dumps(res, indent=1))
    return res


class Draws:
    """A stand-in for numpy's Generator whose ``uniform`` returns given values in order (the affine's draws)."""

    def __init__(self, values):
        self.values = list(values)

    def uniform(self, low, high):
        return self.values.pop(0)


def probe_mosaic(args, out: Path) -> dict:
    """Mosaic + affine of both loaders on the same four images with the same draws (centre, scale, translation):
    the boxes must be the same, box for box. ``--batches`` cases drawn with ``--seed``; flips and HSV off."""
    import numpy as np

    from leanvision.detect.data.augment import mosaic4, random_affine
    from leanvision.detect.data.dataset import DetectionDataset
    from leanvision.detect.train import load_detection_data

    samples = sorted(load_detection_data(args.data)[0]["train"], key=lambda s: s["im_file"])
    ds = DetectionDataset(samples, imgsz=args.imgsz, augment=True, mosaic_buffer=0)
    rng, s = np.random.default_rng(args.seed), args.imgsz
    cases = []
    for _ in range(args.batches):
        affine = [0.0, 0.0, 0.0, float(rng.uniform(0.5, 1.5)), 0.0, 0.0, float(rng.uniform(0.4, 0.6)),
                  float(rng.uniform(0.4, 0.6))]  # perspective x2, degrees, scale, shear x2, translation x, y
        cases.append({"i": int(rng.integers(len(samples))), "others": rng.integers(0, len(samples), 3).tolist(),
                      "xc": int(rng.uniform(s / 2, 3 * s / 2)), "yc": int(rng.uniform(s / 2, 3 * s / 2)),
                      "affine": affine})
    ref = run_ultra(args.ultra_python, ULTRA_MOSAIC, {"data": args.data, "imgsz": s, "batch": args.batch, "seed": 0,
                                                      "cases": cases, "hyp": {"fliplr": 0.0, "hsv_h": 0.0,
                                                                              "hsv_s": 0.0, "hsv_v": 0.0}},
                    out / "mosaic_ref.log")
    same, worst, counts = 0, 0.0, [0, 0]
    for c, r in zip(cases, ref):
        assert [Path(f).name for f in r["files"]] == [Path(samples[j]["im_file"]).name for j in [c["i"], *c["others"]]]
        items = [ds.load(j)[:3] for j in [c["i"], *c["others"]]]
        img, boxes, cls = mosaic4(items, s, rng, center=(c["xc"], c["yc"]))
        _, boxes, cls = random_affine(img, boxes, cls, Draws(c["affine"]), border=(-s // 2, -s // 2), **ds.affine)
        theirs = np.asarray(r["boxes"], np.float64).reshape(-1, 4)
        counts[0] += len(boxes)
        counts[1] += len(theirs)
        if len(boxes) == len(theirs) and sorted(cls.tolist()) == sorted(r["cls"]):
            diff = float(np.abs(np.sort(boxes, 0) - np.sort(theirs, 0)).max()) if len(boxes) else 0.0
            worst = max(worst, diff)
            same += diff < 1e-2
    res = {"cases": len(cases), "cases_with_the_same_boxes": same, "largest_box_difference_px": worst,
           "boxes": {"leanvision": counts[0], "ultralytics": counts[1]}}
    print(json.dumps(res, indent=1))
    return res


def probe_schedule(args, out: Path) -> dict:
    """Tiny runs of both trainers on the first ``--subset`` training images, logging every iteration."""
    from leanvision.detect import train as lv_train
    from leanvision.detect.config import DetectConfig

    sub = make_subset(args, out)
    common = dict(epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, nbs=64, lr0=0.01, lrf=0.01, momentum=0.937,
                  weight_decay=5e-4, warmup_epochs=3.0, warmup_momentum=0.8, warmup_bias_lr=0.1, close_mosaic=0,
                  seed=0, workers=0)
    ref = run_ultra(args.ultra_python, ULTRA_SCHEDULE,
                    {"train": dict(common, data=str(sub), optimizer="SGD", device="cpu", amp=False, plots=False,
                                   val=False, pretrained=False, project=str(out / "ultra_runs"), name="schedule",
                                   exist_ok=True, verbose=False)}, out / "schedule_ref.log")
    log = []
    orig_apply = lv_train.YoloSchedule.apply

    def apply(self, opt, epoch, it, n):
        orig_apply(self, opt, epoch, it, n)
        g = {x["name"]: x for x in opt.param_groups}
        log.append({"lr_bias": g["bias"]["lr"], "lr_weight": g["weights"]["lr"], "momentum": g["weights"]["momentum"]})

    lv_train.YoloSchedule.apply = apply
    steps = []
    from leanvision.detect.method import DetectionMethod

    orig_after = DetectionMethod.after_optimizer_step

    def after(self):
        orig_after(self)
        steps.append(len(log))

    DetectionMethod.after_optimizer_step = after
    try:
        lv_train.train_detector(DetectConfig(**common, model="yolov8n", data=str(sub), warmup_min_iters=0,
                                             device="cpu", amp="none", val=False, plots=False, progress=False,
                                             project=str(out / "lv_runs"), name="schedule", overwrite=True))
    finally:
        lv_train.YoloSchedule.apply, DetectionMethod.after_optimizer_step = orig_apply, orig_after
    for i, row in enumerate(log):
        row["ema_updates"] = sum(1 for s in steps if s <= i + 1)
    rows = []
    for i in range(max(len(ref), len(log))):
        r, lv = (ref[i] if i < len(ref) else {}), (log[i] if i < len(log) else {})
        rows.append({"it": i, **{f"ref_{k}": v for k, v in r.items()}, **{f"lv_{k}": v for k, v in lv.items()}})
    print(f"{'it':>4} {'ref lr_b':>9} {'lv lr_b':>9} {'ref lr_w':>9} {'lv lr_w':>9} {'ref mom':>7} {'lv mom':>7} "
          f"{'ref acc':>7} {'ref ema':>7} {'lv ema':>7}")
    for r in rows:
        print(f"{r['it']:>4} {r.get('ref_lr_bias', 0):9.5f} {r.get('lv_lr_bias', 0):9.5f}"
              f" {r.get('ref_lr_weight', 0):9.5f}"
              f" {r.get('lv_lr_weight', 0):9.5f} {r.get('ref_momentum', 0):7.4f} {r.get('lv_momentum', 0):7.4f}"
              f" {r.get('ref_accumulate', 0):7} {r.get('ref_ema_updates', 0):7} {r.get('lv_ema_updates', 0):7}")
    return {"rows": rows}


def make_subset(args, out: Path) -> Path:
    """A data.yaml over the first ``--subset`` training images (sorted names) and the full val split."""
    import yaml

    from leanvision.detect.train import load_detection_data

    splits, names = load_detection_data(args.data)
    files = sorted(s["im_file"] for s in splits["train"])[: args.subset]
    lst = out / f"train_{args.subset}.txt"
    lst.write_text("\n".join(files) + "\n")
    vals = sorted(s["im_file"] for s in splits["val"])
    vlst = out / "val.txt"
    vlst.write_text("\n".join(vals) + "\n")
    y = out / f"subset_{args.subset}.yaml"
    y.write_text(yaml.safe_dump({"train": str(lst), "val": str(vlst), "names": list(names)}))
    return y


def probe_val(args, out: Path) -> dict:
    """Same weights through both validators, and each evaluator on the reference's predictions."""
    from leanvision.detect.data.dataset import build_detection_loader
    from leanvision.detect.evaluate import DetectionEvaluator
    from leanvision.detect.train import load_detection_data
    from leanvision.detect.val import validate

    weights = Path(args.weights)
    splits, names = load_detection_data(args.data)
    extra = {}
    try:  # a leanvision checkpoint: its EMA weights, handed to the reference as a state dict
        ckpt = torch.load(weights, weights_only=True, map_location="cpu")
    except Exception:  # the reference's own checkpoint pickles modules
        ckpt = {}
    if isinstance(ckpt.get("method"), dict):
        sd = {k[len("ema_model."):]: v for k, v in ckpt["method"].items() if k.startswith("ema_model.")}
        torch.save(sd, out / "lv_state.pt")
        weights = out / "lv_as_ref.pt"
        extra = {"state": str(out / "lv_state.pt"), "nc": len(names), "names": list(names)}
    ref = run_ultra(args.ultra_python, ULTRA_VAL,
                    dict(weights=str(weights), data=args.data, imgsz=args.imgsz, batch=args.batch * 2,
                         device="cpu", workers=0, plots=False, verbose=False, project=str(out), name="val_ref",
                         exist_ok=True, dump_state=True, **extra), out / "val_ref.log")
    state = torch.load(out / "ultra_state.pt", weights_only=True)
    model = lv_model(len(names), state, names=list(names)).eval()
    loader = build_detection_loader(splits["val"], args.imgsz, args.batch * 2, workers=0, rect=True)
    lv = validate(model, loader, names)
    # each evaluator on the reference's own predictions (original-image pixels)
    by_file = {p["im_file"]: torch.tensor(p["det"]).view(-1, 6) for p in ref.pop("preds")}
    ev = DetectionEvaluator(names, max_det=args.eval_max_det)
    dump = {"names": list(names), "images": []}
    for s in splits["val"]:
        det = by_file.get(s["im_file"], torch.zeros(0, 6))
        gt = {"cls": torch.as_tensor(s["cls"]), "boxes": torch.as_tensor(s["boxes"])}
        ev.update([det], [gt], shapes=[s["shape"]])
        dump["images"].append({"det": det.tolist(), "gt_boxes": s["boxes"].tolist(), "gt_cls": s["cls"].tolist()})
    lv_on_ref = ev.compute()
    (out / "ref_preds.json").write_text(json.dumps(dump))
    ref_on_ref = run_ultra(args.ultra_python, ULTRA_EVAL_PREDS, {"preds": str(out / "ref_preds.json")},
                           out / "eval_ref.log")

    def row(r):
        return {k: round(float(r[k]), 4) for k in ("P", "R", "mAP50", "mAP50-95")}

    res = {"reference val (its model, its evaluator)": row(ref),
           "leanvision validate() on the same weights": row({"P": lv["precision"], "R": lv["recall"],
                                                             "mAP50": lv["map50"], "mAP50-95": lv["map"]}),
           "leanvision evaluator on reference predictions": row({"P": lv_on_ref["precision"],
                                                                 "R": lv_on_ref["recall"], "mAP50": lv_on_ref["map50"],
                                                                 "mAP50-95": lv_on_ref["map"]}),
           "reference matching + ap_per_class on reference predictions": row(ref_on_ref),
           "per_class_ref": ref["per_class"],
           "per_class_lv": {c["name"]: {"P": c["precision"], "R": c["recall"], "ap50": c["ap50"], "ap": c["ap"]}
                            for c in lv["per_class"]}}
    for k, v in res.items():
        if not k.startswith("per_class"):
            print(f"{k:<62} {v}")
    return res


def probe_step(args, out: Path) -> dict:
    """Forward + loss + backward on the ``batch`` probe's batch, one thread, both in turn for ``--rounds`` rounds
    of ``--reps`` steps (the first two of each untimed); medians per side. Run ``batch`` first."""
    import statistics
    import time

    from leanvision.detect.loss import DetectionLoss
    from leanvision.ops.boxes import box_convert

    ref = torch.load(out / "batch_ref.pt", weights_only=True)
    model = lv_model(ref["raw_scores"].shape[1], ref["state"]).train()
    model = model.to(memory_format=torch.channels_last)  # leanvision's CPU default
    crit = DetectionLoss(model, **args.loss_kwargs)
    h, w = ref["img"].shape[2:]
    targets = {"img_idx": ref["batch_idx"], "cls": ref["cls"],
               "boxes": box_convert(ref["bboxes"] * torch.tensor([w, h, w, h]), "cxcywh", "xyxy")}
    times = {"leanvision": [], "ultralytics": []}
    for r in range(args.rounds):
        for side in ("leanvision", "ultralytics") if r % 2 == 0 else ("ultralytics", "leanvision"):
            if side == "ultralytics":
                times[side] += run_ultra(args.ultra_python, ULTRA_STEP, {"batch": str(out / "batch_ref.pt"),
                                                                        "reps": args.reps}, out / "step_ref.log")
                continue
            for i in range(args.reps + 2):
                t = time.perf_counter()
                x = (ref["img"].float() / 255).contiguous(memory_format=torch.channels_last)
                total, _ = crit(model(x), targets)
                total.backward()
                model.zero_grad(set_to_none=True)
                if i >= 2:
                    times[side].append(time.perf_counter() - t)
    res = {s: {"median_s": statistics.median(v), "min_s": min(v), "steps": len(v)} for s, v in times.items()}
    res["ratio_ref_over_lv"] = res["ultralytics"]["median_s"] / res["leanvision"]["median_s"]
    print(json.dumps(res, indent=1))
    return res


def probe_evaluator(args, out: Path) -> dict:
    """Both evaluators on the same made-up predictions over the real val ground truth: each GT found with
    probability 0.4 (a box jittered by up to 20 % of its size, score uniform in [0.05, 0.9], wrong class 10 % of the
    time) plus 150 false boxes per image scoring in [0.001, 0.3]; seeded. Isolates matching, AP integration, the
    detection budget per image and the best-F1 P/R from everything upstream."""
    import numpy as np

    from leanvision.detect.evaluate import DetectionEvaluator
    from leanvision.detect.train import load_detection_data

    splits, names = load_detection_data(args.data)
    rng = np.random.default_rng(args.seed)
    dump = {"names": list(names), "images": []}
    evs = {k: DetectionEvaluator(names, max_det=k) for k in (100, 300)}
    for s in splits["val"]:
        h, w = s["shape"]
        dets = []
        for b, c in zip(s["boxes"], s["cls"]):
            if rng.random() < 0.4:
                bw, bh = b[2] - b[0], b[3] - b[1]
                j = rng.uniform(-0.2, 0.2, 4) * np.array([bw, bh, bw, bh])
                cls = int(c) if rng.random() > 0.1 else int(rng.integers(len(names)))
                dets.append([*(b + j), rng.uniform(0.05, 0.9), cls])
        for _ in range(150):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            bw, bh = rng.uniform(4, w / 3), rng.uniform(4, h / 3)
            dets.append([x, y, min(x + bw, w), min(y + bh, h), rng.uniform(0.001, 0.3), int(rng.integers(len(names)))])
        det = torch.tensor(dets, dtype=torch.float32).view(-1, 6)
        det = det[det[:, 4].argsort(descending=True)][:300]
        gt = {"cls": torch.as_tensor(s["cls"]), "boxes": torch.as_tensor(s["boxes"])}
        for ev in evs.values():
            ev.update([det], [gt], shapes=[s["shape"]])
        dump["images"].append({"det": det.tolist(), "gt_boxes": s["boxes"].tolist(), "gt_cls": s["cls"].tolist()})
    (out / "made_up_preds.json").write_text(json.dumps(dump))
    ref = run_ultra(args.ultra_python, ULTRA_EVAL_PREDS, {"preds": str(out / "made_up_preds.json")},
                    out / "evaluator_ref.log")
    res = {"reference (matching + ap_per_class, all detections)": ref}
    for k, ev in evs.items():
        r = ev.compute()
        res[f"leanvision (faster-coco-eval, maxDets {k})"] = {"P": r["precision"], "R": r["recall"],
                                                              "mAP50": r["map50"], "mAP50-95": r["map"]}
    for k, v in res.items():
        print(f"{k:<58} " + " ".join(f"{m} {x:.4f}" for m, x in v.items()))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe", choices=["batch", "targets", "mosaic", "schedule", "val", "step", "evaluator"])
    ap.add_argument("--data", required=True, help="YOLO data.yaml with existing absolute split paths")
    ap.add_argument("--ultra-python", default="/work/ultra-venv/bin/python")
    ap.add_argument("--out", default="/tmp/parity_probe")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", type=int, default=20, help="targets: batches to draw from each loader")
    ap.add_argument("--subset", type=int, default=160, help="schedule: training images of the tiny runs")
    ap.add_argument("--epochs", type=int, default=4, help="schedule: epochs of the tiny runs")
    ap.add_argument("--weights", help="val: the reference's best.pt")
    ap.add_argument("--eval-max-det", type=int, default=300)
    ap.add_argument("--reps", type=int, default=5, help="step: timed steps per round and side")
    ap.add_argument("--rounds", type=int, default=4, help="step: rounds, the side going first alternating")
    ap.add_argument("--hyp", default="{}", help="targets: JSON of augmentation settings for both (mosaic, scale, ...)")
    ap.add_argument("--loss", default="{}", help="batch: JSON of extra DetectionLoss arguments for leanvision")
    args = ap.parse_args()
    args.loss_kwargs, args.hyp = json.loads(args.loss), json.loads(args.hyp)
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "src"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    probes = {"batch": probe_batch, "targets": probe_targets, "mosaic": probe_mosaic, "schedule": probe_schedule,
              "val": probe_val,
              "step": probe_step, "evaluator": probe_evaluator}
    res = probes[args.probe](
        args, out)
    (out / f"{args.probe}.json").write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
