"""GSO-YOLO evidence on the synthetic construction-site set: the ablation grid and Replacement Learning's savings.

    .venv/bin/python scripts/gso_ablation.py                       # defaults below, ~25 min on 2 shared CPU cores
    .venv/bin/python scripts/gso_ablation.py --epochs 3 --images 40  # smoke

Part 1, ablation (specs/gso_yolo.md §1.2/§4.2): rows YOLOv8n, +GOM, +SCM, +GOM+SCM, +AIoU, full GSO-YOLO-n, each
trained from scratch with :func:`~leanvision.detect.train.train_detector` at equal epochs, image size, batch
and seed on one synthetic set (``generate_synthetic_dataset``). Rows run ``--parallel`` at a time, one process
and one thread each (small convs gain little from threads; parallel rows share the cores evenly, so their
images/s are comparable with each other, not with an idle machine). Metrics are the best.pt's on the val split.

Part 2, Replacement Learning on the backbone (:func:`leanvision.methods.replacement.apply_replacement` on the
detector's block list, its backbone Bottlenecks): for each detector, E2E vs
replaced, trainable parameters and the foundation meter's figures (ResourceMeter: saved-for-backward peak +
params/grads/optimizer state on CPU, CUDA allocator peak on a GPU) over a few steps on one fixed batch.

Writes ``ablation.md`` / ``ablation.json`` and ``replacement.md`` to ``--out`` (default runs/gso_ablation).

Settings that differ from the YOLOv8 defaults (for a short CPU run, the same for every row): nbs = batch (no
gradient accumulation, else 240 images give 4 optimizer steps per epoch), lr0 0.02, no warm-up (YOLOv8's is at
least 100 iterations, a third of such a run), close_mosaic = epochs // 4, validation only after the last epoch
(so best.pt is the last epoch's EMA weights).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from leanvision.bench.detect import ablation_rows, parse_row, random_batch
from leanvision.bench.report import environment
from leanvision.detect.config import DetectConfig
from leanvision.detect.data.synth import generate_synthetic_dataset
from leanvision.detect.method import DetectionMethod
from leanvision.engine.meter import ResourceMeter, count_parameters
from leanvision.methods.replacement import apply_replacement
from leanvision.models.yolo import count_parameters as all_parameters
from leanvision.models.yolo import create_detector, model_gflops

LABELS = ["YOLOv8n", "+GOM", "+SCM", "+GOM+SCM", "+AIoU", "GSO-YOLO-n (full)"]


def train_row(row: str, data: str, args: dict) -> dict:
    """One ablation row in its own process (one thread)."""
    torch.set_num_threads(1)
    from leanvision.detect.train import model_overrides, train_detector

    model, opts = parse_row(row)
    name = row.replace(":", "-").replace("=", "").replace(",", "-")
    cfg = DetectConfig(model=model, data=data, epochs=args["epochs"], imgsz=args["imgsz"], batch=args["batch"],
                       nbs=args["batch"], lr0=args["lr0"], close_mosaic=max(args["epochs"] // 4, 0), seed=args["seed"],
                       warmup_epochs=0, val=False,
                       workers=0, device="cpu", project=str(Path(args["out"]) / "runs"), name=name, overwrite=True,
                       progress=False, plots=False, **opts)
    t0 = time.perf_counter()
    res = train_detector(cfg)
    net = create_detector(model, nc=6, **model_overrides(cfg))
    v, r = res["val"], res["resources"]
    return {"row": row, "precision": v["precision"], "recall": v["recall"], "map50": v["map50"], "map": v["map"],
            "params": all_parameters(net), "gflops": model_gflops(net, args["imgsz"]),
            "gflops_640": model_gflops(net, 640), "train_images_per_s": r["images_per_s"],
            "peak_memory_bytes": r["peak_memory_bytes"], "memory_source": r["memory_source"],
            "val_ms_per_image": sum(v["speed"].values()), "wall_s": time.perf_counter() - t0,
            "best_epoch_map": res.get("best_epoch_map"), "run_dir": res["run_dir"]}


def ablation_table(rows: list[dict], head: str) -> str:
    lines = [head, "", "| row | settings | P | R | mAP50 | mAP50-95 | params (M) | GFLOPs @imgsz (@640) "
             "| train images/s | peak memory (MB) | val ms/image | wall (min) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in zip(LABELS, rows):
        lines.append(f"| {label} | `{r['row']}` | {r['precision']:.3f} | {r['recall']:.3f} | {r['map50']:.3f} | "
                     f"{r['map']:.3f} | {r['params'] / 1e6:.3f} | {r['gflops']:.2f} ({r['gflops_640']:.1f}) | "
                     f"{r['train_images_per_s']:.1f} | {r['peak_memory_bytes'] / 2**20:.0f} | "
                     f"{r['val_ms_per_image']:.1f} | {r['wall_s'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def replacement_rows(imgsz: int, batch: int, steps: int) -> list[dict]:
    """E2E vs Replacement Learning on the backbone, measured by the foundation ResourceMeter."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images, targets = random_batch(batch, imgsz, nc=6)
    images, targets = images.to(device), {k: v.to(device) for k, v in targets.items()}
    out = []
    for name, opts in (("gso-yolo-n", dict(adapter=True)), ("yolov8m", {}), ("yolov8l", {})):
        for replace in (False, True):
            torch.manual_seed(0)
            model = create_detector(name, nc=6)
            rep = apply_replacement(model, allow_none=False, **opts) if replace else None
            method = DetectionMethod(model, "ciou").to(device)
            opt = torch.optim.SGD(method.param_groups(5e-4), lr=0.01, momentum=0.937, nesterov=True)
            meter = ResourceMeter(method, device, warmup=1, track_steps=1)

            def step(method=method, opt=opt):
                opt.zero_grad(set_to_none=True)
                method.train_step(images, targets, lambda loss: loss.backward())
                opt.step()
                method.after_optimizer_step()

            for _ in range(1 + meter.track_steps + steps):
                meter.measure(step, batch, opt)
            st = meter.stats()
            out.append({"model": name, "method": "replacement" if replace else "e2e",
                        "replaced": ", ".join(rep.names) if rep else "", "options": "adapter" if opts else "k=2",
                        "trainable": count_parameters(model, trainable_only=True), "total": count_parameters(model),
                        "state_bytes": st.state_bytes, "activation_peak_bytes": st.activation_peak_bytes,
                        "peak_memory_bytes": st.peak_memory_bytes, "ms_per_step": st.ms_per_step,
                        "memory_source": st.memory_source, "device": st.device})
    return out


