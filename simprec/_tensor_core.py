"""Vectorised, bit-exact model of NVIDIA tensor-core GEMM accumulation (sm_70 / sm_80 / sm_90).

The model (Khattak & Mikaitis, "Accurate Models of NVIDIA Tensor Cores", 2025; Xie et al.,
"MMA-Sim", 2025; checked against H200 results, see docs/fidelity.md) walks K in increasing
order in blocks of `block` products, starting from the fp32 accumulator c. One block computes
c + sum_i a_i*b_i like this:

* every product is exact and *not normalised*: its exponent is e_a + e_b, where an input that
  is subnormal in its format counts with the format's minimum exponent, so the product's
  significand lies in [0, 4);
* c (its fp32 exponent; -126 if subnormal) and the products are aligned to the largest exponent
  E among the *nonzero* terms (on sm_90 E is at least -133), and each is truncated toward zero
  to a multiple of u = 2^(E - frac_bits);
* those multiples of u are summed exactly; the sum is truncated toward zero (RZ) to fp32,
  fp32 subnormals included (multiples of 2^-149), and a magnitude >= 2^128 becomes +-inf;
* a result of zero (an exact zero sum, or a tiny sum truncated to zero) is +0;
* NaN and infinities follow IEEE rules: a NaN term or 0 * inf gives NaN, infinities of both
  signs give NaN, otherwise an infinite term's sign wins; the NaN is 0x7FFFFFFF.

`tc_accumulate` computes that with whole-array NumPy operations. The integer-by-integer version
does ~1e7 multiply-adds/s; three observations make this one fast:

1. E for each (row, column, block) is a (max, +) product of the exponent matrices. A block has
   at most 16 terms, so sum_i 2^(8*e_i) lies in [2^(8E), 2^(8E+4)], and E is the float64
   exponent field of one ordinary matmul, shifted right by 3. (Rounding in the matmul cannot
   leave that interval: the terms are nonnegative.)
2. A product of two fp16 (or moderate bf16) values is exact in float32, and so is its scaling
   by the power of two 1/u. Truncating toward zero is the float -> int32 cast. Each truncated
   term is below 2^27, so the 16 of a block sum exactly in int32.
3. The per-product work, over a cache-sized tile of the output, is three streaming NumPy passes
   per k: the outer product a_k b_k (einsum), the scaling, the truncating int32 accumulation.
   Per block, a dozen passes over the tile find E, add c and round the sum to fp32.

bf16 operands whose products leave [2^-100, 2^122) take a float64 path that needs no range
assumption (`_step_general`); special values (NaN, inf) are patched in per block (`_specials`).
"""

from __future__ import annotations

import numpy as np

from . import _fast

# arch -> (products per block, fractional bits kept below the alignment exponent, lowest
# alignment exponent). The floor -133 is Khattak & Mikaitis' H100 `min_exp_limit`, confirmed on
# the H200 (tiny bf16 products; -134 fits too, -135 and -132 do not); their V100 model has
# none, and none is known for the A100.
ARCHS = {"sm70": (4, 23, None), "sm80": (8, 24, None), "sm90": (16, 25, -133)}

# The NaN the tensor core writes: the canonical NVIDIA NaN (MMA-Sim returns the same pattern).
NAN32 = np.uint32(0x7FFFFFFF).view(np.float32)

_TILE = 1 << 16        # output elements per tile (float32: 256 KiB, stays in L2)
_ABSENT = -(1 << 20)   # exponent of an absent term in the general path
_MASK24 = np.int64(~((1 << 29) - 1))   # keeps the sign, exponent and 23 fraction bits of a float64


def _fields(x32: np.ndarray) -> np.ndarray:
    """Biased exponent field (0..255) of float32 values, int32."""
    return (x32.view(np.int32) >> 23) & 0xFF


def _exponents(x32: np.ndarray, emin: int) -> np.ndarray:
    """Exponent of each element as the tensor core counts it: floor(log2|x|) for values that
    are normal in the input format, `emin` (the format's minimum exponent) for its subnormals,
    whose significand is then below 1. int32; meaningless for zeros."""
    return np.maximum(_fields(x32) - 127, emin)


def _pow2_64(e: np.ndarray) -> np.ndarray:
    """2.0**e as float64, integer e in [-1022, 1023]."""
    return ((e.astype(np.int64) + 1023) << 52).view(np.float64)


