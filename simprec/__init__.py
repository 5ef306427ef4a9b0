"""simprec: a bit-exact laboratory for mixed-precision training.

A NumPy core simulates float16/bfloat16 forward and backward math, fp32 master weights and loss
scaling as a GPU computes them; GPU backends run the same networks on real tensor cores.
"""

from . import (  # the layers above the core are sp.amp, sp.nn, sp.optim
    amp,
    nn,
    ops,  # noqa: F401  (attaches the Tensor methods)
    optim,
)
from ._philox import Philox
from ._state import accumulation, enable_grad, no_grad
from .accumulate import tensor_core_matmul
from .backend import available_backends, get_backend, register_backend
from .creation import arange, full, ones, rand, randn, zeros
from .formats import (
    Format,
    IntFormat,
    bf16,
    fp8_e4m3,
    fp8_e5m2,
    fp16,
    fp32,
    fp64,
    int64,
    promote,
    round,
    tf32,
)
from .ops import (
    abs,
    add,
    cat,
    clamp,
    div,
    exp,
    log,
    matmul,
    maximum,
    mean,
    minimum,
    mul,
    pad,
    reshape,
    sqrt,
    stack,
    sub,
    sum,
    tanh,
    where,
)
from .tensor import Tensor, bool_, tensor

__version__ = "0.1.0"
__all__ = [
    "Format", "IntFormat", "Tensor", "abs", "accumulation", "add", "amp", "arange",
    "available_backends",
    "bf16", "bool_", "cat", "clamp", "div", "enable_grad", "exp", "fp16", "fp32", "fp64",
    "fp8_e4m3", "fp8_e5m2", "full", "get_backend", "int64", "log", "matmul", "maximum", "mean",
    "minimum", "mul", "nn", "no_grad", "ones", "optim", "pad", "Philox", "promote", "rand", "randn",
    "register_backend",
    "reshape", "round", "sqrt", "stack", "sub", "sum", "tanh", "tensor", "tensor_core_matmul",
    "tf32", "where", "zeros",
]