def replacement_table(rows: list[dict], head: str) -> str:
    lines = [head, "", "| model | method | replaced Bottlenecks | trainable params | vs E2E | state MB "
             "(params+grads+optim) | activation peak MB | peak MB | vs E2E | ms/step |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    base = {}
    for r in rows:
        b = base.setdefault(r["model"], r)
        lines.append(f"| {r['model']} | {r['method']} | {r['replaced'] or '–'} | {r['trainable']:,} | "
                     f"{r['trainable'] - b['trainable']:+,} | {r['state_bytes'] / 2**20:.1f} | "
                     f"{r['activation_peak_bytes'] / 2**20:.1f} | {r['peak_memory_bytes'] / 2**20:.1f} | "
                     f"{(r['peak_memory_bytes'] - b['peak_memory_bytes']) / 2**20:+.1f} | {r['ms_per_step']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/gso_ablation")
    p.add_argument("--images", type=int, default=300, help="synthetic scenes in all (val = 20%%)")
    p.add_argument("--imgsz", type=int, default=160)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr0", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parallel", type=int, default=2, help="rows trained at once (one thread each)")
    p.add_argument("--skip-ablation", action="store_true")
    p.add_argument("--skip-replacement", action="store_true")
    p.add_argument("--rl-imgsz", type=int, default=64)
    p.add_argument("--rl-batch", type=int, default=2)
    p.add_argument("--rl-steps", type=int, default=1)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/gso_ablation.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    env = environment()
    env_line = "; ".join(f"{k}: {v}" for k, v in env.items()) + f"; cpu: {_cpu_name()}"
    if not args.skip_ablation:
        data = generate_synthetic_dataset(out / "synth", images=args.images, imgsz=args.imgsz, seed=args.seed)
        t0 = time.perf_counter()
        settings = dict(epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, lr0=args.lr0, seed=args.seed,
                        out=str(out))
        with ProcessPoolExecutor(args.parallel) as pool:
            rows = list(pool.map(train_row, ablation_rows("n"), [str(data)] * 6, [settings] * 6))
        head = (f"### GSO-YOLO-n ablation on the synthetic construction-site set\n\n`{command}`\n\n{env_line}\n\n"
                f"{args.images} scenes ({args.images - round(args.images * 0.2)} train / {round(args.images * 0.2)} "
                f"val), imgsz {args.imgsz}, batch {args.batch} (nbs {args.batch}), {args.epochs} epochs, SGD lr0 "
                f"{args.lr0} without warm-up, seed {args.seed}, YOLOv8 augmentations (mosaic off for the last "
                f"{max(args.epochs // 4, 0)} epochs), validated once after the last epoch; "
                f"{args.parallel} rows at a time, 1 thread each; "
                f"total {(time.perf_counter() - t0) / 60:.1f} min. mAP: COCO-style (faster-coco-eval) of best.pt on "
                "the val split; P, R at the best-F1 confidence. Peak memory on CPU: saved-for-backward peak + "
                "params/grads/optimizer state.")
        md = ablation_table(rows, head)
        (out / "ablation.md").write_text(md)
        (out / "ablation.json").write_text(json.dumps({"command": command, "environment": env, "rows": rows},
                                                      indent=2, default=str))
        print(md, flush=True)
    if not args.skip_replacement:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        rows = replacement_rows(args.rl_imgsz, args.rl_batch, args.rl_steps)
        head = (f"### Replacement Learning on the detector backbone (E2E vs replaced, interval 2)\n\n`{command}`\n\n"
                f"{env_line}\n\nOne fixed random batch of {args.rl_batch} at {args.rl_imgsz} px, 6 classes, SGD "
                f"momentum; ResourceMeter: 1 warm-up step, 1 tracked step, {args.rl_steps} timed steps. "
                f"Memory source: {rows[0]['memory_source']}.")
        md = replacement_table(rows, head)
        (out / "replacement.md").write_text(md)
        print(md, flush=True)
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
