"""Shared pieces of the ops: argument checks, scalar operands, broadcasting and reduced shapes,
the autocast entry, sums in torch's CUDA order and gradient reduction."""

from __future__ import annotations

import functools
import math

import numpy as np

from .. import _state
from ..backend import _order as _cuda_order
from ..formats import fp32, promote
from ..tensor import Tensor


def is_scalar(x) -> bool:
    """A Python (or NumPy) number: torch treats it as a "wrapped number" kept in fp32 opmath."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(
        x, (bool, np.bool_)
    )


def broadcast_shape(op: str, *shapes) -> tuple:
    """NumPy/torch broadcasting of `shapes`; a mismatch names the op and the shapes."""
    ndim = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (ndim - len(s)) + tuple(s) for s in shapes], strict=True):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            raise ValueError(
                f"{op}: shapes {' and '.join(str(tuple(s)) for s in shapes)} "
                f"cannot be broadcast together"
            )
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def kept_shape(shape, axes) -> tuple:
    """`shape` with the reduced `axes` kept as size 1 (a keepdim reduction's shape)."""
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def reduced_shape(shape, axes) -> tuple:
    """`shape` with the reduced `axes` dropped."""
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def reduce_sum(be, x, axes, keepdims):
    """fp32 sum of the array x over `axes`. Over one contiguous block of axes of a contiguous
    tensor (trailing: its rows; leading or middle: its columns) it adds in the order of torch's
    CUDA reduce kernel (`_cuda_order.reduce_rows` / `reduce_cols`, bit-exact); otherwise the
    exactly rounded fp32 sum (`backend.sum`, order unspecified)."""
    shape = tuple(be.shape(x))
    k = len(axes)
    out = None
    if axes and tuple(axes) == tuple(range(axes[0], axes[0] + k)):
        outer = math.prod(shape[: axes[0]])
        n = math.prod(shape[a] for a in axes)
        inner = math.prod(shape[axes[-1] + 1:])
        if n > 1 and inner == 1:
            out = _cuda_order.reduce_rows(be, be.reshape(x, (outer, n)))
        elif n > 1 and outer == 1:
            out = _cuda_order.reduce_cols(be, be.reshape(x, (n, inner)))
        elif n > 1:
            cols = be.reshape(be.transpose(be.reshape(x, (outer, n, inner)), (1, 0, 2)),
                              (n, outer * inner))
            out = _cuda_order.reduce_cols(be, cols, inner)
    if out is None:
        return be.sum(x, axis=axes, keepdims=keepdims)
    kept = tuple(s for i, s in enumerate(shape) if i not in axes)
    return be.reshape(out, kept_shape(shape, axes) if keepdims else kept)


def reduce_to_shape(backend, grad, shape, fmt):
    """Sum a broadcast gradient back to `shape` (fp32 accumulation, one rounding to `fmt`)."""
    grad_shape = tuple(backend.shape(grad))
    if grad_shape == tuple(shape):
        return grad
    lead = len(grad_shape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, d in enumerate(shape) if d == 1 and grad_shape[i + lead] != 1
    )
    summed = backend.reshape(reduce_sum(backend, grad, axes, keepdims=True), shape)
    return backend.round(summed, fmt)


def autocast(op: str, *tensors):
    """Apply the active autocast region's rule for torch op `op` to `tensors` (no region: as is).

    Every public op calls this with torch's aten op name, before it builds its node."""
    region = _state.autocast.get()
    if region is None:
        return tensors
    return region.cast_inputs(op, tensors)


def tensor_input(op: str, x, name: str = "input") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    return x


def pair(op: str, value, name: str) -> tuple:
    """An int or a pair of ints (torch's `_pair`), checked non-negative."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        out = (int(value), int(value))
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        out = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(out) < 0:
        raise ValueError(f"{op}: {name} must be non-negative, got {value!r}")
    return out


def accumulate_model() -> str:
    return _state.accumulate.get()


def float_input(op: str, *xs) -> None:
    """Check that every one of `xs` is a floating-point Tensor (TypeError naming `op`)."""
    for x in xs:
        if not isinstance(x, Tensor):
            raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
        if not x.fmt.is_float:
            raise TypeError(f"{op}: needs a floating-point tensor, got {x.fmt.name}")


def promoted_format(tensors):
    """The format of an op's result over `tensors` (torch's promotion, pairwise)."""
    return functools.reduce(promote, (t.fmt for t in tensors))


def scalar_in_format(be, value, fmt) -> float:
    """A Python number as torch converts it to a tensor's type: float32, then rounded into
    `fmt` (fp16(0.1) for an fp16 tensor)."""
    return float(be.to_numpy(be.round(be.asarray(np.float32(value), fp32), fmt)))
