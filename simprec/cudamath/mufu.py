"""NVIDIA's special-function unit (MUFU) on sm_90, as measured on an H200: ex2, rcp, rsqrt.

CUDA's expf, tanhf, erff (so torch's exp, sigmoid, silu, tanh, gelu, softmax) end in
`ex2.approx.ftz.f32`, tanhf also in `rcp.approx.ftz.f32`, and rsqrtf is `rsqrt.approx.f32`.
These instructions are not correctly rounded (errors up to ~1.5 ulp) and their interpolation
tables are not published, so simprec carries their exact outputs, measured exhaustively over one
binade of the significand (the rest follows by exponent arithmetic, checked on 850,000 random
inputs of every magnitude and sign with 0 mismatches):

- ex2(r): the unit reads |r| as fixed point with 23 fractional bits (truncated). For r >= 0,
  2**r = 2**I * P[f] (I, f: integer and fraction bits); for r < 0 the fraction is looked up in a
  second table, 2**r = 2**-I * N[f] (N[0] = 1). Subnormal inputs and results are flushed to 0.
- rcp(x) = sign * 2**-e * R[m] for x = 2**e * (1 + m * 2**-23); ftz.
- rsqrt(x) = 2**-(e//2) * S[e odd, m] (x scaled by 2**24 first when subnormal).

The four tables (2**23 or 2**24 fp32 bit patterns each) are stored delta-encoded in
`mufu_tables.npz` (2-bit deltas, 480 KB) and decoded on first use. `scripts/capture_mufu_tables.py`
regenerates them on a GPU.
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np

from .. import _fast

f32 = np.float32
_TINY = f32(2.0**-126)
_TABLES = pathlib.Path(__file__).with_name("mufu_tables.npz")


@functools.cache
def _table(name: str) -> np.ndarray:
    """The uint32 bit patterns of table `name`, decoded from its 2-bit deltas."""
    with np.load(_TABLES) as npz:
        packed, (first, low, n) = npz[name], npz[name + "_meta"]
    deltas = np.stack([(packed >> s) & 3 for s in (0, 2, 4, 6)], axis=1).reshape(-1)[: n - 1]
    bits = np.empty(n, np.int64)
    bits[0] = first
    np.cumsum(deltas.astype(np.int64) + low, out=bits[1:])
    bits[1:] += first
    return bits.astype(np.uint32)


@functools.cache
def _ex2_table() -> np.ndarray:
    """ex2's two tables end to end: positive inputs at [0, 2**23), negative at [2**23, 2**24)."""
    return np.concatenate([_table("ex2_pos"), _table("ex2_neg")])


def ex2(r):
    """ex2.approx.ftz.f32: 2**r as the H200's special-function unit computes it."""
    r = np.asarray(r, np.float32)
    fast = _fast.kernels("elementwise")
    if fast is not None:                       # the same lookup, compiled (simprec._fast)
        return fast.mufu("ex2", r)
    with np.errstate(all="ignore"):
        a = np.abs(r)
        a = np.where(a < _TINY, f32(0), a)                 # ftz input
        neg = r < 0
        out_of_range = ~(a < 200.0)                         # also NaN
        fixed = np.floor(np.where(out_of_range, f32(0), a) * f32(2.0**23)).astype(np.int64)
        whole = fixed >> 23                                 # a * 2**23 is exact in fp32
        mant = _ex2_table()[(fixed & (2**23 - 1)) + (neg.astype(np.int64) << 23)]
        # 2**(±whole) as a float64 built from its exponent bits: the product is exact
        scale = ((1023 + np.where(neg, -whole, whole)) << 52).view(np.float64)
        out = (mant.view(np.float32).astype(np.float64) * scale).astype(np.float32)
        out = np.where(out_of_range, np.where(neg, f32(0), f32(np.inf)), out)
        out = np.where(np.isnan(r), r, out)
        return np.where(out < _TINY, f32(0), out)


def rcp(x):
    """rcp.approx.ftz.f32: 1/x as the H200's special-function unit computes it."""
    x = np.asarray(x, np.float32)
    fast = _fast.kernels("elementwise")
    if fast is not None:                       # the same lookup, compiled (simprec._fast)
        return fast.mufu("rcp", x)
    with np.errstate(all="ignore"):
        x = np.where(np.abs(x) < _TINY, np.copysign(f32(0), x), x)
        bits = x.view(np.uint32)
        exponent = ((bits >> 23) & 0xFF).astype(np.int64) - 127
        mant = _table("rcp")[bits & np.uint32(0x7FFFFF)].view(np.float32)
        out = np.copysign(np.ldexp(mant.astype(np.float64), -exponent).astype(np.float32), x)
        special = (x == 0) | ~np.isfinite(x)
        out = np.where(special, (f32(1) / x).astype(np.float32), out)
        return np.where(np.abs(out) < _TINY, np.copysign(f32(0), out), out)


def rsqrt(x):
    """rsqrt.approx.f32: 1/sqrt(x) as the H200's special-function unit computes it."""
    x = np.asarray(x, np.float32)
    fast = _fast.kernels("elementwise")
    if fast is not None:                       # the same lookup, compiled (simprec._fast)
        return fast.mufu("rsqrt", x)
    with np.errstate(all="ignore"):
        sub = (x > 0) & (x < _TINY)
        xs = np.where(sub, x * f32(2.0**24), x)
        bits = xs.view(np.uint32)
        exponent = ((bits >> 23) & 0xFF).astype(np.int64) - 127
        odd = exponent & 1
        mant = _table("rsqrt")[(odd << 23) | (bits & np.uint32(0x7FFFFF)).astype(np.int64)]
        out = np.ldexp(mant.view(np.float32).astype(np.float64), -((exponent - odd) // 2))
        out = np.where(sub, out * 2.0**12, out).astype(np.float32)
        special = ~(xs > 0) | ~np.isfinite(xs)
        return np.where(special, (1.0 / np.sqrt(x.astype(np.float64))).astype(np.float32), out)
