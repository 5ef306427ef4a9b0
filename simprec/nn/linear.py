"""Linear: y = x Wᵀ + b, with torch's default initialisation."""

from __future__ import annotations

import math

from .. import ops
from ..formats import fp32
from . import init
from ._layers_util import float_format, new_parameter, positive_int
from .module import Module

__all__ = ["Linear"]


class Linear(Module):
    """`Linear(in_features, out_features, bias=True)`; weight (out, in).

    Init (torch's `reset_parameters`): weight kaiming_uniform(a=sqrt(5)), i.e.
    U(±1/sqrt(in_features)); bias U(±1/sqrt(in_features)). Parameters in `fmt` (fp32 default),
    drawn from `generator` (see `nn.init` for the seeding rule).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 fmt=fp32, generator=None):
        super().__init__()
        self.in_features = positive_int("Linear", "in_features", in_features)
        self.out_features = positive_int("Linear", "out_features", out_features)
        fmt = float_format("Linear", fmt)
        gen = init.get_generator(generator)
        self.weight = new_parameter((self.out_features, self.in_features), fmt)
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=gen)
        if bias:
            self.bias = new_parameter((self.out_features,), fmt)
            bound = 1.0 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound, generator=gen)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return ops.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
