"""dropout with a seeded NumPy Generator (simprec keeps no hidden global random state)."""

from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..formats import fp32
from ..tensor import Tensor
from ._util import autocast, float_input


class Dropout(Function):
    """x * mask * scale in fp32, rounded once (torch's fused CUDA dropout).

    The forward kernel computes `scale = 1.0 / float32(1 - p)` in double, stored as fp32
    (aten/src/ATen/native/cuda/Dropout.cu: `pa = (accscalar_t)(1 - p)`, `scale = 1.0 / pa`); the
    backward (`masked_scale`) takes `float32(1 / (1 - p))`. Both multiply in fp32 and round once.
    """

    def forward(self, x, mask, p):
        be = self.backend
        self.fmt, self.mask = self.inputs[0].fmt, mask
        keep = np.float32(1.0 - p)
        self.scale_fwd = float(np.float32(1.0 / np.float64(keep)))
        self.scale_bwd = float(np.float32(1.0 / (1.0 - p)))
        kept = be.elementwise("mul", x, mask)
        return self.finish(
            be.elementwise("mul_scalar", kept, scalar=self.scale_fwd), self.fmt
        ), self.fmt

    def backward(self, g):
        be = self.backend
        kept = be.elementwise("mul", g, self.mask)
        return (self.grad_for(0, be.elementwise("mul_scalar", kept, scalar=self.scale_bwd)),)


class _Zero(Function):
    """x * 0 (torch's dropout with p == 1): zeros, NaN for NaN/inf inputs."""

    def forward(self, x):
        return self.backend.elementwise("mul_scalar", x, scalar=0.0), self.inputs[0].fmt

    def backward(self, g):
        return (self.grad_for(0, self.backend.elementwise("mul_scalar", g, scalar=0.0)),)


def _generator(generator):
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator))
    if not isinstance(generator, np.random.Generator):
        raise ValueError(
            "dropout: pass generator=np.random.default_rng(seed) (or nn.Dropout, which "
            "owns one); simprec has no hidden global random state"
        )
    return generator


def dropout(
    input: Tensor,  # noqa: A002
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    generator=None,
) -> Tensor:
    """F.dropout: in training, zero each element with probability p (mask drawn from `generator`:
    an element is kept when a float32 uniform draw in [0, 1) is below float32(1 - p)) and scale
    the kept ones by 1/(1-p); identity when not training or p == 0."""
    float_input("dropout", input)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if inplace:
        raise NotImplementedError(
            "dropout: inplace=True is not supported (simprec tensors are immutable)"
        )
    (x,) = autocast("dropout", input)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return _Zero.apply(x)
    rng = _generator(generator)
    draws = rng.random(x.shape, dtype=np.float32)
    mask = x.backend.asarray((draws < np.float32(1.0 - p)).astype(np.float32), fp32)
    return Dropout.apply(x, mask=mask, p=float(p))
