"""Tests of simprec.accumulate: the tensor-core models, the "fp32" and "fp16" models, the API.

Evidence for the tensor-core models, strongest first:
* the H200 ground truth (`tests/data/h200/matmul_dev.npz`): every fp16 and bf16 output, bit
  for bit;
* dot products measured on the H200 for the edge cases that data does not reach (NaN/inf,
  signed zeros, fp32-subnormal results, the -133 alignment floor, bf16 products beyond the fp32
  range): `GPU_CASES` at the end of this file, embedded so that CI needs no GPU and no data;
* a slow reference written straight from the papers' description in Python integers
  (`ref_tensor_core`), which the vectorised model must equal on random inputs (hypothesis).
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from simprec import _tensor_core, bf16, fp8_e4m3, fp16, fp32
from simprec.accumulate import ARCHS, MODELS, matmul, tensor_core_matmul

NATIVE = {fp16: np.float16, bf16: ml_dtypes.bfloat16}
EMIN = {fp16: -14, bf16: -126}
PARAMS = {"sm70": (4, 23, None), "sm80": (8, 24, None), "sm90": (16, 25, -133)}


def bits32(x):
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def same_bits(x, y):
    """Bitwise equality of float32 arrays, any NaN equal to any NaN."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    return (bits32(x) == bits32(y)) | (np.isnan(x) & np.isnan(y))


# ---------------------------------------------------------------------------------------------
# the reference: one block at a time, exact rationals, from the papers' description

def _exponent(x: float, emin: int) -> int:
    """floor(log2|x|), or emin for values below 2^emin (subnormal in the format)."""
    return max(math.frexp(abs(x))[1] - 1, emin)


def _rz_f32(v: Fraction) -> float:
    """Round toward zero to fp32 (subnormals: multiples of 2^-149); >= 2^128 -> inf; 0 -> +0."""
    if v == 0:
        return 0.0
    sign, v = (-1.0 if v < 0 else 1.0), abs(v)
    e = v.numerator.bit_length() - v.denominator.bit_length()
    if Fraction(2) ** e > v:
        e -= 1
    if e >= 128:
        return sign * math.inf
    q = max(e, -126) - 23
    n = math.floor(v / Fraction(2) ** q)
    return sign * float(n * Fraction(2) ** q) if n else 0.0


def ref_block(c: float, xs, ys, *, emin: int, frac: int, floor) -> float:
    """c + sum x*y as one tensor-core block (Khattak & Mikaitis 2025; MMA-Sim 2025)."""
    prods = [x * y for x, y in zip(xs, ys, strict=True)]  # exact in float64 for fp16/bf16 values
    if math.isnan(c) or any(math.isnan(p) for p in prods):
        return math.nan
    infs = {math.copysign(1.0, t) for t in prods + [c] if math.isinf(t)}
    if infs:
        return math.nan if len(infs) == 2 else infs.pop() * math.inf
    terms = [(Fraction(c), _exponent(c, -126))] if c != 0 else []
    terms += [(Fraction(x) * Fraction(y), _exponent(x, emin) + _exponent(y, emin))
              for x, y in zip(xs, ys, strict=True) if x != 0 and y != 0]
    if not terms:
        return 0.0
    e_max = max(e for _, e in terms)
    if floor is not None:
        e_max = max(e_max, floor)
    u = Fraction(2) ** (e_max - frac)
    s = sum(int(t / u) for t, _ in terms)  # int() truncates toward zero
    return _rz_f32(s * u)


def ref_tensor_core(a, b, c, *, fmt, arch) -> np.ndarray:
    """float32 (M, N) accumulator of c + a @ b, K walked in blocks, one element at a time."""
    block, frac, floor = PARAMS[arch]
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    M, K = a.shape
    out = np.empty((M, b.shape[1]), np.float32)
    for i in range(M):
        for j in range(b.shape[1]):
            acc = float(np.float32(c[i, j]))
            for j0 in range(0, K, block):
                acc = ref_block(acc, a[i, j0:j0 + block].tolist(), b[j0:j0 + block, j].tolist(),
                                emin=EMIN[fmt], frac=frac, floor=floor)
            out[i, j] = acc
    return out


