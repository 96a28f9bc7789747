"""Read pickles from data files and caches without letting them run code.

``pickle.load`` calls any function a file names (``os.system``, ``subprocess.Popen``, ...), so a pickle from a
download or a cache is a program, not data. :func:`restricted_load` reads a pickle whose objects are builtin values
(dicts, lists, tuples, str, bytes, numbers, None, bool, sets) and numpy arrays and scalars, and refuses any other
global with :class:`UnsafePickleError` naming the file and the global. That covers the official CIFAR batches (a dict
of bytes, lists of ints and one uint8 array, written by Python 2's cPickle), and any cache written with plain
containers and numpy arrays. A truncated or garbled file raises :class:`CorruptPickleError`, also naming the file.
Both derive from ``pickle.UnpicklingError``, so a cache reader catches that one type and recomputes.
"""

from __future__ import annotations

import pickle
from pathlib import Path

__all__ = ["ALLOWED_GLOBALS", "CorruptPickleError", "UnsafePickleError", "restricted_load"]

_NUMPY_CORE = ("numpy.core", "numpy._core")  # numpy < 2 / numpy >= 2 module names, both found in files
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("numpy", "ndarray"), ("numpy", "dtype")}
    | {(f"{core}.multiarray", name) for core in _NUMPY_CORE for name in ("_reconstruct", "scalar")}
    | {(f"{core}.numeric", "_frombuffer") for core in _NUMPY_CORE}  # protocol 5 arrays
    # bytes written by Python 3 with protocol < 3 go through _codecs.encode(str, "latin1")
    | {("_codecs", "encode")}
    | {(mod, name) for mod in ("builtins", "__builtin__") for name in ("set", "frozenset", "bytearray", "complex")}
    | {("collections", "OrderedDict")}
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global outside :data:`ALLOWED_GLOBALS` (it could run code): it was not loaded."""


class CorruptPickleError(pickle.UnpicklingError):
    """A pickle file is truncated or garbled."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(f"{module}.{name}")
        return super().find_class(module, name)


def restricted_load(path: str | Path, *, encoding: str = "ASCII"):
    """Unpickle ``path`` allowing only builtin values and numpy arrays (see the module docstring).

    Args:
        path: the pickle file.
        encoding: how Python 2 ``str`` objects are decoded (``"bytes"`` keeps them as bytes, as CIFAR needs).

    Raises:
        UnsafePickleError: the file names another global (e.g. ``posix.system``); nothing of it was executed.
        CorruptPickleError: the file is not a complete pickle.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh, encoding=encoding).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(
            f"refusing to unpickle '{path}': it asks for '{e}', which is not a numpy array or a builtin value, so "
            f"loading it could run code. A data file or cache never needs that: delete the file and fetch or "
            f"recompute it from its official source."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise CorruptPickleError(
            f"'{path}' is not a readable pickle ({type(e).__name__}: {e}); the file is truncated or corrupt: delete "
            f"it and fetch or recompute it."
        ) from e
