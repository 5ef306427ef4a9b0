"""The summation orders of torch's CUDA reduction kernels, written with backend kernels only.

fp32 addition is not associative, so a sum is only bit-exact to the GPU's if it adds in the GPU's
order. These kernels are modelled here for the shapes where torch launches them (verified bit for
bit against an H200, docs/fidelity.md):

- `reduce_rows`: aten/src/ATen/native/cuda/Reduce.cuh (sum, mean) over the trailing, contiguous
  dimension: each lane of a block row keeps 4 accumulators (4-wide vector loads when the row has
  >= 128 elements, else 4 strided loads), combines them in order, then the lanes are folded in
  halves (shared memory while wider than a warp, then warp shuffles 16, 8, 4, 2, 1). Long rows
  are split over the warps of a block and over blocks (whole-tensor sums and means), whose
  partial sums are folded the same way.
- `reduce_cols`: the same kernel over the leading dimension (column sums, bias gradients):
  each thread owns adjacent columns and a strided set of rows, 4 accumulators, then the warps'
  and blocks' partial sums folded.
- `warp_softmax_sum`: PersistentSoftmax.cuh (softmax, log_softmax and their backward, rows of at
  most 2048 forward, 1024 backward): lane l adds elements l, l+W, l+2W, ... in order, then an
  xor butterfly.
- `softmax_block_sum`: SoftMax.cu's block kernels for longer rows (one block per row: register,
  shared-memory and general variants; BlockReduce or the older serial blockReduce).
- `welford_rows`: layer_norm_kernel.cu's vectorized kernel (rows whose length is a multiple of 4):
  128 threads, each a Welford online pass over its 4-element vectors, combined by warp shuffles
  and then across the 4 warps.
- `layer_norm_dx` and `layer_norm_gamma_beta`: layer_norm's two backward kernels (the input
  gradient, and the weight and bias gradients).
- `fold_halves`: the shared-memory / warp-shuffle tree that ends most of them (and nll_loss's
  reduction over its 32 threads).

Each returns None when torch would launch another configuration (the caller then falls back to an
exactly rounded fp32 sum, whose order is unspecified).
"""

from __future__ import annotations

import numpy as np

from .. import _fast
from ..cudamath import libdevice, mufu
from ..formats import fp32

f32 = np.float32
_MAX_THREADS = 512  # Reduce.cuh max_reduce_threads
# H200 (sm_90) device properties that Reduce.cuh's launch configuration reads.
_SM_COUNT = 132
_MAX_THREADS_PER_SM = 2048


def _compiled(*arrays):
    """The compiled versions of these kernels (`simprec._fast.order`, the same bits) when the
    fast paths are on and every array is a host float32 NumPy array; else None."""
    if not all(type(a) is np.ndarray and a.dtype == np.float32 for a in arrays):
        return None
    return _fast.kernels("order")


def _last_pow2(n: int) -> int:
    return 1 << (max(int(n), 1).bit_length() - 1)


def _next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def _along(axis: int, index):
    """An index selecting `index` along `axis` (-1 or -2) of an array."""
    return (Ellipsis, index) if axis == -1 else (Ellipsis, index, slice(None))


def _fold(be, parts: tuple, length: int, axis: int, merge) -> tuple:
    """Element 0 along `axis` after folding `parts` (arrays of one shape) in halves along it:
    parts[t] = merge(parts[t], parts[t + h]) for h = length/2 .. 1, the shared-memory and
    warp-shuffle trees that end the CUDA reductions."""
    h = length // 2
    while h > 0:
        parts = merge(be, tuple(be.getitem(v, _along(axis, slice(0, h))) for v in parts),
                      tuple(be.getitem(v, _along(axis, slice(h, 2 * h))) for v in parts))
        h //= 2
    return tuple(be.getitem(v, _along(axis, 0)) for v in parts)


def _add(be, a: tuple, b: tuple) -> tuple:
    return (be.elementwise("add", a[0], b[0]),)


def fold_halves(be, lanes, width, axis=-1):
    """Lane 0 of `lanes` folded in halves along `axis` (-1 or -2): v[t] += v[t + h] for
    h = width/2 .. 1."""
    return _fold(be, (lanes,), width, axis, _add)[0]


def _pad_last(be, x, total, value, axis=-1):
    """x padded with `value` at the end of `axis` (-1 or 0) to `total` entries."""
    n = be.shape(x)[axis]
    if total == n:
        return x
    width = [(0, 0)] * len(be.shape(x))
    width[axis] = (0, total - n)
    return be.pad(x, tuple(width), value)