def ref_half_model(a, b, fmt, block=16):
    """The "fp16" model by its definition: sequential fp32 inside a block, round after it."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    out = np.empty((a.shape[0], b.shape[1]), np.float32)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            acc = np.float32(0)
            for j0 in range(0, a.shape[1], block):
                s = acc
                for k in range(j0, min(a.shape[1], j0 + block)):
                    s = np.float32(s + np.float32(a[i, k] * b[k, j]))
                acc = np.float32(s.astype(NATIVE[fmt]))
            out[i, j] = acc
    return out


# ---------------------------------------------------------------------------------------------
# random values of a format, with controllable exponent spread, zeros and subnormals

def random_values(rng, shape, fmt, spread, pzero):
    """Random finite values of fp16/bf16 as float32: exponent fields from a window, random
    mantissas and signs, a fraction `pzero` of +-0. "full" spans every finite binade."""
    man = fmt.man_bits
    top = (1 << fmt.exp_bits) - 2                      # largest finite exponent field
    bias = fmt.bias
    lo, hi = {"narrow": (bias - 3, bias + 2), "wide": (0, top) if fmt is fp16 else
              (bias - 45, bias + 40), "full": (0, top)}[spread]
    field = rng.integers(lo, hi + 1, shape)
    bits = (rng.integers(0, 2, shape) << 15) | (field << man) | rng.integers(0, 1 << man, shape)
    x = bits.astype(np.uint16).view(NATIVE[fmt]).astype(np.float32)
    zero = rng.random(shape) < pzero
    x[zero] = np.where(rng.random(int(zero.sum())) < 0.5, 0.0, -0.0)
    return x


def random_fp32(rng, shape, lo=-150, hi=20):
    x = (rng.standard_normal(shape) * 2.0 ** rng.integers(lo, hi, shape)).astype(np.float32)
    x[rng.random(shape) < 0.15] = 0.0
    return x


@st.composite
def tc_problems(draw, spreads=("narrow", "wide", "full")):
    fmt = draw(st.sampled_from([fp16, bf16]))
    arch = draw(st.sampled_from(ARCHS))
    M, N = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    K = draw(st.integers(0, 37))
    spread = draw(st.sampled_from(spreads))
    pzero = draw(st.sampled_from([0.0, 0.2, 0.6]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = random_values(rng, (M, K), fmt, spread, pzero)
    b = random_values(rng, (K, N), fmt, spread, pzero)
    c = random_fp32(rng, (M, N)) if draw(st.booleans()) else np.zeros((M, N), np.float32)
    return fmt, arch, a, b, c


# ---------------------------------------------------------------------------------------------
# the H200 ground truth

def test_h200_matmul_dev_bit_for_bit(load_h200):
    """Every fp16/bf16 case of matmul_dev.npz: raw fp32 accumulator (torch.mm out_dtype=fp32),
    half output (A @ B) and fused bias (F.linear), 0 mismatching elements, arch sm90."""
    data = load_h200("matmul_dev")
    cases = [c for c in json.loads(str(data["meta"])) if c["dtype"] in ("fp16", "bf16")]
    assert len(cases) >= 10
    mismatches, elements = {}, 0
    for case in cases:
        key, fmt = case["key"], fp16 if case["dtype"] == "fp16" else bf16
        dt = NATIVE[fmt]
        A, B = data[key + "_A"].view(dt), data[key + "_B"].view(dt)
        bias = data[key + "_bias"].view(dt)
        d32 = tensor_core_matmul(A, B, arch="sm90")
        d = tensor_core_matmul(A, B, arch="sm90", out=fmt)
        lin = tensor_core_matmul(A, B, arch="sm90", out=fmt, bias=bias)
        assert d32.dtype == np.float32 and d.dtype == dt and lin.dtype == dt
        mismatches[key] = (int((d32.view(np.uint32) != data[key + "_D32"]).sum()),
                           int((d.view(np.uint16) != data[key + "_D"]).sum()),
                           int((lin.view(np.uint16) != data[key + "_linear"]).sum()))
        elements += 3 * d32.size
    assert all(m == (0, 0, 0) for m in mismatches.values()), mismatches
    assert elements > 100_000


def test_h200_data_tells_the_archs_apart(load_h200):
    """The same data rejects the Ampere and Volta parameters: the match above means something."""
    data = load_h200("matmul_dev")
    A = data["2_fp16_A"].view(np.float16)[:16]
    B = data["2_fp16_B"].view(np.float16)
    want = data["2_fp16_D32"][:16]
    for arch in ("sm80", "sm70"):
        assert (tensor_core_matmul(A, B, arch=arch).view(np.uint32) != want).mean() > 0.5


# ---------------------------------------------------------------------------------------------
# the vectorised model equals the reference

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tc_problems())
def test_model_equals_reference(problem):
    """Random small matrices: wide exponent ranges, subnormals, +-0, c, K not a multiple of the
    block; "full" bf16 spreads take the float64 path and can overflow to inf."""
    fmt, arch, a, b, c = problem
    got = tensor_core_matmul(a, b, arch=arch, fmt=fmt, c=c)
    want = ref_tensor_core(a, b, c, fmt=fmt, arch=arch)
    assert same_bits(got, want).all(), (got, want)


@pytest.mark.parametrize("tile", [16, 128, None])
@pytest.mark.parametrize("fmt", [fp16, bf16])
@pytest.mark.parametrize("spread", ["wide", "full"])
def test_model_equals_reference_larger(fmt, spread, tile, monkeypatch):
    """A batch of 3, with tiles of 16 and 128 output elements (rows and batch elements split
    over tiles) and the default, on both paths (fast, and float64 for "full" bf16)."""
    if tile is not None:
        monkeypatch.setattr(_tensor_core, "_TILE", tile)
    rng = np.random.default_rng(3)
    a = random_values(rng, (3, 9, 45), fmt, spread, 0.1)
    b = random_values(rng, (3, 45, 7), fmt, spread, 0.1)
    c = random_fp32(rng, (3, 9, 7))
    got = tensor_core_matmul(a, b, fmt=fmt, c=c)
    for i in range(3):
        assert same_bits(got[i], ref_tensor_core(a[i], b[i], c[i], fmt=fmt, arch="sm90")).all()


def test_tiling_and_chunking_do_not_change_bits():
    """130 x 256 outputs: the exponent matmul is split into row chunks (over 2^19 multiply-adds
    per call otherwise); every row must equal the row computed on its own."""
    rng = np.random.default_rng(8)
    a = random_values(rng, (130, 40), fp16, "wide", 0.1)
    b = random_values(rng, (40, 256), fp16, "wide", 0.1)
    whole = tensor_core_matmul(a, b, fmt=fp16)
    rows = np.concatenate([tensor_core_matmul(a[i:i + 13], b, fmt=fp16) for i in range(0, 130, 13)])
    assert np.array_equal(bits32(whole), bits32(rows))


SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -2.0, 61440.0], np.float32)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(ARCHS), st.sampled_from([fp16, bf16]))
def test_specials_equal_reference(seed, arch, fmt):
    """NaN and infinities sprinkled over inputs and c, including overflow of the accumulator."""
    rng = np.random.default_rng(seed)
    M, K, N = 3, int(rng.integers(1, 40)), 3
    a = random_values(rng, (M, K), fmt, "narrow", 0.2)
    b = random_values(rng, (K, N), fmt, "narrow", 0.2)
    for x in (a, b):
        pick = rng.random(x.shape) < 0.05
        x[pick] = rng.choice(SPECIALS, int(pick.sum()))
    c = rng.choice(np.array([0.0, -0.0, 1.0, np.inf, -np.inf, np.nan, 3e38, -3e38], np.float32),
                   (M, N))
    got = tensor_core_matmul(a, b, arch=arch, fmt=fmt, c=c)
    assert same_bits(got, ref_tensor_core(a, b, c, fmt=fmt, arch=arch)).all()


# ---------------------------------------------------------------------------------------------
# where the archs must agree, and where they must differ

@pytest.mark.parametrize("fmt", [fp16, bf16])
def test_small_integers_are_exact_in_every_model(fmt):
    """Integer inputs whose partial sums stay far below 2^24: no truncation can drop a bit, so
    every tensor-core model and fp32 accumulation give the exact sum."""
    rng = np.random.default_rng(0)
    a = rng.integers(-4, 5, (5, 64)).astype(np.float32)
    b = rng.integers(-4, 5, (64, 6)).astype(np.float32)
    exact = (a.astype(np.int64) @ b.astype(np.int64)).astype(np.float32)
    for arch in ARCHS:
        assert np.array_equal(tensor_core_matmul(a, b, arch=arch, fmt=fmt), exact)
        assert np.array_equal(matmul(a, b, fmt=fmt, accumulate=arch, out_fmt=fp32), exact)
    assert np.array_equal(matmul(a, b, fmt=fmt, accumulate="fp32", out_fmt=fp32), exact)
    if fmt is fp16:  # every partial sum is an integer below 2048, exact in fp16
        assert np.array_equal(matmul(a, b, fmt=fmt, accumulate="fp16"), exact)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([fp16, bf16]), st.integers(0, 2**32 - 1), st.integers(6, 34))
def test_fractional_bits_truncate_differently(fmt, seed, d):
    """One block [x*y, -x*y, s*t]: the big products cancel exactly, so the result is s*t (its
    exponent d below theirs) truncated toward zero to a multiple of 2^(E - F), F = 23, 24, 25:
    each arch keeps its own number of bits."""
    rng = np.random.default_rng(seed)
    x, y, s, t = (float(v) for v in random_values(rng, (4,), fmt, "narrow", 0.0))
    e_big = _exponent(x, EMIN[fmt]) + _exponent(y, EMIN[fmt])
    e_s = (e_big - d) // 2
    e_t = e_big - d - e_s
    assume(min(e_s, e_t) >= EMIN[fmt])
    s = s * 2.0 ** (e_s - _exponent(s, EMIN[fmt]))   # same significand, exponent e_s: exact
    t = t * 2.0 ** (e_t - _exponent(t, EMIN[fmt]))
    a = np.array([[x, -x, s]], np.float32)
    b = np.array([[y], [y], [t]], np.float32)
    small = Fraction(s) * Fraction(t)
    results = {}
    for arch in ARCHS:
        u = Fraction(2) ** (e_big - PARAMS[arch][1])
        want = float(int(small / u) * u)
        results[arch] = float(tensor_core_matmul(a, b, arch=arch, fmt=fmt)[0, 0])
        assert results[arch] == want, (arch, results[arch], want)
    assert abs(results["sm70"]) <= abs(results["sm80"]) <= abs(results["sm90"])


def test_block_boundaries_differ_by_arch():
    """a*b over [1024, 0, 0, 0, -1024, s] * [1, 0, 0, 0, 1, t] with s*t = 1.75 * 2^-13:
    sm70 puts the cancellation in its second block, aligned to c = 1024 (23 bits: keeps 2^-13);
    sm80 and sm90 see one block aligned to 1024 with 24 and 25 bits."""
    s, t = 1.75 * 2.0 ** -7, 2.0 ** -6
    a = np.array([[1024, 0, 0, 0, -1024, s]], np.float16)
    b = np.array([[1], [0], [0], [0], [1], [t]], np.float16)
    got = {arch: float(tensor_core_matmul(a, b, arch=arch)[0, 0]) for arch in ARCHS}
    assert got == {"sm70": 2.0 ** -13, "sm80": 2.0 ** -13 + 2.0 ** -14,
                   "sm90": 2.0 ** -13 + 2.0 ** -14 + 2.0 ** -15}
    # sm90 with the cancellation one block later: aligned against c = 1024, then RZ to fp32
    # (ulp 2^-13 at 1024) keeps 1024 + 2^-13
    a2 = np.zeros((1, 17), np.float16)
    b2 = np.zeros((17, 1), np.float16)
    a2[0, 0], b2[0, 0], a2[0, 16], b2[16, 0] = 1024, 1, s, t
    assert float(tensor_core_matmul(a2, b2)[0, 0]) == 1024 + 2.0 ** -13


def test_products_are_aligned_unnormalised():
    """A product's exponent is e_a + e_b even when its significand is >= 2 (Khattak &
    Mikaitis; MMA-Sim): 1.5 * 1.5 = 2.25 counts with exponent 0, so the grid is 2^-25 and the
    2^-25 product survives; aligned to the normalised exponent 1 it would be truncated away."""
    a = np.array([[1.5, -1.5, 2.0 ** -12]], np.float16)
    b = np.array([[1.5], [1.5], [2.0 ** -13]], np.float16)
    assert float(tensor_core_matmul(a, b)[0, 0]) == 2.0 ** -25
    assert float(tensor_core_matmul(a, b, arch="sm80")[0, 0]) == 0.0


def test_subnormal_inputs_count_with_the_minimum_exponent():
    """An fp16 subnormal has exponent -14 and a significand below 1 (both papers; the H200 "wide"
    data has subnormal inputs): 2^-24 * 2^10 = 2^-14 counts as exponent -14 + 10 = -4, so it sets
    the grid 2^-29 and the 2^-30 bit of the other product, 2^-20 + 2^-30, is truncated. Counted
    at its value's exponent -14, the grid would be 2^-39 and the bit would stay."""
    a = np.array([[2.0 ** -24, 2.0 ** -10 * (1 + 2.0 ** -10)]], np.float16)
    b = np.array([[2.0 ** 10], [2.0 ** -10]], np.float16)
    assert float(tensor_core_matmul(a, b)[0, 0]) == 2.0 ** -14 + 2.0 ** -20
    ref = ref_tensor_core(a.astype(np.float32), b.astype(np.float32), np.zeros((1, 1)),
                          fmt=fp16, arch="sm90")
    assert float(ref[0, 0]) == 2.0 ** -14 + 2.0 ** -20


