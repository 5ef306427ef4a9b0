"""The tensor-core GEMM model (`simprec._tensor_core`) as one compiled, multithreaded kernel.

Same arithmetic as the specification, block by block (see `simprec._tensor_core` for the model):
for each output element and each block of K, E = the largest exponent among the block's nonzero
products (e_a + e_b) and the accumulator c; every product a_k b_k is scaled by the power of two
w = 2^(frac - E) and truncated toward zero to an integer (exact: a product of two fp16 values, or
of two bf16 values in a moderate range, is exact in float32, and so is its scaling; other bf16
operands run the same loop in float64); the block's integers are summed in int32 (at most
16 * 2^27), c aligned the same way is added in float64, and the sum scaled back and truncated to
fp32 (subnormals on their grid, >= 2^128 -> inf).

The output is cut into tiles of _MT rows x _NT columns, one task per tile, over numba's
threads; b and its exponents are packed in column panels of _NT, so that each block's rows of
them (16 x _NT x 8 bytes) stay in the L1 cache while every row of the tile reuses them. In the
common case (everything finite, no overflow possible) the block size is a compile-time constant:
for each column the block's exponent maximum, scale and truncated sum run unrolled in SIMD
registers, 8 columns at a time.

NaN and infinities (and accumulators that may overflow) take a general kernel: the finite
computation sees 0 for them (as the specification does); a third loop per block classifies each
product in float64 (NaN, +inf, -inf by IEEE multiplication, exactly the specification's classes)
and the block's result is patched.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import _tensor_core as spec

_ABSENT = -(1 << 20)   # exponent of a zero operand: a sum with it stays far below any real one
_MT, _NT = 32, 128     # output tile: rows x columns


@njit(inline="always", error_model="numpy")
def _pow2(e):
    """2.0**e as float64, integer e in [-1022, 1023]."""
    return np.int64((e + 1023) << 52).view(np.float64)


@njit(inline="always", error_model="numpy")
def _rz_f32(v):
    """float64 v (an exact block sum) rounded toward zero to float32: subnormals on the grid of
    2^-149, |v| >= 2^128 -> inf, a zero result +0 (`spec.round_rz_f32`)."""
    if abs(v) < 1.1754943508222875e-38:          # 2^-126
        return np.float32(np.trunc(v * 7.1362384635297994e+44) * 1.401298464324817e-45 + 0.0)
    bits = np.float64(v).view(np.int64) & np.int64(-(1 << 29))   # keep 24 significant bits
    return np.float32(np.int64(bits).view(np.float64))


def _make_general_kernel(PARALLEL):
    @njit(parallel=PARALLEL, cache=True, boundscheck=False, error_model="numpy")
    def kernel(a, ea, b, eb, acc, a_raw, b_raw, special, block, frac, floor, wlow):
        """acc (B, M, N) float32 := the tensor-core GEMM acc + a @ b, in place; the general kernel
        (NaN/inf among the inputs or c, or an accumulator that may overflow).

        a (B, M, K), b (B, K, N): the operands with NaN/inf replaced by 0 (float32, or float64 for
        far-apart bf16); ea, eb: their exponents (integers in float32, _ABSENT for zeros); a_raw,
        b_raw: the operands as given (read when `special`). floor: the lowest alignment exponent
        (or a value below all). wlow: the lowest E whose scale 2^(frac - E) the operand dtype
        holds (only blocks without products reach below it, where any scale will do).
        """
        B, M, K = a.shape
        N = b.shape[2]
        parallel = PARALLEL  # noqa: F841 (the variant's flag is part of its cache key)
        nmt = (M + _MT - 1) // _MT
        nnt = (N + _NT - 1) // _NT
        for task in prange(B * nmt * nnt):
            bi = task // (nmt * nnt)
            m0 = ((task // nnt) % nmt) * _MT
            n0 = (task % nnt) * _NT
            m1 = min(M, m0 + _MT)
            n1 = min(N, n0 + _NT)
            nt = n1 - n0
            E = np.empty(nt, np.float32)     # exponents as small floats: SIMD add and max
            w = np.empty(nt, a.dtype)
            si = np.empty(nt, np.int32)
            nan = np.zeros(nt, np.bool_)
            pinf = np.zeros(nt, np.bool_)
            ninf = np.zeros(nt, np.bool_)
            for j0 in range(0, K, block):
                j1 = min(K, j0 + block)
                for m in range(m0, m1):
                    row = acc[bi, m, n0:n1]
                    rowbits = row.view(np.int32)
                    for j in range(nt):
                        E[j] = np.float32(_ABSENT)
                    for k in range(j0, j1):
                        e_a = ea[bi, m, k]
                        ebk = eb[bi, k, n0:n1]
                        for j in range(nt):
                            E[j] = max(E[j], e_a + ebk[j])
                    for j in range(nt):
                        c = row[j]
                        e = np.int32(E[j])
                        if c != 0 and np.isfinite(c):     # c is a term too
                            e = max(e, max(((rowbits[j] & 0x7FFFFFFF) >> 23) - 127, -126))
                        if e <= _ABSENT // 2:
                            e = 0                           # no term at all: the sum is 0
                        e = max(e, floor)
                        E[j] = e
                        w[j] = _pow2(frac - max(e, wlow))
                        si[j] = 0
                    for k in range(j0, j1):
                        ak = a[bi, m, k]
                        bk = b[bi, k, n0:n1]
                        for j in range(nt):
                            si[j] += np.int32(ak * bk[j] * w[j])   # exact product and scaling
                    if special:
                        for j in range(nt):
                            nan[j] = False
                            pinf[j] = False
                            ninf[j] = False
                        for k in range(j0, j1):
                            ak64 = np.float64(a_raw[bi, m, k])
                            bk = b_raw[bi, k, n0:n1]
                            for j in range(nt):
                                p = ak64 * np.float64(bk[j])
                                nan[j] |= p != p
                                pinf[j] |= p == np.inf
                                ninf[j] |= p == -np.inf
                    for j in range(nt):
                        c = row[j]
                        finite = np.isfinite(c)
                        cf = c if finite else np.float32(0)
                        e = np.int32(E[j])
                        x = np.float64(si[j]) + np.trunc(np.float64(cf) * _pow2(frac - e))
                        res = _rz_f32(x * _pow2(e - frac))
                        if special or not finite:
                            pos = pinf[j] or c == np.inf
                            neg = ninf[j] or c == -np.inf
                            if nan[j] or c != c or (pos and neg):
                                rowbits[j] = 0x7FFFFFFF    # the GPU's canonical NaN
                                continue
                            if pos:
                                res = np.float32(np.inf)
                            elif neg:
                                res = np.float32(-np.inf)
                        row[j] = res
    return kernel


# numba's threads for large products only: a parallel call waits for every thread at its end,
# and on a loaded machine (more runnable threads than cores) that wait is a scheduler slice
_PARALLEL_MACS = 1 << 22
_GENERAL = {True: _make_general_kernel(True), False: _make_general_kernel(False)}


_KERNELS = {}


def _fast_kernel(block, wide, parallel):
    """The kernel for finite operands and accumulator and no possible overflow, with the block
    size and the operands' dtype (float64 if `wide`) compile-time constants: the loops over a
    block unroll, and each column of the tile keeps its exponent, scale and sum in SIMD
    registers."""
    kernel = _KERNELS.get((block, wide, parallel))
    if kernel is None:
        kernel = _KERNELS[block, wide, parallel] = _make_fast_kernel(
            block, np.float64 if wide else np.float32, parallel)
    return kernel


def _make_fast_kernel(BLOCK, F, PARALLEL):
    @njit(parallel=PARALLEL, cache=True, boundscheck=False, error_model="numpy")
    def kernel(a, ea, bp, ebp, acc, frac, floor, wlow):
        """acc (B, M, N) := acc + a @ b, everything finite. a, ea (B, M, K); bp, ebp: b and
        its exponents packed as (B, N / _NT, K, _NT) column panels; K a multiple of BLOCK."""
        B, M, K = a.shape
        N = acc.shape[2]
        parallel = PARALLEL  # noqa: F841 (the variant's flag is part of its cache key)
        nnt = bp.shape[1]
        nmt = (M + _MT - 1) // _MT
        absent = np.float32(_ABSENT // 2)
        for task in prange(B * nmt * nnt):
            bi = task // (nmt * nnt)
            tn = task % nnt
            m0 = ((task // nnt) % nmt) * _MT
            n0 = tn * _NT
            mt = min(M, m0 + _MT) - m0
            nt = min(N, n0 + _NT) - n0
            bt, ebt, at, eat = bp[bi, tn], ebp[bi, tn], a[bi], ea[bi]   # C-contiguous views
            tile = np.zeros((_MT, _NT), np.float32)
            for i in range(mt):
                for j in range(nt):
                    tile[i, j] = acc[bi, m0 + i, n0 + j]
            Ei = np.empty(_NT, np.int32)
            si = np.empty(_NT, np.int32)
            for j0 in range(0, K, BLOCK):
                for i in range(mt):
                    m = m0 + i
                    row = tile[i]
                    # per column: the alignment exponent E (c's and the products'), the scale
                    # w = 2^(frac - E), the block's truncated products summed
                    for j in range(_NT):
                        cbits = np.float32(row[j]).view(np.int32) & 0x7FFFFFFF
                        ec = np.float32(max((cbits >> 23) - 127, -126))
                        e = ec if cbits != 0 else np.float32(_ABSENT)
                        for k in range(BLOCK):
                            v = eat[m, j0 + k] + ebt[j0 + k, j]
                            e = v if v > e else e
                        ei = np.int32(e) if e > absent else np.int32(0)   # 0: no term at all
                        ei = max(ei, floor)
                        w = F(_pow2(frac - max(ei, wlow)))
                        s = np.int32(0)
                        for k in range(BLOCK):
                            s += np.int32(at[m, j0 + k] * bt[j0 + k, j] * w)
                        Ei[j] = ei
                        si[j] = s
                    # c aligned and added, the sum truncated to fp32
                    for j in range(_NT):
                        ei = Ei[j]
                        x = np.float64(si[j]) + np.trunc(np.float64(row[j]) * _pow2(frac - ei))
                        row[j] = _rz_f32(x * _pow2(ei - frac))
            for i in range(mt):
                for j in range(nt):
                    acc[bi, m0 + i, n0 + j] = tile[i, j]
    return kernel


def _panels(x, fill):
    """(B, K, N) -> (B, ceil(N / _NT), K, _NT): column panels, the last one padded with fill."""
    B, K, N = x.shape
    nnt = -(-N // _NT)
    if N % _NT:
        x = np.concatenate([x, np.full((B, K, nnt * _NT - N), fill, x.dtype)], axis=2)
    return np.ascontiguousarray(x.reshape(B, K, nnt, _NT).transpose(0, 2, 1, 3))


def tc_accumulate(a, b, c, *, emin: int, arch: str) -> np.ndarray:
    """`simprec._tensor_core.tc_accumulate`, compiled: same arguments, same bits."""
    block, frac, floor = spec.ARCHS[arch]
    floor = -(1 << 30) if floor is None else floor
    acc = np.array(c, dtype=np.float32, copy=True, order="C")
    K = a.shape[-1]
    if K == 0 or acc.size == 0:
        return acc
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    parallel = a.size * b.shape[-1] >= _PARALLEL_MACS
    ea, bad_a, lo_a, hi_a, max_a = _scan(a, emin)
    eb, bad_b, lo_b, hi_b, max_b = _scan(b, emin)
    special = bad_a or bad_b
    a_raw, b_raw = a, b
    if special:                              # the finite computation sees 0 for NaN and inf
        a = np.where(np.isfinite(a), a, np.float32(0))
        b = np.where(np.isfinite(b), b, np.float32(0))
    # float32 products and scales when every nonzero product lies in [2^-100, 2^122)
    # (`spec._fast_range`); blocks with products then have E >= -100
    wide = lo_a <= hi_a and lo_b <= hi_b and not (lo_a + lo_b >= -100 and hi_a + hi_b <= 120)
    wlow = -900 if wide else -100
    if wide:
        a, b = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(over="ignore"):
        bound = max_a * max_b * K + float(np.abs(acc).max())
    if special or not bound < 2.0 ** 127:    # NaN/inf among the inputs, or it may overflow
        _GENERAL[parallel](a, ea, b, eb, acc, a_raw, b_raw, True, block, frac, floor, wlow)
        return acc
    pad = -K % block                         # zero products are absent terms: pad K
    if pad:
        widths = [(0, 0), (0, 0), (0, pad)]
        a, ea = np.pad(a, widths), np.pad(ea, widths, constant_values=_ABSENT)
        widths = [(0, 0), (0, pad), (0, 0)]
        b, eb = np.pad(b, widths), np.pad(eb, widths, constant_values=_ABSENT)
    kernel = _fast_kernel(block, wide, parallel)
    kernel(a, ea, _panels(b, 0), _panels(eb, _ABSENT), acc, frac, floor, wlow)
    return acc


@njit(cache=True, boundscheck=False, error_model="numpy")
def _scan_kernel(x, emin, e):
    """e := the exponents of x's finite nonzero values as the tensor core counts them
    (floor(log2|x|), at least emin), _ABSENT for zeros and NaN/inf. Returns the count of
    NaN/inf, the smallest and largest exponent and the largest finite magnitude."""
    flat = x.reshape(-1)
    out = e.reshape(-1)
    n = flat.size
    chunks = 64
    bad = np.zeros(chunks, np.int64)
    lo = np.full(chunks, 1 << 20, np.int64)
    hi = np.full(chunks, -(1 << 20), np.int64)
    big = np.zeros(chunks, np.float32)
    for t in range(chunks):
        i0 = n * t // chunks
        i1 = n * (t + 1) // chunks
        nb, l, h, m = 0, 1 << 20, -(1 << 20), np.float32(0)
        for i in range(i0, i1):
            v = flat[i]
            field = (np.float32(v).view(np.int32) >> 23) & 0xFF
            if field == 0xFF:
                nb += 1
                out[i] = _ABSENT
            elif v == 0:
                out[i] = _ABSENT
            else:
                ex = max(field - 127, emin)
                out[i] = ex
                l = min(l, ex)
                h = max(h, ex)
                m = max(m, abs(v))
        bad[t], lo[t], hi[t], big[t] = nb, l, h, m
    return bad.sum(), lo.min(), hi.max(), big.max()


def _scan(x, emin):
    """(exponents as float32, any NaN/inf, lowest and highest exponent, largest magnitude)."""
    e = np.empty(x.shape, np.float32)
    bad, lo, hi, big = _scan_kernel(x, emin, e)
    return e, bad > 0, int(lo), int(hi), float(big)
