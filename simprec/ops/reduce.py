"""Reductions: accumulate wider than fp32 and round once to the result's format."""

from __future__ import annotations

import builtins
from collections import namedtuple

from ..autograd import Function
from ..formats import int64
from ..tensor import Tensor
from ._util import autocast, float_input

MaxResult = namedtuple("MaxResult", ["values", "indices"])


def normalize_axes(op: str, dim, ndim: int):
    """`dim` (None, int or tuple, negatives allowed) as a sorted tuple of axes, checked."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    axes = []
    for d in dims:
        if not isinstance(d, int) or not -builtins.max(ndim, 1) <= d < builtins.max(ndim, 1):
            raise ValueError(f"{op}: dim {d!r} is out of range for a tensor of {ndim} dimensions")
        axes.append(d % builtins.max(ndim, 1))
    if len(set(axes)) != len(axes):
        raise ValueError(f"{op}: dim {dim!r} repeats an axis")
    return tuple(sorted(axes)) if ndim else ()


def _kept_shape(shape, axes):
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


class Sum(Function):
    """sum over axes: fp32 accumulation, one rounding to `out_fmt` (torch: sum of fp16 is fp16)."""

    def forward(self, x, axes, keepdims, out_fmt):
        self.axes, self.keepdims, self.in_shape = axes, keepdims, self.inputs[0].shape
        self.out_fmt = out_fmt
        wide = self.backend.sum(x, axis=axes, keepdims=keepdims)
        return self.finish(wide, out_fmt), out_fmt

    def backward(self, g):
        be = self.backend
        g = be.reshape(g, _kept_shape(self.in_shape, self.axes))
        return (self.grad_for(0, be.broadcast_to(g, self.in_shape)),)


class Mean(Sum):
    """mean = sum * float32(1/n) in fp32, rounded once (torch's MeanOps multiplies by a factor)."""

    def forward(self, x, axes, keepdims, out_fmt):
        self.axes, self.keepdims, self.in_shape = axes, keepdims, self.inputs[0].shape
        self.count = 1
        for a in axes:
            self.count *= self.in_shape[a]
        self.out_fmt = out_fmt
        be = self.backend
        wide = be.elementwise("mul_scalar", be.sum(x, axis=axes, keepdims=keepdims),
                              scalar=1.0 / builtins.max(self.count, 1))
        return self.finish(wide, out_fmt), out_fmt

    def backward(self, g):  # torch: grad.expand(sizes) / numel, rounded in the gradient's format
        be = self.backend
        g = be.reshape(g, _kept_shape(self.in_shape, self.axes))
        g = be.elementwise("div_scalar", be.broadcast_to(g, self.in_shape), scalar=float(self.count))
        return (self.grad_for(0, be.round(g, self.out_fmt)),)


class Max(Function):
    """max along axes; the gradient goes to the (first) maximal element of each slice."""

    def forward(self, x, axis, keepdims):
        be = self.backend
        self.in_shape, self.axis, self.keepdims = self.inputs[0].shape, axis, keepdims
        fmt = self.inputs[0].fmt
        if axis is None:
            flat = be.reshape(x, (-1,))
            self.index = be.argmax(flat, axis=0)
            out = be.max(x, axis=None, keepdims=keepdims)
        else:
            self.index = be.argmax(x, axis=axis)
            out = be.max(x, axis=axis, keepdims=keepdims)
        return out, fmt

    def backward(self, g):
        import numpy as np

        be = self.backend
        if self.axis is None:
            index = (np.unravel_index(int(be.to_numpy(self.index)), self.in_shape),)
            flat_g = be.reshape(g, ())
            grad = be.index_add(self.in_shape, index[0], flat_g)
        else:
            idx = be.to_numpy(self.index)
            grids = list(np.indices(idx.shape))
            grids.insert(self.axis, idx)
            g_nokeep = be.reshape(g, idx.shape)
            grad = be.index_add(self.in_shape, tuple(grids), g_nokeep)
        return (self.grad_for(0, grad),)


class Var(Function):
    """Variance with `correction` (torch.var): two passes in fp32 opmath, rounded once."""

    def forward(self, x, axes, correction, keepdims):
        be = self.backend
        self.axes, self.in_shape, self.fmt = axes, self.inputs[0].shape, self.inputs[0].fmt
        n = 1
        for a in axes:
            n *= self.in_shape[a]
        self.denominator = float(builtins.max(n - correction, 0))
        mean = be.elementwise("div_scalar", be.sum(x, axis=axes, keepdims=True), scalar=float(n))
        self.centered = be.elementwise("sub", x, mean)
        squares = be.sum(be.elementwise("square", self.centered), axis=axes, keepdims=keepdims)
        return self.finish(be.elementwise("div_scalar", squares, scalar=self.denominator), self.fmt), self.fmt

    def backward(self, g):  # d var / dx = 2 (x - mean) / (n - correction)
        be = self.backend
        g = be.reshape(g, _kept_shape(self.in_shape, self.axes))
        scale = be.elementwise("div_scalar", be.elementwise("mul_scalar", g, scalar=2.0),
                               scalar=self.denominator)
        return (self.grad_for(0, be.elementwise("mul", scale, self.centered)),)


def _reduce_input(op, x, dim):
    float_input(op, x)
    return normalize_axes(op, dim, x.ndim)


def sum(x: Tensor, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:  # noqa: A001
    """Sum over `dim` (all by default), accumulated in fp32 and rounded once."""
    axes = _reduce_input("sum", x, dim)
    (x,) = autocast("sum", x)
    return Sum.apply(x, axes=axes, keepdims=keepdim, out_fmt=dtype or x.fmt)


def mean(x: Tensor, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    axes = _reduce_input("mean", x, dim)
    (x,) = autocast("mean", x)
    return Mean.apply(x, axes=axes, keepdims=keepdim, out_fmt=dtype or x.fmt)


def max(x: Tensor, dim=None, keepdim: bool = False):  # noqa: A001
    """The maximum (dim=None), or (values, indices) along `dim` like torch.max(x, dim)."""
    float_input("max", x)
    if dim is None:
        return Max.apply(x, axis=None, keepdims=False)
    (axis,) = normalize_axes("max", dim, x.ndim)
    values = Max.apply(x, axis=axis, keepdims=keepdim)
    idx = x.backend.argmax(x.data, axis=axis)
    if keepdim:
        shape = list(values.shape)
        idx = x.backend.reshape(idx, tuple(shape))
    return MaxResult(values, Tensor._make(idx, int64, x.backend))


def amax(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    float_input("amax", x)
    if dim is None or isinstance(dim, int):
        axis = None if dim is None else normalize_axes("amax", dim, x.ndim)[0]
        return Max.apply(x, axis=axis, keepdims=keepdim)
    raise ValueError("amax: dim must be None or an int")


def var(x: Tensor, dim=None, *, correction: int = 1, unbiased=None, keepdim: bool = False) -> Tensor:
    """Variance over `dim` with Bessel's `correction` (torch.var), rounded once."""
    axes = _reduce_input("var", x, dim)
    if unbiased is not None:
        correction = 1 if unbiased else 0
    (x,) = autocast("var", x)
    return Var.apply(x, axes=axes, correction=correction, keepdims=keepdim)


def argmax(x: Tensor, dim=None) -> Tensor:
    if dim is None:
        return Tensor._make(x.backend.argmax(x.backend.reshape(x.data, (-1,)), axis=0), int64, x.backend)
    (axis,) = normalize_axes("argmax", dim, x.ndim)
    return Tensor._make(x.backend.argmax(x.data, axis=axis), int64, x.backend)
