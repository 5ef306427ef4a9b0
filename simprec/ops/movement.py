"""Movement ops: reshape, permute, expand, indexing, cat, stack, pad. Exact: no rounding forward;
backward gradients that sum (expand, repeated indices) accumulate in fp32 and round once."""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..tensor import Tensor, common_backend
from ._util import autocast, promoted_format, reduce_to_shape, scalar_in_format, tensor_input


class Reshape(Function):
    def forward(self, x, shape):
        self.in_shape = self.inputs[0].shape
        return self.backend.reshape(x, shape), self.inputs[0].fmt

    def backward(self, g):
        return (self.backend.reshape(g, self.in_shape),)


class Permute(Function):
    def forward(self, x, axes):
        self.inverse = tuple(sorted(range(len(axes)), key=lambda i: axes[i]))
        return self.backend.transpose(x, axes), self.inputs[0].fmt

    def backward(self, g):
        return (self.backend.transpose(g, self.inverse),)


class Expand(Function):
    def forward(self, x, shape):
        self.in_shape = self.inputs[0].shape
        return self.backend.broadcast_to(x, shape), self.inputs[0].fmt

    def backward(self, g):  # the sum in reverse, in fp32, rounded once
        return (
            self.grad_for(0, reduce_to_shape(self.backend, g, self.in_shape, self.inputs[0].fmt)),
        )


class GetItem(Function):
    def forward(self, x, index):
        self.index, self.in_shape = index, self.inputs[0].shape
        return self.backend.getitem(x, index), self.inputs[0].fmt

    def backward(self, g):
        return (self.grad_for(0, self.backend.index_add(self.in_shape, self.index, g)),)


class Cat(Function):
    def forward(self, *xs, axis):
        fmt = promoted_format(self.inputs)
        self.axis, self.sizes = axis, [t.shape[axis] for t in self.inputs]
        be = self.backend
        return be.round(be.concatenate(list(xs), axis), fmt), fmt

    def backward(self, g):
        be, out, start = self.backend, [], 0
        ndim = len(be.shape(g))
        for i, size in enumerate(self.sizes):
            index = tuple(
                [slice(None)] * self.axis
                + [slice(start, start + size)]
                + [slice(None)] * (ndim - self.axis - 1)
            )
            out.append(self.grad_for(i, be.getitem(g, index)) if self.needs_input_grad[i] else None)
            start += size
        return tuple(out)


class Pad(Function):
    def forward(self, x, pad_width, value):
        self.pad_width = pad_width
        fmt = self.inputs[0].fmt
        return self.backend.pad(x, pad_width, value), fmt

    def backward(self, g):
        index = tuple(
            slice(before, before + size)
            for (before, _), size in zip(self.pad_width, self.inputs[0].shape, strict=False)
        )
        return (self.backend.getitem(g, index),)


# ---------------------------------------------------------------- public functions


def _dims(args: tuple) -> tuple:
    """Dimensions given as `f(x, 2, 3)` or `f(x, (2, 3))`."""
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else args


