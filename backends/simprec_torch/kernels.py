"""The torch backend's elementwise kernels: fp32 opmath, the reference's semantics.

Two kinds of kernel (`ELEMENTWISE_OPS` of simprec's contract):

- IEEE kernels, whose fp32 result is fixed by IEEE 754 (+ - * / sqrt, fma, comparisons,
  selections, min/max, and the arithmetic built from them): written with torch operations on
  every device. They equal the reference bit for bit wherever they run.
- Math-library kernels (exp, log, tanh, erf, rsqrt and the activations and backward formulas
  built on them): the reference models CUDA's libdevice and torch's CUDA kernels
  (`simprec.cudamath`, `simprec.backend.numpy_backend`). On a CUDA device torch's own kernel *is*
  the modelled one, so it runs (`CUDA_KERNELS`). On the CPU torch's kernels use other math
  libraries (SLEEF, glibc) with other last bits, so `torch:cpu` evaluates the reference's own
  formulas on the tensor's memory (a CPU tensor and a NumPy array share it; no copy).

fma(a, b, c) is one fp32 rounding of the exact a*b + c: the product is exact in float64, the
float64 sum is made round-to-odd with its exact error (TwoSum) and then rounded to fp32, which is
correct because 53 >= 24 + 2 (Boldo & Melquiond, IEEE TC 2008) — the reference's `fma32`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

f32 = np.float32


def scalar(v) -> float:
    """A Python number as torch's wrapped fp32 scalar: float32(v), held exactly in a double."""
    return float(f32(v))


def fma(a, b, c):
    """fp32 fused multiply-add a*b + c, one rounding to nearest even (see the module doc)."""
    a, b, c = (v.double() if isinstance(v, torch.Tensor) else float(v) for v in (a, b, c))
    s = a * b + c                               # a*b exact; the sum rounded once to 53 bits
    if not isinstance(s, torch.Tensor):
        s = torch.tensor(s, dtype=torch.float64)
    if s.device.type == "cpu":
        # On the host, only sums on an fp32 tie (low 29 bits 1 followed by zeros) or below
        # fp32's normal range can round twice: fix those few (reading the mask costs nothing).
        bits = s.view(torch.int64)
        tie = (bits & 0x1FFFFFFF) == 0x10000000
        tie |= ((bits & 0x7FFFFFFFFFFFFFFF) - 1) < 0x380FFFFFFFFFFFFF  # 0 < |s| < 2**-126
        if not bool(tie.any()):
            return s.float()
        picked = [torch.broadcast_to(v, s.shape)[tie] if isinstance(v, torch.Tensor) else v
                  for v in (a, b, c)]
        s = s.clone()
        s[tie] = _round_to_odd(picked[0] * picked[1], picked[2], s[tie])
        return s.float()
    return _round_to_odd(a * b, c, s).float()


def _round_to_odd(p, c, s):
    """s = RN(p + c) made round-to-odd: an inexact s with an even last bit moves one ulp
    toward the exact sum, whose error TwoSum gives exactly."""
    bv = s - p
    err = (p - (s - bv)) + (c - bv)
    even = (s.view(torch.int64) & 1) == 0
    inf = torch.full_like(s, float("inf"))
    toward = torch.where(err > 0, inf, -inf)
    return torch.where(even & (err != 0) & torch.isfinite(s), torch.nextafter(s, toward), s)


def _sqrt(x):
    # correctly rounded: CUDA's sqrtf is (nvcc's default -prec-sqrt=true); torch's CPU kernel is
    # not (SLEEF), so there the float64 root is rounded once (53 >= 2*24 + 2: no double rounding)
    if x.device.type == "cuda" or x.dtype == torch.float64:
        return torch.sqrt(x)
    return torch.sqrt(x.double()).float()


def _relu(x):
    return torch.clamp_min(x, 0.0) + 0.0     # NaN stays NaN; -0 -> +0 (the reference's "+ 0")


def _clamp(x, lo=None, hi=None):
    return torch.clamp(x, min=None if lo is None else scalar(lo),
                       max=None if hi is None else scalar(hi))


