"""Elementwise kernels compiled: CUDA's math functions and the backend's fp32 formulas, fused with
the rounding of their result, one pass over memory.

Each value is computed by a scalar transcription of the NumPy specification: libdevice's
functions (`simprec.cudamath.libdevice`: expf, logf, tanhf, erff, log1pf), the special-function
unit (`simprec.cudamath.mufu`: ex2, rcp, rsqrt from the measured tables) and the backend's
kernels (`simprec.backend.numpy_backend`: sigmoid, gelu, silu, softplus and their backward
formulas), operation for operation in float32, with `fma32` the hardware's fused multiply-add
(one rounding, as IEEE 754 and CUDA's fmaf define it, which the specification emulates in
float64). The result is then rounded to nearest-even into fp16 or bf16 (`simprec.formats`'s
rounding, written for one value) before it is stored: the op and its rounding in one pass, as
the GPU kernel does it.

A NaN result is a NaN; its sign and payload are not specified (`simprec.formats.round`), and
may differ from the specification's. Every other bit is the same; tests/test_fast.py checks.

A kernel is generated per (op, output rounding), both compile-time constants, compiled on
first use and cached on disk. `elementwise` returns None for what it
does not cover (other ops, formats or dtypes, broadcasting other than scalars against arrays);
the caller then runs the specification.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.core import types
from numba.extending import intrinsic

from ..cudamath import mufu as _mufu
from ..formats import bf16, fp16, fp32

f32 = np.float32
_TINY = f32(1.1754943508222875e-38)   # 2**-126
_INF = f32(np.inf)


# ------------------------------------------------------------------------------- arithmetic

@intrinsic
def _fma_intrinsic(typingctx, a, b, c):
    """llvm.fma: a*b + c with one rounding (a hardware fma here)."""
    if not (a == b == c and isinstance(a, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, b, c), codegen


@njit(inline="always", error_model="numpy")
def fma32(a, b, c):
    return _fma_intrinsic(f32(a), f32(b), f32(c))


@njit(inline="always", error_model="numpy")
def _c(bits):
    """The float32 with this bit pattern."""
    return np.uint32(bits).view(np.float32)


@njit(inline="always", error_model="numpy")
def _bits(x):
    return np.float32(x).view(np.int32)


@njit(inline="always", error_model="numpy")
def _from_bits(i):
    return np.int32(i).view(np.float32)


@njit(inline="always", error_model="numpy")
def _wrap32(v):
    """int64 -> int32 with two's-complement wrap-around (NumPy's int32 arithmetic)."""
    return np.int32(((v + 0x80000000) & 0xFFFFFFFF) - 0x80000000)


@njit(inline="always", error_model="numpy")
def _copysign(m, s):
    """|m| with the sign bit of s (float32)."""
    return _from_bits((_bits(m) & 0x7FFFFFFF) | (_bits(s) & np.int32(-0x80000000)))


@njit(inline="always", error_model="numpy")
def _toward_zero_ulp(r):
    """nextafter(r, 0) for a float32 r (0 stays +0)."""
    if r == 0:
        return f32(0)
    return _from_bits(_bits(r) - 1)


@njit(inline="always", error_model="numpy")
def _pow2(e):
    return np.int64((e + 1023) << 52).view(np.float64)


# ------------------------------------------------------------------ the special-function unit

# The measured tables (`mufu`, 2^23 or 2^24 fp32 patterns, 32-64 MB decoded) are looked up at
# random: from memory, each lookup is a cache miss. Here they are kept compact, as the
# specification stores them: chunks of 64 entries, each four uint64 words (one cache line
# half) - the chunk's first pattern, the smallest step between neighbours, and the 63 steps
# above it as 2-bit fields; an entry is the first pattern + r * step + the sum of the first r
# fields (two popcounts). 8 MB for ex2's two tables, a quarter of the decoded size.

@intrinsic
def _popcount(typingctx, x):
    """llvm.ctpop: the number of set bits of a uint64."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(x), codegen


