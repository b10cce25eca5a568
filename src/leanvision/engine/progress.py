"""Progress bars that stay out of logs: shown only on a terminal, and never with ``--no-progress``."""

from __future__ import annotations


def progress_bar(iterable=None, *, show: bool = True, **kwargs):
    """A ``tqdm`` bar over ``iterable`` (or a manual one with ``total=``) when ``show`` and stderr is a terminal;
    otherwise the same object, disabled (it yields the items and prints nothing)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=None if show else True, **kwargs)