# ---------------------------------------------------------------------------------------------
# NaN, infinities, signed zeros, overflow, subnormal results

def test_nan_and_inf_rules():
    inf, nan = np.inf, np.nan
    a = np.array([[inf, 1], [inf, -inf], [nan, 1], [inf, 1], [-2, 1], [1, 1]], np.float16)
    b = np.array([[0, 1], [1, 1], [1, 1], [1, -inf], [inf, 1], [1, 1]], np.float16)
    # row i of a with column i of b: inf*0, +inf-inf, NaN, inf*1 + 1*(-inf), -2*inf, finite
    got = np.array([tensor_core_matmul(a[i:i + 1], b[i:i + 1].T)[0, 0] for i in range(6)])
    assert np.isnan(got[:4]).all()
    assert got[4] == -inf and got[5] == 2.0
    nan_bits = tensor_core_matmul(a[:1], b[:1].T).view(np.uint32)[0, 0]
    assert nan_bits == 0x7FFFFFFF                       # the GPU's canonical NaN
    assert tensor_core_matmul(a[:1], b[:1].T, out=fp16).view(np.uint16)[0, 0] == 0x7FFF
    bf = tensor_core_matmul(a[:1].astype(ml_dtypes.bfloat16), b[:1].T.astype(ml_dtypes.bfloat16),
                            out=bf16)
    assert bf.view(np.uint16)[0, 0] == 0x7FFF


def test_infinity_persists_across_blocks_and_meets_its_opposite():
    a = np.zeros((1, 48), np.float16)
    b = np.ones((48, 1), np.float16)
    a[0, 0] = np.inf
    assert tensor_core_matmul(a, b)[0, 0] == np.inf     # inf in block 0, finite blocks after
    a[0, 40] = -np.inf
    assert np.isnan(tensor_core_matmul(a, b)[0, 0])     # -inf two blocks later: NaN
    c = np.full((1, 1), -np.inf, np.float32)
    a[0, 40] = 0
    assert np.isnan(tensor_core_matmul(a, b, c=c)[0, 0])  # c = -inf meets +inf


def test_overflow():
    """fp32 overflow of the accumulator (>= 2^128) gives +-inf, which later blocks keep."""
    big = 1.5 * 2.0 ** 63
    a = np.array([[big, 0, big] + [0] * 13 + [-big]], ml_dtypes.bfloat16)
    b = np.array([[2.0 ** 64], [0], [2.0 ** 64]] + [[0]] * 13 + [[2.0 ** 64]], ml_dtypes.bfloat16)
    assert tensor_core_matmul(a, b)[0, 0] == np.inf    # 3 * 2^127 in block 0, then -1.5 * 2^127
    c = np.array([[3.0e38]], np.float32)
    one = np.array([[2.0 ** 63]], ml_dtypes.bfloat16), np.array([[2.0 ** 64]], ml_dtypes.bfloat16)
    assert tensor_core_matmul(*one, c=c)[0, 0] == np.inf          # 3e38 + 2^127
    assert tensor_core_matmul(*one, c=-c)[0, 0] == np.float32(-3.0e38 + 2.0 ** 127)
    # 2^128 - 2^96 lies between the largest float and 2^128: RZ gives the largest float
    m = 2 - 2.0 ** -7
    a = np.array([[m * 2.0 ** 63, m * 2.0 ** 59, m * 2.0 ** 55, m * 2.0 ** 51]], ml_dtypes.bfloat16)
    b = np.array([[2.0 ** 64], [2.0 ** 60], [2.0 ** 56], [2.0 ** 52]], ml_dtypes.bfloat16)
    assert tensor_core_matmul(a, b)[0, 0] == np.finfo(np.float32).max


def test_products_beyond_fp32_range_cancel_exactly():
    """Measured on the H200: bf16 products >= 2^128 are kept exactly inside the block."""
    x = 2.0 ** 100
    a = np.array([[x, -x, 1.0]], ml_dtypes.bfloat16)
    b = np.array([[x], [x], [1.0]], ml_dtypes.bfloat16)
    assert bits32(tensor_core_matmul(a, b))[0, 0] == 0  # 1.0 truncated (E = 200): +0


def test_zero_results_are_positive_zero():
    neg = np.array([[-1.0, 1.0]], np.float16)
    one = np.array([[1.0], [1.0]], np.float16)
    assert bits32(tensor_core_matmul(neg, one))[0, 0] == 0                 # exact cancellation
    assert bits32(tensor_core_matmul(np.full((1, 3), -0.0, np.float16),
                                     np.ones((3, 1), np.float16)))[0, 0] == 0  # -0 products
    c = np.full((1, 1), -0.0, np.float32)
    assert bits32(tensor_core_matmul(np.zeros((1, 3), np.float16), np.ones((3, 1), np.float16),
                                     c=c))[0, 0] == 0                       # c = -0 as well
    tiny = np.array([[-(2.0 ** -75)]], ml_dtypes.bfloat16)
    assert bits32(tensor_core_matmul(tiny, -tiny))[0, 0] == 0              # -2^-150 -> +0
    # the half output keeps the sign of a nonzero fp32 accumulator that rounds to zero
    sm = np.array([[-(2.0 ** -14)]], np.float16)
    h = tensor_core_matmul(sm, np.array([[2.0 ** -14]], np.float16), out=fp16)
    assert h.view(np.uint16)[0, 0] == 0x8000


def test_subnormal_fp32_results_and_the_alignment_floor():
    """bf16 products below 2^-126: fp32 subnormal results truncated at 2^-149; on sm90 the
    alignment exponent is at least -133 (measured), so 2^-140 - 2^-160 keeps 2^-140 while
    2^-140 - 2^-155 becomes 2^-140 - 2^-149. Without the floor (sm70/sm80) both drop a unit."""
    def dot(arch, tail):
        a = np.array([[2.0 ** -70, -(2.0 ** -70)]], ml_dtypes.bfloat16)
        b = np.array([[2.0 ** -70], [2.0 ** tail]], ml_dtypes.bfloat16)
        return int(bits32(tensor_core_matmul(a, b, arch=arch))[0, 0])
    assert dot("sm90", -85) == 0x1FF    # 2^-155 kept: (2^9 - 1) * 2^-149
    assert dot("sm90", -90) == 0x200    # 2^-160 below the floor's grid 2^-158: dropped
    assert dot("sm80", -90) == 0x1FF
    assert dot("sm70", -90) == 0x1FF


# ---------------------------------------------------------------------------------------------
# the "fp32" and "fp16" models

@pytest.mark.parametrize("fmt", [fp16, bf16])
def test_fp32_model_is_blas_then_one_rounding(fmt):
    rng = np.random.default_rng(1)
    a = random_values(rng, (7, 50), fmt, "narrow", 0.1)
    b = random_values(rng, (50, 5), fmt, "narrow", 0.1)
    bias = random_values(rng, (5,), fmt, "narrow", 0.0)
    acc = np.matmul(a, b)
    assert np.array_equal(bits32(matmul(a, b, fmt=fmt, out_fmt=fp32)), bits32(acc))
    want = (acc + bias).astype(NATIVE[fmt]).astype(np.float32)
    got = matmul(a, b, fmt=fmt, accumulate="fp32", bias=bias)
    assert got.dtype == np.float32 and np.array_equal(bits32(got), bits32(want))