@njit(inline="always", error_model="numpy")
def _field_sum(v):
    """Sum of the 2-bit fields of the uint64 v."""
    return (np.int64(_popcount(v & np.uint64(0x5555555555555555)))
            + 2 * np.int64(_popcount(v & np.uint64(0xAAAAAAAAAAAAAAAA))))


@njit(inline="always", error_model="numpy")
def _lookup(tab, i):
    """Entry i (a uint32 pattern) of a compact table (see `compact_table`)."""
    c = (i >> 6) * 4
    r = i & 63
    w0 = tab[c + 2]
    if r < 32:
        part = _field_sum(w0 & ((np.uint64(1) << np.uint64(2 * r)) - np.uint64(1)))
    else:
        w1 = tab[c + 3] & ((np.uint64(1) << np.uint64(2 * (r - 32))) - np.uint64(1))
        part = _field_sum(w0) + _field_sum(w1)
    v = np.int64(tab[c]) + r * np.int64(tab[c + 1]) + part
    return np.uint32(v & 0xFFFFFFFF)


def compact_table(bits):
    """The compact form of a table of uint32 patterns (its length a multiple of 64): per chunk of
    64 entries [first pattern, smallest step (two's complement), steps 1-32 - smallest as 2-bit
    fields, steps 33-63 likewise]. ValueError if some step exceeds the smallest by more than 3."""
    v = bits.astype(np.int64).reshape(-1, 64)
    steps = np.diff(v, axis=1)                                  # 63 per chunk
    low = steps.min(axis=1)
    d = (steps - low[:, None]).astype(np.uint64)
    if d.size and d.max() > 3:
        raise ValueError("table steps do not fit 2 bits")
    d = np.concatenate([d, np.zeros((d.shape[0], 1), np.uint64)], axis=1)     # 64 fields
    shifts = (2 * np.arange(32, dtype=np.uint64))[None, :]
    w0 = np.bitwise_or.reduce(d[:, :32] << shifts, axis=1)
    w1 = np.bitwise_or.reduce(d[:, 32:] << shifts, axis=1)
    out = np.empty((v.shape[0], 4), np.uint64)
    out[:, 0] = v[:, 0].astype(np.uint64)
    out[:, 1] = low.astype(np.uint64)          # two's complement for a negative step
    out[:, 2], out[:, 3] = w0, w1
    return out.reshape(-1)


@njit(cache=True, error_model="numpy")
def ex2(r, tab):
    """`mufu.ex2` for one value (tab: `mufu._ex2_table()`, compact)."""
    a = abs(r)
    if a < _TINY:
        a = f32(0)
    neg = r < 0
    out_of_range = not (a < f32(200.0))
    fixed = np.int64(np.floor((f32(0) if out_of_range else a) * f32(2.0 ** 23)))
    whole = fixed >> 23
    mant = _lookup(tab, (fixed & (2 ** 23 - 1)) + (np.int64(1 << 23) if neg else np.int64(0)))
    scale = _pow2(-whole if neg else whole)
    out = f32(np.float64(np.uint32(mant).view(np.float32)) * scale)
    if out_of_range:
        out = f32(0) if neg else _INF
    if r != r:
        out = r
    if out < _TINY:
        out = f32(0)
    return out


@njit(cache=True, error_model="numpy")
def rcp(x, tab):
    """`mufu.rcp` for one value (tab: `mufu._table("rcp")`, compact)."""
    if abs(x) < _TINY:
        x = _copysign(f32(0), x)
    bits = np.uint32(_bits(x))
    exponent = np.int64((bits >> 23) & 0xFF) - 127
    mant = _lookup(tab, np.int64(bits & 0x7FFFFF)).view(np.float32)
    out = _copysign(f32(np.float64(mant) * _pow2(-exponent)), x)
    if x == 0 or not np.isfinite(x):
        out = f32(1) / x
    if abs(out) < _TINY:
        out = _copysign(f32(0), out)
    return out


