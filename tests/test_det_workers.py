"""Detector loaders with worker processes never hang (issue 12, item 0).

The hang: a DataLoader worker forked from a process whose OpenCV thread pool exists (the parent has run a
parallel OpenCV call, e.g. the dataset check decoding images of 320 px or more) blocked for ever in
``cv2.setNumThreads`` (``pthread_cond_destroy`` inside OpenCV). Every test below first makes sure that
pool exists in the parent (:func:`busy_parent_cv2_pool`), the condition under which the old
``worker_init_fn`` hung; without it a test could pass on the old code by luck. The suite and the demo ran
with 0 workers, which is why nothing caught it. A hang makes a test fail (DataLoader timeout, subprocess
timeout), never block the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from leanvision.detect.data.check import load_yolo_dataset
from leanvision.detect.data.dataset import build_detection_loader
from leanvision.detect.data.synth import generate_synthetic_dataset

SRC = str(Path(__file__).resolve().parents[1] / "src")


def busy_parent_cv2_pool() -> None:
    """Run a parallel OpenCV call so this process has a live thread pool, then let its threads go to sleep
    (in ``pthread_cond_wait``, the state a forked child must not try to tear down)."""
    img = np.zeros((640, 640, 3), np.uint8)
    cv2.setNumThreads(2)  # a pool even on a 1-core runner
    for _ in range(3):
        cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        cv2.resize(img, (320, 320))
    time.sleep(0.05)


def _dataset(tmp: Path, images: int = 8) -> Path:
    """Synthetic set with 320 px images (the check decodes them with OpenCV in the parent, as real photos
    do) and a test split, for ``detect val --split test``."""
    data = generate_synthetic_dataset(tmp / "data", images=images, imgsz=320, seed=3, val_fraction=0.34)
    cfg = yaml.safe_load(data.read_text())
    cfg["test"] = cfg["val"]
    data.write_text(yaml.safe_dump(cfg))
    return data


_CLI = """
import sys, time
import cv2, numpy as np
sys.path.insert(0, {src!r})
img = np.zeros((640, 640, 3), np.uint8)
cv2.setNumThreads(2)
for _ in range(3):
    cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
time.sleep(0.05)
from leanvision.cli import main
for argv in {runs!r}:
    rc = main(argv)
    print("RC", rc, flush=True)
    if rc:
        sys.exit(rc)
"""


def _run_cli(runs: list[list[str]], timeout: float) -> str:
    """``leanvision.cli.main`` for each argv in one fresh process whose OpenCV pool is busy first; fails the
    test (instead of hanging the suite) when the process does not finish in ``timeout`` seconds."""
    code = textwrap.dedent(_CLI.format(src=SRC, runs=runs))
    # own session: on a hang the whole group goes, including hung loader workers (they would outlive us)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        pytest.fail(f"detector CLI with loader workers did not finish in {timeout} s (hang); output:\n{out[-2000:]}")
    assert p.returncode == 0, out[-4000:]
    return out


def _train_argv(data: Path, runs: Path, name: str, workers: int, mosaic: bool) -> list[str]:
    return ["detect", "train", "--data", str(data), "--epochs", "1", "--batch", "4", "--imgsz", "64",
            "--workers", str(workers), "--mosaic", "1.0" if mosaic else "0.0", "--close-mosaic", "0",
            "--project", str(runs), "--name", name, "--no-progress", "--no-plots"]


def test_detect_train_and_val_split_test_with_workers(tmp_path):
    """Training (mosaic on), its per-epoch validation and ``detect val --split test`` with 2 workers each, in a
    process whose OpenCV pool is busy: the old worker_init_fn hung here."""
    data = _dataset(tmp_path)
    out = _run_cli([_train_argv(data, tmp_path / "runs", "w2", 2, True),
                    ["detect", "val", "--weights", str(tmp_path / "runs" / "w2" / "best.pt"), "--data", str(data),
                     "--split", "test", "--workers", "2", "--imgsz", "64", "--batch", "4", "--no-plots"]], timeout=300)
    assert out.count("RC 0") == 2
    assert "mAP50-95" in out


@pytest.mark.slow
def test_detect_train_with_1_2_4_workers_with_and_without_mosaic(tmp_path):
    """Six CLI trainings (each with its validation) in one process: workers 1, 2, 4 x mosaic on/off. The
    trainer caps workers at the CPU count, so 4 means as many as there are cores."""
    data = _dataset(tmp_path, images=9)
    runs = [_train_argv(data, tmp_path / "runs", f"w{w}m{int(m)}", w, m) for w in (1, 2, 4) for m in (True, False)]
    out = _run_cli(runs, timeout=600)
    assert out.count("RC 0") == 6


@pytest.mark.slow
def test_loader_workers_never_hang_stress(tmp_path):
    """Many loader epochs straight from :func:`build_detection_loader` (training with and without mosaic,
    rectangular validation) with exactly 1, 2 and 4 workers, each forked from a busy parent pool. Before the
    fix 18 of 18 such loader epochs hung (scripts/det_loader_stress.py); 24 are plenty to catch it. For many
    more repeats run that script."""
    data = _dataset(tmp_path, images=12)
    train, _ = load_yolo_dataset(data, "train")
    val, _ = load_yolo_dataset(data, "val")
    epochs = 0
    for rep in range(2):
        for workers in (1, 2, 4):
            for mosaic in (True, False):
                for samples, augment in ((train, True), (val, False)):
                    busy_parent_cv2_pool()
                    loader = build_detection_loader(samples, 96, 4, augment=augment, workers=workers, mosaic=mosaic,
                                                    seed=rep, rect=not augment)
                    loader.timeout = 60  # a hung worker raises instead of blocking the suite
                    n = sum(len(images) for images, _ in loader)
                    assert n == len(samples)
                    epochs += 1
    assert epochs == 24