def test_fp32_inputs_use_blas_for_every_model():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 33)).astype(np.float32)
    b = rng.standard_normal((33, 6)).astype(np.float32)
    for model in MODELS:
        assert np.array_equal(matmul(a, b, fmt=fp32, accumulate=model), a @ b)
    assert np.array_equal(matmul(a, b, fmt=fp32, accumulate="sm90", out_fmt=fp16),
                          (a @ b).astype(np.float16).astype(np.float32))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([fp16, bf16]), st.integers(0, 2**32 - 1), st.integers(1, 50))
def test_fp16_model_follows_its_definition(fmt, seed, K):
    rng = np.random.default_rng(seed)
    a = random_values(rng, (2, K), fmt, "narrow", 0.1)
    b = random_values(rng, (K, 3), fmt, "narrow", 0.1)
    got = matmul(a, b, fmt=fmt, accumulate="fp16")
    assert same_bits(got, ref_half_model(a, b, fmt)).all()


def test_fp16_model_rounds_after_each_block():
    """Within a block the sum is fp32: 1 + 15 * 2^-12 rounds once to 1 + 2^-8 (rounding after
    every product would lose each quarter-ulp 2^-12 and stay at 1). Across blocks it rounds:
    three 2^-12 per block gain a full ulp 2^-10 each time, four blocks give 1 + 2^-8, where fp32
    accumulation gives the exact 1 + 3 * 2^-10."""
    a = np.full((1, 16), 2.0 ** -12, np.float32)
    a[0, 0] = 1.0
    ones = np.ones((16, 1), np.float32)
    assert matmul(a, ones, fmt=fp16, accumulate="fp16")[0, 0] == 1 + 2.0 ** -8
    a = np.zeros((1, 64), np.float32)
    a[0, 0] = 1.0
    for j in range(4):
        a[0, 16 * j + 1:16 * j + 4] = 2.0 ** -12
    b = np.ones((64, 1), np.float32)
    assert matmul(a, b, fmt=fp16, accumulate="fp16")[0, 0] == 1 + 2.0 ** -8
    assert matmul(a, b, fmt=fp16, accumulate="fp32")[0, 0] == 1 + 3 * 2.0 ** -10


def test_fp16_model_loses_what_fp32_keeps():
    a = np.full((1, 4096), 0.1, np.float16).astype(np.float32)
    b = np.ones((4096, 1), np.float32)
    half = matmul(a, b, fmt=fp16, accumulate="fp16")[0, 0]
    full = matmul(a, b, fmt=fp16, accumulate="fp32")[0, 0]
    exact = 4096 * float(np.float16(0.1))
    assert abs(full - exact) <= 0.25 < abs(half - exact)


# ---------------------------------------------------------------------------------------------
# API: formats, shapes, batching, c, bias, validation

def test_native_and_container_inputs_agree():
    rng = np.random.default_rng(4)
    a = random_values(rng, (5, 20), fp16, "wide", 0.1)
    b = random_values(rng, (20, 3), fp16, "wide", 0.1)
    native = tensor_core_matmul(a.astype(np.float16), b.astype(np.float16), out=fp16)
    container = tensor_core_matmul(a, b, fmt=fp16, out=fp16)
    assert native.dtype == np.float16 and container.dtype == np.float32
    assert np.array_equal(native.astype(np.float32), container)
    via_matmul = matmul(a, b, fmt=fp16, accumulate="sm90")
    assert np.array_equal(via_matmul, container)


def test_batching_broadcasts_like_np_matmul():
    rng = np.random.default_rng(5)
    a = random_values(rng, (2, 1, 4, 9), bf16, "narrow", 0.1)
    b = random_values(rng, (3, 9, 5), bf16, "narrow", 0.1)
    got = tensor_core_matmul(a, b, fmt=bf16)
    assert got.shape == np.matmul(a, b).shape == (2, 3, 4, 5)
    for i in range(2):
        for j in range(3):
            assert np.array_equal(got[i, j], tensor_core_matmul(a[i, 0], b[j], fmt=bf16))
    assert np.array_equal(matmul(a, b, fmt=bf16, accumulate="sm80", out_fmt=fp32),
                          tensor_core_matmul(a, b, fmt=bf16, arch="sm80"))


@pytest.mark.parametrize("shapes", [((9,), (9,)), ((9,), (9, 4)), ((3, 9), (9,)),
                                    ((2, 3, 9), (9,)), ((9,), (2, 9, 4)), ((0, 9), (9, 2)),
                                    ((2, 0), (0, 3))])
def test_shapes_follow_np_matmul(shapes):
    sa, sb = shapes
    a, b = np.ones(sa, np.float16), np.ones(sb, np.float16)
    want = np.matmul(a.astype(np.float32), b.astype(np.float32))
    for model in MODELS:
        got = matmul(a.astype(np.float32), b.astype(np.float32), fmt=fp16, accumulate=model)
        assert got.shape == want.shape and np.array_equal(got, want)
    assert np.array_equal(tensor_core_matmul(a, b), want)


def test_c_is_the_initial_accumulator_of_the_first_block():
    """c is aligned with the first block's products (the MMA instruction's C operand, as in
    Triton's tl.dot(a, b, acc), measured), not added afterwards as cuBLAS's addmm epilogue
    does: in c + 1 - 1 the tiny c = 2^-30 is truncated against the products' exponent 0."""
    a = np.array([[1.0, -1.0]], np.float16)
    b = np.array([[1.0], [1.0]], np.float16)
    c = np.array([[2.0 ** -30]], np.float32)
    assert tensor_core_matmul(a, b, c=c)[0, 0] == 0.0
    assert tensor_core_matmul(a, b)[0, 0] + c[0, 0] == 2.0 ** -30   # the epilogue's answer
    with pytest.raises(ValueError, match="does not broadcast"):
        tensor_core_matmul(a, b, c=np.zeros((2, 2), np.float32))


def test_bias_is_added_in_fp32_before_the_one_rounding():
    a = np.array([[1.0, 2.0 ** -11]], np.float16)
    b = np.array([[1.0], [1.0]], np.float16)
    bias = np.array([2.0 ** -11], np.float16)
    # acc = 1 + 2^-11 (a tie in fp16); + 2^-11 in fp32 = 1 + 2^-10: exact in fp16
    assert float(tensor_core_matmul(a, b, out=fp16, bias=bias)[0, 0]) == 1 + 2.0 ** -10
    # rounding first and adding after (unfused X @ W.T + b) would give 1 + 2^-11 -> 1
    assert float(tensor_core_matmul(a, b, out=fp16)[0, 0]) == 1.0
    assert tensor_core_matmul(a, b, bias=bias)[0, 0] == np.float32(1 + 2.0 ** -10)
    with pytest.raises(ValueError, match="bias"):
        tensor_core_matmul(a, b, bias=np.zeros(3, np.float16))


def test_validation_errors():
    a32, b32 = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="sm70.*sm80.*sm90"):
        tensor_core_matmul(a32, b32, arch="sm75", fmt=fp16)
    with pytest.raises(ValueError, match="'fp32', 'fp16', 'sm70'"):
        matmul(a32, b32, fmt=fp16, accumulate="tf32")
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 4\)"):
        matmul(a32, np.ones((4, 4), np.float32), fmt=fp16)
    with pytest.raises(ValueError, match="not exact in sp.fp16"):
        matmul(np.full((2, 3), 0.1, np.float32), b32, fmt=fp16)
    with pytest.raises(ValueError, match="not exact in sp.bf16"):
        tensor_core_matmul(np.full((2, 3), 1 + 2.0 ** -10, np.float32), b32, fmt=bf16)
    with pytest.raises(ValueError, match="fmt="):
        tensor_core_matmul(a32, b32)
    with pytest.raises(ValueError, match="both"):
        tensor_core_matmul(a32.astype(np.float16), b32.astype(ml_dtypes.bfloat16))
    with pytest.raises(ValueError, match="out must be fp32 or"):
        tensor_core_matmul(a32.astype(np.float16), b32.astype(np.float16), out=bf16)
    with pytest.raises(ValueError, match="fp16 and bf16"):
        matmul(a32, b32, fmt=fp8_e4m3, accumulate="sm90")
    with pytest.raises(ValueError, match="fp16 or bf16"):
        tensor_core_matmul(a32, b32, fmt=fp32)
    with pytest.raises(ValueError, match="floating-point"):
        matmul(np.ones((2, 3), np.int64), b32, fmt=fp16)
    # fp8 values with the "fp32" model are fine (they are exact in fp32)
    assert np.array_equal(matmul(a32, b32, fmt=fp8_e4m3, out_fmt=fp32), a32 @ b32)


