"""Rounding into any simprec `Format` with torch operations, on the tensor's own device.

fp16 and bf16 are torch's own casts (`Tensor.to(torch.float16 / torch.bfloat16)`, which round
to nearest even exactly as `simprec.formats.round` does). Every other format (fp8 e4m3/e5m2,
tf32, custom eXmY with or without subnormals, any overflow and NaN rule) is rounded here with
the rule of docs/formats.md, written as whole-tensor float operations that are exact:

    a = |x|, e = floor(log2 a), q = 2^(max(e, min_exp) - man_bits)   (the grid step at a)
    t = a / q                      exact: a scaling by a power of two
    k = round_half_even(t) | trunc(t) | trunc(t) + (random word says up)
    y = k * q                      exact: y is on the format's grid
    then overflow, flush-to-zero, the sign, and NaN/inf as the rule says.

The scalings by 2^s are split in two factors 2^(s//2) and 2^(s - s//2) so that no factor
overflows the working dtype and no intermediate leaves its normal range (both stay between the
input and the result), which keeps every step exact. The working dtype is the format's
container (float32, or float64 for formats beyond float32's range or precision), or float64 for a
float64 input, which is rounded directly, never through float32 (no double rounding).
"""

from __future__ import annotations

import torch

from simprec import formats
from simprec.formats import Format

MODES = ("nearest", "toward_zero", "stochastic")


def container_dtype(fmt) -> torch.dtype:
    """The torch dtype the torch backend keeps `fmt`'s values in."""
    if fmt is None or not getattr(fmt, "is_float", False):
        return torch.bool if fmt is not None and fmt.bits == 1 else torch.int64
    if fmt == formats.fp16:
        return torch.float16
    if fmt == formats.bf16:
        return torch.bfloat16
    return torch.float32 if fmt.container.itemsize == 4 else torch.float64


def _pow2(exponent: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """2.0 ** exponent (int tensor, within the dtype's normal range) built from its bits."""
    if dtype == torch.float32:
        return ((exponent.to(torch.int32) + 127) << 23).view(torch.float32)
    return ((exponent.to(torch.int64) + 1023) << 52).view(torch.float64)


def _scale(x: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """x * 2**exponent, exact when the result and x are in the dtype's range (two factors)."""
    half = torch.div(exponent, 2, rounding_mode="floor")
    return x * _pow2(half, x.dtype) * _pow2(exponent - half, x.dtype)


def round_to_format(x: torch.Tensor, fmt: Format, mode: str = "nearest",
                    words: torch.Tensor | None = None, random_bits: int = 32) -> torch.Tensor:
    """`x` (a float tensor) rounded into `fmt` by `mode`, in `fmt`'s container dtype.

    `words`: for "stochastic", one uniformly random 32-bit word per element (an int64 tensor of
    x's shape holding values in [0, 2**32)), the stream `simprec.formats.round` draws from its
    generator; `random_bits` as there.
    """
    if mode not in MODES:
        raise ValueError(f"round: mode must be one of {MODES}, got {mode!r}")
    target = container_dtype(fmt)
    if mode == "nearest" and (fmt == formats.fp32 or (
            target in (torch.float16, torch.bfloat16) and x.dtype != torch.float64)):
        return x.to(target)  # torch's casts round to nearest even (float64 -> half: not direct)
    wide = x.dtype == torch.float64 or fmt.container.itemsize == 8
    work = torch.float64 if wide else torch.float32
    x = x.to(work)
    a = x.abs()
    _, ex = torch.frexp(a)                     # a = m * 2**ex, m in [0.5, 1)
    top = 127 if work == torch.float32 else 1023
    e = torch.clamp(ex.to(torch.int64) - 1, fmt.min_exp, top)
    qexp = e - fmt.man_bits
    t = _scale(a, -qexp)                       # in [0, 2**(man_bits + 1)), or inf / NaN
    if mode == "nearest":
        k = torch.round(t)                     # half to even
        if fmt.man_bits == 0:
            # ties go to the neighbour with the even biased exponent, not to the even k
            tie = (t - torch.floor(t) == 0.5) & ((e + fmt.bias) % 2 == 0)
            k = torch.where(tie & (a >= fmt.smallest_normal), torch.floor(t), k)
    elif mode == "toward_zero":
        k = torch.trunc(t)
    else:
        if words is None:
            raise ValueError("round: stochastic rounding needs words (random 32-bit integers)")
        base = torch.trunc(t)
        finite = torch.isfinite(t)
        frac = torch.where(finite, t - base, torch.zeros_like(t))
        r_bits = int(random_bits)
        g = torch.floor(frac * float(2 ** r_bits)).to(torch.int64)  # floor(f * 2**R), exact
        r = words.to(torch.int64).reshape(t.shape) >> (32 - r_bits)
        k = base + (g + r >= 2 ** r_bits).to(work)
    y = _scale(k, qexp)
    big = fmt.max
    over = y > big
    if mode == "toward_zero":
        # toward zero never overflows a finite value (IEEE 754-2019 7.4); inf follows the rule
        y = torch.where(over & torch.isfinite(a), torch.full_like(y, big), y)
        over = over & torch.isinf(a)
    if fmt.overflow == "saturate":
        y = torch.where(over, torch.full_like(y, big), y)
    elif fmt.overflow == "nan":
        y = torch.where(over, torch.full_like(y, float("nan")), y)
    else:
        y = torch.where(over, torch.full_like(y, float("inf")), y)
    if not fmt.subnormals:
        y = torch.where(y < fmt.smallest_normal, torch.zeros_like(y), y)
    return torch.copysign(y, x).to(target)