def reshape(x: Tensor, *shape) -> Tensor:
    """x with a new shape (one -1 allowed); exact."""
    tensor_input("reshape", x)
    (x,) = autocast("reshape", x)
    shape = _dims(shape)
    n = math.prod(d for d in shape if d != -1)
    if (
        shape.count(-1) > 1
        or (shape.count(-1) == 0 and n != x.size)
        or (shape.count(-1) == 1 and (n == 0 or x.size % n))
    ):
        raise ValueError(f"reshape: cannot view shape {x.shape} ({x.size} elements) as {shape}")
    if -1 in shape:
        shape = tuple(x.size // n if d == -1 else d for d in shape)
    return Reshape.apply(x, shape=shape)


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Dimensions start_dim..end_dim merged into one; exact."""
    tensor_input("flatten", x)
    start, end = start_dim % max(x.ndim, 1), end_dim % max(x.ndim, 1)
    n = math.prod(x.shape[start : end + 1])
    return reshape(x, x.shape[:start] + (n,) + x.shape[end + 1 :])


def permute(x: Tensor, *axes) -> Tensor:
    """Dimensions reordered; exact."""
    tensor_input("permute", x)
    (x,) = autocast("permute", x)
    axes = _dims(axes)
    if sorted(a % max(x.ndim, 1) for a in axes) != list(range(x.ndim)):
        raise ValueError(
            f"permute: {axes} is not a permutation of the {x.ndim} dimensions of {x.shape}"
        )
    return Permute.apply(x, axes=tuple(a % x.ndim for a in axes))


def transpose(x: Tensor, dim0: int = -2, dim1: int = -1) -> Tensor:
    """Two dimensions swapped; exact."""
    tensor_input("transpose", x)
    (x,) = autocast("transpose", x)
    if x.ndim < 2 and (dim0, dim1) == (-2, -1):
        return x
    axes = list(range(x.ndim))
    d0, d1 = dim0 % x.ndim, dim1 % x.ndim
    axes[d0], axes[d1] = axes[d1], axes[d0]
    return Permute.apply(x, axes=tuple(axes))


def expand(x: Tensor, *shape) -> Tensor:
    """Size-1 dimensions repeated (a view); the backward sums in fp32 and rounds once."""
    tensor_input("expand", x)
    (x,) = autocast("expand", x)
    shape = _dims(shape)
    lead = len(shape) - x.ndim
    if lead < 0:
        raise ValueError(f"expand: cannot expand shape {x.shape} to fewer dimensions {shape}")
    full = tuple(x.shape[i - lead] if d == -1 else d for i, d in enumerate(shape))
    for i, d in enumerate(x.shape):
        if d != 1 and d != full[i + lead]:
            raise ValueError(f"expand: shape {x.shape} cannot be expanded to {shape}")
    if full == x.shape:
        return x
    return Expand.apply(x, shape=full)


def _normalize_index(index, backend):
    """An index for `backend.getitem`: an index Tensor on that backend stays there (others are
    read to the host); lists become arrays."""
    if isinstance(index, Tensor):
        return index.data if index.backend is backend else index.backend.to_numpy(index.data)
    if isinstance(index, tuple):
        return tuple(_normalize_index(i, backend) for i in index)
    if isinstance(index, list):
        return np.asarray(index)
    return index


def getitem(x: Tensor, index) -> Tensor:
    """x[index] (basic and integer-array indexing); the backward adds repeated picks in fp32."""
    tensor_input("index", x)
    (x,) = autocast("index", x)
    return GetItem.apply(x, index=_normalize_index(index, x.backend))


def _tensor_list(op: str, tensors) -> list:
    """The tensors of cat/stack: at least one, on one backend, autocast."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op}: needs at least one tensor")
    common_backend(tensors, op)
    return list(autocast(op, *tensors))


def cat(tensors, dim: int = 0) -> Tensor:
    """Tensors joined along `dim`, in their promoted format (exact)."""
    tensors = _tensor_list("cat", tensors)
    ndim = tensors[0].ndim
    axis = dim % max(ndim, 1)
    for t in tensors:
        if t.ndim != ndim or any(
            a != b
            for i, (a, b) in enumerate(zip(t.shape, tensors[0].shape, strict=False))
            if i != axis
        ):
            raise ValueError(f"cat: shapes {[u.shape for u in tensors]} differ outside dim {dim}")
    return Cat.apply(*tensors, axis=axis)


def stack(tensors, dim: int = 0) -> Tensor:
    """Tensors of one shape stacked along a new dim `dim` (exact)."""
    tensors = _tensor_list("stack", tensors)
    shape = tensors[0].shape
    if any(t.shape != shape for t in tensors):
        raise ValueError(
            f"stack: all tensors need the same shape, got {[t.shape for t in tensors]}"
        )
    axis = dim % (len(shape) + 1)
    return cat([reshape(t, shape[:axis] + (1,) + shape[axis:]) for t in tensors], dim=axis)


def pad(x: Tensor, pad, value: float = 0.0) -> Tensor:
    """F.pad (constant mode): `pad` lists (before, after) pairs from the last dim."""
    tensor_input("pad", x)
    (x,) = autocast("constant_pad_nd", x)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: needs pairs for at most {x.ndim} dimensions, got {pad}")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    if any(b < 0 or a < 0 for b, a in widths):
        raise ValueError("pad: negative padding is not supported")
    value = scalar_in_format(x.backend, value, x.fmt)  # torch converts it to the tensor's type
    return Pad.apply(x, pad_width=tuple(widths), value=value)
