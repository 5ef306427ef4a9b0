"""Parameter initialisation with torch's formulas, drawn from seeded NumPy Generators.

Seeding rule: every layer constructor takes `generator=` — a `numpy.random.Generator` (used as
is, so layers built from one Generator draw one reproducible stream) or an int seed (a fresh
`default_rng(seed)`). With `generator=None` a layer draws from this module's default Generator,
which `nn.manual_seed(seed)` replaces and which starts as `default_rng(0)` in every process. So a
model built after `nn.manual_seed(s)` (or with `generator=s`) is the same in every run.

The draws are float64 (NumPy's) rounded once into the parameter's format. The formulas are
torch's (`torch/nn/init.py`); the random streams are NumPy's, so the values differ from torch's.
"""

from __future__ import annotations

import math

import numpy as np

from ..tensor import Tensor

__all__ = [
    "calculate_fan_in_and_fan_out", "calculate_gain", "constant_", "default_generator",
    "get_generator", "kaiming_uniform_", "manual_seed", "normal_", "ones_", "uniform_",
    "xavier_uniform_", "zeros_",
]

_default = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Replace the default Generator of layers built without `generator=` by `default_rng(seed)`."""
    global _default
    _default = np.random.default_rng(int(seed))
    return _default


def default_generator() -> np.random.Generator:
    """The Generator layers draw from when built with `generator=None`."""
    return _default


def get_generator(generator=None) -> np.random.Generator:
    """`generator` as a Generator: None -> the default one, an int -> `default_rng(int)`."""
    if generator is None:
        return _default
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator))
    if isinstance(generator, np.random.Generator):
        return generator
    raise TypeError(f"generator must be a numpy.random.Generator, an int seed or None, "
                    f"got {type(generator).__name__}")


def calculate_fan_in_and_fan_out(shape) -> tuple[int, int]:
    """torch's fans: (in, out) = (shape[1], shape[0]) times the receptive field (dims 2+)."""
    shape = tuple(shape.shape) if isinstance(shape, Tensor) else tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity: str, param=None) -> float:
    """torch.nn.init.calculate_gain for the nonlinearities simprec's layers use."""
    if nonlinearity in ("linear", "conv1d", "conv2d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _fill(tensor: Tensor, values) -> Tensor:
    """Write host `values` into `tensor` in place (rounded once into its format)."""
    values = np.asarray(values, dtype=np.float64).reshape(tensor.shape)
    fresh = Tensor._from_data(values, tensor.fmt, tensor.backend)
    tensor.data = fresh.data
    return tensor


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator=None) -> Tensor:
    return _fill(tensor, get_generator(generator).uniform(a, b, tensor.shape))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator=None) -> Tensor:
    return _fill(tensor, get_generator(generator).normal(mean, std, tensor.shape))


def constant_(tensor: Tensor, value: float) -> Tensor:
    return _fill(tensor, np.full(tensor.shape, float(value)))


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def kaiming_uniform_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator=None) -> Tensor:
    """U(-bound, bound), bound = gain * sqrt(3 / fan); Linear/Conv use a = sqrt(5)."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    fan = {"fan_in": fan_in, "fan_out": fan_out}[mode]
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(tensor, -bound, bound, generator)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    """U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)
