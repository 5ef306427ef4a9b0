"""CUDA's single-precision math functions, instruction for instruction, in NumPy.

torch's CUDA kernels call `expf`, `logf`, `tanhf`, `erff`, `log1pf`, `rsqrtf` (CUDA's libdevice,
compiled without fast-math). Most are short sequences of fp32 FMAs plus, for some, the
special-function unit's `ex2.approx.ftz.f32` / `rcp.approx.ftz.f32`; `rsqrtf` is the single
instruction `rsqrt.approx.f32`. The sequences below are read from the PTX that nvcc 13.0 emits for
sm_90 (constants as hex bit patterns); each `fma` is an exact fused multiply-add (`fma32`). The
special-function instructions (`ex2_approx`, `rcp_approx`, `rsqrtf`) are modelled exactly as an
H200 computes them (`mufu`). docs/fidelity.md lists the measured agreement with an H200.
"""

from __future__ import annotations

import numpy as np

from .. import _fast
from . import mufu as _mufu

f32 = np.float32
_INF32 = f32(np.inf)
_TINY = f32(1.1754943508222875e-38)  # 2**-126, the smallest normal fp32


def _c(bits: int) -> np.float32:
    """The fp32 constant with this bit pattern (as written in PTX: 0fXXXXXXXX)."""
    return np.array(bits, dtype=np.uint32).view(np.float32)[()]


def fma32(a, b, c):
    """fp32 fused multiply-add a*b + c with one rounding (to nearest even), elementwise.

    The product of two fp32 values is exact in float64, so s = a*b + c in float64 is the exact
    sum rounded once to 53 bits, and rounding s to fp32 is the correctly rounded fma unless that
    first rounding moved the sum onto an fp32 tie (a double rounding). In fp32's normal range a
    tie is a float64 whose low 29 bits are 1 followed by 28 zeros; below 2**-126 fp32 keeps
    fewer bits, and every such s is checked too. There the sum is made round-to-odd with its
    exact error (TwoSum), and round-to-odd at 53 bits followed by one rounding to fp32 is
    correct (53 >= 24 + 2; Boldo & Melquiond, "Emulation of FMA and correctly rounded sums:
    proved algorithms using rounding to odd", IEEE TC 2008).
    """
    a, b, c = np.asarray(a), np.asarray(b), np.asarray(c)
    fast = _fast.kernels("elementwise")
    if fast is not None and (out := fast.fma(a, b, c)) is not None:
        return out                             # the hardware's fma, compiled (simprec._fast)
    s = np.empty(np.broadcast_shapes(a.shape, b.shape, c.shape), np.float64)  # one temporary
    with np.errstate(all="ignore"):
        np.multiply(a, b, out=s, dtype=np.float64)  # exact
        np.add(s, c, out=s, dtype=np.float64)
        bits = s.view(np.int64)
        tie = (bits & 0x1FFFFFFF) == 0x10000000  # on an fp32 tie (normal range)
        magnitude = (bits << 1).view(np.uint64)  # sign dropped; 0 < |s| < 2**-126 next:
        tie |= (magnitude - np.uint64(1)) < np.uint64((0x3810000000000000 << 1) - 1)
        if tie.any():
            def at_ties(v):
                return np.broadcast_to(v, s.shape)[tie].astype(np.float64)
            s[tie] = _round_to_odd(at_ties(a) * at_ties(b), at_ties(c), s[tie])
        return s.astype(np.float32)


def _round_to_odd(p, c, s):
    """s = RN(p + c) (float64 arrays) made round-to-odd: an inexact even s moves one ulp toward
    the exact sum, whose error TwoSum gives exactly."""
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    bits = s.view(np.int64)
    fix = (err != 0) & ((bits & 1) == 0) & np.isfinite(s)
    step = np.where((err > 0) == (s > 0), 1, -1)  # one ulp away from or toward zero
    return (bits + np.where(fix, step, 0)).view(np.float64)


def fma32_rm(a, b, c):
    """fp32 fma rounded toward -inf, for `expf`'s range reduction, where a*b + c is exact in
    float64 (a in [0, 1] with 24 bits, b = 252, c = 1.5 * 2**23 + 1)."""
    s = np.asarray(a, np.float64) * np.float64(b) + np.float64(c)
    r = s.astype(np.float32)
    return np.where(r.astype(np.float64) > s, np.nextafter(r, -_INF32), r).astype(np.float32)


