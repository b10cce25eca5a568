"""The epoch loop of ``leanvision train --pipeline P``: every process runs this for its stage.

Per epoch: train (stage 0 reads the loader, the others receive), evaluate (test batches flow through the
stages; the last stage of replica 0 scores them), decide (that rank: best, patience, broadcast), save (each
stage of replica 0 writes its stage file; rank 0 consolidates them into ``last.pt``/``best.pt``), log.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ...config import ConfigError
from ..checkpoint import atomic_save, rng_state, set_rng_state
from ..distributed import all_ranks_agree, broadcast_values
from ..meter import ResourceMeter
from ..run_folder import clear_run, remove_stale_temp_files, write_config, write_json, write_metrics
from ..trainer import first_non_finite, to_device
from .assign import assign
from .comm import Watchdog
from .consolidate import consolidate, stage_path
from .stage import Stage
from .topology import build_topology

TIMEOUT_ENV = "LEANVISION_PIPELINE_TIMEOUT"  # seconds without a heartbeat before a rank counts as dead


def fit_pipeline(cfg, method, make_optimizer, weight_decay: float, schedule, train_loader, test_loader,
                 run_dir: Path, config: dict, effective: dict, ckpt: dict | None, device: torch.device,
                 dist_info) -> dict:
    """Train this process's stage of ``method`` (built identically on every rank) for ``cfg.epochs``."""
    from ...methods.local.stages import check_pipelinable

    try:
        check_pipelinable(method)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.amp == "fp16":
        raise ConfigError("--pipeline with --amp fp16: each stage would scale its losses on its own; use --amp bf16")
    topo = build_topology(cfg.pipeline, dist_info.rank, dist_info.world_size)
    check_micro_batches(cfg.micro_batches, cfg.batch_size, topo.replicas)
    stages, text = assign(method, cfg.pipeline, cfg.pipeline_split, method.model.image_size)
    try:
        stage = Stage(method, topo, stages, cfg.pipeline_schedule, device, make_optimizer, weight_decay, cfg.amp,
                      micro_batches=cfg.micro_batches)
    except ValueError as e:  # a model with state outside stem, blocks and head
        raise ConfigError(str(e)) from None
    job = _Job(cfg, stage, topo, schedule, train_loader, test_loader, Path(run_dir), config, device)
    if dist_info.is_main:
        if ckpt is None and cfg.overwrite:
            clear_run(job.run_dir)
        job.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(job.run_dir, effective)
        print(f"{method.describe()} | {cfg.model} on {cfg.data} | {device} x{topo.world} "
              f"({topo.stages} stages x {topo.replicas} replica(s), schedule {cfg.pipeline_schedule}, "
              f"{cfg.micro_batches} micro-batch(es) per batch) | "
              f"run: {job.run_dir}\n{text}", flush=True)
    if ckpt is not None:
        job.resume(ckpt)
    watchdog = None
    if dist.is_initialized() and topo.world > 1:
        store = dist.distributed_c10d._get_default_store()
        watchdog = Watchdog(store, topo.rank, topo.world, topo.describe_rank,
                            limit=float(os.environ.get(TIMEOUT_ENV, "10")))
        dist.barrier()
        watchdog.start()
    try:
        result = job.fit()
    except BaseException as e:  # a neighbour died (connection lost), or this stage failed
        first = str(e).splitlines()[0] if str(e) else ""
        mine = f"{topo.describe_rank(topo.rank)}: {type(e).__name__}: {first}"
        lost = isinstance(e, dist.DistError) or "gloo" in first.lower() or "connection" in first.lower()
        why = (_verdict(watchdog) if lost else None) or mine
        if watchdog is not None:
            watchdog.close(failed=why)
        if isinstance(e, ConfigError | KeyboardInterrupt):
            raise
        print(f"leanvision train: error: pipeline: {why}; the job stopped", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    if watchdog is not None:
        watchdog.close()
    return result


def check_micro_batches(micro_batches: int, batch_size: int, replicas: int) -> None:
    """ConfigError unless each replica's batch splits into ``micro_batches`` equal micro-batches (equal, so
    that the summed gradients of the micro-batch means are those of the batch mean)."""
    per_replica = batch_size // replicas
    if micro_batches > 1 and per_replica % micro_batches:
        fits = [d for d in range(2, min(per_replica, 64) + 1) if per_replica % d == 0][:6]
        raise ConfigError(f"--micro-batches {micro_batches}: each replica's batch of {per_replica} images "
                          f"(--batch-size {batch_size} over {replicas} replica(s)) does not split into "
                          f"{micro_batches} equal micro-batches; choose a divisor of {per_replica}"
                          f"{' such as ' + ', '.join(map(str, fits)) if fits else ''}, or 1")


def _verdict(watchdog: Watchdog | None) -> str | None:
    """What the store says broke the job, waiting up to the heartbeat limit for a dead rank to be noticed."""
    if watchdog is None:
        return None
    end = time.monotonic() + watchdog.limit + 2
    while time.monotonic() < end:
        why = watchdog.verdict()
        if why:
            return why
        time.sleep(0.5)  # the watchdog thread exits the process itself if a neighbour stopped ticking
    return None


class _Job:
    def __init__(self, cfg, stage: Stage, topo, schedule, train_loader, test_loader, run_dir: Path, config: dict,
                 device: torch.device):
        self.cfg, self.stage, self.topo, self.schedule = cfg, stage, topo, schedule
        self.train_loader, self.test_loader, self.run_dir, self.config = train_loader, test_loader, run_dir, config
        self.device = device
        self.judge = topo.rank_of(topo.stages - 1, 0)  # scores the test set and decides
        self.start_epoch, self.best, self.best_epoch, self.stale = 0, -math.inf, -1, 0
        self.history: list[dict] = []
        self.meter = ResourceMeter(stage.method, device)
        self.n_batches = len(train_loader) if cfg.steps_per_epoch is None else min(len(train_loader),
                                                                                   cfg.steps_per_epoch)

    def resume(self, ckpt: dict) -> None:
        self.stage.load(ckpt["method"], ckpt["optimizer"])
        self.start_epoch, self.best, self.best_epoch = int(ckpt["epoch"]), ckpt["best"], ckpt["best_epoch"]
        self.stale, self.history = int(ckpt.get("stale", 0)), list(ckpt.get("history", []))
        rngs = (ckpt.get("pipeline") or {}).get("rng") or []
        if self.topo.stage < len(rngs):
            set_rng_state(rngs[self.topo.stage])

    # -- one epoch -----------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict:
        st, opt = self.stage, self.stage.optimizer
        st.method.train()
        it_loader = None
        if self.topo.is_first:
            if hasattr(self.train_loader, "set_epoch"):
                self.train_loader.set_epoch(epoch)
            it_loader = iter(self.train_loader)
        sums = torch.zeros(5, dtype=torch.float64)  # loss, aux sum, aux count, correct, seen
        for it in range(self.n_batches):
            self.schedule.apply(opt, epoch, it, self.n_batches)
            if it_loader is not None:
                images, targets = next(it_loader)
                images, targets = to_device(images, self.device), to_device(targets, self.device)
                out = self.meter.measure(functools.partial(st.step, images, targets), images.shape[0], opt)
            else:
                out = self.meter.measure(st.step, self.cfg.batch_size // self.topo.replicas, opt)
            sums[1] += float(sum(float(v) for v in out["aux"]))
            sums[2] += len(out["aux"])
            if "loss" in out:
                sums[0] += float(out["loss"])
                sums[3] += int((out["logits"].argmax(1) == out["targets"]).sum())
                sums[4] += out["targets"].numel()
        for link in (st.prev, st.next):
            if link is not None:
                link.flush()
        if dist.is_initialized() and self.topo.world > 1:
            dist.all_reduce(sums)
        n = max(self.n_batches * self.topo.replicas, 1)
        row = {"train_loss": float(sums[0]) / n}
        if sums[2]:
            row["train_aux_loss"] = float(sums[1] / sums[2])
        if sums[4]:
            row["train_acc"] = float(sums[3] / sums[4])
        row["lr"] = opt.param_groups[0]["lr"]
        return row

    def refresh_for_overlap(self) -> None:
        """``overlap``: MLAAN's shadows of EMA source blocks are refreshed at the start of every epoch."""
        if not self.stage.cross:
            self.stage.refresh_shadows()

    # -- the loop ------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        topo, main = self.topo, self.topo.rank == 0
        if main:
            remove_stale_temp_files(self.run_dir)
            if self.history:
                write_metrics(self.run_dir, self.history)
        last = {}
        for epoch in range(self.start_epoch, self.cfg.epochs):
            self.refresh_for_overlap()
            t0 = time.perf_counter()
            row = {"epoch": epoch + 1, **self.train_epoch(epoch)}
            row["epoch_s"] = round(time.perf_counter() - t0, 3)
            metrics = self.stage.evaluate(self.test_loader) if topo.replica == 0 else None
            finite = all_ranks_agree(first_non_finite(self.stage.method.state_dict()) is None, self.device)
            if topo.rank == self.judge:
                improved = metrics["acc"] > self.best and math.isfinite(metrics["loss"])
                if improved:
                    self.best, self.best_epoch = metrics["acc"], epoch + 1
                self.stale = 0 if improved else self.stale + 1
                vals = [improved, self.best, self.best_epoch, self.stale, metrics["acc"], metrics["loss"]]
            else:
                vals = [0.0] * 6
            improved, self.best, best_epoch, stale, acc, loss = broadcast_values(vals, self.device, src=self.judge)
            self.best_epoch, self.stale, improved = int(best_epoch), int(stale), bool(improved)
            if not finite:
                raise RuntimeError(f"after epoch {epoch + 1} a weight or buffer of some stage is not finite; it was "
                                   "not saved. Lower the learning rate.")
            row.update(val_acc=acc, val_loss=loss)
            self.history.append(row)
            last = row
            self.save(epoch + 1, improved)
            if main:
                write_metrics(self.run_dir, self.history)
                print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      flush=True)
            if self.cfg.patience is not None and self.stale >= self.cfg.patience:
                if main:
                    print(f"early stop: acc has not improved for {self.cfg.patience} epochs", flush=True)
                break
        return self.result(last)

    def save(self, epoch: int, improved: bool) -> None:
        """Each stage of replica 0 writes its file; then rank 0 merges them into last.pt (and best.pt). The other
        replicas save nothing: their weights are replica 0's, their BatchNorm statistics (of their own shards) are
        dropped (see the package docstring)."""
        if self.topo.replica == 0:
            state = {**self.stage.state(), "epoch": epoch, "best": self.best, "best_epoch": self.best_epoch,
                     "stale": self.stale, "history": self.history, "rng": rng_state(), "config": self.config,
                     "modules": [list(m) for m in self.stage.stages], "schedule": self.stage.schedule}
            atomic_save(state, stage_path(self.run_dir, self.topo.stage))
            if improved:
                atomic_save(state, stage_path(self.run_dir, self.topo.stage, best=True))
        if dist.is_initialized() and self.topo.world > 1:
            dist.barrier()
        if self.topo.rank == 0:
            atomic_save(consolidate(self.run_dir, self.topo.stages, self.stage.layout), self.run_dir / "last.pt")
            if improved:
                atomic_save(consolidate(self.run_dir, self.topo.stages, self.stage.layout, best=True),
                            self.run_dir / "best.pt")

    def result(self, last: dict) -> dict:
        stats = self.meter.stats().__dict__
        per_stage = [stats]
        if dist.is_initialized() and self.topo.world > 1:
            gathered = [None] * self.topo.world
            dist.all_gather_object(gathered, stats)  # our own plain dicts of numbers, between our processes
            per_stage = [gathered[self.topo.rank_of(p, 0)] for p in range(self.topo.stages)]
        res = {"final": last, "best_epoch_acc": self.best, "best_epoch": self.best_epoch,
               "resources": {**per_stage[-1], "peak_memory_bytes": max(s["peak_memory_bytes"] for s in per_stage),
                             "stages": per_stage},
               "pipeline": {"stages": self.topo.stages, "replicas": self.topo.replicas,
                            "schedule": self.stage.schedule, "micro_batches": self.stage.micro_batches,
                            "modules": [list(m) for m in self.stage.stages]}}
        if self.topo.rank == 0 and self.run_dir.exists():
            write_json(self.run_dir / "results.json", res)
        return res
