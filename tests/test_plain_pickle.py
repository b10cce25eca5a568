"""No code runs from a data file: CIFAR batches are read by a restricted unpickler (issue 12 item 1).

Each hostile file below would run code (write a marker file) under ``pickle.load``; we check first
that it really does with the standard unpickler, then that ``load_plain_pickle`` and the CIFAR
reader through the CLI refuse it, name the file, and that the marker never appears.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools

import numpy as np
import pytest

from leanvision.cli import main
from leanvision.data import DatasetError, build_dataset
from leanvision.ops.plain_pickle import PlainPickleError, load_plain_pickle


class _RunsCode:
    """Pickles as a call of os.system; ``pickle.load`` would run the command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def _object_array_with_code(marker) -> bytes:
    """An object-dtype numpy array whose element is a code-running call (the np.load allow_pickle hole)."""
    a = np.empty(1, dtype=object)
    a[0] = _RunsCode(marker)
    return pickle.dumps({b"data": a, b"labels": [0]}, protocol=2)


def _hostile_files(marker) -> dict[str, bytes]:
    return {
        "reduce_os_system": pickle.dumps({b"data": _RunsCode(marker), b"labels": [0]}, protocol=2),
        "reduce_eval_proto5": pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"x": _EvalCall(marker)},
                                           protocol=5),
        "object_array": _object_array_with_code(marker),
        "top_level_call": pickle.dumps(_RunsCode(marker), protocol=0),
    }


@pytest.mark.parametrize("name", ["reduce_os_system", "reduce_eval_proto5", "object_array", "top_level_call"])
def test_hostile_pickle_runs_nothing_and_names_the_file(tmp_path, name):
    marker = tmp_path / "pwned"
    blob = _hostile_files(marker)[name]
    # the file really is hostile: the standard unpickler runs it
    pickle.loads(blob)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(PlainPickleError, match=rf"^{name}: refused to unpickle"):
        load_plain_pickle(blob, name)
    assert not marker.exists()


def test_hostile_cifar_batch_through_cli_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LEANVISION_CACHE", str(tmp_path / "cache"))
    from test_data_formats import write_cifar10

    d, _ = write_cifar10(tmp_path / "data")
    marker = tmp_path / "pwned"
    (d / "data_batch_1").write_bytes(_hostile_files(marker)["reduce_os_system"])
    for argv in (["train", "--data", str(d), "--model", "resnet20", "--epochs", "1"],
                 ["train", "--data", "cifar10", "--data-dir", str(tmp_path / "data"), "--model", "resnet20",
                  "--epochs", "1"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "data_batch_1: refused to unpickle: it names posix.system" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not marker.exists()
    with pytest.raises(DatasetError, match=r"data_batch_1: refused to unpickle"):
        build_dataset("cifar10", root=d)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_data_round_trips_at_every_protocol(protocol):
    obj = {b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), b"labels": [3, 9], "name": "x",
           b"f": np.array([[1.5, -2.0]], ">f4"), b"fort": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
           b"s": np.array(["ab", "c"]), b"k": np.int64(7), b"t": (1, 2.5, None, True), b"empty": np.zeros((0, 4))}
    got = load_plain_pickle(pickle.dumps(obj, protocol=protocol), "f")
    assert got.keys() == obj.keys()
    for k, v in obj.items():
        if isinstance(v, np.ndarray):
            assert got[k].dtype == v.dtype and got[k].shape == v.shape and np.array_equal(got[k], v), k
        else:
            assert got[k] == v and type(got[k]) is type(v), k


def test_python2_cifar_style_pickle():
    """Python 2's cPickle writes str as SHORT_BINSTRING; with encoding='bytes' they stay bytes (CIFAR's keys)."""
    data = np.arange(3072, dtype=np.uint8).reshape(1, 3072)
    # hand-written protocol-2 stream as Python 2 numpy wrote it: py2 str for names, byte order and raw data
    def s(b):  # SHORT_BINSTRING / BINSTRING
        return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + len(b).to_bytes(4, "little") + b)

    minus1 = b"J\xff\xff\xff\xff"
    dtype = b"cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R(K\x03" + s(b"|") + b"NNN" + minus1 * 2 + b"K\x00tb"
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + s(b"b") + b"\x87R"
             + b"(K\x01K\x01M\x00\x0c\x86" + dtype + b"\x89" + s(data.tobytes()) + b"tb")
    stream = (b"\x80\x02}q\x00(" + s(b"data") + array + s(b"labels") + b"]K\x07a" + s(b"batch_label")
              + s(b"batch 1") + b"u.")
    pickletools.dis(io.BytesIO(stream), out=io.StringIO())  # a well-formed pickle
    got = load_plain_pickle(stream, "data_batch_1")
    assert np.array_equal(got[b"data"], data) and got[b"labels"] == [7] and got[b"batch_label"] == b"batch 1"


@pytest.mark.parametrize("blob, why", [
    (b"", "not a readable pickle"),
    (b"garbage", "not a readable pickle"),
    (pickle.dumps({b"data": np.zeros(3)})[:-10], "not a readable pickle"),
    (pickle.dumps(np.array([1, 2], dtype=[("a", "i4"), ("b", "f4")])), "structured or sub-array dtypes"),
    (pickle.dumps(np.ma.masked_array([1, 2])), "not plain data"),
    (pickle.dumps({1, 2}, protocol=2), "it names __builtin__.set"),
    (pickle.dumps(b"x", protocol=2).replace(b"latin1", b"zlib__"), "only latin-1 encoded bytes"),
])
def test_broken_or_foreign_pickles_are_plain_pickle_errors(blob, why):
    with pytest.raises(PlainPickleError, match=rf"^batch: .*{why}"):
        load_plain_pickle(blob, "batch")


def test_ndarray_type_cannot_be_called_from_a_file():
    """``numpy.ndarray((n,))`` would hand out uninitialised memory; the name only works as _reconstruct's argument."""
    blob = b"\x80\x02cnumpy\nndarray\nK\x10\x85\x85R."
    with pytest.raises(PlainPickleError, match=r"^f: "):
        load_plain_pickle(blob, "f")