def _fast_unary(op, x):
    """The compiled version of function `op` of x (simprec._fast), or None when it is off."""
    fast = _fast.kernels("elementwise")
    return None if fast is None else fast.unary(op, x)


def ex2_approx(r):
    """`ex2.approx.ftz.f32` (MUFU.EX2), measured: see `mufu.ex2`."""
    return _mufu.ex2(r)


def rcp_approx(x):
    """`rcp.approx.ftz.f32` (MUFU.RCP), measured: see `mufu.rcp`."""
    return _mufu.rcp(x)


def expf(x):
    """CUDA expf: 2**k * ex2(r) with k = round(x log2 e) found by a saturated fma and a
    round-down fma against 1.5*2**23 (the exponent bits are built from that sum's low bits) and
    r = x log2(e) - k in two fmas (log2 e split into 0x3FB8AA3B + 0x32A57060)."""
    x = np.asarray(x, np.float32)
    if (fast := _fast_unary("exp", x)) is not None:
        return fast
    with np.errstate(all="ignore"):
        t = np.clip(fma32(x, _c(0x3BBB989D), f32(0.5)), f32(0), f32(1))
        t = np.where(np.isnan(x), f32(0), t)
        j = fma32_rm(t, _c(0x437C0000), _c(0x4B400001))
        k = j + _c(0xCB40007F)
        r = fma32(x, _c(0x3FB8AA3B), -k)
        r = fma32(x, _c(0x32A57060), r)
        scale = (j.view(np.uint32) << np.uint32(23)).view(np.float32)
        return (ex2_approx(r) * scale).astype(np.float32)


_LOG_POLY = (0xBDF8CDCC, 0x3E0F2955, 0xBE2AD8B9, 0x3E4CED0B, 0xBE7FFF22, 0x3EAAAA78, 0xBF000000)


def logf(x):
    """CUDA logf: pure fp32 FMA arithmetic (bit-exact): x = 2**e * m with m in [2/3, 4/3)
    (integer trick with 0x3F2AAAAB), log1p(m - 1) by a degree-9 polynomial, + e*ln 2."""
    x = np.asarray(x, np.float32)
    if (fast := _fast_unary("log", x)) is not None:
        return fast
    with np.errstate(all="ignore"):
        small = x < _c(0x00800000)
        x1 = np.where(small, x * _c(0x4B000000), x)
        bias = np.where(small, _c(0xC1B80000), f32(0))
        bits = x1.view(np.int32)
        e_bits = (bits + np.int32(-1059760811)) & np.int32(-8388608)
        m = (bits - e_bits).view(np.float32)
        e = fma32(e_bits.astype(np.float32), _c(0x34000000), bias)
        f = m + _c(0xBF800000)
        p = fma32(_c(0xBE055027), f, _c(0x3E1039F6))
        for coef in _LOG_POLY:
            p = fma32(p, f, _c(coef))
        r = fma32(f * p, f, f)
        r = fma32(e, _c(0x3F317218), r)
        special = ~(bits.view(np.uint32) < np.uint32(0x7F800000))  # inf, NaN, negative
        r = np.where(special, fma32(x1, _INF32, _INF32), r)
        return np.where(x1 == 0, -_INF32, r).astype(np.float32)


_TANH_POLY = (0x3E085941, 0xBEAAA9ED)


def tanhf(x):
    """CUDA tanhf: for |x| >= 0.6, 1 - 2 / (2**(2 log2(e) |x|) + 1) with ex2.approx and
    rcp.approx (1 for |x| >= 9.0109), sign copied; below, an odd polynomial in fp32 fmas."""
    x = np.asarray(x, np.float32)
    if (fast := _fast_unary("tanh", x)) is not None:
        return fast
    ax = np.abs(x)
    with np.errstate(all="ignore"):
        e = ex2_approx(ax * _c(0x4038AA3B))
        big = fma32(rcp_approx(e + f32(1)), f32(-2), f32(1))
        big = np.where(ax >= _c(0x41102CB4), f32(1), big)
        big = np.copysign(big, x)
        x2 = x * x
        p = fma32(_c(0x3C80F082), x2, _c(0xBD563CAE))
        for coef in _TANH_POLY:
            p = fma32(p, x2, _c(coef))
        p = fma32(p, x2, f32(0))
        small = fma32(p, x, x)
        return np.where(ax >= _c(0x3F19999A), big, small).astype(np.float32)


