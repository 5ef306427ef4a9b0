"""LayerNorm over the trailing dimensions (statistics in fp32, one rounding: see ops.layer_norm)."""

from __future__ import annotations

from .. import ops
from ..formats import fp32
from . import init
from ._layers_util import float_format, new_parameter, positive_int
from .module import Module

__all__ = ["LayerNorm"]


class LayerNorm(Module):
    """`LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True)`: weight ones, bias zeros.

    `generator` is accepted for uniformity with the other layers and unused (the init is not
    random).
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, *,
                 fmt=fp32, generator=None):
        super().__init__()
        shape = (normalized_shape,) if not isinstance(normalized_shape, (tuple, list)) \
            else tuple(normalized_shape)
        self.normalized_shape = tuple(positive_int("LayerNorm", "normalized_shape", d)
                                      for d in shape)
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        fmt = float_format("LayerNorm", fmt)
        if self.elementwise_affine:
            self.weight = init.ones_(new_parameter(self.normalized_shape, fmt))
            self.bias = init.zeros_(new_parameter(self.normalized_shape, fmt))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x):
        return ops.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")
