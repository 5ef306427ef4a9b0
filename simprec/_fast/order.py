"""The summation orders of torch's CUDA reduction kernels (`simprec.backend._order`), compiled.

The specification builds each reduction from backend primitives, one NumPy pass over a whole
(rows, threads) array per thread step: right for a reader and for every backend, but on small
rows (a GPT's 64-wide layer_norm, 1,024 rows) it is hundreds of Python calls for a few thousand
additions. Here each kernel walks the same threads in the same order with scalar fp32
arithmetic, one compiled loop per row: every addition, fma (`fma32`, the hardware's one
rounding) and division is the specification's, in the same order, so the bits are the same
(tests/test_fast.py holds them together). The caller (`_order`) keeps the launch
configuration (threads, steps, blocks) and hands it over; NaN payloads aside, no result
differs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .elementwise import fma32

f32 = np.float32
_ZERO = f32(0.0)
_ONE = f32(1.0)


@njit(inline="always", boundscheck=False, error_model="numpy")
def _fold(v, length):
    """v[0] after v[t] += v[t + h] for h = length/2 .. 1 (in place): the shared-memory and
    warp-shuffle trees (`_order.fold_halves`)."""
    h = length // 2
    while h > 0:
        for t in range(h):
            v[t] = v[t] + v[t + h]
        h //= 2
    return v[0]


@njit(inline="always", boundscheck=False, error_model="numpy")
def _block_reduce(lanes, scratch):
    """`_order._block_reduce` of 128 (a multiple of 32) thread values: a tree in each warp, then
    the warp sums, padded to 32 lanes with zeros, through one more tree."""
    warps = lanes.size // 32
    for w in range(32):
        scratch[w] = _ZERO
    for w in range(warps):
        scratch[w] = _fold(lanes[w * 32:(w + 1) * 32], 32)
    return _fold(scratch, 32)


# --------------------------------------------------------------------- layer_norm (Welford)

@njit(inline="always", boundscheck=False, error_model="numpy")
def _welford_combine(mb, sb, cb, ma, sa, ca):
    """`_order._welford_combine(own=(mb, sb, cb), other=(ma, sa, ca))`."""
    delta = mb - ma
    count = ca + cb
    coef = _ONE / count
    na = ca * coef
    nb = cb * coef
    mean = fma32(na, ma, nb * mb)
    m2 = fma32(delta * delta * ca, nb, sa + sb)
    if count <= _ZERO:
        zero = count * _ZERO
        return zero, zero, count
    return mean, m2, count


@njit(cache=True, boundscheck=False, error_model="numpy")
def welford_rows(x, mean_out, var_out):
    """`_order.welford_rows` of the C-contiguous float32 (rows, n) array x, n % 4 == 0:
    128 threads, thread t a Welford pass over its 4-vectors t, t + 128, ...; then the shuffle
    trees inside the 4 warps and across them."""
    rows, n = x.shape
    nvec = n // 4
    steps = (nvec + 127) // 128
    mean = np.empty(128, np.float32)
    m2 = np.empty(128, np.float32)
    count = np.empty(128, np.float32)
    n32 = f32(n)
    for r in range(rows):
        for t in range(128):
            # the state starts as the thread's first element times 0 (the specification's
            # zeros; -0 or NaN where that element is negative or not finite), 0 for idle ones
            z = x[r, 4 * t] * _ZERO if t < nvec else _ZERO
            m, s2, c = z, z, z
            for s in range(steps):
                v = s * 128 + t
                if v < nvec:
                    for i in range(4):
                        value = x[r, 4 * v + i]
                        delta = value - m
                        c = c + _ONE
                        m = fma32(delta, _ONE / c, m)
                        s2 = fma32(delta, value - m, s2)
            mean[t], m2[t], count[t] = m, s2, c
        for w in range(4):
            off = 16
            while off > 0:
                for lane in range(off):
                    a = w * 32 + lane
                    b = a + off
                    mean[a], m2[a], count[a] = _welford_combine(mean[a], m2[a], count[a],
                                                                mean[b], m2[b], count[b])
                off //= 2
        for off in (2, 1):
            for w in range(off):
                a = 32 * w
                b = 32 * (w + off)
                mean[a], m2[a], count[a] = _welford_combine(mean[a], m2[a], count[a],
                                                            mean[b], m2[b], count[b])
        mean_out[r] = mean[0]
        var_out[r] = m2[0] / n32


@njit(cache=True, boundscheck=False, error_model="numpy")
def layer_norm_dx(x, g, gamma, has_gamma, mean, rstd, recip, out):
    """`_order.layer_norm_dx` for C-contiguous float32 (rows, n) x and g, n % 4 == 0; gamma
    (n,) (read when has_gamma), mean and rstd (rows,), recip the kernel's 1/n."""
    rows, n = x.shape
    steps = (n // 4 + 127) // 128
    s1 = np.empty(128, np.float32)
    s2 = np.empty(128, np.float32)
    scratch = np.empty(32, np.float32)
    n32 = f32(n)
    for r in range(rows):
        mu = mean[r]
        rs = rstd[r]
        for t in range(128):
            a1 = _ZERO
            a2 = _ZERO
            for s in range(steps):
                for k in range(4):
                    j = s * 512 + t * 4 + k
                    if j < n:
                        gg = g[r, j] * gamma[j] if has_gamma else g[r, j]
                        b = gg * (x[r, j] - mu)
                    else:                                 # padding: zeros
                        gg = _ZERO
                        b = _ZERO
                    if s == 0 and k == 0:                 # 0 + a and fma(rstd, b, 0): exact
                        a1 = gg
                        a2 = rs * b
                    else:
                        a1 = a1 + gg
                        a2 = fma32(rs, b, a2)
            s1[t] = a1
            s2[t] = a2
        total1 = _block_reduce(s1, scratch)
        total2 = _block_reduce(s2, scratch)
        scale = rs * recip
        for j in range(n):
            scaled = total2 * (rs * (x[r, j] - mu))
            weight = gamma[j] * n32 if has_gamma else n32
            f = fma32(g[r, j], weight, -scaled)
            out[r, j] = (f - total1) * scale


@njit(cache=True, boundscheck=False, error_model="numpy")
def layer_norm_gamma_beta(x, g, mean, rstd, threads_y, per_thread, dgamma, dbeta):
    """`_order.layer_norm_gamma_beta` for C-contiguous float32 (rows, n) x and g, mean and rstd
    (rows,): thread y of each column walks rows y*r .. y*r + r-1 of every tile of
    threads_y * r rows (zero rows past the end), then the threads_y sums are folded."""
    rows, n = x.shape
    per_block = threads_y * per_thread
    tiles = (rows + per_block - 1) // per_block
    dg = np.empty((threads_y, n), np.float32)
    db = np.empty((threads_y, n), np.float32)
    for t in range(tiles):
        for y in range(threads_y):
            for i in range(per_thread):
                row = t * per_block + y * per_thread + i
                first = t == 0 and i == 0
                if row < rows:
                    mu = mean[row]
                    rs = rstd[row]
                    for j in range(n):
                        p = g[row, j] * (x[row, j] - mu)
                        if first:
                            dg[y, j] = p * rs
                            db[y, j] = g[row, j]
                        else:
                            dg[y, j] = fma32(p, rs, dg[y, j])
                            db[y, j] = db[y, j] + g[row, j]
                else:                                     # padding rows: zeros
                    for j in range(n):
                        if first:
                            dg[y, j] = _ZERO
                            db[y, j] = _ZERO
                        else:
                            dg[y, j] = fma32(_ZERO, _ZERO, dg[y, j])
                            db[y, j] = db[y, j] + _ZERO
    h = threads_y // 2
    while h > 0:
        for y in range(h):
            for j in range(n):
                dg[y, j] = dg[y, j] + dg[y + h, j]
                db[y, j] = db[y, j] + db[y + h, j]
        h //= 2
    for j in range(n):
        dgamma[j] = dg[0, j]
        dbeta[j] = db[0, j]


# ------------------------------------------------------------------------------- softmax sums

@njit(cache=True, boundscheck=False, error_model="numpy")
def warp_softmax_sum(v, total, out):
    """`_order.warp_softmax_sum` of the C-contiguous float32 (rows, n) array v, `total` the
    next power of two >= n: lane l adds elements l, l + W, ... in order (zeros past n), then
    the lanes are folded in halves."""
    rows, n = v.shape
    warp = min(total, 32)
    lanes = np.empty(warp, np.float32)
    for r in range(rows):
        for lane in range(warp):
            acc = v[r, lane] if lane < n else _ZERO
            for i in range(1, total // warp):
                j = i * warp + lane
                acc = acc + (v[r, j] if j < n else _ZERO)
            lanes[lane] = acc
        out[r] = _fold(lanes, warp)


# ---------------------------------------------------------------------------- column sums

@njit(cache=True, boundscheck=False, error_model="numpy")
def reduce_cols(x, step, ctas, height, out):
    """`_order.reduce_cols`' arithmetic for the C-contiguous float32 (rows, cols) array x, the
    launch given: row s + k*step goes to accumulator k % 4 of thread s (each starting at +0),
    the 4 accumulators added in order, then the step threads folded (in halves when they are
    one block's warps; with `ctas` blocks, each block folded, then the last block's threads
    sum the partials in rounds and fold)."""
    rows, cols = x.shape
    groups = (rows + 4 * step - 1) // (4 * step)
    acc = np.empty((4, cols), np.float32)
    lanes = np.empty((step, cols), np.float32)
    for s in range(step):
        for a in range(4):
            for c in range(cols):
                acc[a, c] = _ZERO
        for g in range(groups):
            for a in range(4):
                row = g * 4 * step + a * step + s
                if row < rows:
                    for c in range(cols):
                        acc[a, c] = acc[a, c] + x[row, c]
                else:
                    for c in range(cols):
                        acc[a, c] = acc[a, c] + _ZERO
        for c in range(cols):
            lanes[s, c] = ((acc[0, c] + acc[1, c]) + acc[2, c]) + acc[3, c]
    if step == 1:
        for c in range(cols):
            out[c] = lanes[0, c]
        return
    for b in range(ctas):                     # each block folds its `height` threads
        h = height // 2
        while h > 0:
            for y in range(b * height, b * height + h):
                for c in range(cols):
                    lanes[y, c] = lanes[y, c] + lanes[y + h, c]
            h //= 2
    if ctas == 1:
        for c in range(cols):
            out[c] = lanes[0, c]
        return
    rounds = (ctas + height - 1) // height    # the last block: thread y sums partials y + k*H
    threads = np.zeros((height, cols), np.float32)
    for r in range(rounds):
        for y in range(height):
            b = r * height + y
            for c in range(cols):
                threads[y, c] = threads[y, c] + (lanes[b * height, c] if b < ctas else _ZERO)
    h = height // 2
    while h > 0:
        for y in range(h):
            for c in range(cols):
                threads[y, c] = threads[y, c] + threads[y + h, c]
        h //= 2
    for c in range(cols):
        out[c] = threads[0, c]
