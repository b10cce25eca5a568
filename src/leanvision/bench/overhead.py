"""What the trainer costs over a bare PyTorch loop doing the same steps (same model, batch, optimizer).

Both loops run on one fixed batch, interleaved in rounds so that machine noise hits both alike;
the figure is the median over rounds of (trainer time / bare time).
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from ..classify.train import build_optimizer
from ..engine.distributed import DistInfo
from ..engine.schedule import WarmupCosine
from ..engine.seed import seed_everything
from ..engine.trainer import Trainer
from ..methods import create_method
from ..models import create_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_overhead(model_name: str = "resnet32", batch_size: int = 128, steps: int = 10, rounds: int = 5,
                     device: str = "cpu") -> dict:
    """Median ratio of ``Trainer.train_step`` (meter included) to a bare forward/backward/step loop."""
    dev = torch.device(device)
    seed_everything(0)
    model = create_model(model_name, num_classes=10).to(dev)
    size = model.image_size
    x = torch.randn(batch_size, 3, size, size, device=dev)
    y = torch.randint(0, 10, (batch_size,), device=dev)
    method = create_method("e2e", model)
    opt = build_optimizer(method, "sgd", 0.01, 1e-4, 0.9)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(method, opt, WarmupCosine(0.01, 1, 0), [], evaluate=lambda m: {}, run_dir=tmp, epochs=1,
                          config={}, device=dev, dist=DistInfo(), progress=False, meter_warmup=0,
                          meter_track_steps=0)

        def bare():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        def ours():
            trainer.meter.measure(lambda: trainer.train_step(x, y), batch_size, opt)

        for fn in (bare, ours):  # warm-up
            fn()
        ratios, bare_ms, ours_ms = [], [], []
        for _ in range(rounds):
            times = {}
            for name, fn in (("bare", bare), ("ours", ours)):
                _sync(dev)
                t0 = time.perf_counter()
                for _ in range(steps):
                    fn()
                _sync(dev)
                times[name] = (time.perf_counter() - t0) / steps
            ratios.append(times["ours"] / times["bare"])
            bare_ms.append(1000 * times["bare"])
            ours_ms.append(1000 * times["ours"])
    return {"model": model_name, "batch_size": batch_size, "device": str(dev),
            "bare_ms_per_step": statistics.median(bare_ms), "trainer_ms_per_step": statistics.median(ours_ms),
            "trainer_vs_bare": statistics.median(ratios)}
