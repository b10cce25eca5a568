"""Supervised local learning: DGL, InfoPro, greedy SL, and MLAAN on top of DGL or InfoPro.

Python API: ``LocalLearning(model, modules=8, base="dgl", mlaan=True)``. Registered methods
(``create_method(name, model, modules=..., split=..., **options)``): "greedy", "dgl", "infopro",
"dgl+mlaan", "infopro+mlaan".
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
