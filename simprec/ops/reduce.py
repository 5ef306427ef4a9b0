"""Reductions: sum, mean, max, var, argmax. Sums add in fp32 in torch's CUDA order where it is
modelled (trailing axes, `reduce_sum`), else exactly rounded to fp32; one rounding to the
result's format."""

from __future__ import annotations

import builtins
import math
from collections import namedtuple

import numpy as np

from ..autograd import Function
from ..backend import _order as _cuda_order
from ..formats import int64
from ..tensor import Tensor
from ._util import autocast, float_input, kept_shape, reduce_sum, reduced_shape

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


class Sum(Function):
    """sum over axes: fp32 accumulation (torch's CUDA order over trailing dims, `reduce_sum`), one
    rounding to `out_fmt` (torch: the sum of fp16 is fp16). Backward: grad broadcast (exact)."""

    def forward(self, x, axes, keepdims, out_fmt):
        self._save(axes, out_fmt)
        wide = reduce_sum(self.backend, x, axes, keepdims)
        return self.finish(wide, out_fmt), out_fmt

    def _save(self, axes, out_fmt):
        self.axes, self.out_fmt, self.in_shape = axes, out_fmt, self.inputs[0].shape

    def _expand(self, g):
        """The output gradient broadcast back over the reduced axes (exact)."""
        be = self.backend
        return be.broadcast_to(be.reshape(g, kept_shape(self.in_shape, self.axes)), self.in_shape)

    def backward(self, g):
        return (self.grad_for(0, self._expand(g)),)


class Mean(Sum):
    """mean = sum * float32(1/n) in fp32, rounded once (torch's MeanOps multiplies by a factor)."""

    def forward(self, x, axes, keepdims, out_fmt):
        self._save(axes, out_fmt)
        self.count = math.prod(self.in_shape[a] for a in axes)
        be = self.backend
        wide = be.elementwise(
            "mul_scalar",
            reduce_sum(be, x, axes, keepdims),
            scalar=1.0 / builtins.max(self.count, 1),
        )
        return self.finish(wide, out_fmt), out_fmt

    def backward(self, g):  # torch: grad.expand(sizes) / numel, rounded in the gradient's format
        be = self.backend
        g = be.elementwise("div_scalar", self._expand(g), scalar=float(self.count))
        if self.out_fmt != self.inputs[0].fmt:
            g = be.round(g, self.out_fmt)
        return (self.grad_for(0, g),)


class Amax(Function):
    """max over axes (NaN propagates); the gradient is shared evenly by the elements equal to the
    maximum (torch's evenly_distribute_backward / amax backward: grad / count, rounded, per tie)."""

    def forward(self, x, axes, keepdims):
        be = self.backend
        self.in_shape, self.axes, self.x = self.inputs[0].shape, axes, x
        self.fmt = self.inputs[0].fmt
        self.out_keep = be.max(x, axis=axes, keepdims=True)
        if keepdims:
            return self.out_keep, self.fmt
        return be.reshape(self.out_keep, reduced_shape(self.in_shape, axes)), self.fmt

    def backward(self, g):
        be = self.backend
        g = be.reshape(g, kept_shape(self.in_shape, self.axes))
        both_nan = be.elementwise("isnan", self.x) & be.elementwise("isnan", self.out_keep)
        mask = be.elementwise("eq", self.x, self.out_keep) | both_nan
        count = be.sum(be.astype(mask, "float"), axis=self.axes, keepdims=True)
        share = be.round(be.elementwise("div", g, count), self.fmt)
        zero = be.elementwise("mul_scalar", share, scalar=0.0)
        return (self.grad_for(0, be.elementwise("where", mask, share, zero)),)


class MaxDim(Function):
    """max along one axis with its indices (torch.max(x, dim)); the gradient goes to the index."""

    def forward(self, x, axis, keepdims, index):
        self.in_shape, self.axis, self.index = self.inputs[0].shape, axis, index
        return self.backend.max(x, axis=axis, keepdims=keepdims), self.inputs[0].fmt

    def backward(self, g):
        be = self.backend
        idx = np.asarray(be.to_numpy(self.index))
        grids = list(np.indices(idx.shape))
        grids.insert(self.axis, idx)
        grad = be.index_add(self.in_shape, tuple(grids), be.reshape(g, idx.shape))
        return (self.grad_for(0, grad),)