@njit(cache=True, error_model="numpy")
def rsqrt(x, tab):
    """`mufu.rsqrt` for one value (tab: `mufu._table("rsqrt")`, compact)."""
    sub = x > 0 and x < _TINY
    xs = x * f32(2.0 ** 24) if sub else x
    bits = np.uint32(_bits(xs))
    exponent = np.int64((bits >> 23) & 0xFF) - 127
    odd = exponent & 1
    mant = _lookup(tab, (odd << 23) | np.int64(bits & 0x7FFFFF)).view(np.float32)
    out = np.float64(mant) * _pow2(-((exponent - odd) // 2))
    if sub:
        out = out * 2.0 ** 12
    res = f32(out)
    if not (xs > 0) or not np.isfinite(xs):
        res = f32(1.0 / np.sqrt(np.float64(x)))
    return res


# ----------------------------------------------------------------------- libdevice functions

@njit(inline="always", error_model="numpy")
def _fma32_rm(a, b, c):
    """`libdevice.fma32_rm`: exact in float64, rounded toward -inf (the value is positive)."""
    s = np.float64(a) * np.float64(b) + np.float64(c)
    r = f32(s)
    if np.float64(r) > s:
        r = _from_bits(_bits(r) - 1)
    return r


@njit(cache=True, error_model="numpy")
def expf(x, t_ex2):
    t = fma32(x, _c(0x3BBB989D), f32(0.5))
    t = min(max(t, f32(0)), f32(1))
    if x != x:
        t = f32(0)
    j = _fma32_rm(t, _c(0x437C0000), _c(0x4B400001))
    k = j + _c(0xCB40007F)
    r = fma32(x, _c(0x3FB8AA3B), -k)
    r = fma32(x, _c(0x32A57060), r)
    scale = np.uint32(np.uint32(_bits(j)) << np.uint32(23)).view(np.float32)
    return ex2(r, t_ex2) * scale


_LOG_POLY = (0xBDF8CDCC, 0x3E0F2955, 0xBE2AD8B9, 0x3E4CED0B, 0xBE7FFF22, 0x3EAAAA78, 0xBF000000)


@njit(cache=True, error_model="numpy")
def logf(x):
    small = x < _c(0x00800000)
    x1 = x * _c(0x4B000000) if small else x
    bias = _c(0xC1B80000) if small else f32(0)
    bits = _bits(x1)
    e_bits = _wrap32(np.int64(bits) - 1059760811) & np.int32(-8388608)
    m = _from_bits(_wrap32(np.int64(bits) - np.int64(e_bits)))
    e = fma32(f32(e_bits), _c(0x34000000), bias)
    f = m + _c(0xBF800000)
    p = fma32(_c(0xBE055027), f, _c(0x3E1039F6))
    p = fma32(p, f, _c(0xBDF8CDCC))
    p = fma32(p, f, _c(0x3E0F2955))
    p = fma32(p, f, _c(0xBE2AD8B9))
    p = fma32(p, f, _c(0x3E4CED0B))
    p = fma32(p, f, _c(0xBE7FFF22))
    p = fma32(p, f, _c(0x3EAAAA78))
    p = fma32(p, f, _c(0xBF000000))
    r = fma32(f * p, f, f)
    r = fma32(e, _c(0x3F317218), r)
    if not (np.uint32(bits) < np.uint32(0x7F800000)):      # inf, NaN, negative
        r = fma32(x1, _INF, _INF)
    if x1 == 0:
        r = -_INF
    return r


@njit(cache=True, error_model="numpy")
def tanhf(x, t_ex2, t_rcp):
    ax = abs(x)
    e = ex2(ax * _c(0x4038AA3B), t_ex2)
    big = fma32(rcp(e + f32(1), t_rcp), f32(-2), f32(1))
    if ax >= _c(0x41102CB4):
        big = f32(1)
    big = _copysign(big, x)
    x2 = x * x
    p = fma32(_c(0x3C80F082), x2, _c(0xBD563CAE))
    p = fma32(p, x2, _c(0x3E085941))
    p = fma32(p, x2, _c(0xBEAAA9ED))
    p = fma32(p, x2, f32(0))
    small = fma32(p, x, x)
    return big if ax >= _c(0x3F19999A) else small


@njit(cache=True, error_model="numpy")
def erff(x, t_ex2):
    ax = abs(x)
    big = ax >= _c(0x3F8060FE)
    if big:
        t = ax
        p = fma32(_c(0x38EB4C3A), t, _c(0xBAAE005B))
        p = fma32(p, t, _c(0x3C09919F))
        p = fma32(p, t, _c(0xBD24D99A))
        p = fma32(p, t, _c(0x3E235519))
        p = fma32(p, t, _c(0x3F69B4F9))
        p = fma32(p, t, _c(0x3F210A14))
        s = -ax
    else:
        t = x * x
        p = fma32(_c(0x38B1E96A), t, _c(0xBA574D20))
        p = fma32(p, t, _c(0x3BAAD5EA))
        p = fma32(p, t, _c(0xBCDC1BE7))
        p = fma32(p, t, _c(0x3DE718AF))
        p = fma32(p, t, _c(0xBEC093AC))
        p = fma32(p, t, _c(0x3E0375D3))
        s = x
    r = fma32(p, s, s)
    if big:
        return _copysign(f32(1) - ex2(r, t_ex2), x)
    return r


@njit(inline="always", error_model="numpy")
def _add_rz32(a, b):
    """`libdevice.add_rz32`: float32 a + b rounded toward zero."""
    a = np.float64(a)
    b = np.float64(b)
    s = a + b
    bb = s - a
    err = (a - (s - bb)) + (b - bb)
    r = f32(s)
    rd = np.float64(r)
    away = (abs(rd) > abs(s)) or (rd == s and err != 0 and ((err > 0) != (s > 0)))
    if away and np.isfinite(s):
        return _toward_zero_ulp(r)
    return r


@njit(cache=True, error_model="numpy")
def log1pf(x):
    u = _add_rz32(x, f32(1))
    e_bits = _wrap32(np.int64(_bits(u)) - 1061158912) & np.int32(-8388608)
    m = _from_bits(_wrap32(np.int64(_bits(x)) - np.int64(e_bits)))
    s = _from_bits(_wrap32(0x40800000 - np.int64(e_bits)))
    f = fma32(f32(0.25), s, f32(-1)) + m
    i = f32(e_bits) * _c(0x34000000)
    p = fma32(_c(0xBD39BF78), f, _c(0x3DD80012))
    p = fma32(p, f, _c(0xBE0778E0))
    p = fma32(p, f, _c(0x3E146475))
    p = fma32(p, f, _c(0xBE2A68DD))
    p = fma32(p, f, _c(0x3E4CAF9E))
    p = fma32(p, f, _c(0xBE800042))
    p = fma32(p, f, _c(0x3EAAAAE6))
    p = fma32(p, f, _c(0xBF000000))
    r = fma32(f * p, f, f)
    r = fma32(i, _c(0x3F317218), r)
    bits = _bits(x)
    special = np.uint32(bits) >= np.uint32(0x7F800000)       # negative, inf or NaN
    if special and not (bits < np.int32(-1082130431)):      # x < -1, +inf, NaN
        r = fma32(x, _INF, _INF)
    if special and x == 0:
        r = f32(-0.0)
    return r


# ------------------------------------------------------------- the backend's fp32 formulas
# (simprec/backend/numpy_backend.py, whose comments cite torch's CUDA kernels)

_ONE, _HALF, _ZERO = f32(1.0), f32(0.5), f32(0.0)
_SQRT1_2 = f32(0.7071067811865476)
_GELU_TANH_BETA = f32(0.7978845608028654)
_GELU_TANH_KAPPA = f32(0.044715)
_GELU_TANH_3KAPPA = f32(3.0) * _GELU_TANH_KAPPA
_GELU_PDF_BETA = f32(0.3989422804014327)

# op name -> (code, arity): the code selects the formula in `_op`
OPS = {
    "add": (0, 2), "sub": (1, 2), "mul": (2, 2), "div": (3, 2), "neg": (4, 1),
    "add_scaled": (5, 2), "fma": (6, 3), "mul_scalar": (7, 1), "add_scalar": (8, 1),
    "rsub_scalar": (9, 1), "div_scalar": (10, 1), "rdiv_scalar": (11, 1), "abs": (12, 1),
    "reciprocal": (13, 1), "square": (14, 1), "exp": (15, 1), "log": (16, 1), "sqrt": (17, 1),
    "rsqrt": (18, 1), "tanh": (19, 1), "sigmoid": (20, 1), "softplus": (21, 1), "erf": (22, 1),
    "relu": (23, 1), "gelu": (24, 1), "gelu_tanh": (25, 1), "silu": (26, 1),
    "tanh_backward": (27, 2), "sigmoid_backward": (28, 2), "gelu_backward": (29, 2),
    "gelu_tanh_backward": (30, 2), "silu_backward": (31, 2), "softplus_backward": (32, 2),
    "log1p": (33, 1),
}


@njit(inline="always", error_model="numpy")
def _op(OP, x, y, z, p0, p1, t_ex2, t_rcp, t_rsq):
    """One value of op OP (a compile-time constant): x, y, z the operands, p0, p1 the op's
    float32 parameters (scalar, alpha, beta, threshold)."""
    if OP == 0:
        return x + y
    if OP == 1:
        return x - y
    if OP == 2:
        return x * y
    if OP == 3:
        return x / y
    if OP == 4:
        return -x
    if OP == 5:                                   # add_scaled: fma(alpha, y, x)
        return fma32(p0, y, x)
    if OP == 6:
        return fma32(x, y, z)
    if OP == 7:
        return x * p0
    if OP == 8:
        return x + p0
    if OP == 9:
        return p0 - x
    if OP == 10:                                  # x * (1 / scalar), the reciprocal in fp32
        return x * (_ONE / p0)
    if OP == 11:
        return p0 / x
    if OP == 12:
        return abs(x)
    if OP == 13:
        return _ONE / x
    if OP == 14:
        return x * x
    if OP == 15:
        return expf(x, t_ex2)
    if OP == 16:
        return logf(x)
    if OP == 17:
        return np.sqrt(x)
    if OP == 18:
        return rsqrt(x, t_rsq)
    if OP == 19:
        return tanhf(x, t_ex2, t_rcp)
    if OP == 20:                                  # sigmoid
        return _ONE / (_ONE + expf(-x, t_ex2))
    if OP == 21:                                  # softplus [beta, threshold]
        xb = x * p0
        if xb > p1:
            return x
        return log1pf(expf(xb, t_ex2)) / p0
    if OP == 22:
        return erff(x, t_ex2)
    if OP == 23:                                  # relu: NaN stays, -0 -> +0
        return (x if x > _ZERO or x != x else _ZERO) + _ZERO
    if OP == 24:                                  # gelu
        return x * _HALF * (_ONE + erff(x * _SQRT1_2, t_ex2))
    if OP == 25:                                  # gelu_tanh
        inner = _GELU_TANH_BETA * fma32(_GELU_TANH_KAPPA, x * x * x, x)
        return _HALF * x * (_ONE + tanhf(inner, t_ex2, t_rcp))
    if OP == 26:                                  # silu
        return x / (_ONE + expf(-x, t_ex2))
    if OP == 27:                                  # tanh_backward(dy, y)
        return x * fma32(-y, y, _ONE)
    if OP == 28:                                  # sigmoid_backward(dy, y)
        return x * (_ONE - y) * y
    if OP == 29:                                  # gelu_backward(dy, x)
        cdf = _HALF * (_ONE + erff(y * _SQRT1_2, t_ex2))
        pdf = expf(f32(-0.5) * y * y, t_ex2) * _GELU_PDF_BETA
        return x * (cdf + y * pdf)
    if OP == 30:                                  # gelu_tanh_backward(dy, x)
        x_sq = y * y
        inner = _GELU_TANH_BETA * fma32(_GELU_TANH_KAPPA, x_sq * y, y)
        tanh_inner = tanhf(inner, t_ex2, t_rcp)
        left = _HALF * y
        left_derivative = _HALF * (_ONE + tanh_inner)
        tanh_derivative = fma32(-tanh_inner, tanh_inner, _ONE)
        inner_derivative = _GELU_TANH_BETA * fma32(_GELU_TANH_3KAPPA, x_sq, _ONE)
        right_derivative = left * tanh_derivative * inner_derivative
        return x * (left_derivative + right_derivative)
    if OP == 31:                                  # silu_backward(dy, x)
        s = _ONE / (_ONE + expf(-y, t_ex2))
        return x * s * fma32(y, _ONE - s, _ONE)
    if OP == 32:                                  # softplus_backward(dy, x) [beta, threshold]
        xb = y * p0
        if xb > p1:
            return x
        e = expf(xb, t_ex2)
        return x * e / (e + _ONE)
    return log1pf(x)                              # 33


# ------------------------------------------------------------------------- output rounding

@njit(inline="always", error_model="numpy")
def _ubits(x):
    return np.float32(x).view(np.uint32)


@njit(inline="always", error_model="numpy")
def _ufrom_bits(u):
    return np.uint32(u).view(np.float32)


_U = np.uint32


@njit(inline="always", error_model="numpy")
def _round(RND, v):
    """v rounded to nearest-even into fp32 (RND 0: as is), fp16 (1) or bf16 (2).

    Branch-free uint32 arithmetic, each step cast back to uint32 (numba widens integer
    arithmetic to 64 bits, which halves the vector width), so that the loops around it
    vectorise: 0.2 ns a value instead of 0.7."""
    if RND == 0:
        return v
    b = _ubits(v)
    mag = _U(b & _U(0x7FFFFFFF))
    if RND == 2:                                  # bf16: 16 bits off, a carry can reach inf
        r = _U(_U(_U(mag + _U(0x7FFF)) + _U(_U(mag >> _U(16)) & _U(1))) & _U(0xFFFF0000))
    else:                                         # fp16 normal range: 13 bits off
        r = _U(_U(_U(mag + _U(0xFFF)) + _U(_U(mag >> _U(13)) & _U(1))) & _U(0xFFFFE000))
        r = _U(0x7F800000) if r > _U(0x477FE000) else r          # beyond 65504: inf
        # below 2^-14: the subnormal grid 2^-24, where 0.5 + |v| rounds once, ties to even
        sub = _ubits((_ufrom_bits(mag) + f32(0.5)) - f32(0.5))
        r = r if mag >= _U(0x38800000) else sub
    r = mag if mag > _U(0x7F800000) else r        # NaN: as it came
    return _ufrom_bits(_U(r | _U(b & _U(0x80000000))))


# ----------------------------------------------------------------------------------- kernels

_ROUNDING = {None: 0, fp32: 0, fp16: 1, bf16: 2}


_KERNELS: dict = {}


def _kernel(op, rnd):
    """The kernel of op code `op` rounding by `rnd` (both compile-time constants: each kernel
    holds one formula, compiled on first use and cached on disk):
    kernel(x, sx, y, sy, z, sz, out, p0, p1, t_ex2, t_rcp, t_rsq) sets out[i] = the rounded
    op(x[i], y[i], z[i]), stride 0 for an operand broadcast from one value, else 1."""
    k = _KERNELS.get((op, rnd))
    if k is None:
        k = _KERNELS[op, rnd] = _make_kernel(op, rnd)
    return k


def _make_kernel(OP, RND):
    @njit(cache=True, boundscheck=False, error_model="numpy")
    def kernel(x, sx, y, sy, z, sz, out, p0, p1, t_ex2, t_rcp, t_rsq):
        for i in range(out.size):
            out[i] = _round(RND, _op(OP, x[i * sx], y[i * sy], z[i * sz], p0, p1, t_ex2, t_rcp,
                                     t_rsq))
    return kernel


_NO_TABLE = np.zeros(4, np.uint64)
_TABLES = {}


def _tables(code):
    """The special-function unit's tables an op reads (decoded on first use)."""
    if not _TABLES:
        _TABLES.update(_compact_tables())
    ex2 = _TABLES["ex2"] if code in _USES_EX2 else _NO_TABLE
    rcp = _TABLES["rcp"] if code in _USES_RCP else _NO_TABLE
    rsq = _TABLES["rsqrt"] if code == 18 else _NO_TABLE
    return ex2, rcp, rsq


def _compact_tables():
    """The special-function unit's tables, compact, made in one compiled pass over the 2-bit
    deltas stored in `mufu_tables.npz` (the same arrays as `compact_table` of the decoded
    tables, without decoding 50 million patterns first: seconds at every start otherwise)."""
    with np.load(_mufu._TABLES) as npz:
        def compact(name):
            first, low, n = (int(v) for v in npz[name + "_meta"])
            return _compact_packed(npz[name], first, low, n)
        # ex2's two tables end to end; each a whole number of 64-entry chunks
        return {"ex2": np.concatenate([compact("ex2_pos"), compact("ex2_neg")]),
                "rcp": compact("rcp"), "rsqrt": compact("rsqrt")}


@njit(cache=True, boundscheck=False)
def _compact_packed(packed, first, low, n):
    """`compact_table` of the table `mufu._table` decodes from 2-bit deltas `packed` (entry 0 =
    first, entry i = entry i-1 + low + delta i-1, as uint32), n a multiple of 64."""
    out = np.empty(n // 64 * 4, np.uint64)
    steps = np.empty(63, np.int64)
    cur = np.int64(first) & 0xFFFFFFFF
    k = 0
    for chunk in range(n // 64):
        out[4 * chunk] = np.uint64(cur)
        smallest = np.int64(1) << 40
        for i in range(63):
            nxt = (cur + low + ((np.int64(packed[k >> 2]) >> (2 * (k & 3))) & 3)) & 0xFFFFFFFF
            k += 1
            steps[i] = nxt - cur
            smallest = min(smallest, steps[i])
            cur = nxt
        w0 = np.uint64(0)
        w1 = np.uint64(0)
        for i in range(63):
            d = steps[i] - smallest
            if d > 3:
                raise ValueError("table steps do not fit 2 bits")
            if i < 32:
                w0 |= np.uint64(d) << np.uint64(2 * i)
            else:
                w1 |= np.uint64(d) << np.uint64(2 * (i - 32))
        out[4 * chunk + 1] = np.uint64(smallest & 0xFFFFFFFFFFFFFFFF)
        out[4 * chunk + 2] = w0
        out[4 * chunk + 3] = w1
        if k < n - 1:          # the step into the next chunk
            cur = (cur + low + ((np.int64(packed[k >> 2]) >> (2 * (k & 3))) & 3)) & 0xFFFFFFFF
            k += 1
    return out


_USES_EX2 = {15, 19, 20, 21, 22, 24, 25, 26, 29, 30, 31, 32}
_USES_RCP = {19, 25, 30}
_PARAMS = {  # op -> names of its float32 parameters (p0, p1) and their defaults
    "add_scaled": (("alpha", None),), "mul_scalar": (("scalar", None),),
    "add_scalar": (("scalar", None),), "rsub_scalar": (("scalar", None),),
    "div_scalar": (("scalar", None),), "rdiv_scalar": (("scalar", None),),
    "softplus": (("beta", 1.0), ("threshold", 20.0)),
    "softplus_backward": (("beta", 1.0), ("threshold", 20.0)),
}


def _operand(x, shape):
    """(flat float32 array, stride 0 or 1) for an operand of the result's shape, or None."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        return None
    if x.size == 1:
        return x.reshape(1), 0
    if x.shape != shape or not x.flags.c_contiguous:
        return None
    return x.reshape(-1), 1


def elementwise(op, xs, fmt, params):
    """`NumpyBackend.elementwise(op, *xs, fmt=fmt, **params)` in one compiled pass, or None
    where this module does not cover the call."""
    spec = OPS.get(op)
    if spec is None or len(xs) != spec[1] or not (fmt is None or fmt in _ROUNDING):
        return None
    code = spec[0]
    try:
        shape = np.broadcast_shapes(*(np.shape(x) for x in xs))
    except ValueError:
        return None
    ops = [_operand(x, shape) for x in xs]
    if not shape or any(o is None for o in ops):
        return None
    names = _PARAMS.get(op, ())
    if set(params) - {n for n, _ in names}:
        return None
    p = [f32(0), f32(0)]
    for i, (name, default) in enumerate(names):
        v = params.get(name, default)
        if v is None:
            return None
        p[i] = f32(v)
    ops += [(_NO_FLOAT, 0)] * (3 - len(ops))
    (x, sx), (y, sy), (z, sz) = ops
    out = np.empty(shape, np.float32)
    _kernel(code, _ROUNDING[fmt])(x, sx, y, sy, z, sz, out.reshape(-1), p[0], p[1],
            *_tables(code))
    return out


_NO_FLOAT = np.zeros(1, np.float32)


def unary(op, x):
    """A libdevice / special-function-unit function of a float32 array (or scalar), unrounded;
    None when x is not float32."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        return None
    xc = np.ascontiguousarray(x)
    out = np.empty(x.shape, np.float32)
    code = OPS[op][0]
    _kernel(code, 0)(xc.reshape(-1), 1, _NO_FLOAT, 0, _NO_FLOAT, 0, out.reshape(-1), f32(0),
            f32(0), *_tables(code))
    return out


def fma(a, b, c):
    """`libdevice.fma32` in one pass, or None where an operand is not float32 or broadcasts
    other than a scalar against arrays."""
    arrays = [np.asarray(v) for v in (a, b, c)]
    if any(v.dtype != np.float32 for v in arrays):
        return None
    shape = np.broadcast_shapes(*(v.shape for v in arrays))
    ops = [_operand(v, shape) for v in arrays]
    if any(o is None for o in ops):
        return None
    out = np.empty(shape, np.float32)
    (x, sx), (y, sy), (z, sz) = ops
    _kernel(6, 0)(x, sx, y, sy, z, sz, out.reshape(-1), f32(0), f32(0), _NO_TABLE, _NO_TABLE,
            _NO_TABLE)
    return out


def mufu(name, x):
    """ex2, rcp or rsqrt of a float32 array, as the special-function unit computes them."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        return None
    return _MUFU[name](np.ascontiguousarray(x)).reshape(x.shape)   # 0-d stays 0-d


@njit(cache=True, boundscheck=False, error_model="numpy")
def _ex2_kernel(x, out, tab):
    for i in range(x.size):
        out[i] = ex2(x[i], tab)


@njit(cache=True, boundscheck=False, error_model="numpy")
def _rcp_kernel(x, out, tab):
    for i in range(x.size):
        out[i] = rcp(x[i], tab)


@njit(cache=True, boundscheck=False, error_model="numpy")
def _rsqrt_kernel(x, out, tab):
    for i in range(x.size):
        out[i] = rsqrt(x[i], tab)


def _run_mufu(kernel, table):
    def run(x):
        out = np.empty(x.shape, np.float32)
        kernel(x.reshape(-1), out.reshape(-1), table())
        return out
    return run


def _table_of(name):
    def get():
        _tables(-1)
        return _TABLES[name]
    return get


_MUFU = {"ex2": _run_mufu(_ex2_kernel, _table_of("ex2")),
         "rcp": _run_mufu(_rcp_kernel, _table_of("rcp")),
         "rsqrt": _run_mufu(_rsqrt_kernel, _table_of("rsqrt"))}
