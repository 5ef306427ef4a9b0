"""Activation layers: stateless wrappers of the elementwise ops (torch's names and defaults)."""

from __future__ import annotations

from .. import ops
from .module import Module

__all__ = ["GELU", "Identity", "ReLU", "SiLU", "Sigmoid", "Softmax", "Tanh"]


class Identity(Module):
    """Returns its input (a placeholder layer, as in torch)."""

    def forward(self, x):
        return x


class ReLU(Module):
    def forward(self, x):
        return ops.relu(x)


class GELU(Module):
    """GELU, exact erf form (`approximate="none"`, torch's default) or `"tanh"`."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return ops.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    def forward(self, x):
        return ops.silu(x)


class Tanh(Module):
    def forward(self, x):
        return ops.tanh(x)


class Sigmoid(Module):
    def forward(self, x):
        return ops.sigmoid(x)


class Softmax(Module):
    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return ops.softmax(x, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