class Var(Function):
    """Variance with `correction` (torch.var): fp32 statistics, rounded once. Over trailing dims
    the statistics are torch's CUDA Welford reduction, bit for bit (`_cuda_order.var_rows`);
    over other dims a two-pass fp32 computation. Backward: torch's var_backward,
    (2 / (n - correction)) * grad * (x - x.mean(dim)), each op rounded."""

    def forward(self, x, axes, correction, keepdims):
        be = self.backend
        self.axes, self.x = axes, x
        self.in_shape, self.fmt = self.inputs[0].shape, self.inputs[0].fmt
        n = math.prod(self.in_shape[a] for a in axes)
        self.n, self.dof = n, n - correction
        divisor = np.float32(builtins.max(self.dof, 0))
        nd = len(self.in_shape)
        welford = None
        if n > 1 and axes == tuple(range(nd - len(axes), nd)):
            itemsize = 2 if self.fmt.bits <= 16 else 4
            welford = _cuda_order.var_rows(be, be.reshape(x, (-1, n)), itemsize)
        with np.errstate(divide="ignore", invalid="ignore"):
            if welford is not None:
                out = be.elementwise("div", welford[0], divisor)
                out = be.reshape(out, kept_shape(self.in_shape, axes) if keepdims
                                 else reduced_shape(self.in_shape, axes))
            else:
                mean = be.elementwise("div_scalar", be.sum(x, axis=axes, keepdims=True),
                                      scalar=float(n))
                centered = be.elementwise("sub", x, mean)
                squares = be.sum(be.elementwise("square", centered), axis=axes, keepdims=keepdims)
                out = be.elementwise("div", squares, divisor)
        return self.finish(out, self.fmt), self.fmt

    def backward(self, g):
        be = self.backend
        g = be.reshape(g, kept_shape(self.in_shape, self.axes))
        if self.dof <= 0:
            raise NotImplementedError("var backward with n <= correction (torch returns inf/NaN)")
        mean = be.round(
            be.elementwise(
                "mul_scalar", reduce_sum(be, self.x, self.axes, keepdims=True),
                scalar=1.0 / self.n,
            ),
            self.fmt,
        )
        centered = be.round(be.elementwise("sub", self.x, mean), self.fmt)
        scaled = be.round(be.elementwise("mul_scalar", g, scalar=2.0 / self.dof), self.fmt)
        return (self.grad_for(0, be.elementwise("mul", scaled, centered)),)


def _reduce_input(op, x, dim):
    float_input(op, x)
    return normalize_axes(op, dim, x.ndim)


def sum(x: Tensor, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:  # noqa: A001
    """Sum over `dim` (all by default), accumulated in fp32 and rounded once."""
    axes = _reduce_input("sum", x, dim)
    if dtype is None:  # torch's autocast sets dtype=fp32 only when the caller gave none
        (x,) = autocast("sum", x)
    return Sum.apply(x, axes=axes, keepdims=keepdim, out_fmt=dtype or x.fmt)


def mean(x: Tensor, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """Mean over `dim`: fp32 sum times float32(1/n), rounded once (torch's MeanOps)."""
    axes = _reduce_input("mean", x, dim)
    (x,) = autocast("mean", x)
    return Mean.apply(x, axes=axes, keepdims=keepdim, out_fmt=dtype or x.fmt)


def max(x: Tensor, dim=None, keepdim: bool = False):  # noqa: A001
    """The maximum (dim=None; ties share the gradient), or (values, indices) along `dim` like
    torch.max(x, dim) (the gradient goes to the index)."""
    float_input("max", x)
    (x,) = autocast("max", x)
    if dim is None:
        return Amax.apply(x, axes=tuple(range(x.ndim)), keepdims=False)
    (axis,) = normalize_axes("max", dim, x.ndim)
    idx = x.backend.argmax(x.data, axis=axis)
    values = MaxDim.apply(x, axis=axis, keepdims=keepdim, index=idx)
    if keepdim:
        idx = x.backend.reshape(idx, values.shape)
    return MaxResult(values, Tensor._make(idx, int64, x.backend))


def amax(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """torch.amax: the maximum over `dim` (all by default); ties share the gradient evenly."""
    axes = _reduce_input("amax", x, dim)
    (x,) = autocast("amax", x)
    return Amax.apply(x, axes=axes, keepdims=keepdim)


def var(
    x: Tensor, dim=None, *, correction: int = 1, unbiased=None, keepdim: bool = False
) -> Tensor:
    """Variance over `dim` with Bessel's `correction` (torch.var), rounded once."""
    axes = _reduce_input("var", x, dim)
    if unbiased is not None:
        correction = 1 if unbiased else 0
    (x,) = autocast("var", x)
    return Var.apply(x, axes=axes, correction=correction, keepdims=keepdim)


def argmax(x: Tensor, dim=None) -> Tensor:
    """Index of the maximum (flattened for dim=None), int64, no gradient."""
    float_input("argmax", x)
    if dim is None:
        return Tensor._make(
            x.backend.argmax(x.backend.reshape(x.data, (-1,)), axis=0), int64, x.backend
        )
    (axis,) = normalize_axes("argmax", dim, x.ndim)
    return Tensor._make(x.backend.argmax(x.data, axis=axis), int64, x.backend)
