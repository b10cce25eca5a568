"""Read pickled files of other tools (CIFAR's python batches, torch checkpoints) without ever running code from them.

``pickle.load`` calls whatever function a file names, so a crafted ``data_batch_1`` or ``yolov8n.pt`` could run
any command. Two readers share one rule: a global named in the file is answered from a fixed table of this
module's own stand-ins, or refused by name before anything is looked up, so nothing from the file is called.

- :func:`load_plain_pickle` rebuilds only plain data: dicts, lists, tuples, strings, bytes, numbers,
  booleans, None and numpy arrays or scalars of non-object dtypes. Those are the only things an official
  CIFAR batch holds (written by Python 2's cPickle, protocol 2; or by Python 3 at protocols 2-5).
- :func:`load_torch_zip` reads a ``torch.save`` zip file (``data.pkl`` plus one record per storage) into
  tensors, plain containers and :class:`PickledObject` records. Checkpoints of other tools (ultralytics'
  ``yolov8n.pt``) pickle whole ``nn.Module`` objects, which ``torch.load(weights_only=True)`` refuses; here
  each class they name (``ultralytics.*``, ``torch.nn.modules.*``, the yolov5 repository's ``models.*``)
  becomes an inert record of the state the file gives it (``__dict__``: ``_parameters``, ``_buffers``,
  ``_modules`` ...), and no method of the real class is ever imported or run. Functions are refused unless
  they are torch's tensor-rebuild functions, which are answered by this module's own.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch


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


# ------------------------------------------------------------------------------ torch checkpoints (zip files)


class PickledObject:
    """An inert record of an object of a class named in a file: the class's name and the state the file gave it.

    Made by :func:`load_torch_zip` for every class global in an allowed namespace (one subclass per class name,
    so ``type(obj).__name__`` is the file's class name); nothing of the real class is imported or called.

    Attributes:
        cls_module, cls_name: the class as the file names it, e.g. ``ultralytics.nn.modules.conv``, ``Conv``.
        state: what the file passed to ``__setstate__`` (an ``nn.Module``'s ``__dict__``), or None.
        args: the arguments the file called the class with, if it did.
    """

    cls_module = ""
    cls_name = ""
    state = None
    args: tuple = ()

    def __init__(self, *args):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<PickledObject {self.cls_module}.{self.cls_name}>"

    @property
    def qualname(self) -> str:
        return f"{self.cls_module}.{self.cls_name}"

    def get(self, key: str, default=None):
        """One entry of the recorded ``__dict__`` (default when the state is not a dict)."""
        return self.state.get(key, default) if isinstance(self.state, dict) else default


# Class globals in these namespaces become PickledObject records: a pickled ultralytics model names its own
# modules and torch's layers; the yolov5 repository's checkpoints name `models.yolo.Model` and `models.common.*`
# (read so that the refusal can say which family the file is). Only names that start with a capital letter
# (classes, by every one of these packages' convention) qualify: a function in the same module is refused.
STAND_IN_NAMESPACES = ("ultralytics.", "torch.nn.modules.", "models.", "utils.")

_STORAGE_DTYPES = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}


class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co. in a storage's persistent id: only its dtype is used."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


class _TensorType:
    """Stands in for ``torch.nn.parameter.Parameter`` / ``torch.Tensor`` as ``_rebuild_from_type_v2``'s type."""


_TENSOR_TYPE = _TensorType()


def _check_ints(v, what: str, n: int | None = None) -> tuple[int, ...]:
    v = tuple(v) if isinstance(v, (tuple, list)) else None
    if v is None or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in v) or (n and len(v) != n):
        raise _Refused(f"a tensor's {what} is not a tuple of non-negative integers")
    return v


def _rebuild_tensor(storage, offset, size, stride, *_):
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, ...)``: a view
    into a storage read from the zip; bounds are checked by ``as_strided``, values never interpreted."""
    if not isinstance(storage, torch.Tensor) or not isinstance(offset, int) or isinstance(offset, bool):
        raise _Refused("a tensor rebuilt from something other than a storage of the file")
    size = _check_ints(size, "size")
    stride = _check_ints(stride, "stride", len(size))
    needed = offset + sum((s - 1) * st for s, st in zip(size, stride)) + 1 if all(size) else 0
    if needed > storage.numel() or offset < 0:
        raise pickle.UnpicklingError(f"a tensor reaches past its storage ({needed} > {storage.numel()} elements)")
    if not all(size):
        return torch.empty(size, dtype=storage.dtype)
    return storage.as_strided(size, stride, offset)


def _rebuild_parameter(data, *_):
    """``torch._utils._rebuild_parameter(data, requires_grad, hooks[, state])``: the tensor itself."""
    if not isinstance(data, torch.Tensor):
        raise _Refused("a parameter of something other than a tensor")
    return data


def _rebuild_from_type(func, new_type, args, state=None):
    """``torch._tensor._rebuild_from_type_v2(func, type, args, state)``: only this module's tensor rebuilders."""
    if func not in (_rebuild_tensor, _rebuild_parameter) or new_type is not _TENSOR_TYPE:
        raise _Refused("a tensor rebuilt by something other than torch's tensor functions")
    if not isinstance(args, tuple):
        raise _Refused("a tensor rebuilt from non-tuple arguments")
    return func(*args)


def _reconstructor(cls, base, state=None):
    """``copyreg._reconstructor(cls, object, None)`` (pickle protocols 0-1): an empty record of ``cls``."""
    if not (isinstance(cls, type) and issubclass(cls, PickledObject)) or base is not object or state is not None:
        raise _Refused("copyreg._reconstructor of something other than a recorded class")
    return cls.__new__(cls)


