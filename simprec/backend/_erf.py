"""A correctly rounded erf for float32 arrays (float64 series, rounded once; NumPy has no erf).

The NumPy backend computes erf as CUDA's erff does (`_libdevice.erff`); this is the exact
reference the tests and the analysis can compare that against.
"""

from __future__ import annotations

import numpy as np

_TWO_OVER_SQRT_PI = 2.0 / np.sqrt(np.pi)
# Beyond this |x|, erf(x) rounds to ±1 in float32 (erfc(3.92) < 2**-25).
_SATURATION = 3.92


def erf32(x: np.ndarray) -> np.ndarray:
    """erf of a float32 array, correctly rounded to float32 but for rare ties.

    Uses the series of positive terms erf(x) = 2/sqrt(pi) e^(-x^2) sum_n 2^n x^(2n+1) / (2n+1)!!
    (Abramowitz & Stegun 7.1.6) in float64: it has no cancellation, so the float64 result is
    accurate to a few float64 ulps, far below float32's half-ulp.
    """
    x = np.asarray(x, dtype=np.float32)
    xd = np.clip(np.nan_to_num(x.astype(np.float64)), -_SATURATION, _SATURATION)
    two_x2 = 2.0 * xd * xd
    term = xd.copy()
    total = xd.copy()
    n = 0
    while True:
        n += 1
        term *= two_x2 / (2 * n + 1)
        total += term
        if n > 8 and np.all(np.abs(term) <= 1e-17 * np.abs(total)):
            break
    out = _TWO_OVER_SQRT_PI * np.exp(-xd * xd) * total
    out = np.where(np.abs(x) >= _SATURATION, np.sign(x), out)
    return np.where(np.isnan(x), x, out).astype(np.float32)
