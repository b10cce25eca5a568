"""Host memory as the operating system sees it: resident set size, its high-water mark, and glibc's trim.

The resource meter counts tensors; a user watching ``top`` sees the process's resident memory, which also
holds freed memory the C allocator has not returned to the system. These helpers read that outside view
(Linux ``/proc``; None elsewhere) and give freed heap pages back (glibc ``malloc_trim``; a no-op elsewhere).

Why the trim matters for local learning: PyTorch's CPU allocator is glibc ``malloc``. Blocks under its
mmap threshold (which grows up to 32 MiB as large blocks are freed) come from the heap, and freed heap
pages stay resident until ``malloc_trim`` releases them. Local learning frees one module's activations
and allocates the next module's, of other sizes, so without a trim the process keeps the union of the
modules' pages resident rather than one module's at a time (measured in BENCHMARKS.md, "Memory: the
outside view").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_STATUS = "/proc/self/status"


def _status_kib(field: str) -> int | None:
    try:
        with open(_STATUS, "rb") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int | None:
    """Resident memory of this process now (``VmRSS``), or None where ``/proc`` is not available."""
    kib = _status_kib(b"VmRSS:")
    return None if kib is None else kib * 1024


def peak_rss_bytes() -> int | None:
    """Highest resident memory of this process so far (``VmHWM``, or since :func:`reset_peak_rss`).

    Falls back to ``getrusage``'s ``ru_maxrss`` (whole-process lifetime) where ``/proc`` is missing, and to
    None where neither exists.
    """
    kib = _status_kib(b"VmHWM:")
    if kib is not None:
        return kib * 1024
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def reset_peak_rss() -> bool:
    """Set the high-water mark back to the current resident memory (Linux: ``5`` into ``clear_refs``).

    Returns False where the kernel does not allow it (then the peak covers the whole process: run each
    measurement in its own process).
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None on another C library (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def trim_host_memory() -> bool:
    """Return freed heap pages to the operating system (glibc ``malloc_trim(0)``).

    Costs a walk over the allocator's free lists (well under a millisecond after a module's backward) and a
    page fault for each page used again. Returns whether anything was released (False also where the C
    library has no ``malloc_trim``).
    """
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


# RSS right after importing torch and leanvision: what "above import" figures are measured from.
_import_rss: int | None = None


def mark_import_rss(force: bool = False) -> int | None:
    """Record the resident memory now as this process's import baseline (once, unless ``force``); returns it.

    Call it just after importing torch and leanvision, before any data, model or step exists.
    """
    global _import_rss
    if _import_rss is None or force:
        _import_rss = rss_bytes()
    return _import_rss


def import_rss_bytes() -> int | None:
    """The baseline recorded by :func:`mark_import_rss`, or None if it was never marked."""
    return _import_rss

