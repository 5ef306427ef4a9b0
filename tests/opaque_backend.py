"""A test backend whose arrays NumPy cannot read: the NumPy reference's kernels behind boxes.

Every array it returns is an `Opaque` box; `np.asarray(box)` (and any NumPy function given a box)
raises. Running the core on it proves that the layers above the contract hand a backend's arrays
only to the backend (`to_numpy` is the one door to the host).
"""

from __future__ import annotations

import numpy as np

from simprec.backend.contract import Backend
from simprec.backend.numpy_backend import NumpyBackend


class Opaque:
    """A backend array NumPy must not see."""

    __slots__ = ("array",)
    __array_priority__ = 10000

    def __init__(self, array):
        self.array = array

    def __array__(self, *args, **kwargs):
        raise TypeError("a backend's array was handed to NumPy")

    def __array_ufunc__(self, *args, **kwargs):
        raise TypeError("a backend's array was handed to a NumPy ufunc")

    def __array_function__(self, *args, **kwargs):
        raise TypeError("a backend's array was handed to a NumPy function")

    def __len__(self):
        raise TypeError("len() of a backend array: use backend.shape")

    def __iter__(self):
        raise TypeError("iterating a backend array")

    def __float__(self):
        raise TypeError("float() of a backend array: use backend.to_numpy")

    def __bool__(self):
        raise TypeError("bool() of a backend array: use backend.to_numpy")


def _unwrap(v):
    if isinstance(v, Opaque):
        return v.array
    if isinstance(v, tuple):
        return tuple(_unwrap(x) for x in v)
    if isinstance(v, list):
        return [_unwrap(x) for x in v]
    return v


def _wrap(v):
    if isinstance(v, (np.ndarray, np.generic)) and not isinstance(v, (bool,)):
        return Opaque(np.asarray(v))
    if isinstance(v, tuple):
        return tuple(_wrap(x) for x in v)
    return v


class OpaqueBackend(Backend):
    """NumpyBackend's kernels on `Opaque` boxes (name "opaque")."""

    name = "opaque"

    def __init__(self, device: str = ""):
        self._inner = NumpyBackend()

    def to_numpy(self, x):
        return np.array(_unwrap(x), copy=True)

    def shape(self, x):
        return tuple(_unwrap(x).shape)

    def all_finite(self, xs):
        return self._inner.all_finite([_unwrap(x) for x in xs])


def _delegate(name):
    def method(self, *args, **kwargs):
        out = getattr(self._inner, name)(*_unwrap(args), **{k: _unwrap(v) for k, v in
                                                              kwargs.items()})
        return _wrap(out)

    method.__name__ = name
    return method


for _name, _value in list(vars(Backend).items()):
    if callable(_value) and not _name.startswith("_") and _name not in vars(OpaqueBackend):
        setattr(OpaqueBackend, _name, _delegate(_name))
OpaqueBackend.__abstractmethods__ = frozenset()
