"""Creation helpers: zeros, ones, full, arange, and seeded random tensors."""

from __future__ import annotations

import numpy as np

from .formats import fp32
from .tensor import Tensor


def _shape(dims: tuple) -> tuple:
    """The shape given as `f(2, 3)` or `f((2, 3))`."""
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        return tuple(dims[0])
    return tuple(dims)


def full(shape, value, *, fmt=fp32, requires_grad=False, backend="numpy") -> Tensor:
    """A tensor of `shape` filled with `value` (rounded once into `fmt`)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return Tensor._from_data(np.full(shape, value, dtype=np.float64), fmt, backend, requires_grad)


def zeros(*shape, fmt=fp32, requires_grad=False, backend="numpy") -> Tensor:
    return full(_shape(shape), 0.0, fmt=fmt, requires_grad=requires_grad, backend=backend)


def ones(*shape, fmt=fp32, requires_grad=False, backend="numpy") -> Tensor:
    return full(_shape(shape), 1.0, fmt=fmt, requires_grad=requires_grad, backend=backend)


def arange(start, stop=None, step=1, *, fmt=None, backend="numpy") -> Tensor:
    """Like torch.arange: int64 for integer arguments, else fp32 (or `fmt`)."""
    values = np.arange(start, stop, step) if stop is not None else np.arange(start)
    return Tensor._from_data(values, fmt, backend)


def _generator(generator):
    if generator is None:
        raise ValueError("randn/rand: pass generator=np.random.default_rng(seed) "
                         "(simprec has no hidden global random state)")
    if isinstance(generator, (int, np.integer)):
        return np.random.default_rng(int(generator))
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"generator must be a numpy.random.Generator or a seed, "
                        f"got {type(generator).__name__}")
    return generator


def randn(*shape, generator=None, fmt=fp32, requires_grad=False, backend="numpy") -> Tensor:
    """Standard normal values from a seeded NumPy Generator (float64 draws, rounded once)."""
    values = _generator(generator).standard_normal(_shape(shape))
    return Tensor._from_data(values, fmt, backend, requires_grad)


def rand(*shape, generator=None, fmt=fp32, requires_grad=False, backend="numpy") -> Tensor:
    """Uniform [0, 1) values from a seeded NumPy Generator (float64 draws, rounded once)."""
    values = _generator(generator).random(_shape(shape))
    return Tensor._from_data(values, fmt, backend, requires_grad)
