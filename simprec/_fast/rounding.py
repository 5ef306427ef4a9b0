"""Rounding to nearest-even into fp16 or bf16 (`simprec.formats.round_array`), compiled: one
pass over memory, split over the machine's cores for large arrays.

The rule for one value is `simprec._fast.elementwise._round` (integer rounding of the bit
pattern in the normal range, the float trick `(|v| + 0.5) - 0.5` on fp16's subnormal grid),
the same bits as the specification's block-wise NumPy passes; NaN stays NaN (its payload is not
specified). Other formats and modes run on the specification.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..formats import bf16, fp16
from .elementwise import _round

_CHUNK = 1 << 15         # values per task
_PARALLEL_FROM = 1 << 20  # smaller arrays: one thread (a parallel call waits for all threads)


@njit(cache=True, boundscheck=False, error_model="numpy")
def _round_serial(x, out, rnd):
    if rnd == 1:  # the format a compile-time constant in each loop, so that both vectorise
        for i in range(x.size):
            out[i] = _round(1, x[i])
    else:
        for i in range(x.size):
            out[i] = _round(2, x[i])


@njit(parallel=True, cache=True, boundscheck=False, error_model="numpy")
def _round_parallel(x, out, rnd):
    n = x.size
    for t in prange((n + _CHUNK - 1) // _CHUNK):
        if rnd == 1:
            for i in range(t * _CHUNK, min(n, (t + 1) * _CHUNK)):
                out[i] = _round(1, x[i])
        else:
            for i in range(t * _CHUNK, min(n, (t + 1) * _CHUNK)):
                out[i] = _round(2, x[i])


def round_nearest(x: np.ndarray, fmt, out: np.ndarray) -> bool:
    """out := x rounded to nearest-even into fmt, for C-contiguous float32 x and out of one size
    (out may be x); False (nothing done) unless fmt is fp16 or bf16."""
    if fmt == fp16:
        rnd = 1
    elif fmt == bf16:
        rnd = 2
    else:
        return False
    xf, of = x.reshape(-1), out.reshape(-1)
    if xf.size >= _PARALLEL_FROM:
        _round_parallel(xf, of, rnd)
    else:
        _round_serial(xf, of, rnd)
    return True
