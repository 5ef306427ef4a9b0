"""The machine-independent torch reference of the optimizer tests (tests/torch_reference.py):
its fma is the correctly rounded one, double-rounding ties included, and it is what the
optimizer tests' torch runs use."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_reference import fma32

torch = pytest.importorskip("torch")


def _correctly_rounded(a, b, c) -> np.float32:
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    near = np.float32(float(exact))
    candidates = (np.nextafter(near, np.float32(-np.inf)), near,
                  np.nextafter(near, np.float32(np.inf)))
    return min(candidates, key=lambda v: (abs(Fraction(float(v)) - exact),
                                          int(np.asarray(v).view(np.uint32)) % 2))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-2.0**60, 2.0**60, width=32), min_size=3, max_size=3))
def test_fma32_is_correctly_rounded(abc):
    a, b, c = (np.float32(v) for v in abc)
    got = fma32(a, b, c)
    want = _correctly_rounded(a, b, c)
    assert got.view(np.uint32) == np.asarray(want).view(np.uint32) or got == want == 0


def test_fma32_on_a_double_rounding_tie():
    """a*b + c = 2**30 + 64 + 2**-34: float64 rounds it onto the fp32 midpoint 2**30 + 64, which
    rounds to even (2**30); the correctly rounded fma is 2**30 + 128."""
    a, b = np.float32(8 + 2.0**-17), np.float32(-(8 - 2.0**-17))
    c = np.float32(2.0**30 + 128)
    naive = np.float32(np.float64(a) * np.float64(b) + np.float64(c))
    assert naive == 2.0**30
    assert fma32(a, b, c) == np.float32(2.0**30 + 128)
    many = fma32(np.full(5, a), b, np.array([c, 0, 1, c, -c], np.float32))
    assert many[0] == many[3] == np.float32(2.0**30 + 128)


def test_pinned_optimizer_kernels_are_fused(pinned_pointwise):
    """Under the fixture, torch's add(alpha) is one fma: a case where a separately rounded
    product gives other bits."""
    x = torch.tensor([np.float32(2.0**30 + 128)])
    y = torch.tensor([np.float32(8 + 2.0**-17)])
    got = x.add(y, alpha=-(8 - 2.0**-17)).numpy()
    assert got[0] == np.float32(2.0**30 + 128)
    unfused = np.float32(np.float32(y.numpy()[0] * np.float32(-(8 - 2.0**-17))) + x.numpy()[0])
    assert unfused != got[0]