def _small_matmul(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x @ y in row chunks of at most 2^19 multiply-adds per BLAS call.

    OpenBLAS runs larger products on several threads; on a busy machine one such hand-off
    costs ~10 ms, a hundred times the arithmetic of these thin (K = block) products.
    """
    k, n = x.shape[-1], y.shape[-1]
    rows = max(1, (1 << 19) // max(1, k * n))
    m = x.shape[-2]
    if rows >= m:
        return x @ y
    return np.concatenate([x[..., i:i + rows, :] @ y for i in range(0, m, rows)], axis=-2)


def _rz24(x: np.ndarray) -> np.ndarray:
    """Truncate float64 values toward zero to 24 significant bits (clears 29 fraction bits)."""
    return (x.view(np.int64) & _MASK24).view(np.float64)


def round_rz_f32(x: np.ndarray) -> np.ndarray:
    """Round float64 values toward zero to float32, subnormals included; |x| >= 2^128 -> inf."""
    tiny = np.abs(x) < 2.0 ** -126
    # + 0.0: a negative value truncated to zero is +0 (measured on the H200)
    y = np.where(tiny, np.trunc(x * 2.0 ** 149) * 2.0 ** -149 + 0.0, _rz24(x))
    with np.errstate(over="ignore"):
        return y.astype(np.float32)      # exact, except >= 2^128 -> inf


class _Operands:
    """What every tile needs: a transposed (row k contiguous), b, exponents, special values."""

    def __init__(self, a, b, emin, fast):
        # a: (B, M, K), b: (B, K, N) float32
        self.special = not (np.isfinite(a).all() and np.isfinite(b).all())
        if self.special:                      # the finite computation sees 0 for inf/NaN
            self.a_raw, self.b_raw = a, b
            a = np.where(np.isfinite(a), a, np.float32(0))
            b = np.where(np.isfinite(b), b, np.float32(0))
        self.aT = np.ascontiguousarray(np.swapaxes(a, -1, -2))   # (B, K, M)
        self.b = np.ascontiguousarray(b)                          # (B, K, N)
        ea, eb = _exponents(a, emin), _exponents(b, emin)
        self.fast = fast(ea[a != 0], eb[b != 0])
        if self.fast:
            # 2^(8 e_a) and 2^(8 e_b - 7): a block's matmul is 2^(8(E-1) + 1) * r, r in [1, 16],
            # so its float64 exponent field is 8(E + 127) + {0..4} and `field >> 3` = E + 127,
            # the biased fp32 exponent of 2^E (0 where every product is zero).
            self.pa = np.where(a != 0, _pow2_64(8 * ea), 0.0)
            self.pb = np.where(b != 0, _pow2_64(8 * eb - 7), 0.0)
        else:
            self.ea = np.where(a != 0, ea, _ABSENT)
            self.eb = np.where(b != 0, eb, _ABSENT)
            self.aT64, self.b64 = self.aT.astype(np.float64), self.b.astype(np.float64)


def _fast_range(ea, eb) -> bool:
    """Whether every nonzero product lies in [2^-100, 2^122): then products, their scaled
    values and 2^(8e) stay inside the float32 / float64 ranges the fast path relies on.
    Always true for fp16 (products in [2^-48, 2^32])."""
    if ea.size == 0 or eb.size == 0:
        return True
    return int(ea.min()) + int(eb.min()) >= -100 and int(ea.max()) + int(eb.max()) <= 120


def tc_accumulate(a, b, c, *, emin: int, arch: str) -> np.ndarray:
    """fp32 accumulator of the tensor-core GEMM c + a @ b (see the module docstring).

    a (B, M, K), b (B, K, N): float32 arrays holding fp16 or bf16 values (significands of at
    most 11 bits); `emin` is their format's minimum exponent (fp16 -14, bf16 -126); c (B, M, N)
    float32, the accumulator the first block starts from. Returns float32 (B, M, N).
    """
    fast = _fast.kernels("tensor_core")
    if fast is not None:                      # the same bits, compiled (simprec._fast)
        return fast.tc_accumulate(a, b, c, emin=emin, arch=arch)
    block, frac, floor = ARCHS[arch]
    B, M, K = a.shape
    N = b.shape[-1]
    acc = np.array(c, dtype=np.float32, copy=True)
    if K == 0 or acc.size == 0:
        return acc
    ops = _Operands(a, b, emin, _fast_range)
    # Can the accumulator overflow? (Never for fp16 inputs; then no per-block isfinite pass.)
    with np.errstate(over="ignore"):
        bound = (float(np.abs(ops.aT).max(initial=0)) * float(np.abs(ops.b).max(initial=0)) * K
                 + float(np.abs(acc).max(initial=0)))
    ops.may_overflow = not bound < 2.0 ** 127
    if M * N >= _TILE:
        bt, mt = 1, max(1, _TILE // N)
    else:
        bt, mt = max(1, _TILE // (M * N)), M
    with np.errstate(invalid="ignore", over="ignore"):
        for b0 in range(0, B, bt):
            for m0 in range(0, M, mt):
                bs, ms = slice(b0, b0 + bt), slice(m0, m0 + mt)
                acc[bs, ms] = _tile(ops, acc[bs, ms], bs, ms, block, frac, floor)
    return acc


def _tile(ops, acc, bs, ms, block, frac, floor):
    """Run every K block over one tile of the output; returns the tile's new accumulator."""
    K = ops.aT.shape[1]
    if ops.fast:
        aT, bm = ops.aT[bs, :, ms], ops.b[bs]
    else:
        aT, bm = ops.aT64[bs, :, ms], ops.b64[bs]
    q = np.empty(acc.shape, dtype=aT.dtype)
    si = np.empty(acc.shape, dtype=np.int32)
    for j0 in range(0, K, block):
        j1 = min(K, j0 + block)
        c_in = acc
        special = ops.special or (ops.may_overflow and not np.isfinite(acc).all())
        if special:
            acc = np.where(np.isfinite(acc), acc, np.float32(0))
        step = _step_fast if ops.fast else _step_general
        res = step(ops, acc, aT, bm, q, si, bs, ms, j0, j1, frac, floor)
        if special:
            res = _specials(ops, res, c_in, bs, ms, j0, j1)
        acc = res
    return acc


def _sum_products(aT, bm, w, q, si, j0, j1):
    """si = sum over k in [j0, j1) of trunc(a_k b_k w): each product exact, scaled by the power
    of two w = 1/u exactly, truncated toward zero by the cast to int32, summed exactly."""
    for k in range(j0, j1):
        np.einsum("bm,bn->bmn", aT[:, k, :], bm[:, k, :], out=q)   # outer product: exact
        np.multiply(q, w, out=q)
        if k == j0:
            np.copyto(si, q, casting="unsafe")
        else:
            np.add(si, q, out=si, dtype=np.int32, casting="unsafe")


def _step_fast(ops, acc, aT, bm, q, si, bs, ms, j0, j1, frac, floor):
    """One block, float32 path (every nonzero product in [2^-100, 2^122)); E >= -100 wherever
    there are products, so the arch's floor (<= -100) never applies."""
    s = _small_matmul(ops.pa[bs, ms, j0:j1], ops.pb[bs, j0:j1, :])
    ep = (s.view(np.int64) >> 55).astype(np.int32)         # E_products + 127, or 0 if none
    ec = (acc.view(np.int32) & 0x7FFFFFFF) >> 23            # E_c + 127 (0 if c is 0 or tiny)
    e = np.maximum(ep, ec)                                  # E + 127
    # E < -100 only where there are no products (their exponents are >= -100): the result is
    # then c itself, handled below; clamp so that the powers of two stay normal floats.
    low = e.min() < 27
    if low:
        lowmask = e < 27
        e = np.maximum(e, 27)
    w = ((frac + 254 - e) << 23).view(np.float32)          # 2^(frac - E) = 1/u
    _sum_products(aT, bm, w, q, si, j0, j1)
    ct = np.trunc(acc * w)                                  # c aligned: exact, |ct| < 2^26
    x = si.astype(np.float64)
    x += ct                                                 # exact: |x| < 2^32
    y = _rz24(x).astype(np.float32)                         # RZ to fp32, in units of u
    y /= w                                                  # * u: exact, >= 2^-125, or inf
    if low:
        y = np.where(lowmask, acc + np.float32(0), y)       # c alone (-0 + 0 = +0)
    return y


def _step_general(ops, acc, aT, bm, q, si, bs, ms, j0, j1, frac, floor):
    """One block, float64 path without range assumptions (bf16 with far-apart exponents)."""
    ep = _max_plus(ops.ea[bs, ms, j0:j1], ops.eb[bs, j0:j1, :])
    ec = np.where(acc != 0, _exponents(acc, -126), _ABSENT)
    e = np.maximum(ep, ec)
    e = np.where(e == _ABSENT, 0, e)                        # all terms zero: any E will do
    if floor is not None:
        e = np.maximum(e, floor)
    w = _pow2_64(frac - e)
    _sum_products(aT, bm, w, q, si, j0, j1)
    x = si + np.trunc(acc * w)                              # exact: |x| < 2^32
    return round_rz_f32(x * _pow2_64(e - frac))


def _max_plus(ea, eb):
    """E[b, m, n] = max_k ea[b, m, k] + eb[b, k, n] (_ABSENT-aware), any exponent range.

    The 2^(5e) sum trick (cf. point 1 of the module docstring: 16 terms < 2^5) with per-row and
    per-column offsets so that float64 suffices; offsets are clamped at -100, which can only
    change the result where the true maximum is itself below -100, and those are recomputed.
    """
    ra = ea.max(axis=-1, keepdims=True)
    rb = eb.max(axis=-2, keepdims=True)
    ra = np.where(ra > _ABSENT, ra, 0)
    rb = np.where(rb > _ABSENT, rb, 0)
    pa = np.where(ea > _ABSENT, _pow2_64(5 * np.maximum(ea - ra, -100)), 0.0)
    pb = np.where(eb > _ABSENT, _pow2_64(5 * np.maximum(eb - rb, -100)), 0.0)
    s = _small_matmul(pa, pb)
    d = ((s.view(np.int64) >> 52) - 1023) // 5
    e = np.where(s > 0, ra + rb + d, _ABSENT)
    fix = (s > 0) & (d <= -100)
    if fix.any():
        ib, im, jn = np.nonzero(fix)
        e[ib, im, jn] = (ea[ib, im, :] + eb[ib, :, jn]).max(axis=-1)
    return e


def _specials(ops, res, c, bs, ms, j0, j1):
    """NaN/inf result of a block: a NaN product (NaN input, 0 * inf) or NaN c gives NaN;
    infinities (products and c) of both signs give NaN; otherwise an infinity's sign wins.
    Where there is none of these, the finite result `res` stands (it may be an overflow)."""
    shape = res.shape
    if ops.special:
        nan, pinf, ninf = _special_products(ops.a_raw[bs, ms, j0:j1], ops.b_raw[bs, j0:j1, :])
    else:
        nan = pinf = ninf = np.zeros(shape, dtype=bool)
    pos = pinf | (c == np.inf)
    neg = ninf | (c == -np.inf)
    nan = nan | np.isnan(c) | (pos & neg)
    out = np.where(pos, np.float32(np.inf), res)
    out = np.where(neg, np.float32(-np.inf), out)
    return np.where(nan, NAN32, out).astype(np.float32)


def _special_products(a, b):
    """Per output element of a block: does some product a_k b_k give NaN, +inf, -inf."""
    def classes(x):
        fin = np.isfinite(x)
        return dict(nan=np.isnan(x), zero=x == 0, inf=np.isinf(x), pinf=x == np.inf,
                    ninf=x == -np.inf, pos=x > 0, neg=x < 0, posfin=fin & (x > 0),
                    negfin=fin & (x < 0), any=np.ones(x.shape, dtype=bool))

    ca, cb = classes(a), classes(b)

    def some(*pairs):
        return np.logical_or.reduce(
            [_small_matmul(ca[p].astype(np.float32), cb[q].astype(np.float32)) > 0
             for p, q in pairs])

    nan = some(("nan", "any"), ("any", "nan"), ("inf", "zero"), ("zero", "inf"))
    pinf = some(("pinf", "pos"), ("ninf", "neg"), ("posfin", "pinf"), ("negfin", "ninf"))
    ninf = some(("pinf", "neg"), ("ninf", "pos"), ("posfin", "ninf"), ("negfin", "pinf"))
    return nan, pinf, ninf
