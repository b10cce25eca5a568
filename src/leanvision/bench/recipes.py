"""Named bench recipes, defined once so that runs are comparable.

``cifar10-short`` (issue: local learning, accuracy section):
- data: the CIFAR-10 JPEG archive (``--data PATH`` to the .tar.gz or its folder); training files
  sorted by path, of which the 10 000 at ``numpy.random.default_rng(0).permutation(50000)[:10000]``;
  the full 10 000-image test set; labels = index of the class folder in sorted order;
- batch 128 (last incomplete batch dropped), 10 epochs, SGD Nesterov 0.9, weight decay 1e-4 on all
  parameters, base LR 0.1 set once per epoch with a 2-epoch warm-up then cosine
  (``lr_schedule="release"``: :class:`~leanvision.engine.schedule.WarmupCosine` with E=10, W=2; pinned so
  that the recipe stays the one its BENCHMARKS.md numbers were measured with);
- augmentation: reflect-pad 4, random 32x32 crop, horizontal flip; CIFAR-10 mean/std; fp32.
"""

from __future__ import annotations

RECIPES: dict[str, dict] = {
    "cifar10-short": dict(epochs=10, batch_size=128, subset=10000, optimizer="sgd", lr=0.1, weight_decay=1e-4,
                          momentum=0.9, warmup_epochs=2, lr_schedule="release", amp="none"),
    # The demo: the bundled digits set, a few epochs, small enough for 2 CPU cores (default LR schedule).
    "demo": dict(data="digits", epochs=3, batch_size=128, optimizer="sgd", lr=0.1, weight_decay=1e-4,
                 momentum=0.9, warmup_epochs=0, amp="none"),
}
