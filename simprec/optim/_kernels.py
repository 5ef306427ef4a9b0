"""torch's in-place tensor ops as the optimizers use them, on backend arrays, in fp32 opmath.

Each function is one torch kernel: it reads its operands (values exact in their formats, kept in
fp32 containers by the NumPy backend), computes in fp32 and returns the fp32 result *unrounded*;
the caller rounds it once into the format of the tensor it replaces (fp32: no change; fp16: one
rounding, as torch's CUDA and CPU kernels do for half tensors).

Where torch's kernels contract a multiply-add into one fused multiply-add, so do these (checked
against torch 2.13 on an AVX-512 CPU, body and tail elements alike; nvcc contracts the same
expressions on the GPU):
- `add(x, y, alpha)`      ufunc/add.h: vectorised `vec::fmadd(other, alpha, self)`   -> fma
- `lerp(a, b, w)`         LerpKernel.cpp `lerp_vec`: fmadd(coeff, end - start, base) -> fma
- `addcmul(x, a, b, v)`   PointwiseOpsKernel.cpp `self + v * a * b`, contracted -> fma(v*a, b, x)
- `addcdiv(x, a, b, v)`   `self + v * a / b`: a quotient is never fused              -> no fma
"""

from __future__ import annotations

import numpy as np

from ..cudamath.libdevice import fma32
from ..formats import fp32

__all__ = ["fma", "add", "mul_scalar", "lerp", "addcmul", "addcdiv", "sqrt", "div_scalar",
           "add_scalar", "fma_host", "addcmul_cuda", "addcdiv_cuda", "div_true_scalar",
           "resolve_path", "scalar_value", "is_tensor_lr", "f32"]

_F32 = np.float32
_HAS_FMA: dict[str, bool] = {}


def fma_host(a, b, c) -> np.ndarray:
    """a*b + c rounded once to float32, exactly (NumPy arrays or scalars of float32 values): the
    NumPy backend's own fma kernel (`simprec.cudamath.libdevice.fma32`: the float64 product is
    exact, the float64 sum is made "round to odd", then one rounding to float32 is correct; Boldo
    & Melquiond, "Emulation of FMA and correctly rounded sums: proved algorithms using rounding
    to odd", 2008)."""
    return fma32(a, b, c)


def fma(be, a, b, c):
    """a*b + c with one rounding to fp32 (`b` may be a Python number: float32(b) is used).

    Uses the backend's "fma" kernel when it has one, else computes on the host exactly."""
    if isinstance(b, (int, float)):
        b = _F32(b)
    name = type(be).__name__
    if _HAS_FMA.get(name, True):
        try:
            return be.elementwise("fma", a, b, c)
        except (ValueError, KeyError, NotImplementedError):
            _HAS_FMA[name] = False
    host = [be.to_numpy(x) if not isinstance(x, (np.floating, float)) else x for x in (a, b, c)]
    return be.asarray(fma_host(*host), fp32)


def add(be, x, y, alpha=1.0):
    """torch.add(x, y, alpha=alpha): x + alpha*y, one fma (with alpha 1, a plain add: the same)."""
    if alpha == 1:
        return be.elementwise("add", x, y)
    return fma(be, y, float(alpha), x)


def mul_scalar(be, x, s):
    """x * float32(s)."""
    return be.elementwise("mul_scalar", x, scalar=float(s))


def div_scalar(be, x, s):
    """tensor / Python number as the backend's kernel computes it (CUDA: x * float32(1/s))."""
    return be.elementwise("div_scalar", x, scalar=float(s))


def add_scalar(be, x, s):
    """x + float32(s)."""
    return be.elementwise("add_scalar", x, scalar=float(s))


def sqrt(be, x):
    return be.elementwise("sqrt", x)


def lerp(be, start, end, weight):
    """torch.lerp(start, end, weight) with a scalar weight (aten/src/ATen/native/Lerp.h):
    |w| < 0.5: start + w*(end - start); else end - (end - start)*(1 - w), each one fma."""
    w = _F32(weight)
    diff = be.elementwise("sub", end, start)
    if abs(float(w)) < 0.5:
        return fma(be, diff, float(w), start)
    return fma(be, diff, float(w - _F32(1.0)), end)


def addcmul(be, x, t1, t2, value=1.0):
    """x + value * t1 * t2 as torch computes it: fma(value*t1, t2, x)."""
    scaled = be.elementwise("mul_scalar", t1, scalar=float(value)) if value != 1 else t1
    return fma(be, scaled, t2, x)


def addcmul_cuda(be, x, t1, t2, value=1.0):
    """torch.addcmul on CUDA (PointwiseOpsKernel.cu, and the foreach PointwiseOpScalarFunctor):
    `a + alpha * (b * c)`: the product b*c rounded, then fma(alpha, b*c, x)."""
    return fma(be, be.elementwise("mul", t1, t2), float(value), x)


def addcdiv_cuda(be, x, t1, t2, value=1.0):
    """torch.addcdiv on CUDA: `a + alpha * (b / c)`: the quotient rounded, then
    fma(alpha, b/c, x) (with alpha 1: a plain add, the same)."""
    return fma(be, be.elementwise("div", t1, t2), float(value), x)


def div_true_scalar(be, x, s):
    """x / float32(s), a true division: a foreach division by a scalar list, or by a 0-dim
    device tensor (not a CPU scalar, which BinaryDivTrueKernel.cu turns into a reciprocal)."""
    return be.elementwise("div", x, be.asarray(np.asarray(f32(s), dtype=np.float32), fp32))


def f32(x) -> np.float32:
    """A Python number as the fp32 `opmath_t` a CUDA kernel receives it."""
    return np.float32(x)


def addcdiv(be, x, t1, t2, value=1.0):
    """x + (value * t1) / t2, each step rounded to fp32 (no fusing across a division)."""
    scaled = be.elementwise("mul_scalar", t1, scalar=float(value)) if value != 1 else t1
    return be.elementwise("add", x, be.elementwise("div", scaled, t2))


# ---- torch's CUDA paths: choice of path, scalars ----

PATHS = ("single", "foreach", "fused")


def resolve_path(group: dict) -> str:
    """torch's choice of implementation for CUDA parameters: `fused=True` -> "fused";
    `foreach=False` -> "single" (the `_single_tensor_*` loop); otherwise "foreach" (torch's
    default on CUDA, `_default_to_fused_or_foreach`)."""
    if group.get("fused"):
        if group.get("foreach"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        return "fused"
    if group.get("foreach") is False:
        return "single"
    return "foreach"


def scalar_value(lr):
    """A learning rate given as a Python number, or as a 0-dim tensor (torch's tensor lr): the
    tensor's fp32 value as a Python float."""
    if hasattr(lr, "numpy") and not isinstance(lr, (int, float)):
        return float(np.asarray(lr.numpy(), dtype=np.float32).reshape(()))
    return lr


def is_tensor_lr(lr) -> bool:
    return hasattr(lr, "numpy") and not isinstance(lr, (int, float))
