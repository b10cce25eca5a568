"""Supervised local learning: DGL, InfoPro, greedy SL, and MLAAN on top of DGL or InfoPro.

Python API: ``LocalLearning(model, modules=8, base="dgl", mlaan=True)``. Registered methods
(``create_method(name, model, modules=..., split=..., **options)``): "greedy", "dgl", "infopro",
"dgl+mlaan", "infopro+mlaan".

Decisions (spec §8), in short:
- ``modules`` is K in the MLAAN group's labelling; the authors' code key is also accepted and
  both are recorded in ``method.split`` / ``describe()``. MLAAN keeps the stem merged (ResNet-32
  "16" = 15 modules, ResNet-110 "55" = 54, ResNet-101 "34" = 33); the DGL/InfoPro baselines use
  InfoPro's table, whose ResNet-32 K=16 isolates the stem.
- Heads: DGL = InfoPro's 1c2f + CE (the MLAAN repo's DGL); greedy and DGL+MLAAN = GAP + Linear.
- MLAAN: span 3, w_x 0.001 / w_y 0.999, EMA m 0.995 on every LAM from pre-step weights, EMA on
  the first LAM block; the CIFAR release is ``span=2, ema_update="last_only"``.
- InfoPro interpolates its lambdas over the module index (``lambda_index="stage"`` = release bug)
  and needs conv feature maps (ViTs: use dgl or greedy). Its lambdas come from the published table
  for ``dataset`` (``leanvision train`` passes the run's); without an entry, a default and a warning.
- ``preset="release"`` selects everything the authors' released CIFAR code does instead of our
  decisions, including their LR rule (:mod:`.presets`; docs/local_learning_release.md).
"""

from .._registry import register_method
from .infopro import infopro_lambdas, supcon_loss
from .method import LocalLearning
from .split import Split, resolve_split

__all__ = ["LocalLearning", "Split", "infopro_lambdas", "resolve_split", "supcon_loss"]


def _builder(base: str, mlaan: bool):
    def build(model, modules: int | None = None, split: str | None = None, **options) -> LocalLearning:
        return LocalLearning(model, modules, base=base, mlaan=mlaan, split=split, **options)

    build.__doc__ = f"Build {base}{'+mlaan' if mlaan else ''} local learning; options as for LocalLearning."
    return build


for _base, _mlaan in [
    ("greedy", False),
    ("dgl", False),
    ("infopro", False),
    ("dgl", True),
    ("infopro", True),
]:
    register_method(_base + ("+mlaan" if _mlaan else ""))(_builder(_base, _mlaan))
