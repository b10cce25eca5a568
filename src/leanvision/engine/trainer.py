"""The trainer loop: epochs, LR schedule, optimizer step, evaluation, logging and checkpoints.

The method supplies what happens to one batch (``method.train_step``); the trainer owns the rest.
Read top to bottom: :func:`train_one_epoch`, :func:`evaluate_classifier`, then :class:`Trainer`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, atomic_save, load_checkpoint, rng_state, set_rng_state
from .distributed import DistInfo, all_ranks_agree, average_gradients, broadcast_values
from .meter import ResourceMeter, StepStats, describe_memory
from .plots import plot_results
from .progress import progress_bar
from .run_folder import remove_stale_temp_files, write_json, write_metrics


class NonFiniteError(RuntimeError):
    """Training produced NaN or infinity; the run stops, and nothing non-finite is ever saved."""


class NonFiniteLossError(NonFiniteError):
    """The loss became NaN or infinite."""


class NonFiniteStateError(NonFiniteError):
    """After an epoch, a weight, a buffer (BatchNorm statistics, EMA) or a validation metric is not finite."""


def first_non_finite(state: dict[str, torch.Tensor]) -> str | None:
    """Name of the first floating-point tensor of ``state`` holding NaN or infinity, else None."""
    for name, t in state.items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def to_device(obj, device: torch.device, channels_last: bool = False):
    """Move a batch (tensor, or dict/list of tensors) to ``device``; 4-D float images optionally to NHWC."""
    if torch.is_tensor(obj):
        obj = obj.to(device, non_blocking=True)
        if channels_last and obj.dim() == 4 and obj.is_floating_point():
            obj = obj.contiguous(memory_format=torch.channels_last)
        return obj
    if isinstance(obj, dict):
        return {k: to_device(v, device, channels_last) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_device(v, device, channels_last) for v in obj)
    return obj


def autocast(device: torch.device, amp: str):
    """Mixed-precision context: ``amp`` is none | bf16 | fp16."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp not in ("bf16", "fp16"):
        raise ValueError(f"amp must be none, bf16 or fp16, got {amp!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _cpu_has_bf16() -> bool | None:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), from /proc/cpuinfo; None where unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def slow_amp_warning(amp: str, device: torch.device | str) -> str | None:
    """One line when ``amp`` is known to be slow on ``device``, saying what to use instead; else None.

    Measured (resnet20, batch 32, one thread; README "One vocabulary in every command" has the command): on a
    2-core AMD EPYC with AVX512-BF16, ``leanvision bench`` timed fp16 autocast at 15x fp32 (PyTorch's CPU fp16
    kernels are reference loops) and bf16 at 0.7x; on a CPU with AVX2 only, a one-off timing gave bf16 8.5x.
    """
    if torch.device(device).type != "cpu" or amp not in ("fp16", "bf16"):
        return None
    if amp == "fp16":
        return ("warning: --amp fp16 on CPU is far slower than fp32 (no fast fp16 kernels; a resnet20 training step "
                "took 15x as long on a 2-core CPU); use --amp none on CPU, fp16 or bf16 on a GPU")
    if _cpu_has_bf16() is False:
        return ("warning: --amp bf16 on this CPU (no AVX512-BF16 or AMX) is slower than fp32 (a resnet20 step took "
                "8.5x as long on an AVX2 CPU in a one-off timing); use --amp none")
    return None


def train_one_epoch(trainer: Trainer, epoch: int) -> dict:
    """One pass over the training loader; returns the epoch's mean loss, accuracy and speed."""
    method, opt, loader = trainer.method, trainer.optimizer, trainer.train_loader
    method.train()
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    n_batches = len(loader) if trainer.steps_per_epoch is None else min(len(loader), trainer.steps_per_epoch)
    sums: dict[str, float] = {}
    correct = seen = 0
    has_logits, it = False, -1
    trainer.epoch_batches = n_batches  # the last batch of an epoch always ends an accumulation group
    trainer.pending = 0  # so groups restart with each epoch (and a resumed run is exact)
    bar = trainer.progress_bar(loader, n_batches, f"epoch {epoch + 1}/{trainer.epochs}")
    data_s, t_data = 0.0, time.perf_counter()
    for it, (images, targets) in enumerate(bar):
        if it >= n_batches:
            break
        data_s += time.perf_counter() - t_data  # time spent waiting for the loader (augmentation included)
        images = to_device(images, trainer.device, trainer.channels_last)
        targets = to_device(targets, trainer.device)
        trainer.schedule.apply(opt, epoch, it, n_batches)

        step = functools.partial(trainer.train_step, images, targets, epoch, it)
        out = trainer.meter.measure(step, images.shape[0], opt)
        for k, v in out.items():
            if k != "logits" and torch.is_tensor(v) and v.numel() == 1:
                sums[k] = sums.get(k, 0.0) + float(v)
        if "logits" in out and torch.is_tensor(targets):
            has_logits = True
            correct += int((out["logits"].argmax(1) == targets).sum())
        seen += images.shape[0]
        if trainer.show_progress and hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{float(out['loss']):.3f}", lr=f"{opt.param_groups[0]['lr']:.4g}")
        t_data = time.perf_counter()
    steps = max(min(n_batches, it + 1), 1)
    metrics = {f"train_{k}": v / steps for k, v in sums.items()}
    if has_logits and seen:
        metrics["train_acc"] = correct / seen
    metrics["lr"] = opt.param_groups[0]["lr"]
    metrics["data_s"] = round(data_s, 3)
    return metrics


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: Iterable, device: torch.device, amp: str = "none",
                        channels_last: bool = False, progress: bool = False) -> dict:
    """Top-1 accuracy and mean cross-entropy of ``model`` over ``loader`` (a bar with ``progress`` on a terminal)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for images, targets in progress_bar(loader, show=progress, desc="val"):
        images, targets = to_device(images, device, channels_last), to_device(targets, device)
        with autocast(device, amp):
            logits = model(images)
        loss_sum += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
        correct += int((logits.argmax(1) == targets).sum())
        total += targets.numel()
    model.train(was_training)
    return {"acc": correct / max(total, 1), "loss": loss_sum / max(total, 1)}


class Trainer:
    """Drive a :class:`~leanvision.methods.Method` for ``epochs`` epochs.

    Args:
        method: the training method (holds the model and any auxiliary networks).
        optimizer: built over ``method.param_groups(...)``.
        schedule: object with ``apply(optimizer, epoch, it, iters_per_epoch)`` setting the LR.
        train_loader: yields ``(images, targets)``; may have ``set_epoch``.
        evaluate: ``fn(model) -> dict`` of metrics on the evaluation set (run on rank 0 only).
        run_dir: folder for ``config.yaml``, ``metrics.csv``/``metrics.jsonl``, ``last.pt``, ``best.pt``.
        epochs: number of epochs.
        config: the resolved configuration, saved in every checkpoint (plain dict).
        fitness: metric name that decides ``best.pt`` (higher is better).
        amp / channels_last: mixed precision (none | bf16 | fp16) and NHWC inputs.
        dist: rank/world size; only rank 0 evaluates, logs and writes files.
        patience: stop when ``fitness`` has not improved for this many epochs (None: never).
        steps_per_epoch: cap batches per epoch.
        on_epoch_start: optional ``fn(epoch)`` hook (e.g. switch mosaic off for the last epochs).
        accumulate: sum gradients over this many batches per optimizer step (groups restart each epoch;
            the schedule is still applied per batch). 1 = a step every batch. A callable
            ``fn(epoch, it, iters_per_epoch) -> int`` gives it per batch (YOLOv8 ramps it up over the warm-up):
            a step is taken once that many batches have been summed since the last one.
        plots: redraw ``results.png`` (the curves of metrics.csv) after every epoch.
        curves: the metrics.csv columns ``results.png`` shows (default: every numeric column but epoch and timings).
    """

    def __init__(self, method, optimizer, schedule, train_loader, evaluate: Callable[[nn.Module], dict],
                 run_dir: str | Path, epochs: int, config: dict, device: torch.device, fitness: str = "acc",
                 amp: str = "none", channels_last: bool = False, dist: DistInfo | None = None,
                 patience: int | None = None, steps_per_epoch: int | None = None, progress: bool = True,
                 on_epoch_start: Callable[[int], None] | None = None, meter_warmup: int = 2,
                 meter_track_steps: int = 2, accumulate: int | Callable[[int, int, int], int] = 1,
                 plots: bool = True, curves: list[str] | None = None):
        self.method, self.optimizer, self.schedule = method, optimizer, schedule
        self.train_loader, self.evaluate_fn = train_loader, evaluate
        self.run_dir, self.epochs, self.config = Path(run_dir), epochs, config
        self.device, self.fitness, self.amp, self.channels_last = device, fitness, amp, channels_last
        self.dist = dist or DistInfo()
        self.patience, self.steps_per_epoch, self.on_epoch_start = patience, steps_per_epoch, on_epoch_start
        if not callable(accumulate) and accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {accumulate}")
        self.accumulate = accumulate if callable(accumulate) else int(accumulate)
        self.epoch_batches, self.pending = None, 0  # pending: batches summed since the last optimizer step
        self.show_progress = progress and self.dist.is_main
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
        slow = slow_amp_warning(amp, device)
        if slow and self.dist.is_main:
            print(slow, file=sys.stderr, flush=True)
        self.meter = ResourceMeter(method, device, warmup=meter_warmup, track_steps=meter_track_steps)
        self.start_epoch, self.best, self.best_epoch, self.stale = 0, -math.inf, -1, 0
        self.saved_epoch: int | None = None  # the epoch of the last checkpoint written (or resumed from)
        self.bad: str | None = None  # what non_finite found (rank 0)
        self.history: list[dict] = []
        self.plots, self.curves = plots, curves
        self._params = [p for g in optimizer.param_groups for p in g["params"]]

    # -- pieces the epoch loop calls -------------------------------------------------------------
    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def progress_bar(self, loader, total: int, desc: str):
        if not self.show_progress:
            return loader
        from tqdm.auto import tqdm

        return tqdm(loader, total=total, desc=desc, leave=False, dynamic_ncols=True)

    def train_step(self, images, targets, epoch: int = 0, it: int = 0) -> dict:
        """One full step: the method's forward/backward passes, gradient sync, optimizer step."""
        opt = self.optimizer
        acc = self.accumulate(epoch, it, self.epoch_batches or 1) if callable(self.accumulate) else self.accumulate
        if self.pending == 0:
            opt.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp):
            out = self.method.train_step(images, targets, self.backward)
        loss = out["loss"].detach().float()
        # every rank takes the same decision, or the others would wait for this one forever
        if not all_ranks_agree(bool(torch.isfinite(loss)), loss.device):
            where = " on at least one process" if self.dist.enabled else ""
            raise NonFiniteLossError(
                f"the loss is not finite{where} at epoch {epoch + 1}, step {it + 1} (here: {loss.item()}); "
                f"{self.last_good()}. Lower the learning rate, or use --amp bf16 instead of fp16."
            )
        self.pending += 1
        if self.pending < acc and (self.epoch_batches is None or it + 1 < self.epoch_batches):
            return out  # mid-group: keep summing gradients
        self.pending = 0
        average_gradients(self._params)
        if self.scaler is not None:
            self.scaler.unscale_(opt)
        self.method.before_optimizer_step()
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        self.method.after_optimizer_step()
        return out

    # -- checkpoints -------------------------------------------------------------------------------
    def state(self, epoch: int) -> dict:
        return {
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": epoch,  # completed epochs
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stale": self.stale,  # epochs since the last improvement (early stopping)
            "history": self.history,
            "rng": rng_state(),
            "config": self.config,
        }

    def last_good(self) -> str:
        """Where the run can be continued from, for error messages."""
        if self.saved_epoch is None:
            return "no checkpoint was written"
        return f"the last finite checkpoint is {self.run_dir / 'last.pt'} (epoch {self.saved_epoch})"

    def resume(self, path: str | Path) -> None:
        """Continue exactly where ``path`` (a ``last.pt``) stopped: weights, optimizer, RNG, epoch, patience."""
        self.load_state(load_checkpoint(path, map_location=self.device), path)

    def load_state(self, ckpt: dict, path: str | Path) -> None:
        """Restore a checkpoint dict read from ``path`` (see :meth:`resume`)."""
        old = ckpt.get("config", {})
        for key in ("model", "method"):
            if key in old and key in self.config and old[key] != self.config[key]:
                raise CheckpointError(
                    f"{path}: checkpoint was trained with {key}={old[key]!r}, this run asks for "
                    f"{key}={self.config[key]!r}; resume with the same {key} or start a new run"
                )
        bad = first_non_finite(ckpt["method"])
        if bad is not None:
            raise CheckpointError(f"{path}: {bad} holds NaN or infinity; it cannot be resumed")
        try:
            self.method.load_state_dict(ckpt["method"])
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not fit this model/method ({str(e).splitlines()[0]})") from e
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch, self.best, self.best_epoch = ckpt["epoch"], ckpt["best"], ckpt["best_epoch"]
        self.stale = int(ckpt.get("stale", 0))
        self.saved_epoch = self.start_epoch
        self.history = list(ckpt.get("history", []))
        set_rng_state(ckpt["rng"])

    # -- logging -----------------------------------------------------------------------------------
    def _tensorboard(self):
        """A SummaryWriter under ``run_dir/tensorboard`` when the tensorboard package is installed, else None."""
        if not hasattr(self, "_tb"):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self._tb = None
            else:
                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._tb

    def write_reports(self) -> None:
        """Rewrite metrics.csv/metrics.jsonl and results.png from the history (atomically: whole files only)."""
        write_metrics(self.run_dir, self.history)
        if self.plots:
            plot_results(self.history, self.run_dir / "results.png", self.curves)

    def log(self, row: dict) -> None:
        """Show ``row`` (already in ``history``) and rewrite the metrics files and plot from the history."""
        tb = self._tensorboard()
        if tb is not None:
            for k, v in row.items():
                if isinstance(v, int | float) and k != "epoch":
                    tb.add_scalar(k, v, row["epoch"])
            tb.flush()
        self.write_reports()
        print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

    # -- the loop ----------------------------------------------------------------------------------
    def non_finite(self, metrics: dict) -> str | None:
        """What is not finite after an epoch (a tensor of the method, or a validation metric), else None."""
        bad = first_non_finite(self.method.state_dict())
        if bad is not None:
            return f"{bad} holds NaN or infinity"
        for k, v in metrics.items():
            if isinstance(v, float) and not math.isfinite(v):
                return f"the validation {k} is {v}"
        return None

    def decide(self, epoch: int, metrics: dict) -> tuple[bool, bool, bool]:
        """(state is finite, improved, stop) after ``epoch``: taken on rank 0 (it alone evaluates), then broadcast.

        Updates ``best``, ``best_epoch`` and ``stale`` identically on every rank.
        """
        finite = improved = True
        if self.dist.is_main:
            self.bad = self.non_finite(metrics)
            finite = self.bad is None
            improved = finite and metrics.get(self.fitness, -math.inf) > self.best
            if improved:
                self.best, self.best_epoch = metrics[self.fitness], epoch + 1
            self.stale = 0 if improved else self.stale + 1
        finite, improved, self.best, self.best_epoch, self.stale = broadcast_values(
            [finite, improved, self.best, self.best_epoch, self.stale], self.device)
        self.best_epoch, self.stale = int(self.best_epoch), int(self.stale)
        stop = self.patience is not None and self.stale >= self.patience
        return bool(finite), bool(improved), stop

    def fit(self) -> dict:
        """Train from ``start_epoch`` to ``epochs``; returns the final metrics and resources.

        Per epoch: train, evaluate (rank 0), decide (rank 0, broadcast), then rank 0 saves ``last.pt`` (and
        ``best.pt``) and only afterwards rewrites the metrics files, so a kill never leaves a row that the
        checkpoint does not have.
        """
        main = self.dist.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(self.run_dir)
            if self.history:  # resumed: the checkpoint's history is the truth (a kill may have cut the files)
                self.write_reports()
        last = {}
        for epoch in range(self.start_epoch, self.epochs):
            if self.on_epoch_start is not None:
                self.on_epoch_start(epoch)
            t0 = time.perf_counter()
            train = train_one_epoch(self, epoch)
            train_time = time.perf_counter() - t0
            metrics = self.evaluate_fn(self.method.inference_model()) if main else {}
            row = {"epoch": epoch + 1, **train, **{f"val_{k}": v for k, v in metrics.items()},
                   "epoch_s": round(train_time, 3)}
            last = row
            finite, improved, stop = self.decide(epoch, metrics)
            if not finite:
                what = self.bad if main else "process 0 found a non-finite state"
                raise NonFiniteStateError(f"after epoch {epoch + 1}, {what}; it was not saved, and "
                                          f"{self.last_good()}. Lower the learning rate.")
            if main:
                self.history.append(row)
                state = self.state(epoch + 1)
                atomic_save(state, self.run_dir / "last.pt")
                if improved:
                    atomic_save(state, self.run_dir / "best.pt")
                self.log(row)
            self.saved_epoch = epoch + 1
            if stop:
                if main:
                    print(f"early stop: {self.fitness} has not improved for {self.patience} epochs", flush=True)
                break
        return self.result(last)

    def resources(self) -> StepStats:
        return self.meter.stats()

    def result(self, last: dict) -> dict:
        stats = self.resources()
        res = {
            "final": last,  # last-epoch metrics: the primary result
            f"best_epoch_{self.fitness}": self.best,  # model selection on the eval set: labelled as such
            "best_epoch": self.best_epoch,
            "resources": stats.__dict__,
        }
        if self.dist.is_main and self.run_dir.exists():
            write_json(self.run_dir / "results.json", res)
        if self.dist.is_main:
            print(describe_memory(stats), flush=True)  # the same figures as `leanvision bench` reports
        return res