_ERF_BIG = (0x38EB4C3A, 0xBAAE005B, 0x3C09919F, 0xBD24D99A, 0x3E235519, 0x3F69B4F9, 0x3F210A14)
_ERF_SMALL = (0x38B1E96A, 0xBA574D20, 0x3BAAD5EA, 0xBCDC1BE7, 0x3DE718AF, 0xBEC093AC, 0x3E0375D3)


def erff(x):
    """CUDA erff: below |x| = 1.00297 an odd polynomial x + x*p(x*x); above,
    1 - 2**(-|x| - |x| p(|x|)) via ex2.approx, sign copied. fp32 fmas throughout."""
    x = np.asarray(x, np.float32)
    if (fast := _fast_unary("erf", x)) is not None:
        return fast
    ax = np.abs(x)
    big = ax >= _c(0x3F8060FE)
    with np.errstate(all="ignore"):
        t = np.where(big, ax, x * x)
        coefs = [
            np.where(big, _c(hi), _c(lo)) for hi, lo in zip(_ERF_BIG, _ERF_SMALL, strict=False)
        ]
        p = fma32(coefs[0], t, coefs[1])
        for coef in coefs[2:]:
            p = fma32(p, t, coef)
        s = np.where(big, -ax, x)
        r = fma32(p, s, s)
        tail = np.copysign(f32(1) - ex2_approx(r), x)
        return np.where(big, tail, r).astype(np.float32)


def add_rz32(a, b):
    """fp32 a + b rounded toward zero (exact: float64 sum plus its TwoSum error)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    with np.errstate(all="ignore"):
        s = a + b
        bb = s - a
        err = (a - (s - bb)) + (b - bb)
        r = s.astype(np.float32)
        rd = r.astype(np.float64)
        away = (np.abs(rd) > np.abs(s)) | ((rd == s) & (err != 0) & ((err > 0) != (s > 0)))
        away &= np.isfinite(s)
        return np.where(away, np.nextafter(r, f32(0)), r).astype(np.float32)


_LOG1P_POLY = (0xBE0778E0, 0x3E146475, 0xBE2A68DD, 0x3E4CAF9E, 0xBE800042, 0x3EAAAAE6, 0xBF000000)


def log1pf(x):
    """CUDA log1pf: 1 + x = 2**e * (1 + f) with e read off fp32(1 + x) rounded toward zero, the
    scaled argument f = x*2**-e + (2**-e - 1) built without rounding error, log1p(f) by a
    polynomial, + e*ln 2 (pure fp32 fma arithmetic)."""
    x = np.asarray(x, np.float32)
    if (fast := _fast_unary("log1p", x)) is not None:
        return fast
    with np.errstate(all="ignore"):
        u = add_rz32(x, f32(1))
        e_bits = (u.view(np.int32) + np.int32(-1061158912)) & np.int32(-8388608)
        m = (x.view(np.int32) - e_bits).view(np.float32)
        s = (np.int32(0x40800000) - e_bits).view(np.float32)
        f = fma32(f32(0.25), s, f32(-1)) + m
        i = e_bits.astype(np.float32) * _c(0x34000000)
        p = fma32(_c(0xBD39BF78), f, _c(0x3DD80012))
        for coef in _LOG1P_POLY:
            p = fma32(p, f, _c(coef))
        r = fma32(f * p, f, f)
        r = fma32(i, _c(0x3F317218), r)
        bits = x.view(np.int32)
        special = bits.view(np.uint32) >= np.uint32(0x7F800000)  # negative, inf or NaN
        beyond = special & ~(bits < np.int32(-1082130431))  # x < -1, +inf, NaN
        r = np.where(beyond, fma32(x, _INF32, _INF32), r)
        r = np.where(special & (x == 0), f32(-0.0), r)
        return r.astype(np.float32)


def rsqrtf(x):
    """CUDA rsqrtf: the single instruction `rsqrt.approx.f32` (MUFU.RSQ), see `mufu.rsqrt`."""
    return _mufu.rsqrt(x)