def _torch_size(dims=()):
    return _check_ints(dims, "size")


_TORCH_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch.nn.parameter", "Parameter"): _TENSOR_TYPE,
    ("torch", "Tensor"): _TENSOR_TYPE,
    ("torch", "Size"): _torch_size,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("builtins", "object"): object,
    ("builtins", "set"): lambda items=(): set(items),
    ("builtins", "frozenset"): lambda items=(): frozenset(items),
    ("builtins", "complex"): lambda re=0.0, im=0.0: complex(float(re), float(im)),
    ("builtins", "slice"): lambda *a: slice(*a),
}
_TORCH_ALLOWED |= {("__builtin__", n): v for (m, n), v in list(_TORCH_ALLOWED.items()) if m == "builtins"}
_TORCH_ALLOWED[("copy_reg", "_reconstructor")] = _reconstructor  # pickle protocol 2 writes Python 2's names
_TORCH_ALLOWED |= {("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()}
_TORCH_ALLOWED |= {("torch", str(d).removeprefix("torch.")): d for d in
                   (torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.int64, torch.int32,
                    torch.int16, torch.int8, torch.uint8, torch.bool)}
_TORCH_ALLOWED[("torch", "device")] = lambda *a: str(a[0]) if a else "cpu"  # a device name, as a string


class _TorchUnpickler(_PlainUnpickler):
    """Plain data, torch's tensors (storages from the zip) and :class:`PickledObject` records of classes."""

    def __init__(self, f, archive: zipfile.ZipFile, prefix: str):
        super().__init__(f, encoding="utf-8")
        self._archive, self._prefix, self._storages = archive, prefix, {}
        self._classes: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key in _ALLOWED or key in _TORCH_ALLOWED:
            return _ALLOWED[key] if key in _ALLOWED else _TORCH_ALLOWED[key]
        if module.startswith(STAND_IN_NAMESPACES) and name[:1].isupper() and name.isidentifier():
            if key not in self._classes:
                self._classes[key] = type(name, (PickledObject,), {"cls_module": module, "cls_name": name,
                                                                   "__module__": __name__})
            return self._classes[key]
        raise _Refused(f"it names {module}.{name}, which is neither a tensor, plain data nor a class of a "
                       f"model (only {', '.join(n.rstrip('.') for n in STAND_IN_NAMESPACES)} classes are "
                       f"recorded, never run)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise _Refused("a persistent id that is not a torch storage")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType) or not isinstance(key, str) or not key.isalnum():
            raise _Refused("a storage of an unknown type or key")
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}/data/{key}")  # KeyError: a record is missing (damaged)
            itemsize = torch.empty((), dtype=kind.dtype).element_size()
            if len(raw) % itemsize:
                raise pickle.UnpicklingError(f"storage {key} holds {len(raw)} bytes, not whole {kind.dtype} items")
            self._storages[key] = (torch.frombuffer(bytearray(raw), dtype=kind.dtype) if raw
                                   else torch.empty(0, dtype=kind.dtype))
        storage = self._storages[key]
        if storage.dtype != kind.dtype:
            storage = storage.view(torch.uint8).view(kind.dtype)  # one storage read as another type
        if isinstance(numel, int) and storage.numel() < numel:
            raise pickle.UnpicklingError(f"storage {key} is shorter than the {numel} elements it declares")
        return storage


def load_torch_zip(path: str | Path):
    """Read a ``torch.save`` zip file into tensors, plain containers and :class:`PickledObject` records.

    Nothing in the file is run: see the module docstring for what is rebuilt and what is recorded. Tensors come
    back on the CPU in the dtype the file stores; parameters come back as plain tensors.

    Raises:
        PlainPickleError: naming the file: it is not a torch zip file (or is truncated or damaged), or it names
            a function or class outside what a model checkpoint needs (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkls) != 1:
                raise PlainPickleError(f"{path}: a zip file, but not one written by torch.save (no data.pkl)")
            prefix = pkls[0].rsplit("/", 1)[0]
            order = f"{prefix}/byteorder"
            if order in archive.namelist() and archive.read(order).strip() not in (b"little", b""):
                raise PlainPickleError(f"{path}: big-endian tensors are not supported; save it on a little-endian "
                                       "machine")
            with archive.open(pkls[0]) as f:
                return _TorchUnpickler(io.BytesIO(f.read()), archive, prefix).load()
    except PlainPickleError:
        raise
    except _Refused as e:
        raise PlainPickleError(f"{path}: refused to unpickle: {e}; nothing from the file was run") from None
    except zipfile.BadZipFile:
        if path.stat().st_size == 0:
            raise PlainPickleError(f"{path}: the file is empty") from None
        with open(path, "rb") as f:
            head = f.read(2)
        what = ("a raw pickle (torch's legacy format before 1.6, or another tool's); re-save it with a current "
                "torch" if head[:1] == b"\x80" else "not a torch checkpoint, or truncated or damaged")
        raise PlainPickleError(f"{path}: not a torch zip file: {what}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError, RecursionError, RuntimeError, OSError, zipfile.LargeZipFile) as e:
        first = (str(e).splitlines() or [""])[0][:200]
        raise PlainPickleError(f"{path}: not a readable torch file ({type(e).__name__}: {first}); the file is "
                               f"truncated or damaged") from None
