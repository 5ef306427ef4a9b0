"""Dropout with its own seeded Generator, so runs (and resumed runs) are reproducible."""

from __future__ import annotations

from .. import ops
from . import init
from ._layers_util import RandomStateMixin
from .module import Module

__all__ = ["Dropout"]


class Dropout(RandomStateMixin, Module):
    """`Dropout(p=0.5)`: in training, zero each element with probability p and scale the rest by
    1/(1-p); in eval mode (or p == 0) return the input unchanged.

    The masks come from `self.generator`, spawned from `generator` (or the default Generator,
    see `nn.init`) when the layer is built. `get_rng_state()` / `set_rng_state(state)` (and
    `Module.rng_state_dict()` for a whole model) save and restore it for checkpoints.
    """

    def __init__(self, p: float = 0.5, *, generator=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = float(p)
        self.generator = self._spawn(init.get_generator(generator))

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        return ops.dropout(x, self.p, True, generator=self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"
