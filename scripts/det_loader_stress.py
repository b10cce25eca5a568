"""Stress the detector's loader workers for hangs and time them (issue 12, item 0).

Each loader epoch (training with mosaic, training without, rectangular validation) forks its workers
from a process whose OpenCV thread pool is busy, the condition under which the old worker_init_fn hung
in ``cv2.setNumThreads`` (see ``detect/data/dataset.serial_cv2_in_worker``). A worker that does not
deliver a batch in ``--timeout`` seconds counts as a hang.

    python scripts/det_loader_stress.py --data data/synth/data.yaml --repeats 10 --workers 1 2 4
    python scripts/det_loader_stress.py --data data.yaml --repeats 3 --no-busy-parent   # timing only

Prints one line per (workers, kind): loader epochs, hangs, median seconds per epoch.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

from leanvision.detect.data.check import load_yolo_dataset
from leanvision.detect.data.dataset import build_detection_loader


def busy_parent_pool() -> None:
    img = np.zeros((640, 640, 3), np.uint8)
    cv2.setNumThreads(max(cv2.getNumThreads(), 2))
    for _ in range(3):
        cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    time.sleep(0.05)  # the pool's threads go to sleep in pthread_cond_wait


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a YOLO data.yaml with train and val splits")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--imgsz", type=int, default=160)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--busy-parent", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args()
    train, _ = load_yolo_dataset(args.data, "train")
    val, _ = load_yolo_dataset(args.data, "val")
    kinds = {"train+mosaic": (train, True, True), "train": (train, True, False), "val-rect": (val, False, False)}
    times: dict[tuple[int, str], list[float]] = {(w, k): [] for w in args.workers for k in kinds}
    hangs = dict.fromkeys(times, 0)
    for _ in range(args.repeats):
        for w in args.workers:
            for kind, (samples, augment, mosaic) in kinds.items():
                if args.busy_parent:
                    busy_parent_pool()
                loader = build_detection_loader(samples, args.imgsz, args.batch, augment=augment, workers=w,
                                                mosaic=mosaic, rect=not augment)
                loader.timeout = args.timeout if w else 0  # single-process loading takes no timeout
                t = time.perf_counter()
                try:
                    for _batch in loader:
                        pass
                    times[(w, kind)].append(time.perf_counter() - t)
                except RuntimeError as e:  # "DataLoader timed out after ... seconds"
                    hangs[(w, kind)] += 1
                    print(f"hang: workers={w} {kind}: {e}", flush=True)
    for (w, kind), v in times.items():
        med = f"{statistics.median(v):.2f} s" if v else "-"
        print(f"workers={w} {kind:13s} epochs={args.repeats} hangs={hangs[(w, kind)]} median epoch {med}")


if __name__ == "__main__":
    main()