def test_speed_is_in_the_right_league():
    """Not a benchmark (benchmarks/bench_matmul.py is): a guard against an accidental
    per-element Python loop. 64x512x64 (2.1e6 multiply-adds) in well under a second."""
    import time

    rng = np.random.default_rng(6)
    a = random_values(rng, (64, 512), fp16, "narrow", 0.0)
    b = random_values(rng, (512, 64), fp16, "narrow", 0.0)
    tensor_core_matmul(a[:2, :20], b[:20, :2], fmt=fp16)  # a compiled fast path compiles here
    t0 = time.process_time()
    tensor_core_matmul(a, b, fmt=fp16)
    assert time.process_time() - t0 < 1.0



# ---------------------------------------------------------------------------------------------
# Dot products measured on an H200 (torch 2.11.0+cu130, cuBLASLt, reduced-precision reduction
# and split-K off; Triton tl.dot for c), one row of A and one column of B each, chosen from
# three probe runs (docs/fidelity.md): specials and zero signs (32x64x32, nvjet), tiny bf16
# products and fp32-subnormal results (28x16x28, 32x16x32), bf16 products beyond 2^128
# (24x32x24), wide random fp16/bf16 and c huge/tiny/-0 via Triton. Only tensor-core kernels
# that walk K in blocks of 16 from the start are included. zlib-compressed JSON, base64: a
# list of {name, fmt, a, b (uint16 bit patterns), c (uint32), bias (uint16), expect: {D32,
# D, linear, tri16}}.
GPU_CASES = "".join(
    "eNrtXdmy5LaR/Zd+5gP2Rc/+C4dCIXukiI6QJYckj2fGoX+fcxJcAAKout1dd+krSlb5VpEEgVxOnkyA4F//8+Hn7//xw4dv"
    "Pvz2zx/+/vH7n7778Z86/FUt6tsPy4cf//E7jvAXfPn+wzd/tTo6t+hgk1tcDmH7G+cv2tugFpe0Sfg15bCe4bL2Zv19O74d"
    "6T957na1/C2tbneUluRTjc6Vv8u5dR/XPklLWz/rz20kvFo1LbajKXc/t1hfvY2u9HDrz/FZj37tZzM+/P7t8uFvkLRq5DKQ"
    "yHrvQyKNjKp+9COt29zuX0uuH4k6yVnuVJ2x/l19Du7X9biW6EArdZuNNorFNb2o7lnLtW+jltJqEZD4D/8D64et/+fDX6z5"
    "8I3RLrpkg4vLh798+MaaGPDXTx9//uH7X/evv//6EX5RnfsHNPfx+98+fKOWD3/nacp567T2fyxjL9OLvuFlwXl9+E0t/3Zc"
    "I71XftfZgGok0XrWYdv1OWq/49AOao+obb228rWd/qxGT51Hn+y8G29jvc0YB17MI6t3jTCglknd/8Mb+n43ttb0/hj7VFfV"
    "+Wr9t1ynOg2Pfa/31FoqPYL1ut71ctOLeynXOle9Hz/co0o/V6/yJkTtzMyrzGJueFUTZzodNhJtNHb2qN5LWlSsEe+MfgPk"
    "raPA7L5tFOuxevPQNs7Vmu/029tCr3017W9vo9UoN0+r+qmG53b66D8HfGA8KjXV48gfhqNsWMAgwg/87BzjDv30iLp5+AmR"
    "d3Q9Y3JvGUPvslllr5wq3iWWfnhX+bp713bu4V1yD3qXVsHakLObxiy72KF3DVhXLaPG5s5Mr752hC9tRFA126yZTIdx6sQ3"
    "e9466GPVrxKBR5H35NU9S+zuOrL9ZvRtbO5i1YxXqynT7XlBixpqyEDP7Ky5Yx9/q/ZOcur7c4rMHUJuvWq00SFTo/Hex87M"
    "Vp1YY4fPvTc5k4KPKaQk3lSsYPem9evqTce5g1ilFVzP+qzVzJvQ71t51kwSnQW3bH3Arm9i1+0Y0bP99tqOj/S8o/Pp+tqV"
    "5074V6u/1nJHEbGN1LVdHfxKzmy9q+5bhwNN7O4ZUeOTY3mqsVa6VqYxseelfZybcPLe03pfaaPXIG/dolbPIxvtnG1hZ7SP"
    "Z4R7zLJGwweDCVNG6Bd/I2bVY7fG+HCKOyfG1XxT46pC5wdqjsyn2kMVCQfIW7OoJmfrdDnIAftsofGfvr2Rzbfxbztji1Wz"
    "vGRW0RnUHbosZ8jFBtY8HmNvy7Pcb1it6FBPjXC15zU39TyI9aeYPsr+Thp+Vo9S2mefk515FLjR0KOGFT/5bc2++ly1yUDV"
    "IMcaIZA6sfpahmpYURznNqPK3wDdOosdRc55tJ7EwyZj6Xtb3XXPpfr4epxZc4beZk5saFDzOGP3oZkuf60Z6az3nX8/hf+2"
    "7L3F1LOMR1xgUPfscocR7m4Z64PzqooJupi0VfOqRVzijRilptxkxndaSdVo2tcXRrX02o7reDdjlaPacY+j52xtzu/7bLLn"
    "V53vNRg65lEnvzixwElErSy9ZqvT3lSMc+QB7Tnt/WpWMUKIgWd3nqGmPj2YwxjovK28jvO427MhLc9+rFeVO6/MzyYT8THz"
    "KrXkax7rVeexhlWBDj3UKa4O6tG9F3c5amHvqmLlQ545kdgoUx7Ph7Q4Mc4KR9nrjXrkoBJdR9FhVfCZ5q20is54E/TUq/Rs"
    "eng+lVK7zqigPEoNmoT/bF6niaX6uBpMKZ6IdaOcOYiNi2Gj4vFssm06fdQDdJdkHW1f08JvYlpY45/oTVRO3MtoZarAtX6d"
    "B67iXvWBiXuZiXuNMeOcs4zqUeeK7eGKs7rGgFf2GcCgFlvj/KlicFTCJjOWM0Y345a9kanpHNcEYS+3egNupXJMPqtoxK10"
    "trh+d6v167zeXtyqPjBxKzdxqz4hGpWXGwM+U8bBooiW1qih+bbTOONFEedSWJ22qSG57CdT+ukSNS0ZDujviQyeljxcLvT6"
    "LmSNR0QxypUpKw+XUYcLrV/vET8cwInZOle50P/98Osvv91ZFAhemZbr85U+p0uars8X/Ox9slQ3Kjc8XPDghEWPq/cVt0wz"
    "7zOX971Z77uk8dpaeF7v07e5484RX+nfKwb8KWKAnsSAt2WFFya9byw0N6u/Fw5eODgo8QRvkYbqUEo8ZanJXuIpX1eTPM79"
    "LNs0b9w2L5R63+hobzLFCx0vdBxU72AaNqRQ5pWKpezmuH5dTfI497Ns07xx27xQ6n2jo5tObV7IeCHj81ufecPWd2HQ+8Y+"
    "/5nY90LVnQsD/xQY6D8TA1/WCi9Met9YGGZrCWJKV5Z8fY6yZOBP9iqmkiUXSzkWN5evW5a8n/tZtmneuG1eKPW+0THOZlic"
    "tWFxQSW1fl4oeaHk81qi+Uos8cKmd4iJ2wLuv/14Xn/KX/YVcMFxnS4fv9g+OdPIlbV8IOxYf+tcWn/b1tbyF7WeXx9p197y"
    "6HZO3dZ25Ljn1sbxe33m1l75/fh7++wfMSvtHH2tr602oVjHeXy2bR39qFtR+5Hy2NzWx0om1dru0l65Q2nj/Mt25/PdtlXa"
    "9V3qO9d9qsfXtld+qcdwlk072kMWaiCTtn/1GMro2z6d76EGOqx7pQZW1m530GnsGbbMY9vlgT5vtdMh+ZlnNRtRdp4VvFNp"
    "6j21j9V/b5JQg/G3bR3etVl9bZW93deW1/pmrSF18qHDR8+aqG1tbNNtX1rdnX/pPbfFpMpa9kdk66v73tbI0R8dW2hrp+rk"
    "3a3Mx+23eq396yx9NdDtcede1+pkLf3x0ajOCDcabdfbZ/UqHHO4SZ55VbMWZRKv6nH3PtTjU6ut+jHy1k8OS1TDjV5rxKqj"
    "13HX/pzzk01nrz771Rkv2ljXxukxovcePENytXRedNqAspdOPeK6/y2Ony21jvOqi8dHxBq31rOGsa/dRqKzfuurz5Hz8Kkz"
    "P1EDfOptcNR+pan72zuItVceJl/vPSVrdfYuxmTtzLuajSgr72r5xxm91A30PkbW67HX2Yh/HFepZrOZGRsay7mPlvx9i8I1"
    "o2l1cvRNTWLVeDOBfgyqt8jdm2p+1MasOi6cI1T3jHzDCWdjrrft6TWmTj5UeqaGftSzvTPzbPXf66tmnn2bZ/w6GPatrGCT"
    "7J0NKEXzxwaU5eu9B2KtUYpV0DnrazafHMSnGoFqyx5xvXpMtQX0TKWXwQlRhnI85xA1YtWR4rRpeZc5FeGpAfrWbKi1tjNH"
    "rLlTzXF6Ltr0vmF7ahjtW2yuMVqdMhPVb3Q7yB5vZWLnCHxGpfa+o4ijhvyv5wqj7LrGqp71t16+j/nhbK7ZSsjEaGH6M29p"
    "NpGsvKUfl5UdIka7h/S6qTGn103dQs9W+ozozJnOdjyPRmfO3ucQs36rka0P2V+f4R1+2rPamsG1VZqxzGqpqJMX1Vh2rgr1"
    "udao9nKuDM2rFeO8r9fZGWH73s9qGy2/POOHGnDKNhO4sd3dA70pG2uDnnlTs4Fkx95GjKREpVnFZRbVZ5W9kceMq2RtfnE7"
    "M223fm8ZQO2BbQ4x6nvvazVWznPiGQLjl22L1tO2m4fdFwmrgQxa3z7HvnPlZC75M8KrO73vEXOEJXXcVsPqUK3xnnerITM/"
    "M71ztl1VHB6eA9UbR/qctdN+mgc1G0dOPGnEuvpad19f6CtDoxp4L91zfDlzq6dGsT5GzSruve5UYxN9tOi9umVWaojfvTed"
    "0UcN0KOwzj6WnDPGvqY1q3f0ecpIGjXmqGEF9qwJdfLr3ir6XKpnKK219Nn1Lf13zPzh3lXaLlWGoCzzpzyfc8rXnNOrzDmN"
    "6k3jiNr/2o9wlu+pla2POFyfo/aRZczH1LQm0mrgXNdUw3pNPS/V402LBGeOoga++Fzsb/MqrULWMeeopvNNs6ncnrqqYUGh"
    "L/H15Zw+gJ+dtYfYPrm/JfjxdGIreDVU/1AlJ5KnhqWwe2HhnDg2Qemazn296VytlVbKJVWClg7y1/4INL6m25Rwm3i6uYFk"
    "cS8zca/5LOJ5bvC2mc1qbqNre3SaZV5txJxxjVEmcnbakTn2jr1lbL2Rjqrr57ytZ11dDeFyt9dzN2sc/ud9KDV0l129Whhf"
    "452XOG3udnNjyeJu7gnRbL784SzwVsW9UZ6vGqVKfYoxLkuNJkTHaVs/MTab9OjTFDUwrp7g9o7WT/uMQaka6eVyr+lyPoZg"
    "XdpcLqrG5WTf5KcsrbixEeWdhYDXUsw3sBHloCx5fb7Y53MuCV+9z1zed21EeX2+9KNB61Ld+1zzDTwWdGHxu44BehID3pYV"
    "Xpj0vrFwXuZ6Zfu7cPCt4uB5I8qScx5VWPn6hRtR3lz8/3Zs80Kp942O9iZTvNDxQse7G1Hm5gVn69cv3IhytU3zxm3zQqn3"
    "jY6zORt1IeP1+QLWZ96w9V0Y9L6xz38m9r1QdefCwD8FBvrPxMCXtcILk943FoZZlhyju7Lk6zPc3YiyWMqRJZevX7gR5Wqb"
    "5o3b5oVS7xsd43SGpbymmO2UzwslL5R8Xks0X4klXtj0DjGRFvfd7x9//t/p4tOyRDauXWlNY/utOrYbi49wIRtyvGNap0Gl"
    "HKMuTzpyHhMNHI+P7Mf+kAGp4Thme/5t4+h7XYtadd/X/1/HZbI26lXGNZt4jSaHxWZ9VsSdgfUr7KShYKL5tIF5rTc7XIeD"
    "X24NZLbBVRlIislNuj8aQG1zZQBKh08dgOkGYG4NYLa/0KqJpNLEiGafjb6awXiTP3EwKp8Ho/Ktwcy2f0n038ixOKXC01RS"
    "KwPXx0UGIS19yhBSxD+mLLaHaxwjWQ/cGs5s/41VN05m4cZ+MXH8zsCCD8/sIbOtD2Co2uUY7rh592tLJaWFT8Uun7TyYceu"
    "UGNXOXZrQGlJ4wEt7CEfGFR3FdGrQ0dvSdNk/xQYh/mUMVmnnM++uL43h262A5Px/Pavv/38y6//+P6n73751+/ToPlUS/ki"
    "q3o6bLWdnkXIoyPAnfQJ/b57+sO6fjMIlr7cxP++6/dOf1jXb4Y96Usd+95W329GvBCNeotmPotsW2RNb7HT0/jFyPW8gKJl"
    "FUzTa/70pG7PIlbpSnLPKmvbydo+qdOzqJTId+TjLrptZOd0hVOfMACns7OqiD4cFdb15yeNJE92czn36wZgTEZy+4rHj0Qj"
    "lI9D6j3L2IfwpBNnqXSVPz+hs4ik+gs7ewc8H9hZkMdx8HxSH15YshY59tikdTZISXJQd7BiM2ieLx93T39Mzx0Y9nh2Q/Ko"
    "LQd5JjQsRR6ng9o3u0mnh5N58GlD8aDVd4diM3v6fGTxoSNiunB/RM/Mwx46orjoeHdEz0yKHzqgtOh0e0ApfSX+kxedbw7l"
    "pue8paEgQJjJegJFbH0ZVAvRzIeCg08bil6MvqmVoF9CK/qWVvTThoJ0eDKTrpJlmOTnE2D6ETTWaK9DjFtJxRre+xjYdvBp"
    "A7OLsU8d2C20fgSrfejA3GImm9Pf86BXYGHGL8Z/aW9fjOCasJgw6+29F5y+vGzjYmaBm+Q2PQFWX4nicpWi+pqMeJKkvUkj"
    "jkt6kFV8CZh/due1/Tpt2k7E/qnV2S+SurUxF1qgj+kI/vbUVCA/JhP4wnDpotfR2bwTnNwQnHJwMqRf/vuHX3/86Zd/T2dW"
    "TOY8VNDpy56n26fz2Vr5vHX+660yumPFu7xmkzpFUvdH+GeT12wm6XnsSyf3tuQ1fhXTaN/Im1KcTWoFTbr87q3uQVKcTa/V"
    "tviFTxAPJHnvSZO378OzGb4a877weZp3KbfZJKNx3BPTx+PldF8kM8dp0PL5dceK2eymcdxP1EejH4Jy0lr5/LrlNZtYreVl"
    "bLbhoTK71+KLy82oqHMKOpZ1U1azsLgz4f3gPWnOJndrb32UNA+Pfa/SnE8wP5b56Rw54yqfX3lmMZ3lLouhIbGUHiKxwH2d"
    "5fMrl9h8qv3KxsYSm873X/n+RGLTdQbPY2NvLoMdvyxr9KKR23KcLnIoY373lvcoOU6XVlzZ2B3JTZdwXPn/HclN14qsrNjZ"
    "5K5MtpbYdEnKmpXdzT7/bLnsfOVLLTEf+BKQd53NOqOzCzmZbX2vvMp1r3VuB+/Kc7r8pvbZR8nzDeezj5LndA3QY3ng+8ln"
    "54uLSiZbsto/dz779+8+/vzxd74J7Md/ypZWFUHhL9vzezplu1irs16sczkvNqhgFm/AGeXJPs2NraLMn5uYPY4Yq5eUVFic"
    "zfI4tlMh5CV5xXOSKU8E2vV5P5icWsrru53PsHWdkyxmi3FxIThkQdAnz9GKTD7hNJW4mZazizMe3XAWPoJfo16c0574oxOu"
    "Rvtmiehh8jw9rA+6uuCRExjl8DPG5NAqe0M8QteTRqLquXgH7opLkpUndB1aUzwJ37zjuDxOxYBwCprj1+BlYJmdwPUYPZJe"
    "D+fMHGrcXqqnSfQWbz06xr/RRIbcrLW41EIGeTGUHi42WkWO3RjcSGu2qYJdskgIfwZeZc0SsoscIZdz2ZjZGUsfoKyN5bCi"
    "PBHKOIaTubxHE4pxLWRrg4bkNl1mtAvheBkNL9PoOk71ho9iGiW9cOwF2jYxEZ0gJ9gJJOOUoWpUphQD58qoCK8dZAepcWE/"
    "ggBsJKDJ4Dn4rD2NJvNvaz3UkyCBEOmnVuM+nv+wR0s0IS42BWbGOuEHlxzswYx2OrI2Wr7KtdQSA0ZqqxUXctCGFXu1CvgO"
    "K8pzB0FHgh26CBWJEaiQKFBLpfjoSflpzjDPTJvRSLI8xAuB0x4SLchAPjyXooG1Omgc44G+YLN0Opg/ZI1LPZrOYhie6hLd"
    "QHhsNcbiVJC357p7HfjsrqWv0GhMTrS+5EXBDj2M0UKDUCH+TviXxiMgheOBHgcP8ZYyludys/g1lIFb4W/veZIPJOaRq3XF"
    "sqE/6sjbRMOEhcCiIv2CzpDZUYOx6iVCJHRt2D/8CU6XAkaLP7koSlt6XoRTapztV2/BrTBmrZU8HxyJGjQV9I3mYQuKUDAw"
    "Bg/7tjE4TUfPpHWUsINDZHqEYL6FEQpuWNgp7B7HAz0LEJdYONZcv8RtpGOWwgFRAZKJ8BxcAp25zJtkWKIPCfgVHDrlHR/L"
    "hwLFzg2zOQgS99E5c8c/bZ3oAveBkLjuKdIY4MNUqCNOwSYhU/QKcKe0CJ3MBmAW2TFjxEE0BwoNyrghUbSA0xzIFAdlMtE0"
    "wzwc8CXCl1kMzwRNI4JNnvoM7KxH5j9aoQRbUkrZVGIITC1WS5XkIP5bHQdhAUJJSpmh46ybJU4WQToCI1w0EBQyFcXHzPFJ"
    "w9Da8vcQoDQoyxT04ppqBxvL3DCHagZOBxo+nw/XWZLojKPcuoytGkgCd2D8QMyAhCIxEyOHFGB/iGnaaCIsXJSb8CSamuJS"
    "QMQI4CrAi3XLJK8xRKNoMzq4D0Cddoubo33L/nhIWlP2dI+U0TcIBg6LaETAjOIwMFj4FgWINoFgC/qq+bbCcjCLvRAEIFdc"
    "qp0r75/UVDAHgYBED1cCFLQmBz6j5BeKBF0hWAjqGKpYJRgryzsSwBCWVqdywVDSKUUGRg+IAOqjzcSrEPGUvKnR8i4EBfwK"
    "d86MpM77TBkpeCzkCFxw1nt2xKI7LCZRFpEwbhAMhPwkYBjxBWeWTTC1vPZRwMcFGJtoXjOEoA24IeM8jADnRM131Qcom1rG"
    "mV66ApelOIBt7FzgWBAbcL5jYAL28EWciQEZgsAvsAZeSqiFuhnHEtHAeQRqCiDSX7OolBQH2QQjtEokGxA8pKEZq6CnQiuI"
    "eMQA4rlyiL3QF7tl+GykNiHRsI32A/cC2GTv4vqcg4d5VFvu7Qdv8bWywV4bjuodF4BF9HRaa7a0r0CD42itlFOcFXcgWYqR"
    "BgAZE/jJc4B3jLVQIwVL6oAzMXKgp5iKGDnEY4idsIycBbQN5Y1cuWgj0lcCDSkzlsCkE3kbg5NxEgo1PUCW0vBNJYA5ZWm0"
    "htGAvsjdHgQOYxBlkf8UP0OneDTRO3kK/TiAwcG2BC8ihwVwzvwFjgOSBsXwve4AaeieCiVWakcPRmvweCKhBB16s9JalEen"
    "05GWaDOVmsB7SbxosgRYgyESbJ3woRD2eKUYXzXwiSBWJJv4ftLILSigXlqQB2zSQD2BmqHARUH+EBRjs4oSS7O8IxUaTE6w"
    "y9NFubyS/eNINDWN8VuhqTlK1zIDniXxNMRJxAHKCELCSKg4XMRKLjzY81Y8qmVYaId3iYShTADC0UB/zFHYtcvitUo2v4H0"
    "mAWAQ/MMkBESNF6P0EQdOtFSBnsH08gcYJB2XQmNRF56HxmcohgZ5B3ZI40v0XYU2QawD9jESIhwQSpkqTzaY5ClyADHgY+l"
    "gHDieHPxsYxodvjYfnDjfg6ojVvXb2z998f/+qHQvmaRak36Su4SSXT33UsQ/A0CLC0QoQT8i1gSoZl9axOYsiKvjczdIDUv"
    "6vAriclG6K8iNTPcmAcqF6KveCzm9bT1foRfcWuFk/BL3LifnETnM0LhKEJkT+Tl6C6xM7u1DcQNY1cKV8g+SGbadgJDhiAH"
    "eXpm8obMD3AMuw9kUpG7zBh5+kxeWsxDLttKHHY1NmZoeikjluSPYB+B2rBN/OlxJkmzknxM2F21IV0mqZaeeSdxhkERdF7L"
    "4HIU/sTYY4ghuMlCVqQZkzPDpc3k1bAXaMoY7ZgzkU+QpTmxPAqLnBDeQTQMqz4IFUuQXMkgQIDi4l6RKGmEuwU69GDDJ8SI"
    "vFoDMIm5CrqHUYJKaQYh41s9KiafZMzG7XZith2A4IeIeizLMDUi5m5WwJgpaSRGh1hD30Bs5Hpu8h+hv6QjDOFWNIR0h5yZ"
    "qAjGre1gfwjoGllK3p4n1M32sPL1eOexgUMOXSYu4zwJjgFUSqTIm7zI98rfnnmKTgISxDjChhKjzMKICQnQFHm6gOFaTNjE"
    "Dp0ggAE1WYpBHkRFKpFPVkzFkDd7pj6JDnnojeFb+bym7RHwyw7aLAAnhrs7rmGJsdzKR9IJOAHUs58CoAXKICw5Iazk+OgN"
    "8Zw3IaNin/eiB7ILI/kfdzVaU60oXB1jzKvjsVlYX5S8XPO5as/MkaESTDaLzWxbP+GSrBooUmt3dXkvN7AkMX+kv2lJvLnD"
    "ndWSk3rnC2OhIoLQNCvsE6a1lj+sOe/UREKVJTuFQpSzm0K4L9iGilAlPBz+6yl/uDswDcadmRwd+z0ZzUwO8YBsIrJVYgNz"
    "WKclUjDFggzDOjRLk97+JHgl6oMEDgo2ea1lII+L8lSHIhOi1bNuhLgI3BSqxfBK2BQ0MXKX4TMb8AmaV17LuLL3y+YV8vXw"
    "CkjBDL2CJj0usbEWwG35aBagLsKVF/JCWrIS6SNorSaiN3OPdBiBd8+0kehLZylMG1o0kV7Cghx33woEMdnikTu1kPQi6uEr"
    "xMICC8BbZFbiDssx3JUNbgR5EZnLfmJIbJlIQ6jskdRiBOQlJAgeexIPKSUwEwdNYulpIQW1soDIZW4+iIBGBqKtTAAYUtUl"
    "seJWDEJC5GpJUjJSDDySgPABQMfIv1bjiotwLHtFlgmIybpsoUZMAcVxrEs54cBCDTePZXhgqTDQNCkdZsZHeBV5kQF5I3NE"
    "LHNtBz30BM+wBC1WCxAWVNkv0krpJiUWakh2ELA4TJj+fmfgAANaZCrlGEcWqZaxLsPsc7VpI/UzZ0nOcPWOd6JegqOj66EX"
    "LMOAqiF6wrEXElQmQaTiJdlliNXMBNbOBxoZ2FQUt44Cg2RvQig3gDKWnbcsZXjPIbCoAmo7fKbJsxQC8LjrH6B7MZ79Y303"
    "92S/ZkW8R14C6ED+TGYcmCYEjjqz6gT2qpiJMFdhCdIJCcmslID9o+ewMFp2ZlYOT8GAXcG+FX+ApbRS5BdUvpHBU5CWl7kU"
    "mPw7ygeWQhjxtBIAKXkRqT+xkt1wQQpymvwPrIxgjj5qZlyI8plltcxUJXqhyCyRskK+5eTQM82AOIuAkcSfkE0s2dFAkVNK"
    "zZqci/MX0AZxEtya6alswKTlMa7AdIg3j6yPe8dIJDk2uIOYIevvyE6yFK1oIGiUWOlzkQW9G34nbTNFyrvZJ5aGOXcJg4lq"
    "8xRYIfALjTnJmZMYCgOtL0WqPDAZyN8QrdbqLLKQ6l2W8rUymZTM0GSgosmqRcuSGZPIyGdDE2EAQ2VGB3q0SIFhj45JkkVE"
    "7yOWJ1/mEOwexeBYfMgUySFr3hBIFEJRypdW/pY6pQ9Em83PzB7GTRalwFNILjVrCCS7hsDL2MIU1TMDJmeRPQIY/5g40O4B"
    "eWl/co8mQtpE3Mc5ZWxoDP0LSDs4g8DUqOTSR3ZC4lhMkSYr1FmqsJw5gOZYRWKdFoeEbEQkp6zj4xzgsV5KNqrW6Z7AWTRm"
    "sZxvQPRYAxEzWxo+biA5h4EIpI5NGqpI3L0NpMJOGzXb8xiCBOVN2wZrJHMVnMjX2jbM2DZYkxnjSTLoW+S8itFS3UPP6L0E"
    "zaA5UwQBMU0ypB6WczzwWyn9sb7GwjlDJktc3siaKOVLokV38RIxOGRTUqQlsUhFCFaWEAW/5L5GpCBIjwlprIsAUgTqCSZa"
    "mbzGevSQ1zg+3I5zmPJLQcwxg0JkYaEX3guTSWbDERtYbkfAJHmC+UfapqhBWJShYwOyOR5DYErJ7EjImiX3hN3TDyanm1cQ"
    "y3Ay6S1VHUPcLD2xrC8ZohMi4PlQ1JYCyXQOkhVoJDLjL1xyz34QybZ6BtQhVNgFBkZyn1JvMIOpdUYFH9W6Fy6nG2wFIPxa"
    "GQmwramk/Ya29omdWYafpcpFpVPzpaZqxQpkhiuyzJwjK4eOialm2sL83golxgCTk8omLJ6FQVZewLM1mChlyekXLROErGuw"
    "DmLJpYPU55HrcR5OHqWWcoJi2UTK+NlTc0527XWsz0GALJQ5BUwAkshscKlDJUuVRiEhkeIvQIM0KnIaIsueqqzJwm6DVJ1Y"
    "giVRR/LMuqEiogMJnPAmtWkb3Q37305gVUnlWbIdmDmMIbLq6qTojbZ4TeStAxNK8PHAoCYgJe2RunD6dlAvBeYiRTNqfa8n"
    "K1VHvRT5KnPrbNbdALfv3B1wpu5c40Kl7iQOk5lWwQoZvhLre56JIRKEFIToGZmYsLLXipTUpWTo6MLRkog7KUMmzpVG8VqW"
    "z5gFCQnEASPuF8hmHScDyP21KB+xQQkjIFwERvjohUuIs3pWtp1nqdpr5iLwsbhRB8cqIfJEJTckUwRvZjmUPLxoB5+SKGQS"
    "nyzTKmhxI0GOb3ohXVJH4sakCCEFNpA4p8JJXFhvqV96mnOQ4mw2MinjtOS9VgoODEBc7EProfdHzkw64LrkJJpk2stkAlxk"
    "OAWVIGD6iUQASLaZgloP/jHf8/6kc928gqFSOssgNGJOrVKvcNqQduxTVorGVnbD0ALNtD5dpcCaM9BUrDaa0/Bc+cCNrbfZ"
    "RiiSOb6SMpflNLuOTsrkXDKAICG4wugC8YZyDquqMkUrczSZRR0WVWVa3W8q53wEpzxpqIYFJwQGbg/AuEaCShNNnOJ0Umu3"
    "FKHjPDeDt5J6PFBAuG0yTorOTBos2aeXjCQQ1NFLWcwh9bIyCyaTVZI0wWjIQTJn5TB+/mI51+SCyhWZiswsEFn88J3mWbKY"
    "oml0CuhTvcR8PVg0LXnETMWsjIxVLM4GxVmzx7HkhNtS3JyMT7R6apDFdEmLS5bGOiHpsUzVwlKjrHKgPrUkfpbFR6iKU42R"
    "awBwL+5p4VnIAQoRVMkVYfbMQ1nG4bILDfRP9H9W/JUoCWdwvYCsmYluXynC3C3IlXGd0cYxToUogXArky9OWID00smcFHo8"
    "qkvCzHLeU0hSyJQ1KUow28QDVC5zqhLy1pUhQWTFcMBS75rlkCJxSAxAgEBVfIgzb7IQBbgfh1AeWWqIZQMMQICud1mywAVQ"
    "pbC59fF9qvNQP1VdV1TK4iGZpNRcHkcZCmpzOKSXHCYTHc1UAYQHASgo2V6c05kSCIB+QUqNTmaHvHN6DYOeOREVxROVlVVJ"
    "4ANrwsGEjVpQnN7EfZPdhc5pfkQwriBips75JbtwSmRzaitzk4bMA8knvCJKNVdUvyVbzDWdwHvgFHmwpPHWl4UDdFwlawGk"
    "LgziTWrCME8TJZcsE1aAHCU5n0whCyqUCqVPR8rDnyPXjLCKryVsFXvnOW73pqxHEI62IFar193XGaCeoOtv/x/Lie2R"
)