IEEE_KERNELS = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
    "neg": torch.neg,
    "add_scaled": lambda x, y, alpha: fma(scalar(alpha), y, x),  # BinaryAddSubKernel.cu
    "fma": fma,
    "mul_scalar": lambda x, scalar_: x * scalar(scalar_),
    "add_scalar": lambda x, scalar_: x + scalar(scalar_),
    "rsub_scalar": lambda x, scalar_: scalar(scalar_) - x,
    # BinaryDivTrueKernel.cu: a CPU-scalar divisor becomes a multiplication by its fp32 reciprocal
    "div_scalar": lambda x, scalar_: x * float(f32(1.0) / f32(scalar_)),
    # torch.div, not `scalar / x`: Tensor.__rtruediv__ is x.reciprocal() * scalar (two roundings)
    "rdiv_scalar": lambda x, scalar_: torch.div(scalar(scalar_), x),
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "abs": torch.abs,
    "reciprocal": lambda x: 1.0 / x,
    "square": lambda x: x * x,
    "sqrt": _sqrt,
    "relu": _relu,
    "gt": torch.gt, "ge": torch.ge, "lt": torch.lt, "le": torch.le, "eq": torch.eq,
    "ne": torch.ne,
    "isfinite": torch.isfinite,
    "isnan": torch.isnan,
    "where": torch.where,
    "clamp": _clamp,
}
# The scalar parameter is called `scalar` in the contract; the lambdas above take it by keyword.
_SCALAR_OPS = ("mul_scalar", "add_scalar", "rsub_scalar", "div_scalar", "rdiv_scalar")


def _threshold_backward(dy, x, threshold=0.0):
    return torch.ops.aten.threshold_backward(dy, x, scalar(threshold))


def _softplus(x, beta=1.0, threshold=20.0):
    return F.softplus(x, beta=scalar(beta), threshold=scalar(threshold))


def _softplus_backward(dy, x, beta=1.0, threshold=20.0):
    return torch.ops.aten.softplus_backward(dy, x, scalar(beta), scalar(threshold))


# torch's CUDA kernels, which the reference models (aten/src/ATen/native/cuda/*.cu).
CUDA_KERNELS = {
    "sign": torch.sign,
    "pow_scalar": lambda x, scalar_: torch.pow(x, scalar(scalar_)),
    "exp": torch.exp,
    "log": torch.log,
    "rsqrt": torch.rsqrt,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": _softplus,
    "erf": torch.erf,
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "tanh_backward": torch.ops.aten.tanh_backward,
    "sigmoid_backward": torch.ops.aten.sigmoid_backward,
    "gelu_backward": lambda dy, x: torch.ops.aten.gelu_backward(dy, x),
    "gelu_tanh_backward": lambda dy, x: torch.ops.aten.gelu_backward(dy, x, approximate="tanh"),
    "silu_backward": torch.ops.aten.silu_backward,
    "softplus_backward": _softplus_backward,
    "relu_backward": lambda dy, y: torch.ops.aten.threshold_backward(dy, y, 0.0),
    "threshold_backward": _threshold_backward,
}


COMPARISONS = ("gt", "ge", "lt", "le", "eq", "ne", "isfinite", "isnan")
# Kernels torch runs on fp16/bf16 tensors in fp32 opmath with one rounding of the result (or
# exactly: selections, comparisons), so that on CUDA they may take half operands as they are.
# Not here: sign (NaN), pow (special cases by exponent), reciprocal, clamp and where with scalar
# bounds or operands (a scalar converted to the tensor's half type first), rdiv_scalar.
NATIVE_DTYPE_OPS = {
    **{op: IEEE_KERNELS[op] for op in ("add", "sub", "mul", "div", "neg", "abs", "maximum",
                                       "minimum", "square", "relu", "where") + COMPARISONS},
    **{op: IEEE_KERNELS[op] for op in ("mul_scalar", "add_scalar", "rsub_scalar", "div_scalar")},
    **{op: CUDA_KERNELS[op] for op in ("exp", "log", "rsqrt", "tanh", "sigmoid", "erf", "gelu",
                                       "gelu_tanh", "silu", "tanh_backward", "sigmoid_backward",
                                       "gelu_backward", "gelu_tanh_backward", "silu_backward",
                                       "relu_backward")},
}


def run_native(op, xs, params):
    """`op` by its NATIVE_DTYPE_OPS kernel on the operands as they are."""
    kernel = NATIVE_DTYPE_OPS[op]
    if op in _SCALAR_OPS:
        return kernel(*xs, params["scalar"])
    return kernel(*xs, **params)


def run_ieee(op, xs, params):
    kernel = IEEE_KERNELS[op]
    if op in _SCALAR_OPS:
        return kernel(*xs, params["scalar"])
    return kernel(*xs, **params)
