"""Image decoding for in-memory folder trees, in a pool of worker processes (PIL, no torch)."""

from __future__ import annotations

import io
import multiprocessing as mp
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .base import DatasetError

_CHUNK = 1024


def _decode_one(item: bytes | str) -> np.ndarray:
    with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as im:
        return np.asarray(im.convert("RGB"))  # (H, W, 3) uint8


def image_size(item: bytes | str) -> tuple[int, int]:
    """(width, height) from the header only."""
    with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as im:
        return im.size


def _decode_chunk(args: tuple[list[bytes | str], tuple[int, int]]
                  ) -> tuple[np.ndarray, list[tuple[int, str]]]:
    items, (h, w) = args
    out = np.zeros((len(items), 3, h, w), np.uint8)
    errors = []
    for i, item in enumerate(items):
        try:
            a = _decode_one(item)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            errors.append((i, f"cannot be decoded ({type(e).__name__}: {e}); delete or replace it"))
            continue
        if a.shape[:2] != (h, w):
            errors.append((i, f"is {a.shape[1]}x{a.shape[0]} but the first image is {w}x{h}; in-memory "
                              f"trees need one size: resize it, or pass in_memory=False to stream and "
                              f"resize"))
            continue
        out[i] = a.transpose(2, 0, 1)
    return out, errors


def decode_all(items: Sequence[bytes | str], names: Sequence[str], size: tuple[int, int],
               workers: int | None = None) -> np.ndarray:
    """Decode every image to one uint8 array of shape (N, 3, H, W).

    Args:
        items: encoded bytes or file paths.
        names: the name of each item for error messages (path, or archive member).
        size: (H, W) every image must have.
        workers: decoding processes (default: up to 2, the CPUs we may assume); 1 decodes inline.
    """
    chunks = [(list(items[i:i + _CHUNK]), size) for i in range(0, len(items), _CHUNK)]
    workers = workers or min(2, os.cpu_count() or 1)
    if workers > 1 and len(chunks) > 1:
        # fork: workers need only PIL and the bytes already in memory, no re-import of torch.
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
        with ctx.Pool(workers) as pool:
            results = pool.map(_decode_chunk, chunks)
    else:
        results = [_decode_chunk(c) for c in chunks]
    for c, (_, errors) in enumerate(results):
        if errors:
            i, why = errors[0]
            more = sum(len(e) for _, e in results) - 1
            raise DatasetError(f"image {names[c * _CHUNK + i]} {why}"
                               + (f" [{more} more bad images]" if more else ""))
    return np.concatenate([r for r, _ in results]) if results else np.zeros((0, 3, *size), np.uint8)

