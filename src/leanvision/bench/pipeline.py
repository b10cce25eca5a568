"""``leanvision bench pipeline``: images/s and peak memory per stage of pipelined local learning, against the
same method in one process.

Each row trains ``--steps`` measured steps (after the meter's warm-up and memory-tracking steps) as one process
(``leanvision train``) and as P stages (``torchrun --nproc_per_node P leanvision train --pipeline P``), every
process with ``--threads`` threads (the pipelines with ``--micro-batches M``, the one process on whole batches,
as the issue's targets compare them), and reads the runs' ``results.json``. Images/s of a pipeline is its last
stage's rate (every batch passes it); memory is each stage's peak (CPU: saved tensors plus weights, gradients
and optimizer state; CUDA: the allocator's peak). Without ``--data`` the rows train on a folder of random
32x32 images written once into the output folder (the cost of a step does not depend on what the pixels show).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..engine.checkpoint import atomic_write_text
from .rows import parse_rows

WARMUP_STEPS = 4  # the meter's 2 warm-up and 2 memory-tracked steps (CPU), not timed


def random_image_folder(root: Path, classes: int = 10, per_class: int = 8, size: int = 32) -> Path:
    """An ImageFolder tree (train/ and test/) of random PNGs; written once."""
    from PIL import Image

    if (root / "test").is_dir():
        return root
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 1)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _train_args(row, data: str, batch: int, steps: int, run: Path) -> list[str]:
    args = ["train", "--model", row.model, "--method", row.method, "--data", data, "--epochs", "1",
            "--batch-size", str(batch), "--steps-per-epoch", str(WARMUP_STEPS + steps), "--no-progress",
            "--project", str(run.parent), "--name", run.name, "--overwrite"]
    for k, v in row.options.items():
        args += ["--modules", str(v)] if k == "modules" else ["--method-opt", f"{k}={v}"]
    for k, v in row.train.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def _run(cmd: list[str], threads: int, device: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    res = subprocess.run([*cmd, "--device", device], capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{res.stderr[-3000:]}")


def pipeline_rows(rows: list[str], stages: list[int], batch: int, steps: int, threads: int, out: str,
                  data: str | None = None, device: str = "cpu", micro_batches: int = 1) -> list[dict]:
    """Run every row in one process and as each number of ``stages``; returns the table's rows."""
    out_dir = Path(out)
    if data is None:  # enough images for every step of one epoch
        per_class = -(-batch * (WARMUP_STEPS + steps) // 10)
        data = str(random_image_folder(out_dir / f"random-images-{per_class}", per_class=per_class))
    results = []
    for row in parse_rows(rows):
        label = f"{row.model}:{row.method}" + (f" {row.settings}" if row.options else "")
        base = None
        for p in [1, *stages]:
            run = out_dir / "runs" / f"{row.model}-{row.method}-p{p}"
            args = _train_args(row, data, batch, steps, run)
            if p == 1:
                cmd = [sys.executable, "-m", "leanvision", *args]
            else:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={p}",
                       "-m", "leanvision", *args, "--pipeline", str(p), "--micro-batches", str(micro_batches)]
            t0 = time.perf_counter()
            _run(cmd, threads, device)
            res = json.loads((run / "results.json").read_text())["resources"]
            per_stage = [s["peak_memory_bytes"] for s in res.get("stages", [res])]
            r = {"row": label, "processes": p, "threads": threads, "batch": batch,
                 "micro_batches": 1 if p == 1 else micro_batches, "images_per_s": res["images_per_s"],
                 "peak_mib": [round(b / 2**20, 1) for b in per_stage], "wall_s": round(time.perf_counter() - t0, 1)}
            if base is None:
                base = r
            r["speedup"] = round(r["images_per_s"] / base["images_per_s"], 3)
            r["max_peak_ratio"] = round(max(per_stage) / 2**20 / base["peak_mib"][0], 3)
            results.append(r)
            print(f"  {label} x{p} ({r['micro_batches']} micro-batches): {r['images_per_s']:.1f} images/s "
                  f"({r['speedup']}x), peak MiB per stage "
                  f"{r['peak_mib']} ({r['max_peak_ratio']}x)", flush=True)
    return results


def write_pipeline_report(results: list[dict], out: str, command: str) -> str:
    """bench-pipeline.md and .json in ``out``, with the machine and its load beside the numbers."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    env = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
           "torch": torch.__version__, "load_avg_1_5_15": [round(v, 2) for v in load]}
    lines = [f"command: `{command}`", f"machine: {env['machine']}; torch {env['torch']}; {env['date']}; load "
             f"{env['load_avg_1_5_15']}", "",
             "| row | processes | micro-batches | images/s | speedup | peak MiB per stage | max stage / one process |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['row']} | {r['processes']} | {r.get('micro_batches', 1)} | {r['images_per_s']:.1f} | "
                     f"{r['speedup']:.2f}x | "
                     f"{', '.join(map(str, r['peak_mib']))} | {r['max_peak_ratio']:.2f} |")
    md = "\n".join(lines) + "\n"
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out) / "bench-pipeline.md", md)
    atomic_write_text(Path(out) / "bench-pipeline.json", json.dumps({"environment": env, "rows": results}, indent=1))
    return md


def cmd_pipeline(args, rows: list[str]) -> int:
    stages = [int(s) for s in str(args.pipeline_stages or "2").split(",")]
    micro = 1 if args.micro_batches is None else args.micro_batches
    if micro < 1:
        raise ConfigError(f"--micro-batches {micro}: must be at least 1")
    batch = args.batch_size or 128
    if batch % micro:
        raise ConfigError(f"--micro-batches {micro}: --batch-size {batch} does not split into {micro} equal "
                          "micro-batches; choose a divisor of the batch")
    results = pipeline_rows(rows, stages, batch, args.steps or 8, args.threads or 1, args.out, args.data,
                            args.device or "cpu", micro)
    command = "leanvision " + shlex.join(sys.argv[1:])
    print(write_pipeline_report(results, args.out, command))
    return 0
