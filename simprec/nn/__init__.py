"""simprec.nn: layers and the Module system, with torch's names, signatures and initialisations.

Parameters are fp32 by default (`fmt=` on every layer); initial values are drawn from seeded
NumPy Generators (`generator=` on every layer, else the default set by `nn.manual_seed`).
See docs/nn.md.
"""

from __future__ import annotations

from . import functional, init
from .activation import GELU, Identity, ReLU, Sigmoid, SiLU, Softmax, Tanh
from .attention import MultiheadAttention
from .container import ModuleList, Sequential
from .conv import AvgPool2d, Conv2d, Flatten, MaxPool2d
from .dropout import Dropout
from .init import manual_seed
from .linear import Linear
from .module import IncompatibleKeys, Module
from .normalization import LayerNorm
from .parameter import Parameter
from .sparse import Embedding

__all__ = [
    "GELU", "AvgPool2d", "Conv2d", "Dropout", "Embedding", "Flatten", "Identity",
    "IncompatibleKeys", "LayerNorm", "Linear", "MaxPool2d", "Module", "ModuleList",
    "MultiheadAttention", "Parameter", "ReLU", "Sequential", "SiLU", "Sigmoid", "Softmax", "Tanh",
    "functional", "init", "manual_seed",
]
