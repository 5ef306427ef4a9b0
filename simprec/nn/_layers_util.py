"""Small helpers shared by the layers: argument checks, fresh parameters, per-layer Generators."""

from __future__ import annotations

import copy

import numpy as np

from ..formats import Format
from .parameter import Parameter


def positive_int(layer: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return int(value)


def pair(layer: str, name: str, value, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints as (h, w), each >= minimum (torch's `_pair`)."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                               or v < minimum for v in values):
        raise ValueError(f"{layer}: {name} must be an int >= {minimum} or a pair of them, "
                         f"got {value!r}")
    return int(values[0]), int(values[1])


def float_format(layer: str, fmt) -> Format:
    if not isinstance(fmt, Format) or not fmt.is_float:
        raise TypeError(f"{layer}: fmt must be a float Format such as sp.fp32 or sp.fp16, "
                        f"got {fmt!r}")
    return fmt


def new_parameter(shape, fmt: Format) -> Parameter:
    """A zero Parameter of `shape` in `fmt`, for an init function to fill."""
    return Parameter(np.zeros(shape, dtype=np.float32), fmt=fmt)


class RandomStateMixin:
    """A module that draws randomness (dropout masks) from its own `self.generator`.

    The Generator is spawned from the one the layer was built with (`Generator.spawn`, which
    leaves the parent's stream untouched), so a model built from one seed gives every such
    layer an independent, reproducible stream. Its state is plain JSON-able data.
    """

    generator: np.random.Generator

    @staticmethod
    def _spawn(parent: np.random.Generator) -> np.random.Generator:
        return parent.spawn(1)[0]

    def get_rng_state(self) -> dict:
        """The Generator's state (`bit_generator.state`: a dict of str and int, JSON-able)."""
        return copy.deepcopy(self.generator.bit_generator.state)

    def set_rng_state(self, state: dict) -> None:
        self.generator.bit_generator.state = copy.deepcopy(state)
