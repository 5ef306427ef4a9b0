"""simprec.cudamath.libdevice.fma32: the correctly rounded fp32 fused multiply-add (every CUDA
math function in simprec is built on it), against an exact rational reference, on random
operands and on sums that a plain float64 evaluation would round twice."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simprec.cudamath.libdevice import fma32

f32 = np.float32
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered")  # the reference's casts


def exact_fma(a, b, c) -> np.float32:
    """RN-even of a*b + c to fp32, from the exact rational value (an independent reference)."""
    a, b, c = (float(f32(v)) for v in (a, b, c))
    if not all(math.isfinite(v) for v in (a, b, c)):
        return f32(np.float64(a) * np.float64(b) + np.float64(c))
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    if exact == 0:  # the sign of an exact zero: as IEEE (-0 only if both terms are -0)
        return f32(np.float64(a) * np.float64(b) + np.float64(c))
    guess = f32(float(exact))
    best = None
    for cand in (np.nextafter(guess, f32(-np.inf)), guess, np.nextafter(guess, f32(np.inf))):
        if not np.isfinite(cand):
            continue
        dist = abs(Fraction(float(cand)) - exact)
        even = int(np.array(cand, f32).view(np.uint32)) % 2 == 0
        key = (dist, not even)
        if best is None or key < best[0]:
            best = (key, cand)
    limit = Fraction(float(np.finfo(f32).max)) + Fraction(2) ** 103  # past it: overflow
    if abs(exact) >= limit:
        return f32(math.copysign(math.inf, exact))
    return f32(best[1])


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(finite32, finite32, finite32), min_size=1, max_size=30))
def test_fma32_is_correctly_rounded(triples):
    a, b, c = (np.array(col, f32) for col in zip(*triples, strict=True))
    got = fma32(a, b, c)
    want = np.array([exact_fma(*t) for t in zip(a, b, c, strict=True)], f32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (a, b, c, got, want)


@settings(max_examples=300, deadline=None)
@given(st.integers(-100, 100), st.integers(0, (1 << 22) - 1), st.integers(1, 180),
       st.sampled_from([1, -1]))
def test_fma32_near_ties_round_once(exp, mantissa, i, sign):
    """x + ulp/2 - tiny: float64 rounds the sum onto the fp32 tie, fp32's rounding then goes
    to the even neighbour; the fma is x (an odd significand, so that the two differ)."""
    x = f32(sign * math.ldexp(1 + (2 * mantissa + 1) * 2.0**-23, exp))
    half_ulp = math.ldexp(1, exp - 24)
    a = f32(sign * half_ulp * (1 + i * 2.0**-23))
    b = f32(1 - i * 2.0**-23)
    assert float(a) * float(b) + float(x) == float(x) + sign * half_ulp   # the double rounding
    assert fma32(a, b, x) == x == exact_fma(a, b, x)


def test_fma32_broadcasts_and_keeps_specials():
    a = np.array([[1.0], [2.0]], f32)
    got = fma32(a, f32(3), np.array([1, 2, 3], f32))
    assert got.shape == (2, 3) and got.dtype == f32
    assert np.array_equal(got, [[4, 5, 6], [7, 8, 9]])
    specials = fma32(np.array([np.inf, np.nan, 0.0, -0.0, 3e38], f32),
                     np.array([0.0, 1, -0.0, 0.0, 10], f32),
                     np.array([1, 1, -0.0, -0.0, -1], f32))
    assert np.isnan(specials[0]) and np.isnan(specials[1])
    assert specials[2] == 0 and np.signbit(specials[2]) and specials[3] == 0
    assert np.signbit(specials[3]) and specials[4] == np.inf
    assert fma32(f32(2), f32(3), f32(1)) == 7
