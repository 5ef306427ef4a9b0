"""torch's CPU optimizers as a reference that is the same on every machine.

torch.optim (foreach=False) is a sequence of pointwise tensor methods. On the CPU, how some of
them round depends on the machine and the build: whether the compiler contracted `a + alpha*b`
into one fused multiply-add (it does in the AVX2/AVX-512/NEON kernels, not in a build without
FMA), and how the vectorised `sqrt` rounds (not correctly on some CPUs). `pin_pointwise` replaces
those methods, for the length of a test, by the arithmetic the CUDA kernels do, computed exactly
here with NumPy: every kernel reads fp32 (opmath) values and rounds its result once to the
tensor's dtype.

- `add(other, alpha=a)`, `add_`:  fma(a, other, self)  (CUDA `a + alpha * b`, contracted by nvcc;
  the CPU's `vec::fmadd(b, alpha, a)`); alpha is an fp32 value (the CPU rounds it to the tensor's
  dtype for half tensors, CUDA does not).
- `lerp_(end, w)`:  |w| < 0.5: fma(w, end - self, self); else fma(w - 1, end - self, end)
  (aten/src/ATen/native/Lerp.h).
- `addcmul_(t1, t2, value=v)`:  fma(v * t1, t2, self), the CPU kernel's `self + v * t1 * t2`
  contracted (PointwiseOpsKernel.cpp). CUDA's DeviceAddCmulCdiv.cuh computes
  fma(v, t1 * t2, self) instead when v != 1; `pytest -m gpu` (test_optimizers_live) holds
  simprec against the GPU's own kernels.
- `addcdiv_(t1, t2, value=v)`:  self + (v * t1) / t2, no fma (the CPU kernel's order).
- `sqrt`: the correctly rounded root (CUDA's sqrtf): the float64 root rounded once more (53 >=
  2*24 + 2 bits make that double rounding exact).
- `tensor / number`: tensor * float32(1 / number) (CUDA's BinaryDivTrueKernel.cu multiplies by
  the reciprocal; the CPU divides).

The exact fma: the product of two fp32 values is exact in float64, so a*b + c in float64 is the
exact value rounded once; rounding that to fp32 is the correctly rounded fma unless the float64
value lies exactly on an fp32 midpoint (a double rounding), and those elements are redone with
exact rational arithmetic.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

F32 = np.float32


def fma32(a, b, c) -> np.ndarray:
    """a*b + c rounded once to float32 (round to nearest even), elementwise, exactly."""
    a, b, c = np.broadcast_arrays(*(np.asarray(v, F32) for v in (a, b, c)))
    shape = a.shape
    a, b, c = a.ravel(), b.ravel(), c.ravel()
    with np.errstate(all="ignore"):
        s = a.astype(np.float64) * b + c
        r = s.astype(F32)
        toward = np.nextafter(r, np.where(s > r, F32(np.inf), F32(-np.inf)).astype(F32))
        gap_r = np.abs(s - r.astype(np.float64))
        gap_t = np.abs(toward.astype(np.float64) - s)
        tie = np.isfinite(s) & (s != r) & (gap_r == gap_t)
    for i in np.flatnonzero(tie):
        exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        lo, hi = sorted((r[i], toward[i]))
        d_lo, d_hi = exact - Fraction(float(lo)), Fraction(float(hi)) - exact
        if d_lo != d_hi:
            r[i] = lo if d_lo < d_hi else hi
        else:  # a true tie: the even significand
            r[i] = lo if int(np.asarray(lo).view(np.uint32)) % 2 == 0 else hi
    return r.reshape(shape)


def pin_pointwise(monkeypatch, torch) -> None:
    """Replace torch.Tensor's pointwise methods used by torch.optim with the arithmetic above."""
    Tensor = torch.Tensor
    originals = {name: getattr(Tensor, name) for name in
                 ("add", "add_", "lerp_", "addcmul_", "addcdiv_", "__truediv__")}

    def values(t) -> np.ndarray:
        return t.detach().float().numpy() if isinstance(t, Tensor) else np.asarray(t, F32)

    def result(like, value: np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value, F32)).to(like.dtype)

    def floating(*tensors) -> bool:
        return all(isinstance(t, Tensor) and t.dtype in (torch.float32, torch.float16)
                   and t.device.type == "cpu" for t in tensors)

    def add(self, other, *, alpha=1):
        if alpha == 1 or not floating(self, other):
            return originals["add"](self, other, alpha=alpha)
        return result(self, fma32(F32(alpha), values(other), values(self)))

    def add_(self, other, *, alpha=1):
        if alpha == 1 or not floating(self, other):
            return originals["add_"](self, other, alpha=alpha)
        return self.copy_(add(self, other, alpha=alpha))

    def lerp_(self, end, weight):
        if isinstance(weight, Tensor) or not floating(self, end):
            return originals["lerp_"](self, end, weight)
        w, start, stop = F32(weight), values(self), values(end)
        diff = (stop - start).astype(F32)
        if abs(float(w)) < 0.5:
            return self.copy_(result(self, fma32(w, diff, start)))
        return self.copy_(result(self, fma32(F32(w - F32(1)), diff, stop)))

    def addcmul_(self, t1, t2, *, value=1):
        if not floating(self, t1, t2):
            return originals["addcmul_"](self, t1, t2, value=value)
        scaled = (values(t1) * F32(value)).astype(F32)
        return self.copy_(result(self, fma32(scaled, values(t2), values(self))))

    def addcdiv_(self, t1, t2, *, value=1):
        if not floating(self, t1, t2):
            return originals["addcdiv_"](self, t1, t2, value=value)
        with np.errstate(all="ignore"):
            quotient = ((values(t1) * F32(value)).astype(F32) / values(t2)).astype(F32)
            return self.copy_(result(self, (values(self) + quotient).astype(F32)))

    def sqrt(self):
        return torch.sqrt(self.double()).to(self.dtype)

    def truediv(self, other):
        if isinstance(other, (int, float)):
            return torch.mul(self, float(F32(1.0) / F32(other)))
        return originals["__truediv__"](self, other)

    for name, fn in (("add", add), ("add_", add_), ("lerp_", lerp_), ("addcmul_", addcmul_),
                     ("addcdiv_", addcdiv_), ("sqrt", sqrt), ("__truediv__", truediv)):
        monkeypatch.setattr(Tensor, name, fn)
