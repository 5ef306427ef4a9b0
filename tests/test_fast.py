"""The compiled fast paths (simprec._fast) against the NumPy specification, bit for bit.

Each test computes the same thing twice in one process, with the fast paths switched off (the
specification) and on, over inputs that reach every branch: NaN, +-inf, -0, subnormals of the
input and output formats, overflow, values on rounding ties. The whole suite also runs both
ways in CI (`SIMPREC_FAST=0`), so every other test holds the fast paths to their contract too.
Without numba (the GPU machine) the fast paths cannot be switched on: these tests then compare
the specification with itself, and `test_fast_paths_are_on_where_numba_is` checks just that.
"""

from __future__ import annotations

import contextlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simprec import _fast, _tensor_core

HAVE_NUMBA = _fast._numba_available()
EMIN = {"fp16": -14, "bf16": -126}
NATIVE = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16}


@contextlib.contextmanager
def fast(on: bool):
    """The fast paths on or off inside the block (back to the environment's choice after)."""
    _fast.set_enabled(on)
    try:
        yield
    finally:
        _fast.set_enabled(None)


def both(f, *args, **kw):
    """f(*args, **kw) with the specification and with the fast paths."""
    with fast(False):
        want = f(*args, **kw)
    with fast(True):
        got = f(*args, **kw)
    return want, got


def assert_same_bits(want, got):
    want, got = np.asarray(want), np.asarray(got)
    assert want.dtype == got.dtype and want.shape == got.shape
    w = want.view(np.uint32 if want.dtype.itemsize == 4 else np.uint16)
    g = got.view(w.dtype)
    bad = w != g
    assert not bad.any(), (f"{int(bad.sum())} of {bad.size} differ, first at "
                           f"{np.argwhere(bad)[0]}: {want[bad][0]!r} vs {got[bad][0]!r}")


def test_fast_paths_are_on_where_numba_is():
    with fast(True):
        assert _fast.enabled() == HAVE_NUMBA
        assert (_fast.kernels("tensor_core") is not None) == HAVE_NUMBA
    with fast(False):
        assert not _fast.enabled() and _fast.kernels("tensor_core") is None


# ---------------------------------------------------------------------------------------------
# the tensor-core model

def _half_values(rng, shape, fmt, spread):
    """Values of fmt (float32 containers): normal-ish, with every kind of edge value mixed in."""
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-spread, spread + 1, shape))
    pick = rng.random(shape)
    x[pick < 0.05] = 0.0
    x[(pick >= 0.05) & (pick < 0.08)] = -0.0
    tiny = {"fp16": 2.0 ** -24, "bf16": 2.0 ** -133}[fmt]
    sub = (pick >= 0.08) & (pick < 0.12)
    x[sub] = rng.integers(-20, 20, int(sub.sum())) * tiny       # subnormals of the format
    with np.errstate(over="ignore"):
        return x.astype(NATIVE[fmt]).astype(np.float32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), arch=st.sampled_from(["sm70", "sm80", "sm90"]),
       fmt=st.sampled_from(["fp16", "bf16"]), spread=st.sampled_from([0, 6, 14, 60, 120]),
       specials=st.booleans(), shape=st.tuples(st.integers(1, 3), st.integers(1, 40),
                                               st.integers(1, 70), st.integers(1, 150)))
def test_tensor_core_model(seed, arch, fmt, spread, specials, shape):
    """Random batches with subnormals, signed zeros, K off the block size, wide bf16 exponents
    (the float64 path), a nonzero c, NaN/inf among inputs and c, accumulators that overflow."""
    rng = np.random.default_rng(seed)
    B, M, K, N = shape
    a = _half_values(rng, (B, M, K), fmt, spread)
    b = _half_values(rng, (B, K, N), fmt, spread)
    c = (rng.standard_normal((B, M, N)) * np.exp2(rng.integers(-140, 20, (B, M, N))))
    c = c.astype(np.float32)
    if specials:
        for x in (a, b, c):
            pick = rng.random(x.shape) < 0.03
            x[pick] = rng.choice(np.float32([np.nan, np.inf, -np.inf, 3e38, -3e38]),
                                 int(pick.sum()))
        big = {"fp16": 65504.0, "bf16": 3.3e38}[fmt]
        a[0, 0, :] = np.float32(np.float32(big).astype(NATIVE[fmt]))      # overflow
    want, got = both(_tensor_core.tc_accumulate, a, b, c, emin=EMIN[fmt], arch=arch)
    assert_same_bits(want, got)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("arch", ["sm70", "sm80", "sm90"])
def test_tensor_core_model_on_larger_tiles(fmt, arch):
    """Several output tiles and panels in both directions (the tiles' edges and padding)."""
    rng = np.random.default_rng(1)
    a = _half_values(rng, (2, 70, 100), fmt, 4)
    b = _half_values(rng, (2, 100, 300), fmt, 4)
    c = np.zeros((2, 70, 300), np.float32)
    want, got = both(_tensor_core.tc_accumulate, a, b, c, emin=EMIN[fmt], arch=arch)
    assert_same_bits(want, got)
