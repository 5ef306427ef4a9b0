"""torch's CUDA embedding_dense_backward, in the order its two kernels add (Embedding.cu and
EmbeddingBackwardKernel.cu, torch 2.11), built from the contract's primitives.

- Up to 3,072 indices and no `scale_grad_by_freq`: `embedding_backward_feature_kernel`. The ids
  are taken in chunks of 32 in their order; within a chunk the rows of one id are summed in fp32
  in position order (the first warp of the matching group serialises them), and the chunk's sum,
  cast to the weight's format, is added to the weight row (`grad_weight[...] += sum`, so each
  chunk rounds into that format again).
- Otherwise the sort path: ids sorted stably (cub's radix sort of (id, position) pairs), each id's
  rows summed in fp32 in partial segments of NROWS_PER_THREAD = 10 rows (`weight += g * scale`,
  one fma, scale = 1/count with `scale_grad_by_freq`), the partial sums of an id added in order,
  the total cast once into the weight's format.
`padding_idx` rows get 0. The index plan (which row adds to which sum, in which round) depends on
the ids, so it is made on the host; the arithmetic runs on the backend.
"""

from __future__ import annotations

import math

import numpy as np

from ..formats import fp32

FEATURE_KERNEL_MAX_INDICES = 3072  # Embedding.cu: num_indices <= 3072 && !scale_grad_by_freq
CHUNK = 32  # blockDim.y of embedding_backward_feature_kernel: one warp per index
NROWS_PER_THREAD = 10  # EmbeddingBackwardKernel.cu: rows per partial segment


def embedding_backward(be, grad, ids, num_weights: int, padding_idx, fmt=None,
                       scale_grad_by_freq: bool = False):
    """The (num_weights, D) weight gradient for gradient rows `grad` (ids.shape + (D,)), in the
    container of `fmt` (the weight's format; fp32 by default)."""
    fmt = fmt or fp32
    dim = be.shape(grad)[-1]
    n = math.prod(be.shape(ids))
    rows = be.reshape(grad, (n, dim))
    host_ids = np.asarray(be.to_numpy(be.reshape(ids, (-1,))), dtype=np.int64)
    pad = -1 if padding_idx is None else int(padding_idx)
    if n <= FEATURE_KERNEL_MAX_INDICES and not scale_grad_by_freq:
        owners, totals = _feature_kernel(be, rows, host_ids, pad, fmt, dim)
    else:
        owners, totals = _sort_kernel(be, rows, host_ids, pad, fmt, dim, scale_grad_by_freq)
    if not len(owners):
        return be.full((num_weights, dim), 0.0, fmt)
    return be.index_add((num_weights, dim), (owners,), totals)


def _feature_kernel(be, rows, ids, pad, fmt, dim):
    positions = np.nonzero(ids != pad)[0]
    chunk = positions // CHUNK
    # one group per (chunk, id), numbered in the order of its first row; its rows in order
    _, group, rank = _groups(chunk * (int(ids.max(initial=0)) + 1) + ids[positions])
    leaders = positions[rank == 0]
    sums = _sequential_sums(be, be.take(rows, positions, axis=0), group, rank, len(leaders),
                            dim, None)
    if fmt != fp32:
        sums = be.round(sums, fmt)
    # the chunk sums of one id, in chunk order, added to its weight row (rounding each time)
    owners, slot, order = _groups(ids[leaders])
    return owners, _sequential_sums(be, sums, slot, order, len(owners), dim, fmt)


def _sort_kernel(be, rows, ids, pad, fmt, dim, scale_grad_by_freq):
    owners, slot, rank = _groups(ids)
    counts = np.bincount(slot)
    partial = np.cumsum(np.concatenate(([0], (counts + NROWS_PER_THREAD - 1) // NROWS_PER_THREAD)))
    partial_of_row = partial[slot] + rank // NROWS_PER_THREAD
    place = partial_of_row * NROWS_PER_THREAD + rank % NROWS_PER_THREAD
    n_partials = int(partial[-1])
    lanes = be.reshape(be.index_add((n_partials * NROWS_PER_THREAD, dim), (place,), rows),
                       (n_partials, NROWS_PER_THREAD, dim))
    partials = be.full((n_partials, dim), 0.0, fp32)
    if scale_grad_by_freq:  # weight += g * (1 / count): one fma (nvcc contracts it)
        scale = np.float32(1.0) / counts.astype(np.float32)
        scale = be.asarray(np.repeat(scale, np.diff(partial))[:, None], fp32)
    for k in range(NROWS_PER_THREAD):  # zero lanes add nothing: w + 0 = w (w starts at +0)
        lane = be.getitem(lanes, (slice(None), k))
        partials = (be.elementwise("fma", lane, scale, partials) if scale_grad_by_freq
                    else be.elementwise("add", partials, lane))
    owner_of_partial = np.repeat(np.arange(len(owners)), np.diff(partial))
    order = np.arange(n_partials) - partial[owner_of_partial]
    totals = _sequential_sums(be, partials, owner_of_partial, order, len(owners), dim, None)
    if fmt != fp32:
        totals = be.round(totals, fmt)
    keep = owners != pad
    if not keep.all():
        totals, owners = be.take(totals, np.nonzero(keep)[0], axis=0), owners[keep]
    return owners, totals


def _sequential_sums(be, values, group, rank, groups: int, dim: int, fmt):
    """For each group, 0 + its values in rank order, each add in fp32 (rounded into `fmt` when
    given). Groups are padded with zeros, which add nothing: the running sum starts at +0."""
    depth = int(rank.max(initial=-1)) + 1
    if depth == 0:
        return be.full((groups, dim), 0.0, fmt or fp32)
    grid = be.reshape(be.index_add((groups * depth, dim), (group * depth + rank,), values),
                      (groups, depth, dim))
    total = be.full((groups, dim), 0.0, fmt or fp32)
    for k in range(depth):
        total = be.elementwise("add", total, be.getitem(grid, (slice(None), k)), fmt=fmt)
    return total


def _groups(keys):
    """(unique keys in order of first appearance, each item's group number, each item's rank
    within its group)."""
    keys = np.asarray(keys)
    if not keys.size:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1]))
    first = np.nonzero(starts)[0]
    group_sorted = np.cumsum(starts) - 1
    rank_sorted = np.arange(keys.size) - first[group_sorted]
    # renumber groups by first appearance
    first_pos = order[first]
    renumber = np.empty(len(first), np.int64)
    renumber[np.argsort(first_pos, kind="stable")] = np.arange(len(first))
    group = np.empty(keys.size, np.int64)
    rank = np.empty(keys.size, np.int64)
    group[order] = renumber[group_sorted]
    rank[order] = rank_sorted
    unique = np.empty(len(first), keys.dtype)
    unique[renumber] = sorted_keys[first]
    return unique, group, rank
