"""One registry implementation for everything built by name: classifiers, detectors, methods, datasets.

The timm/torchvision shape: a builder is filed under a name (its own ``__name__`` unless one is given), a
second builder of the same name is refused, names are listed with a shell-style wildcard in natural order
(``resnet20`` before ``resnet110``), and building drops keyword arguments that are ``None`` so a CLI default of
None means "the builder's default".
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
Builder = Callable[..., T]


def natural_key(name: str) -> list:
    """Sort key that orders the digits in a name by value: resnet20 < resnet32 < resnet110."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class Registry(Generic[T]):
    """Builders of one kind, by name.

    Args:
        kind: what is registered, singular ("model", "detector", "method", "dataset"); it names the thing in
            every error message.
        normalize: maps a user's spelling to the registered key (e.g. ``gso-yolo-n`` -> ``gso_yolo_n``); applied
            on registration and on lookup. Default: the name as given.

    Example::

        MODELS = Registry("model")

        @MODELS.register
        def resnet32(**kwargs): ...

        @METHODS.register("dgl+mlaan")
        def dgl_mlaan(model, **options): ...
    """

    def __init__(self, kind: str, normalize: Callable[[str], str] | None = None):
        self.kind = kind
        self._normalize = normalize or (lambda name: name)
        self._builders: dict[str, Builder] = {}

    def register(self, fn_or_name: Builder | str | None = None) -> Callable:
        """Decorator: ``@reg.register`` files ``fn`` under ``fn.__name__``, ``@reg.register("name")`` under
        ``name``. Returns ``fn`` unchanged. Raises ``ValueError`` for a name already registered."""
        if callable(fn_or_name):
            return self.add(fn_or_name.__name__, fn_or_name)
        return lambda fn: self.add(fn_or_name or fn.__name__, fn)

    def add(self, name: str, fn: Builder) -> Builder:
        """File ``fn`` under ``name`` (refuses a duplicate) and return it."""
        key = self._normalize(name)
        if key in self._builders:
            raise ValueError(f"{self.kind} {key!r} is already registered")
        self._builders[key] = fn
        return fn

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style wildcard, in natural order."""
        pattern = self._normalize(pattern)  # "gso-yolo*" finds gso_yolo_n
        return sorted((n for n in self._builders if fnmatch.fnmatch(n, pattern)), key=natural_key)

    def get(self, name: str) -> Builder:
        """The builder filed under ``name``; ``ValueError`` listing the valid names otherwise."""
        key = self._normalize(name)
        if key not in self._builders:
            raise ValueError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}")
        return self._builders[key]

    def create(self, name: str, *args, **kwargs) -> T:
        """Build ``name``: ``get(name)(*args, **kwargs)`` with the keyword arguments that are ``None`` dropped."""
        return self.get(name)(*args, **{k: v for k, v in kwargs.items() if v is not None})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._normalize(name) in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._builders)
