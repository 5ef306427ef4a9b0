"""Multi-layer perceptrons: `MLP` for the digits, `AmpTraceMLP` for the H200 AMP trace."""

from __future__ import annotations

import os

import numpy as np

from .. import nn
from ..formats import fp32
from ..nn import functional as F

__all__ = ["ACTIVATIONS", "AmpTraceMLP", "MLP"]

ACTIVATIONS = {
    "relu": nn.ReLU, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU("tanh"), "silu": nn.SiLU,
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
}


class MLP(nn.Sequential):
    """`MLP(in_features=64, hidden=(256, 256), classes=10, activation="relu")`.

    Linear -> activation for each hidden width, then Linear to `classes` logits. A Sequential,
    so parameter names are torch's for the same `nn.Sequential` ("0.weight", "2.weight", ...).
    `dropout` > 0 adds a Dropout after each activation. Inputs (N, in_features); digits
    images (N, 8, 8) are flattened.
    """

    def __init__(self, in_features: int = 64, hidden=(256, 256), classes: int = 10,
                 activation: str = "relu", *, dropout: float = 0.0, fmt=fp32, generator=None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP: activation must be one of {', '.join(ACTIVATIONS)}, "
                             f"got {activation!r}")
        hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        gen = nn.init.get_generator(generator)
        layers, width = [], in_features
        for size in hidden:
            layers += [nn.Linear(width, size, fmt=fmt, generator=gen), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout, generator=gen))
            width = size
        layers.append(nn.Linear(width, classes, fmt=fmt, generator=gen))
        super().__init__(*layers)
        self.in_features, self.classes = in_features, classes

    def forward(self, x):
        if x.ndim > 2:
            x = x.reshape(x.shape[0], -1)
        return super().forward(x)


class AmpTraceMLP(nn.Module):
    """The network of the H200 AMP trace (`data/h200/amp_trace_dev.npz`):
    `fc1 = Linear(64,256) -> GELU (erf) -> ln = LayerNorm(256) -> fc2 = Linear(256,256) -> ReLU
    -> fc3 = Linear(256,10)`. Parameter names are the trace's torch names (`fc1.weight`, ...).
    """

    def __init__(self, in_features: int = 64, hidden: int = 256, classes: int = 10, *,
                 fmt=fp32, generator=None):
        super().__init__()
        gen = nn.init.get_generator(generator)
        self.fc1 = nn.Linear(in_features, hidden, fmt=fmt, generator=gen)
        self.ln = nn.LayerNorm(hidden, fmt=fmt)
        self.fc2 = nn.Linear(hidden, hidden, fmt=fmt, generator=gen)
        self.fc3 = nn.Linear(hidden, classes, fmt=fmt, generator=gen)

    def forward(self, x):
        h = self.ln(F.gelu(self.fc1(x)))
        return self.fc3(F.relu(self.fc2(h)))

    @classmethod
    def from_trace(cls, trace, which: str = "init") -> AmpTraceMLP:
        """The model with the trace's `init_*` (or `final_*`) parameters; `trace` is the npz path
        or the loaded mapping."""
        if which not in ("init", "final"):
            raise ValueError(f"from_trace: which must be 'init' or 'final', got {which!r}")
        if isinstance(trace, (str, os.PathLike)):
            with np.load(trace) as data:
                state = _prefixed(data, which + "_")
        else:
            state = _prefixed(trace, which + "_")
        model = cls(*_trace_sizes(state))
        model.load_state_dict(state)
        return model


def _prefixed(arrays, prefix: str) -> dict:
    """The arrays whose key starts with `prefix`, keyed without it."""
    return {key[len(prefix):]: np.asarray(arrays[key]) for key in arrays if key.startswith(prefix)}


def _trace_sizes(state) -> tuple[int, int, int]:
    hidden, din = state["fc1.weight"].shape
    return din, hidden, state["fc3.weight"].shape[0]
