"""Old import paths kept for one release: a module that moved answers from its new home and warns once."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable


def moved_module(old: str, new: str) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for module ``old``, whose contents now live in module ``new``.

    The first name read through ``old`` raises one :class:`DeprecationWarning` that names the new path,
    pointing at the caller's line; every name then comes from ``new`` (the same objects, not copies).

    Example (the whole body of a moved module)::

        from leanvision._deprecated import moved_module

        __getattr__, __dir__ = moved_module(__name__, "leanvision.ops.boxes")
    """
    warned = False

    def __getattr__(name: str) -> object:
        nonlocal warned
        if name.startswith("__") and name != "__all__":  # import machinery probes (__path__, __file__ ...)
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        target = importlib.import_module(new)
        value = getattr(target, name)  # AttributeError for a name the new module does not have either
        if not warned:
            warned = True
            warnings.warn(f"{old} moved to {new}; import {name} from {new} (the old path goes in the next release)",
                          DeprecationWarning, stacklevel=2)
        return value

    def __dir__() -> list[str]:
        return sorted(dir(importlib.import_module(new)))

    return __getattr__, __dir__
