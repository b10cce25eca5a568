"""Read pickled *data* files (CIFAR's python batches) without ever running code from them.

``pickle.load`` calls whatever function a file names, so a crafted ``data_batch_1`` could run any
command. :func:`load_plain_pickle` rebuilds only plain data: dicts, lists, tuples, strings, bytes,
numbers, booleans, None and numpy arrays or scalars of non-object dtypes. Those are the only things
an official CIFAR batch holds (written by Python 2's cPickle, protocol 2; or by Python 3 at
protocols 2-5 when a test or a user writes one). Any other global named in the file is refused
before it is looked up, so nothing from the file is ever called.
"""

from __future__ import annotations

import io
import pickle
from typing import BinaryIO

import numpy as np


class PlainPickleError(ValueError):
    """The file is not a pickle of plain data (or not a pickle at all)."""


class _Refused(pickle.UnpicklingError):
    """Something in the file that is not plain data (as opposed to a damaged file)."""


_KINDS = "biufcSUVMm"  # bool, ints, floats, complex, bytes, str, raw bytes, datetimes: no objects, no fields


def _text(v) -> str:
    return v.decode("latin1") if isinstance(v, bytes) else v


class _Dtype:
    """Stands in for ``numpy.dtype(name, align, copy)`` + its pickled state; :meth:`get` builds the real dtype.

    numpy's own ``dtype.__setstate__`` would take flags and fields from the file; here only a plain
    scalar type name, a byte order and (for strings) an item size are ever taken from it.
    """

    def __init__(self, name, align=False, copy=True):
        if not isinstance(name, (str, bytes)):
            raise _Refused("a dtype given by anything but its name is not plain data")
        self.dtype = np.dtype(_text(name))
        if self.dtype.kind not in _KINDS or self.dtype.fields is not None or self.dtype.subdtype is not None:
            raise _Refused(f"dtype {self.dtype} is not plain data")

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 8 or any(v is not None for v in state[2:5]):
            raise _Refused("structured or sub-array dtypes are not plain data")
        order, elsize = _text(state[1]), state[5]
        if order in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(order)
        if self.dtype.kind in "SUV" and isinstance(elsize, int) and elsize > 0 and self.dtype.itemsize != elsize:
            unit = 4 if self.dtype.kind == "U" else 1
            self.dtype = np.dtype(f"{self.dtype.byteorder.replace('=', '')}{self.dtype.kind}{elsize // unit}")

    def get(self) -> np.dtype:
        return self.dtype


def _array(dtype, shape, data, fortran=False) -> np.ndarray:
    if not isinstance(dtype, _Dtype) or not isinstance(data, (bytes, bytearray)):
        raise _Refused("an array without a plain dtype and raw bytes is not plain data")
    shape = tuple(int(n) for n in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    return np.frombuffer(bytes(data), dtype.get()).reshape(shape, order="F" if fortran else "C").copy()


class _NdarrayName:
    """Stands in for the ``numpy.ndarray`` argument of ``_reconstruct``; an instance, not callable, so a
    file cannot build an array over uninitialised memory with ``numpy.ndarray(shape)``."""


_NDARRAY = _NdarrayName()


class _Array:
    """Stands in for ``numpy.core.multiarray._reconstruct(ndarray, ...)``; its pickled state is
    ``(version, shape, dtype, is_fortran, raw bytes)``, from which :meth:`get` builds the array."""

    def __init__(self, subtype, *_):
        if subtype is not _NDARRAY:
            raise _Refused("only numpy.ndarray arrays are plain data")
        self.array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) != 5:
            raise _Refused("unknown numpy array state")
        _, shape, dtype, fortran, data = state
        self.array = _array(dtype, shape, data, bool(fortran))

    def get(self) -> np.ndarray:
        if self.array is None:
            raise _Refused("an array without data")
        return self.array


def _scalar(dtype, data=None):
    if data is None:
        raise _Refused("a numpy scalar without data is not plain data")
    return _array(dtype, (), data)[()]


def _frombuffer(buf, dtype, shape, order="C"):
    return _array(dtype, shape, buf, _text(order) == "F")


def _latin1(text, encoding="latin1"):
    """Python 3 pickles bytes at protocol 2 as ``_codecs.encode(text, 'latin1')``; no other codec."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("only latin-1 encoded bytes are plain data")
    return text.encode("latin1")


def _bytes(data=b""):
    """Python 3 pickles ``b""`` at protocols 0-2, and ``bytearray`` below 5, as calls of the type."""
    if not isinstance(data, (bytes, bytearray)):
        raise _Refused("bytes built from anything but bytes are not plain data")
    return bytes(data)


_ALLOWED = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _Dtype, ("_codecs", "encode"): _latin1}
for _mod in ("builtins", "__builtin__"):
    _ALLOWED[(_mod, "bytes")] = _bytes
    _ALLOWED[(_mod, "bytearray")] = lambda data=b"": bytearray(_bytes(data))
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_mod}.multiarray", "_reconstruct")] = _Array
    _ALLOWED[(f"{_mod}.multiarray", "scalar")] = _scalar
    _ALLOWED[(f"{_mod}.numeric", "_frombuffer")] = _frombuffer

_PLAIN = (dict, list, tuple, str, bytes, bytearray, int, float, complex, bool, type(None), np.ndarray, np.generic)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"it names {module}.{name}, which is not plain data") from None

    def persistent_load(self, pid):
        raise _Refused("it uses persistent ids, which are not plain data")


def _plain(obj, depth: int = 0):
    """``obj`` with every stand-in replaced by its array; raises unless it is made of :data:`_PLAIN` types."""
    if depth > 100:
        raise PlainPickleError("nested more than 100 levels deep")
    if isinstance(obj, _Array):
        return obj.get()
    if not isinstance(obj, _PLAIN) or isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise PlainPickleError(f"holds a {type(obj).__name__}, which is not plain data")
    if isinstance(obj, dict):
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v, depth + 1) for v in obj)
    return obj


def load_plain_pickle(f: BinaryIO | bytes, source: str, encoding: str = "bytes"):
    """Unpickle plain data from an open binary file (or bytes); nothing named in the file is run.

    Args:
        f: binary file object positioned at the pickle, or the pickle's bytes.
        source: the file's name, for the error message.
        encoding: how Python 2 ``str`` objects are decoded ("bytes" keeps them as bytes, as CIFAR needs).

    Raises:
        PlainPickleError: naming ``source``: the file is damaged, not a pickle, or holds anything else
            than plain data (a function call, a class instance, an object array).
    """
    if isinstance(f, (bytes, bytearray)):
        f = io.BytesIO(f)
    try:
        obj = _plain(_PlainUnpickler(f, encoding=encoding).load())
    except PlainPickleError as e:
        raise PlainPickleError(f"{source}: refused to unpickle: {e}") from None
    except _Refused as e:
        raise PlainPickleError(f"{source}: refused to unpickle: {e}; only plain data (dicts, lists, numbers, "
                               f"strings, bytes, numpy arrays) is read from data files") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError, RecursionError) as e:
        raise PlainPickleError(f"{source}: not a readable pickle ({type(e).__name__}: {e}); the file is "
                               f"truncated or damaged") from None
    return obj