def _block_split(per_thread, height, grid, threads):
    """Reduce.cuh's split of the input across blocks (global_reduce): the number of blocks per
    output, 1 when it keeps one block (few values per thread, or a large grid)."""
    target = _SM_COUNT * (_MAX_THREADS_PER_SM // threads)
    if per_thread < 256 or grid > target:
        return 1
    return max(-(-per_thread // 256), min(-(-target // grid), -(-per_thread // 16)))


def _rows_launch(rows: int, n: int, vec: int):
    """setReduceConfig for `rows` reductions of `n` contiguous elements with `vec`-element
    vector loads: (vectorized, lanes per row, warps per row, blocks per row)."""
    vectorized = n >= 128
    dim0 = n // vec if vectorized else n
    p0, p1 = min(_last_pow2(dim0), _MAX_THREADS), min(_last_pow2(rows), _MAX_THREADS)
    width = min(p0, 32)
    height = min(p1, _MAX_THREADS // width)
    width = min(p0, _MAX_THREADS // height)
    warps, ctas = 1, 1
    if -(-n // width) >= min(height * 16, 256):  # split across the block's warps, maybe blocks
        warps = height
        ctas = _block_split(-(-n // (width * height)), height, rows, width * height)
    return vectorized, width, warps, ctas


def reduce_rows(be, x):
    """Sum of each row of the 2-D fp32 array x (rows, n) in Reduce.cuh's order; None for the one
    launch not modelled (rows shorter than 128 yet split across warps: not for contiguous
    tensors)."""
    rows, n = be.shape(x)
    if n == 0 or rows == 0:
        return None
    vectorized, width, warps, ctas = _rows_launch(rows, n, 4)
    if not vectorized:
        if warps > 1 or ctas > 1:
            return None
        # lane l reads l, l+W, l+2W, l+3W into accumulators 0..3, then repeats 4W further on
        groups = -(-n // (4 * width))
        body = be.reshape(_pad_last(be, x, groups * 4 * width, 0.0), (rows, groups, 4, width))
        acc = be.getitem(body, (slice(None), 0))
        for g in range(1, groups):
            acc = be.elementwise("add", acc, be.getitem(body, (slice(None), g)))
        lanes = be.getitem(acc, (slice(None), 0))
        for i in range(1, 4):
            lanes = be.elementwise("add", lanes, be.getitem(acc, (slice(None), i)))
        return fold_halves(be, lanes, width)
    # Row r of a contiguous (rows, n) tensor starts (r*n) % 4 elements past a 16-byte boundary:
    # rows of each misalignment are summed together, their head first (Reduce.cuh's `shift`).
    shifts = (np.arange(rows) * n) % 4
    parts, order = [], []
    for shift in np.unique(shifts):
        idx = np.nonzero(shifts == shift)[0]
        sub = x if len(idx) == rows else be.getitem(x, (idx,))
        parts.append(_vectorized_rows(be, sub, int(shift), width, warps, ctas))
        order.append(idx)
    if len(parts) == 1:
        return parts[0]
    inverse = np.argsort(np.concatenate(order))
    return be.getitem(be.concatenate(parts, axis=0), (inverse,))


def var_rows(be, x, itemsize: int):
    """(m2, count) of each row of the fp32 array x (rows, n) as torch.var's CUDA kernel computes
    them (Reduce.cuh with WelfordOps, SharedReduceOps.h): var = m2 / (count - correction).

    The launch is reduce_rows' with two accumulators a thread (vectors of 2, of `itemsize`-byte
    elements, from 128 elements on). Each accumulator is a Welford state updated element by
    element, mean += (d - mean) / n and m2 = fma(d - mean_old, d - mean_new, m2); the two are
    merged, then the lanes and warps (and blocks) folded in halves with Welford's merge,
    mean = fma(delta, nb/n, mean_a), m2 = fma(delta² · n_a, nb/n, m2_a + m2_b): the contractions
    nvcc makes, told apart on the H200. None for a launch not modelled (short rows split
    across warps: not for contiguous tensors).
    """
    rows, n = be.shape(x)
    if n == 0 or rows == 0:
        return None
    vectorized, width, warps, ctas = _rows_launch(rows, n, 2)
    if not vectorized and (warps > 1 or ctas > 1):
        return None
    threads = width * warps * ctas
    shifts = ((np.arange(rows) * n * itemsize) % (2 * itemsize) // itemsize if vectorized
              else np.zeros(rows, np.int64))
    parts, order = [], []
    for shift in np.unique(shifts):
        idx = np.nonzero(shifts == shift)[0]
        sub = x if len(idx) == rows else be.getitem(x, (idx,))
        lanes = _welford_threads(be, sub, int(shift), threads, vectorized)
        blocks = tuple(be.reshape(v, (len(idx), ctas, warps, width)) for v in lanes)
        part = _fold(be, _fold(be, blocks, width, -1, _welford_merge), warps, -1, _welford_merge)
        if ctas > 1:  # the last block: thread u merges partials u, u + width*warps, ...
            group = width * warps
            rounds = -(-ctas // group)
            staged = tuple(be.reshape(_pad_last(be, v, rounds * group, 0.0),
                                      (len(idx), rounds, warps, width)) for v in part)
            last = tuple(be.getitem(v, (slice(None), 0)) for v in staged)
            for r in range(1, rounds):
                last = _welford_merge(be, last, tuple(be.getitem(v, (slice(None), r))
                                                      for v in staged))
            part = _fold(be, _fold(be, last, warps, -2, _welford_merge), width, -1,
                         _welford_merge)
        else:
            part = tuple(be.getitem(v, (slice(None), 0)) for v in part)
        parts.append(part)
        order.append(idx)
    if len(parts) == 1:
        return parts[0][1], parts[0][2]
    inverse = np.argsort(np.concatenate(order))
    return tuple(be.getitem(be.concatenate([p[i] for p in parts], axis=0), (inverse,))
                 for i in (1, 2))


def _welford_threads(be, x, shift, threads, vectorized):
    """Each thread's Welford state (mean, m2, count), (rows, threads) arrays, after its two
    accumulators are merged. Every step updates a prefix of the threads, so no masks."""
    rows, n = be.shape(x)
    zeros = be.full((rows, threads), 0.0, fp32)
    accs = []
    for k in (0, 1):
        state = (zeros, zeros, zeros)
        if vectorized:
            start = 2 - shift if shift else 0
            if shift and k == 0:  # thread 1 starts with the element before the first boundary
                first = be.getitem(x, (slice(None), slice(0, 1)))
                one = be.full((rows, 1), 1.0, fp32)
                state = (be.concatenate([be.getitem(zeros, (slice(None), slice(0, 1))), first,
                                         be.getitem(zeros, (slice(None), slice(2, None)))], 1),
                         zeros,
                         be.concatenate([be.getitem(zeros, (slice(None), slice(0, 1))), one,
                                         be.getitem(zeros, (slice(None), slice(2, None)))], 1))
            body = n - start
            nvec = body // 2
            steps = [(start + k + 2 * r * threads, min(threads, nvec - r * threads), 2)
                     for r in range(-(-nvec // threads))]
            if k == 0 and body % 2:          # the odd element left at the end: thread 0
                steps.append((start + 2 * nvec, 1, 1))
        else:  # element t + j*threads goes to accumulator j % 2 of thread t
            steps = [(first, min(threads, n - first), 1)
                     for first in range(k * threads, n, 2 * threads)]
        for first, count, stride in steps:
            d = be.getitem(x, (slice(None), slice(first, first + stride * count, stride)))
            head = tuple(be.getitem(v, (slice(None), slice(0, count))) for v in state)
            new = _welford_update(be, head, d)
            state = tuple(be.concatenate([a, be.getitem(b, (slice(None), slice(count, None)))], 1)
                          if count < threads else a for a, b in zip(new, state, strict=True))
        accs.append(state)
    return _welford_merge(be, accs[0], accs[1])


def _welford_update(be, state, d):
    """WelfordOps::reduce, one element d into each state."""
    mean, m2, count = state
    count = be.elementwise("add_scalar", count, scalar=1.0)
    delta = be.elementwise("sub", d, mean)
    mean = be.elementwise("add", mean, be.elementwise("div", delta, count))
    m2 = be.elementwise("fma", delta, be.elementwise("sub", d, mean), m2)
    return mean, m2, count


def _welford_merge(be, a, b):
    """WelfordOps::combine (a state with count 0 yields the other)."""
    (am, a2, an), (bm, b2, bn) = a, b
    delta = be.elementwise("sub", bm, am)
    total = be.elementwise("add", an, bn)
    ratio = be.elementwise("div", bn, total)
    mean = be.elementwise("fma", delta, ratio, am)
    m2 = be.elementwise("fma", be.elementwise("mul", be.elementwise("mul", delta, delta), an),
                        ratio, be.elementwise("add", a2, b2))
    a_empty = be.elementwise("eq", an, 0.0)
    b_empty = be.elementwise("eq", bn, 0.0)

    def pick(merged, av, bv):
        return be.elementwise("where", a_empty, bv, be.elementwise("where", b_empty, av, merged))

    return pick(mean, am, bm), pick(m2, a2, b2), pick(total, an, bn)


def reduce_cols(be, x, inner=None):
    """Sum of each column of the 2-D fp32 array x (rows, cols), a contiguous tensor reduced over
    its leading dimension, in Reduce.cuh's order ("vectorize along output", setReduceConfig).
    A reduction over middle dims, (outer, rows, inner) -> (outer, inner), is the same kernel
    over the columns of x = (rows, outer * inner) with `inner` given (the vector width divides
    it):

    each thread owns `vec` adjacent columns (vec = 4, 2 or 1, the largest dividing inner) and
    the rows s, s + S, s + 2S, ... where S is the input step; its k-th row goes to accumulator
    k % 4, and the 4 accumulators are combined in order. When each thread still has at least
    min(16 * block_height, 256) rows, the rows are split across the block's warps (S =
    block_height, folded in halves in shared memory) and, with 256 or more per thread left and a
    small grid, across blocks as well (the last block sums the blocks' partials, thread y taking
    partials y, y + block_height, ..., then the same fold).
    """
    rows, cols = be.shape(x)
    if rows == 0 or cols == 0:
        return None
    inner = cols if inner is None else inner
    vec = 4 if inner % 4 == 0 else 2 if inner % 2 == 0 else 1
    max_threads = _MAX_THREADS // vec
    p0 = min(_last_pow2(cols // vec), max_threads)
    p1 = min(_last_pow2(rows), max_threads)
    width = min(p0, 32)
    height = min(p1, max_threads // width)
    width = min(p0, max_threads // height)
    step, ctas = 1, 1
    if rows >= min(height * 16, 256):               # split across warps: block_y_reduce
        step = height
        per_thread = -(-rows // height)
        grid = -(-(cols // vec) // width)
        target = _SM_COUNT * (_MAX_THREADS_PER_SM // (width * height))
        if per_thread >= 256 and grid <= target:    # and across blocks: global_reduce
            ctas = max(-(-per_thread // 256), min(-(-target // grid), -(-per_thread // 16)))
            step = height * ctas
    if (fast := _compiled(x)) is not None:
        out = np.empty(cols, f32)
        fast.reduce_cols(np.ascontiguousarray(x), step, ctas, height, out)
        return out
    # rows padded with zeros to whole rounds of 4 per thread (adding +0 changes nothing: an
    # accumulator that starts at +0 never becomes -0)
    groups = -(-rows // (4 * step))
    body = be.reshape(_pad_last(be, x, groups * 4 * step, 0.0, axis=0), (groups, 4, step, cols))
    acc = be.elementwise("add", be.full((4, step, cols), 0.0, fp32), be.getitem(body, (0,)))
    for g in range(1, groups):
        acc = be.elementwise("add", acc, be.getitem(body, (g,)))
    lanes = be.getitem(acc, (0,))
    for i in range(1, 4):
        lanes = be.elementwise("add", lanes, be.getitem(acc, (i,)))
    if step == 1:
        return be.getitem(lanes, (0,))
    if ctas == 1:
        return fold_halves(be, lanes, height, axis=-2)
    partials = fold_halves(be, be.reshape(lanes, (ctas, height, cols)), height, axis=-2)
    rounds = -(-ctas // height)
    staged = be.reshape(_pad_last(be, partials, rounds * height, 0.0, axis=0),
                        (rounds, height, cols))
    threads = be.elementwise("add", be.full((height, cols), 0.0, fp32),
                             be.getitem(staged, (0,)))
    for r in range(1, rounds):
        threads = be.elementwise("add", threads, be.getitem(staged, (r,)))
    return fold_halves(be, threads, height, axis=-2)


def _vectorized_rows(be, x, shift, width, warps=1, ctas=1):
    """Reduce.cuh's input_vectorized_thread_reduce_impl for rows starting `shift` elements past
    a 16-byte boundary, with `warps` x `ctas` groups of `width` lanes per row, then the folds.

    Thread t = lane + width * (warp + warps * cta) takes the 4-element vectors t, t + T, ...
    (T threads), one accumulator per vector slot; the misaligned head and the n % 4 tail go to
    accumulator 0 of the first lanes of warp 0 in block 0. Each block folds its lanes in halves
    (block_x_reduce), then its warps (block_y_reduce); with several blocks the last one sums
    their partials, thread u = lane + width * warp taking partials u, u + width * warps, ...,
    and folds its warps, then its lanes.
    """
    rows, n = be.shape(x)
    threads = width * warps * ctas
    head = None
    if shift:  # lanes shift..3 first add the 4 - shift elements before the first boundary
        head = _pad_last(
            be,
            be.pad(be.getitem(x, (slice(None), slice(0, 4 - shift))), ((0, 0), (shift, 0)), 0.0),
            threads,
            0.0,
        )
        x = be.getitem(x, (slice(None), slice(4 - shift, n)))
        n -= 4 - shift
    nvec = n // 4
    steps = max(-(-nvec // threads), 1)
    body = _pad_last(be, be.getitem(x, (slice(None), slice(0, nvec * 4))),
                     steps * threads * 4, 0.0)
    body = be.reshape(body, (rows, steps, threads, 4))
    acc = be.getitem(body, (slice(None), 0))
    first = be.getitem(acc, (Ellipsis, 0))
    if head is not None:
        first = be.elementwise("add", head, first)
    for s in range(1, steps):
        acc = be.elementwise("add", acc, be.getitem(body, (slice(None), s)))
        first = be.elementwise("add", first, be.getitem(body, (slice(None), s, slice(None), 0)))
    tail = n - nvec * 4
    if tail:  # the last n % 4 elements go to accumulator 0 of lanes 0..tail-1
        extra = _pad_last(be, be.getitem(x, (slice(None), slice(nvec * 4, n))), threads, 0.0)
        first = be.elementwise("add", first, extra)
    lanes = first
    for i in range(1, 4):
        lanes = be.elementwise("add", lanes, be.getitem(acc, (Ellipsis, i)))
    if warps == 1 and ctas == 1:
        return fold_halves(be, lanes, width)
    blocks = be.reshape(lanes, (rows, ctas, warps, width))
    partials = _fold_block(be, blocks, warps, width)                      # (rows, ctas)
    if ctas == 1:
        return be.getitem(partials, (slice(None), 0))
    group = width * warps
    rounds = -(-ctas // group)
    staged = be.reshape(_pad_last(be, partials, rounds * group, 0.0), (rows, rounds, warps, width))
    last = be.elementwise("add", be.full((rows, warps, width), 0.0, fp32),
                          be.getitem(staged, (slice(None), 0)))
    for r in range(1, rounds):
        last = be.elementwise("add", last, be.getitem(staged, (slice(None), r)))
    # the last block folds the other way round: warps first, then lanes (measured on the H200)
    return fold_halves(be, fold_halves(be, last, warps, axis=-2), width)


def _fold_block(be, lanes, warps, width):
    """Lane 0 of warp 0 of `lanes[..., warps, width]`: block_x_reduce (the lanes folded in
    halves), then block_y_reduce (the warps folded in halves), in that order (torch 2.11's
    order, measured on the H200: the other one misses most rows split over several warps)."""
    return fold_halves(be, fold_halves(be, lanes, width), warps)


def warp_softmax_sum(be, v):
    """Per-row sums of the fp32 array v (rows, n), n <= 1024, in the persistent softmax kernel's
    order (lane-sequential, then an xor butterfly, which leaves every lane with one value)."""
    rows, n = be.shape(v)
    total = _next_pow2(n)
    if (fast := _compiled(v)) is not None:
        out = np.empty(rows, f32)
        fast.warp_softmax_sum(np.ascontiguousarray(v), total, out)
        return out
    warp = min(total, 32)
    body = be.reshape(_pad_last(be, v, total, 0.0), (rows, total // warp, warp))
    lanes = be.getitem(body, (slice(None), 0))
    for i in range(1, total // warp):
        lanes = be.elementwise("add", lanes, be.getitem(body, (slice(None), i)))
    # the xor butterfly adds the same two numbers on both partners: folding halves gives lane 0
    return fold_halves(be, lanes, warp)


_SMEM_PER_BLOCK = 49152  # sharedMemPerBlock: SoftMax.cu caches a row there when it fits


def softmax_block_sum(be, v, itemsize: int, backward: bool, registers: bool = True):
    """Per-row sums of the fp32 array v (rows, n) in the order of SoftMax.cu's block kernels,
    which take the rows the persistent warp kernel does not (one block of threads per row).

    `itemsize`: bytes of the tensor's GPU dtype (4 fp32, 2 fp16/bf16), which sets the vector
    width ILP = 16 / itemsize. The forward launches ceil32(min(n, 1024)) threads and, in
    order of preference, keeps each thread's elements t, t + B, ... in registers (fewer than 10
    a thread; not for fp16 input with fp32 output, `registers=False`), reads ILP-vectors t,
    t + B, ... from a shared-memory copy (aligned rows that fit in 48 KiB), or walks the row
    with ilpReduce (a misaligned head, ILP-vectors, a strided
    tail); the thread sums are folded by BlockReduce (warp shuffles, then the warp sums). The
    backward launches a power of two of threads (SoftMax_getBlockSize), uses the shared-memory
    kernel when it can, else ilpReduce with the older blockReduce (each of the first warp's
    lanes adds 32 thread sums in turn, then thread 0 adds the warp sums in turn).
    """
    rows, n = be.shape(v)
    ilp = 16 // itemsize
    if backward:
        top = min(n // ilp, 1024) // (2 if ilp > 1 else 1)
        block = max(_next_pow2(top), 32)
    else:
        block = -(-min(n, 1024) // 32) * 32
    fits = n % ilp == 0 and n < (_SMEM_PER_BLOCK - block // 32 * 4) // itemsize
    fold = _block_reduce
    if not backward and registers and -(-n // block) < 10:
        tables = {0: _strided_table(0, n, block)}
    elif fits:
        tables = {0: _vector_table(0, n, block, ilp)}
    else:
        shifts = (np.arange(rows) * n * itemsize) % 16 // itemsize
        tables = {int(s): _ilp_reduce_table(int(s), n, block, ilp) for s in np.unique(shifts)}
        if backward:
            fold = _block_reduce_serial
    padded = be.pad(v, ((0, 0), (0, 1)), 0.0)   # column n: the zero for idle threads
    parts, order = [], []
    for shift, table in tables.items():
        idx = (np.arange(rows) if len(tables) == 1
               else np.nonzero((np.arange(rows) * n * itemsize) % 16 // itemsize == shift)[0])
        sub = padded if len(idx) == rows else be.getitem(padded, (idx,))
        steps = be.getitem(sub, (slice(None), np.where(table < 0, n, table)))  # (r, K, B)
        acc = be.elementwise("add", be.full((len(idx), block), 0.0, fp32),
                             be.getitem(steps, (slice(None), 0)))
        for k in range(1, table.shape[0]):
            acc = be.elementwise("add", acc, be.getitem(steps, (slice(None), k)))
        parts.append(fold(be, acc))
        order.append(idx)
    if len(parts) == 1:
        return parts[0]
    inverse = np.argsort(np.concatenate(order))
    return be.getitem(be.concatenate(parts, axis=0), (inverse,))


def _strided_table(start, size, block):
    """Thread t adds elements start + t, start + t + B, ... below start + size: (K, B)."""
    k = -(-size // block)
    idx = np.arange(k)[:, None] * block + np.arange(block)[None, :]
    return np.where(idx < size, idx + start, -1)


def _vector_table(start, size, block, ilp):
    """Thread t adds the ILP-vectors t, t + B, ... (each element in turn) of [start, start +
    size), size a multiple of ILP: (K * ILP, B)."""
    k = -(-size // (block * ilp))
    vec = np.arange(k)[:, None] * block + np.arange(block)[None, :]          # (K, B)
    idx = vec[:, None, :] * ilp + np.arange(ilp)[None, :, None]              # (K, ILP, B)
    return np.where(idx < size, idx + start, -1).reshape(k * ilp, block)


def _ilp_reduce_table(shift, n, block, ilp):
    """SoftMax.cu's ilpReduce over a row starting `shift` elements past a 16-byte boundary."""
    parts = []
    start, size = 0, n
    if shift:
        head = np.arange(block) - shift
        parts.append(np.where((head >= 0) & (head < n), head, -1)[None, :])
        start = block - shift
        size = max(n - start, 0)
    last = size % (ilp * block)
    if size - last:
        parts.append(_vector_table(start, size - last, block, ilp))
    if last:
        parts.append(_strided_table(start + size - last, last, block))
    return np.concatenate(parts, axis=0) if parts else np.full((1, block), -1)


def _block_reduce_serial(be, lanes):
    """SoftMax.cu's blockReduce over (rows, threads): lane w of the first warp adds thread sums
    32w .. 32w + 31 in turn, then thread 0 adds those warp sums in turn."""
    rows, threads = be.shape(lanes)
    warps = be.reshape(lanes, (rows, threads // 32, 32))
    total = be.elementwise("add", be.full((rows, threads // 32), 0.0, fp32),
                           be.getitem(warps, (Ellipsis, 0)))
    for i in range(1, 32):
        total = be.elementwise("add", total, be.getitem(warps, (Ellipsis, i)))
    out = be.elementwise("add", be.full((rows,), 0.0, fp32), be.getitem(total, (Ellipsis, 0)))
    for w in range(1, threads // 32):
        out = be.elementwise("add", out, be.getitem(total, (Ellipsis, w)))
    return out


def welford_rows(be, x):
    """(mean, var) of each row of the fp32 array x (rows, n) as layer_norm's vectorized CUDA
    kernel computes them (n % 4 == 0): None otherwise."""
    rows, n = be.shape(x)
    if n == 0 or n % 4:
        return None
    if (fast := _compiled(x)) is not None:
        mean, var = np.empty(rows, f32), np.empty(rows, f32)
        fast.welford_rows(np.ascontiguousarray(x), mean, var)
        return mean, var
    threads, nvec = 128, n // 4
    steps = -(-nvec // threads)
    vecs = be.reshape(_pad_last(be, x, steps * threads * 4, 0.0), (rows, steps, threads, 4))
    zeros = be.elementwise(
        "mul_scalar", be.getitem(vecs, (slice(None), 0, slice(None), 0)), scalar=0.0
    )
    mean, m2, count = zeros, zeros, zeros
    for s in range(steps):
        live = be.elementwise("gt", be.asarray(np.arange(threads) + s * threads < nvec, fp32), 0.5)
        for i in range(4):
            value = be.getitem(vecs, (slice(None), s, slice(None), i))
            new = _welford_step(be, (mean, m2, count), value)
            mean, m2, count = (
                be.elementwise("where", live, a, b)
                for a, b in zip(new, (mean, m2, count), strict=False)
            )
    state = (mean, m2, count)
    # warp shuffles down 16..1 inside each of the 4 warps, then warps 2,3 -> 0,1 and 1 -> 0
    state = tuple(be.reshape(t, (rows, 4, 32)) for t in state)
    for off in (16, 8, 4, 2, 1):
        own = tuple(be.getitem(t, (Ellipsis, slice(0, off))) for t in state)
        other = tuple(be.getitem(t, (Ellipsis, slice(off, 2 * off))) for t in state)
        state = _welford_combine(be, own, other)
    state = tuple(be.getitem(t, (Ellipsis, 0)) for t in state)  # (rows, 4)
    for off in (2, 1):
        own = tuple(be.getitem(t, (Ellipsis, slice(0, off))) for t in state)
        other = tuple(be.getitem(t, (Ellipsis, slice(off, 2 * off))) for t in state)
        state = _welford_combine(be, own, other)
    mean = be.getitem(state[0], (Ellipsis, 0))
    var = be.elementwise("div", be.getitem(state[1], (Ellipsis, 0)), np.float32(n))
    return mean, var


def _welford_step(be, state, value):
    """cuWelfordOnlineSum: delta = v - mean; mean += delta * (1/count); m2 += delta * (v - mean)."""
    mean, m2, count = state
    delta = be.elementwise("sub", value, mean)
    count = be.elementwise("add_scalar", count, scalar=1.0)
    mean = be.elementwise("fma", delta, be.elementwise("rdiv_scalar", count, scalar=1.0), mean)
    m2 = be.elementwise("fma", delta, be.elementwise("sub", value, mean), m2)
    return mean, m2, count


def _welford_combine(be, own, other):
    """cuWelfordCombine(dataB=own, dataA=other), with nvcc's contractions (measured)."""
    mb, sb, cb = own
    ma, sa, ca = other
    delta = be.elementwise("sub", mb, ma)
    count = be.elementwise("add", ca, cb)
    coef = be.elementwise("rdiv_scalar", count, scalar=1.0)
    na, nb = be.elementwise("mul", ca, coef), be.elementwise("mul", cb, coef)
    mean = be.elementwise("fma", na, ma, be.elementwise("mul", nb, mb))
    m2 = be.elementwise(
        "fma",
        be.elementwise("mul", be.elementwise("mul", delta, delta), ca),
        nb,
        be.elementwise("add", sa, sb),
    )
    empty = be.elementwise("le", count, np.float32(0))
    zero = be.elementwise("mul_scalar", count, scalar=0.0)
    return (
        be.elementwise("where", empty, zero, mean),
        be.elementwise("where", empty, zero, m2),
        count,
    )


_LN_THREADS = 128  # layer_norm_kernel.cu: the backward's block size (measured)


def _block_reduce(be, lanes):
    """cuda_utils::BlockReduceSum over (rows, threads) with threads a multiple of 32: a shuffle
    tree inside each warp, then the warp sums (padded to 32 lanes) through one more tree."""
    rows, threads = be.shape(lanes)
    warps = be.reshape(lanes, (rows, threads // 32, 32))
    sums = fold_halves(be, warps, 32)
    return fold_halves(be, _pad_last(be, sums, 32, 0.0), 32)


def layer_norm_dx(be, x, g, gamma, mean, rstd):
    """dx of layer_norm for (rows, n) fp32 arrays x, g (gamma: (n,) or None; mean, rstd:
    (rows, 1)) as torch's layer_norm_grad_input_kernel_vectorized computes it on sm_90, read off
    its SASS: 128 threads each accumulate, over their 4-element vectors, s1 += g*gamma and
    s2 = fma(rstd, (g*gamma)*(x - mean), s2); two BlockReduceSums; then
    dx = (fma(g, n*gamma, -(s2 * (rstd*(x - mean)))) - s1) * (rstd * (1/n)), where 1/n is the
    special-function reciprocal refined by one Newton step. None when n % 4 != 0."""
    rows, n = be.shape(x)
    if n == 0 or n % 4:
        return None
    arrays = (x, g, mean, rstd) + (() if gamma is None else (gamma,))
    if (fast := _compiled(*arrays)) is not None:
        out = np.empty((rows, n), f32)
        fast.layer_norm_dx(np.ascontiguousarray(x), np.ascontiguousarray(g),
                           np.ascontiguousarray(gamma if gamma is not None else x[0]),
                           gamma is not None, mean.reshape(rows), rstd.reshape(rows),
                           _sfu_reciprocal(n), out)
        return out
    threads, nvec = _LN_THREADS, n // 4
    steps = -(-nvec // threads)
    gg = g if gamma is None else be.elementwise("mul", g, gamma)
    centered = be.elementwise("sub", x, mean)
    prod = be.elementwise("mul", gg, centered)
    total = steps * threads * 4
    gg_v = be.reshape(_pad_last(be, gg, total, 0.0), (rows, steps, threads, 4))
    prod_v = be.reshape(_pad_last(be, prod, total, 0.0), (rows, steps, threads, 4))
    s1 = s2 = None
    for s in range(steps):
        for k in range(4):
            a = be.getitem(gg_v, (slice(None), s, slice(None), k))
            b = be.getitem(prod_v, (slice(None), s, slice(None), k))
            if s1 is None:  # 0 + a and fma(rstd, b, 0) are exact
                s1, s2 = a, be.elementwise("mul", rstd, b)
            else:
                s1 = be.elementwise("add", s1, a)
                s2 = be.elementwise("fma", rstd, b, s2)
    total1 = be.reshape(_block_reduce(be, s1), (rows, 1))
    total2 = be.reshape(_block_reduce(be, s2), (rows, 1))
    scaled = be.elementwise("mul", total2, be.elementwise("mul", rstd, centered))
    n32 = np.float32(n)
    weight = be.elementwise("mul_scalar", gamma, scalar=float(n32)) if gamma is not None else n32
    f = be.elementwise("fma", g, weight, be.elementwise("neg", scaled))
    f = be.elementwise("sub", f, total1)
    return be.elementwise(
        "mul", f, be.elementwise("mul_scalar", rstd, scalar=float(_sfu_reciprocal(n)))
    )


def _sfu_reciprocal(n: int) -> np.float32:
    """float32 1/n as nvcc's fast division path computes it: r = rcp.approx(n), refined once,
    r + r * (1 - n*r) (two fmas)."""
    d = np.float32(n)
    r = mufu.rcp(np.array([d], np.float32))
    e = libdevice.fma32(np.array([d], np.float32), r, np.float32(-1))
    return libdevice.fma32(r, -e, r).astype(np.float32)[0]


def layer_norm_gamma_beta(be, x, g, mean, rstd):
    """(dgamma, dbeta) of layer_norm for (rows, n) fp32 arrays as torch's
    GammaBetaBackwardCUDAKernelTemplate sums them (layer_norm_kernel.cu): for M rows, tiles of
    (threads_y, rows_per_block) = (1, 8), (8, 64), (16, 128) or (32, 256) for M < 64, < 128,
    < 256 or more; thread y walks rows y*r .. y*r + r-1 (r = rows_per_block / threads_y) of every
    tile in order, dgamma += fma(dy*(x - mean), rstd) and dbeta += dy, then the threads_y partial
    sums are folded in halves. None for M > 65536 (torch then splits the rows across blocks)."""
    rows, n = be.shape(x)
    if rows == 0 or rows > 64 * 1024:
        return None
    threads_y, per_block = (
        (1, 8) if rows < 64 else (8, 64) if rows < 128 else (16, 128) if rows < 256 else (32, 256)
    )
    per_thread = per_block // threads_y
    if (fast := _compiled(x, g, mean, rstd)) is not None:
        dgamma, dbeta = np.empty(n, f32), np.empty(n, f32)
        fast.layer_norm_gamma_beta(np.ascontiguousarray(x), np.ascontiguousarray(g),
                                   mean.reshape(rows), rstd.reshape(rows), threads_y,
                                   per_thread, dgamma, dbeta)
        return dgamma, dbeta
    tiles = -(-rows // per_block)
    total = tiles * per_block

    def tiled(a, width):  # (rows, width) -> (tiles, threads_y, per_thread, width), zero rows added
        a = be.pad(a, ((0, total - rows), (0, 0)), 0.0) if total != rows else a
        return be.reshape(a, (tiles, threads_y, per_thread, width))

    prod = be.elementwise("mul", g, be.elementwise("sub", x, mean))
    prod, gt, rs = tiled(prod, n), tiled(g, n), tiled(rstd, 1)
    dgamma = dbeta = None
    for t in range(tiles):
        for i in range(per_thread):
            p = be.getitem(prod, (t, slice(None), i))
            r = be.getitem(rs, (t, slice(None), i))
            d = be.getitem(gt, (t, slice(None), i))
            if dgamma is None:
                dgamma, dbeta = be.elementwise("mul", p, r), d
            else:
                dgamma = be.elementwise("fma", p, r, dgamma)
                dbeta = be.elementwise("add", dbeta, d)
    fold = lambda a: fold_halves(be, be.transpose(a, (1, 0)), threads_y)  # noqa: E731
    return fold(dgamma), fold(dbeta)
