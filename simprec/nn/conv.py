"""Conv2d, pooling and Flatten: the image layers (NCHW, torch's layout)."""

from __future__ import annotations

import math

from .. import ops
from ..formats import fp32
from . import init
from ._layers_util import float_format, new_parameter, pair, positive_int
from .module import Module

__all__ = ["AvgPool2d", "Conv2d", "Flatten", "MaxPool2d"]


class Conv2d(Module):
    """`Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True)`.

    Weight (out, in, kh, kw). Init as torch: weight kaiming_uniform(a=sqrt(5)) =
    U(±1/sqrt(fan_in)), bias U(±1/sqrt(fan_in)), fan_in = in * kh * kw.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, *, fmt=fp32, generator=None):
        super().__init__()
        self.in_channels = positive_int("Conv2d", "in_channels", in_channels)
        self.out_channels = positive_int("Conv2d", "out_channels", out_channels)
        self.kernel_size = pair("Conv2d", "kernel_size", kernel_size)
        self.stride = pair("Conv2d", "stride", stride)
        self.padding = pair("Conv2d", "padding", padding, minimum=0)
        fmt = float_format("Conv2d", fmt)
        gen = init.get_generator(generator)
        self.weight = new_parameter((self.out_channels, self.in_channels) + self.kernel_size, fmt)
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=gen)
        if bias:
            fan_in, _ = init.calculate_fan_in_and_fan_out(self.weight)
            self.bias = new_parameter((self.out_channels,), fmt)
            bound = 1.0 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound, generator=gen)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return ops.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(name, "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else pair(name, "stride", stride)
        self.padding = pair(name, "padding", padding, minimum=0)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """`MaxPool2d(kernel_size, stride=None (= kernel_size), padding=0)`."""

    def forward(self, x):
        return ops.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    """`AvgPool2d(kernel_size, stride=None (= kernel_size), padding=0)`; padding counts as zeros
    in the average (torch's default count_include_pad=True)."""

    def forward(self, x):
        return ops.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class Flatten(Module):
    """`Flatten(start_dim=1, end_dim=-1)`: (N, C, H, W) -> (N, C*H*W)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return ops.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