def _decode_gpu_cases():
    cases = json.loads(zlib.decompress(base64.b64decode(GPU_CASES)))
    return [pytest.param(c, id=c["name"]) for c in cases]


@pytest.mark.parametrize("case", _decode_gpu_cases())
def test_h200_measured_dot_products(case):
    """One dot product measured on the H200 (tensor-core kernels: cuBLASLt nvjet/CUTLASS wmma
    with K a multiple of 8, and Triton tl.dot with BK=16 for c): D32, half output, fused bias,
    and c as the initial accumulator. See docs/fidelity.md for the probes."""
    fmt = fp16 if case["fmt"] == "fp16" else bf16
    dt = NATIVE[fmt]
    a = np.array(case["a"], np.uint16).view(dt)[None, :]
    b = np.array(case["b"], np.uint16).view(dt)[:, None]
    got = {"D32": tensor_core_matmul(a, b).view(np.uint32),
           "D": tensor_core_matmul(a, b, out=fmt).view(np.uint16)}
    if "bias" in case:
        bias = np.array([case["bias"]], np.uint16).view(dt)
        got["linear"] = tensor_core_matmul(a, b, out=fmt, bias=bias).view(np.uint16)
    if "c" in case:
        c = np.array([[case["c"]]], np.uint32).view(np.float32)
        got["tri16"] = tensor_core_matmul(a, b, c=c).view(np.uint32)
    for key, want in case["expect"].items():
        assert int(got[key][0, 0]) == want, (key, hex(int(got[key][0, 0])), hex(want))
