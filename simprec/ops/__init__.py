"""The differentiable ops, and the Tensor methods and operators that call them."""

from __future__ import annotations

from .. import formats
from ..tensor import Tensor
from .attention import scaled_dot_product_attention
from .conv import avg_pool2d, conv2d, max_pool2d
from .dropout import dropout
from .elementwise import (
    abs,
    add,
    cast,
    clamp,
    compare,
    div,
    erf,
    exp,
    gelu,
    log,
    masked_fill,
    maximum,
    minimum,
    mul,
    neg,
    pow,
    reciprocal,
    relu,
    rsqrt,
    sigmoid,
    silu,
    softplus,
    sqrt,
    sub,
    tanh,
    where,
)
from .embedding import embedding
from .linalg import linear, matmul
from .movement import cat, expand, flatten, getitem, pad, permute, reshape, stack, transpose
from .nn_ops import cross_entropy, layer_norm, log_softmax, logsumexp, mse_loss, nll_loss, softmax
from .reduce import amax, argmax, max, mean, sum, var

__all__ = [
    "abs",
    "add",
    "amax",
    "argmax",
    "avg_pool2d",
    "cast",
    "cat",
    "clamp",
    "conv2d",
    "cross_entropy",
    "div",
    "dropout",
    "embedding",
    "erf",
    "exp",
    "expand",
    "flatten",
    "gelu",
    "getitem",
    "layer_norm",
    "linear",
    "log",
    "log_softmax",
    "logsumexp",
    "masked_fill",
    "matmul",
    "max",
    "max_pool2d",
    "maximum",
    "mean",
    "minimum",
    "mse_loss",
    "mul",
    "neg",
    "nll_loss",
    "pad",
    "permute",
    "pow",
    "reciprocal",
    "relu",
    "reshape",
    "rsqrt",
    "scaled_dot_product_attention",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "sqrt",
    "stack",
    "sub",
    "sum",
    "tanh",
    "transpose",
    "var",
    "where",
]


def _to(self, target):
    """`x.to(fmt)` casts (differentiably); `x.to("backend")` moves to another backend."""
    from ..backend import Backend, get_backend

    if isinstance(target, formats.Format):
        return cast(self, target)
    if isinstance(target, (str, Backend)):
        backend = get_backend(target)
        if backend is self.backend:
            return self
        host = self.backend.to_numpy(self.data)
        return Tensor._make(backend.asarray(host, self.fmt), self.fmt, backend, self.requires_grad)
    raise TypeError(f"to(): expected a Format (sp.fp16, ...) or a backend name, got {target!r}")


# Tensor methods that are the op itself with the tensor as first argument (`x.exp()`, ...).
_METHODS = {
    "exp": exp,
    "log": log,
    "sqrt": sqrt,
    "rsqrt": rsqrt,
    "reciprocal": reciprocal,
    "abs": abs,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "relu": relu,
    "neg": neg,
    "pow": pow,
    "clamp": clamp,
    "sum": sum,
    "mean": mean,
    "max": max,
    "amax": amax,
    "var": var,
    "argmax": argmax,
    "reshape": reshape,
    "view": reshape,
    "permute": permute,
    "transpose": transpose,
    "expand": expand,
    "flatten": flatten,
    "matmul": matmul,
    "softmax": softmax,
    "log_softmax": log_softmax,
    "logsumexp": logsumexp,
    "masked_fill": masked_fill,
    "add": add,
    "sub": sub,
    "mul": mul,
    "div": div,
    "maximum": maximum,
    "minimum": minimum,
    "erf": erf,
    "silu": silu,
    "softplus": softplus,
    "gelu": gelu,
    "where": lambda self, c, other: where(c, self, other),
    "square": lambda self: pow(self, 2),
}
for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)

Tensor.to = _to
Tensor.T = property(lambda self: transpose(self) if self.ndim >= 2 else self)
Tensor.float = lambda self: _to(self, formats.fp32)
Tensor.half = lambda self: _to(self, formats.fp16)
Tensor.bfloat16 = lambda self: _to(self, formats.bf16)
Tensor.clamp_min = lambda self, lo: clamp(self, min=lo)
Tensor.unsqueeze = lambda self, d: reshape(
    self, self.shape[: d % (self.ndim + 1)] + (1,) + self.shape[d % (self.ndim + 1) :]
)
Tensor.squeeze = lambda self, d=None: reshape(
    self,
    tuple(s for i, s in enumerate(self.shape) if s != 1 or (d is not None and i != d % self.ndim)),
)
Tensor.__add__ = lambda a, b: add(a, b)
Tensor.__radd__ = lambda a, b: add(b, a)
Tensor.__sub__ = lambda a, b: sub(a, b)
Tensor.__rsub__ = lambda a, b: sub(b, a)
Tensor.__mul__ = lambda a, b: mul(a, b)
Tensor.__rmul__ = lambda a, b: mul(b, a)
Tensor.__truediv__ = lambda a, b: div(a, b)
Tensor.__rtruediv__ = lambda a, b: mul(reciprocal(a), b)  # torch: s / x is x.reciprocal() * s
Tensor.__neg__ = lambda a: neg(a)
Tensor.__pow__ = lambda a, b: pow(a, b)
Tensor.__abs__ = lambda a: abs(a)
Tensor.__matmul__ = lambda a, b: matmul(a, b)
Tensor.__rmatmul__ = lambda a, b: matmul(b, a)
Tensor.__getitem__ = lambda a, i: getitem(a, i)
Tensor.__gt__ = lambda a, b: compare("gt", a, b)
Tensor.__ge__ = lambda a, b: compare("ge", a, b)
Tensor.__lt__ = lambda a, b: compare("lt", a, b)
Tensor.__le__ = lambda a, b: compare("le", a, b)
Tensor.eq = lambda a, b: compare("eq", a, b)
Tensor.ne = lambda a, b: compare("ne", a, b)
Tensor.__hash__ = object.__hash__
