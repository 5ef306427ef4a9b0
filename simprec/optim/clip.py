"""clip_grad_norm_: torch.nn.utils.clip_grad_norm_ on simprec parameters.

torch/nn/utils/clip_grad.py: total = ‖(‖g₁‖, ‖g₂‖, …)‖ (each norm in the gradient's format),
clip_coef = max_norm / (total + 1e-6) in that format, clamped to 1, and every gradient is
multiplied by it (also when it is 1). The norms are the backend's exactly rounded sums (float64
accumulation in the NumPy backend, rounded once), so the total can differ from torch's in the last
bit (torch's reduction order is its own).
"""

from __future__ import annotations

import math

import numpy as np

from .. import formats
from ..cudamath.libdevice import fma32
from ..formats import fp32
from ..tensor import Tensor

__all__ = ["clip_grad_norm_", "total_grad_norm"]


def _params(parameters):
    if isinstance(parameters, Tensor):
        return [parameters]
    return list(parameters)


_BLOCK, _ILP, _CHUNK, _WARP = 512, 4, 65536, 32


def _block_reduce_sum(vals: np.ndarray) -> np.float32:
    """at::native::cuda_utils::BlockReduceSum over 512 fp32 thread values: a shfl_down tree
    (offsets 16..1) in each warp, then the 16 warp sums (padded with zeros) the same way."""
    v = vals.reshape(-1, _WARP).copy()
    for off in (16, 8, 4, 2, 1):
        v[:, :off] = v[:, :off] + v[:, off:2 * off]
    w = np.zeros(_WARP, np.float32)
    w[:v.shape[0]] = v[:, 0]
    for off in (16, 8, 4, 2, 1):
        w[:off] = w[:off] + w[off:2 * off]
    return w[0]


def foreach_norm_l2(values: np.ndarray) -> np.float32:
    """torch._foreach_norm(x, 2) of one tensor on CUDA (ForeachReduceOp.cu `LpNormFunctor`,
    one chunk: up to 65536 elements), unrounded fp32 before the store into the tensor's format.

    512 threads, 4 fp32 accumulators each (`vals[ii] += x*x`, contracted to fma): when n % 4 ==
    0 thread t reads elements 4*(t + 512k) + ii (vectorised loads), otherwise 2048k + t + 512ii;
    each thread adds its four accumulators in order, the block reduces (`_block_reduce_sum`),
    and the epilogue takes sqrtf (correctly rounded) of the one chunk's partial."""
    x = np.ascontiguousarray(values, dtype=np.float32).ravel()
    n = x.size
    if n > _CHUNK:
        raise NotImplementedError("foreach_norm_l2 models one chunk (<= 65536 elements)")
    steps = -(-n // (_BLOCK * _ILP)) if n else 0
    padded = np.zeros(steps * _BLOCK * _ILP, np.float32)
    padded[:n] = x
    if n % _ILP == 0:  # [k, t, ii]
        grid = padded.reshape(steps, _BLOCK, _ILP)
    else:  # [k, ii, t] -> [k, t, ii]
        grid = padded.reshape(steps, _ILP, _BLOCK).transpose(0, 2, 1)
    acc = np.zeros((_BLOCK, _ILP), np.float32)
    for k in range(steps):
        acc = fma32(grid[k], grid[k], acc)
    val = np.zeros(_BLOCK, np.float32)
    for ii in range(_ILP):
        val = val + acc[:, ii]
    with np.errstate(invalid="ignore"):
        return np.float32(np.sqrt(np.float64(_block_reduce_sum(val))))


def _vector_norm(be, x, norm_type: float, fmt):
    """‖x‖_p as torch's CUDA `_foreach_norm` computes it (L2: `foreach_norm_l2`; inf: exact),
    other orders accumulated wide; rounded once into `fmt`."""
    if norm_type == 2.0 and 0 < int(np.prod(be.shape(x))) <= _CHUNK:
        wide = np.float32(foreach_norm_l2(be.to_numpy(x)))
        return be.round(be.asarray(np.asarray(wide, np.float32), fp32), fmt)
    if norm_type == math.inf:
        wide = be.max(be.elementwise("abs", x), axis=None, keepdims=False)
    elif norm_type == 2.0:
        squares = be.sum(be.elementwise("square", x), axis=None, keepdims=False)
        wide = be.elementwise("sqrt", squares)
    elif norm_type == 1.0:
        wide = be.sum(be.elementwise("abs", x), axis=None, keepdims=False)
    else:
        powered = be.elementwise("pow_scalar", be.elementwise("abs", x), scalar=norm_type)
        wide = be.elementwise("pow_scalar", be.sum(powered, axis=None, keepdims=False),
                              scalar=1.0 / norm_type)
    return be.round(wide, fmt)


def _norm_of_grads(grads, norm_type: float):
    """torch's `_get_total_norm`: per-gradient norms, stacked, and their norm (host float32
    array holding a value of the first gradient's format)."""
    be, fmt = grads[0].backend, grads[0].fmt
    norms = [be.to_numpy(_vector_norm(g.backend, g.data, norm_type, g.fmt)).reshape(1)
             for g in grads]
    stacked = be.asarray(np.concatenate(norms).astype(np.float32), fmt)
    total = np.asarray(be.to_numpy(_vector_norm(be, stacked, norm_type, fmt)), np.float32)
    return np.float32(total.reshape(-1)[0]), fmt


def total_grad_norm(parameters, norm_type: float = 2.0) -> float | None:
    """The norm of all gradients seen as one vector (None when no parameter has a gradient)."""
    grads = [p.grad for p in _params(parameters) if p.grad is not None]
    if not grads:
        return None
    return float(_norm_of_grads(grads, float(norm_type))[0])


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale the gradients in place so that their total norm is at most `max_norm`; return the
    total norm before clipping (0.0 when there are no gradients)."""
    params = _params(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total, fmt = _norm_of_grads(grads, float(norm_type))
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"The total norm of order {float(norm_type)} for gradients from "
                           "`parameters` is non-finite, so it cannot be clipped. To disable this "
                           "error and scale the gradients by the non-finite norm anyway, set "
                           "`error_if_nonfinite=False`")
    # clip_coef = max_norm / (total_norm + 1e-6); clamp(max=1.0): each op a kernel on a 0-dim
    # tensor of the norm's format; a Python number over a tensor is torch's __rtruediv__,
    # reciprocal(tensor) * max_norm (H200 captures, tests/test_clip_h200.py)
    with np.errstate(all="ignore"):
        denom = round_to(np.float32(total + np.float32(1e-6)), fmt)
        coef = round_to(np.float32(round_to(np.float32(1.0) / denom, fmt)
                                   * np.float32(max_norm)), fmt)
    coef = np.float32(min(coef, np.float32(1.0))) if not np.isnan(coef) else coef
    for g in grads:
        be = g.backend
        g.data = be.round(be.elementwise("mul_scalar", g.data, scalar=float(coef)), g.fmt)
    return float(total)


def round_to(x, fmt):
    """A host float32 scalar rounded into `fmt` (identity for fp32)."""
    if fmt == fp32:
        return np.float32(x)
    return np.float32(formats.round(np.asarray([x], dtype=np.float32), fmt)[0])
