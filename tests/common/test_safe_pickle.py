"""Pickles from data files and caches cannot run code: common.utils.safe_pickle and the CIFAR reader."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from common.data.datasets.cifar import load_cifar
from common.utils.safe_pickle import CorruptPickleError, UnsafePickleError, restricted_load


class _Payload:
    """Unpickling this calls ``fn(*args)``: what a malicious data file does."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _cifar10_batch(path, payload=None, protocol=None):
    d = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2], b"batch_label": b"training batch 1 of 5"}
    if payload is not None:
        d[b"filenames"] = [payload, b"b.png"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(d, protocol=protocol))


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_batch_with_os_system_is_refused_and_nothing_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    base = tmp_path / "cifar-10-batches-py"
    _cifar10_batch(base / "test_batch", _Payload(os.system, f"touch '{marker}'"), protocol)
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle '.*test_batch'.*(posix|os)\.system"):
        load_cifar(tmp_path, "cifar10", "test")
    assert not marker.exists()
    # the same file through plain pickle does run the command: the test's payload is real
    pickle.loads((base / "test_batch").read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("fn", [eval, exec, getattr, open, __import__])
def test_builtins_that_run_or_reach_code_are_refused(tmp_path, fn):
    path = tmp_path / "cache.pkl"
    path.write_bytes(pickle.dumps({"x": _Payload(fn, "1")}))
    with pytest.raises(UnsafePickleError, match=rf"asks for '(builtins|io)\.{fn.__name__}'"):
        restricted_load(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_builtin_values_and_numpy_arrays_load(tmp_path, protocol):
    obj = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": [1, 2.5, None, True, b"raw", "text", (1, 2), {3, 4}, frozenset({5}), complex(1, 2), bytearray(b"x")],
        "c": np.int64(7),
        "d": np.array([b"x", b"yz"]),
    }
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    out = restricted_load(path)
    np.testing.assert_array_equal(out["a"], obj["a"])
    assert out["a"].dtype == np.float32 and out["b"] == obj["b"] and out["c"] == 7
    np.testing.assert_array_equal(out["d"], obj["d"])


def test_python2_cifar_batch_with_numpy_core_names_loads(tmp_path):
    """The official batches were written by Python 2's cPickle against numpy 1 (``numpy.core.multiarray``)."""
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    _cifar10_batch(path, protocol=2)
    raw = path.read_bytes()
    assert b"numpy._core.multiarray" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    x, y = load_cifar(tmp_path, "cifar10", "test")
    assert x.shape == (2, 32, 32, 3) and y.tolist() == [1, 2]


@pytest.mark.parametrize("content", [b"", b"\x80\x05garbage", b"not a pickle at all"])
def test_garbage_is_a_corrupt_pickle_naming_the_file(tmp_path, content):
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(CorruptPickleError, match=r"'.*test_batch' is not a readable pickle.*make data-cifar10"):
        load_cifar(tmp_path, "cifar10", "test")
