"""The op-level kernels' reference implementations (the contract's level 2 defaults).

Each function here is the model of one torch CUDA kernel (a sum, softmax, layer_norm, nll_loss,
embedding backward, the GradScaler's two AMP kernels), written with the contract's primitive
kernels only (`be.elementwise`, `be.getitem`, ...) and the summation orders of `_order`, so that
every backend can run it. `Backend` calls these by default; a backend overrides one only with the
kernel it models (the torch backend on CUDA: torch.sum, torch._softmax, torch.native_layer_norm,
...), and tests/test_backend_contract.py holds default and override together.

Conventions: arrays are backend arrays of fp32 values (any container); a `fmt` argument is the
format of the GPU tensor the kernel reads, which sets its launch (vector widths) where that
matters. A kernel's float result is either unrounded fp32 or already rounded into the op's
output format; the caller rounds it once (rounding an exact value changes nothing).
"""

from __future__ import annotations

import math

import numpy as np

from ..formats import fp16, fp32
from . import _embedding
from . import _order as order

_NLL_THREADS = 32  # Loss.cu NLL_LOSS_THREADS


def itemsize(fmt) -> int:
    """Bytes of the GPU dtype that holds `fmt` (2 for fp16/bf16, else 4): launch configurations
    (vector widths, persistent-kernel limits) depend on it."""
    return 2 if fmt.bits <= 16 else 4


def _kept(shape, axes):
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def _reduced(shape, axes):
    return tuple(d for i, d in enumerate(shape) if i not in axes)


# ---- sums and variance ----

def reduce_sum(be, x, axes, keepdims):
    """fp32 sum of x over `axes`. Over one contiguous block of axes of a contiguous tensor
    (trailing: its rows; leading or middle: its columns) it adds in the order of torch's CUDA
    reduce kernel (`_order.reduce_rows` / `reduce_cols`, bit-exact); otherwise the exactly
    rounded fp32 sum (`be.sum`, order unspecified)."""
    shape = tuple(be.shape(x))
    axes = tuple(axes)
    k = len(axes)
    out = None
    if axes and axes == tuple(range(axes[0], axes[0] + k)):
        outer = math.prod(shape[: axes[0]])
        n = math.prod(shape[a] for a in axes)
        inner = math.prod(shape[axes[-1] + 1:])
        if n > 1 and inner == 1:
            out = order.reduce_rows(be, be.reshape(x, (outer, n)))
        elif n > 1 and outer == 1:
            out = order.reduce_cols(be, be.reshape(x, (n, inner)))
        elif n > 1:
            cols = be.reshape(be.transpose(be.reshape(x, (outer, n, inner)), (1, 0, 2)),
                              (n, outer * inner))
            out = order.reduce_cols(be, cols, inner)
    if out is None:
        return be.sum(x, axis=axes, keepdims=keepdims)
    return be.reshape(out, _kept(shape, axes) if keepdims else _reduced(shape, axes))


def var(be, x, axes, correction, keepdims, fmt):
    """torch.var of x (values of `fmt`) over `axes`: fp32 statistics. Over trailing dims torch's
    CUDA Welford reduction, bit for bit (`_order.var_rows`); over other dims a two-pass fp32
    computation."""
    shape = tuple(be.shape(x))
    n = math.prod(shape[a] for a in axes)
    divisor = np.float32(max(n - correction, 0))
    nd = len(shape)
    welford = None
    if n > 1 and tuple(axes) == tuple(range(nd - len(axes), nd)):
        welford = order.var_rows(be, be.reshape(x, (-1, n)), itemsize(fmt))
    if welford is not None:
        out = be.elementwise("div", welford[0], divisor)
        return be.reshape(out, _kept(shape, axes) if keepdims else _reduced(shape, axes))
    mean = be.elementwise("div_scalar", be.sum(x, axis=axes, keepdims=True), scalar=float(n))
    centered = be.elementwise("sub", x, mean)
    squares = be.sum(be.elementwise("square", centered), axis=axes, keepdims=keepdims)
    return be.elementwise("div", squares, divisor)


# ---- softmax and log_softmax (SoftMax.cu, PersistentSoftmax.cuh) ----

def _softmax_sum(be, v, axis, in_fmt, out_fmt, backward):
    """Sums of v along `axis` in the order of the kernel torch launches: the persistent warp
    kernel up to 2048 elements forward (1024 when fp16 input gives fp32 output, whose block
    kernels also skip the register variant) and 1024 backward, the block kernels beyond; along
    other dims the exactly rounded fp32 sum."""
    shape = be.shape(v)
    if axis != len(shape) - 1:
        return be.sum(v, axis=axis, keepdims=True)
    n = shape[-1] if shape else 1
    rows = be.reshape(v, (-1, n))
    in_size, out_size = itemsize(in_fmt), itemsize(out_fmt)
    if in_size < out_size and in_fmt != fp16:  # torch converts to the output dtype first
        in_size = out_size
    half_to_float = in_size < out_size  # fp16 in, fp32 out: SoftMax.cu's own branch
    if backward or half_to_float:
        persistent = n <= 1024 and n * in_size <= 4096
    else:
        persistent = n <= 2048 and n * in_size <= 8192
    if persistent:
        sums = order.warp_softmax_sum(be, rows)
    else:
        sums = order.softmax_block_sum(be, rows, out_size if backward else in_size, backward,
                                       registers=not half_to_float)
    return be.reshape(sums, tuple(shape[:-1]) + (1,))


def softmax(be, x, axis, in_fmt, out_fmt):
    """exp(x - max) / sum(exp(x - max)) along `axis`, fp32 inside (unrounded)."""
    peak = be.max(x, axis=axis, keepdims=True)
    exps = be.elementwise("exp", be.elementwise("sub", x, peak))
    total = _softmax_sum(be, exps, axis, in_fmt, out_fmt, backward=False)
    return be.elementwise("div", exps, total)


def softmax_backward(be, grad, out, axis, in_fmt, out_fmt):
    """_softmax_backward_data: y * (g - sum(g * y)) as fma(-y, sum, g*y), g*y rounded to the
    output format first (the kernel's input type), the sum in the forward's order."""
    gy = be.round(be.elementwise("mul", grad, out), out_fmt)
    dot = _softmax_sum(be, gy, axis, in_fmt, out_fmt, backward=True)
    return be.elementwise("fma", be.elementwise("neg", out), dot, gy)


def log_softmax(be, x, axis, in_fmt, out_fmt):
    """(x - max) - log(sum(exp(x - max))) along `axis` (two fp32 subtractions, unrounded)."""
    shifted = be.elementwise("sub", x, be.max(x, axis=axis, keepdims=True))
    total = _softmax_sum(be, be.elementwise("exp", shifted), axis, in_fmt, out_fmt, False)
    return be.elementwise("sub", shifted, be.elementwise("log", total))


def log_softmax_backward(be, grad, out, axis, in_fmt, out_fmt):
    """_log_softmax_backward_data: fma(-exp(y), sum(g), g), the sum in the kernel's order."""
    total = _softmax_sum(be, grad, axis, in_fmt, out_fmt, backward=True)
    probs = be.elementwise("exp", out)
    return be.elementwise("fma", be.elementwise("neg", probs), total, grad)


# ---- layer_norm (layer_norm_kernel.cu) ----

def layer_norm(be, x, weight, bias, eps, fmt):
    """(y, mean, rstd) of the rows of x (rows, n); weight and bias (n,) or None. Rows whose
    length is a multiple of 4: torch's vectorized kernel (`_order.welford_rows`); other lengths
    exactly rounded two-pass statistics. rstd = rsqrtf(var + eps); y = fma(w, rstd * (x - mean),
    b) unrounded; mean and rstd (rows, 1) fp32."""
    n = be.shape(x)[1]
    stats = order.welford_rows(be, x)
    if stats is None:
        mean = be.elementwise("div_scalar", be.sum(x, axis=1, keepdims=False), scalar=float(n))
        centered = be.elementwise("sub", x, be.reshape(mean, (-1, 1)))
        var_ = be.elementwise("div_scalar",
                              be.sum(be.elementwise("square", centered), axis=1, keepdims=False),
                              scalar=float(n))
    else:
        mean, var_ = stats
    mean = be.reshape(mean, (-1, 1))
    rstd = be.reshape(be.elementwise("rsqrt", be.elementwise("add_scalar", var_, scalar=eps)),
                      (-1, 1))
    y = be.elementwise("mul", rstd, be.elementwise("sub", x, mean))
    if weight is not None:
        y = be.elementwise("fma", weight, y, bias)
    return y, mean, rstd


def layer_norm_backward(be, grad, x, mean, rstd, weight, fmt, needs=(True, True, True)):
    """(dx, dweight, dbias) of layer_norm for (rows, n) arrays (None where not needed or without
    weight). dx: torch's vectorized kernel (`_order.layer_norm_dx`; other lengths: torch's
    formula with exactly rounded sums); dweight, dbias: GammaBetaBackward
    (`_order.layer_norm_gamma_beta`; more than 65,536 rows: exactly rounded sums)."""
    n = be.shape(x)[1]
    dx = dw = db = None
    if needs[0]:
        dx = order.layer_norm_dx(be, x, grad, weight, mean, rstd)
        if dx is None:
            xhat = be.elementwise("mul", rstd, be.elementwise("sub", x, mean))
            gx = be.elementwise("mul", grad, weight) if weight is not None else grad
            mean_g = be.elementwise("div_scalar", be.sum(gx, axis=1, keepdims=True),
                                    scalar=float(n))
            mean_gx = be.elementwise(
                "div_scalar", be.sum(be.elementwise("mul", gx, xhat), axis=1, keepdims=True),
                scalar=float(n))
            inner = be.elementwise("sub", be.elementwise("sub", gx, mean_g),
                                   be.elementwise("mul", xhat, mean_gx))
            dx = be.elementwise("mul", rstd, inner)
    if weight is not None and (needs[1] or needs[2]):
        sums = order.layer_norm_gamma_beta(be, x, grad, mean, rstd)
        if sums is None:
            xhat = be.elementwise("mul", rstd, be.elementwise("sub", x, mean))
            sums = (be.sum(be.elementwise("mul", grad, xhat), axis=0, keepdims=False),
                    be.sum(grad, axis=0, keepdims=False))
        dw = sums[0] if needs[1] else None
        db = sums[1] if needs[2] else None
    return dx, dw, db


# ---- nll_loss (Loss.cu) ----

def _nll_rows(be, target, ignore_index):
    """(valid as fp32 0/1, safe targets with ignored ones at 0), on the backend."""
    valid = be.elementwise("ne", target, ignore_index)
    safe = be.elementwise("where", valid, target, 0)
    return be.astype(valid, "float"), be.astype(safe, "int")


def nll_loss(be, logp, target, ignore_index, reduction):
    """(loss, total_weight) of (N, C) log-probabilities at (N,) int targets, torch's 2-D kernel
    (nll_loss_forward_reduce_cuda_kernel_2d): thread t of 32 adds -logp[i, target[i]] for
    i = t, t+32, ... in fp32, a warp-shuffle tree adds the 32 partial sums, 'mean' divides by
    total_weight (the count of non-ignored targets, an fp32 array); unrounded."""
    n = be.shape(logp)[0]
    keep, safe = _nll_rows(be, target, ignore_index)
    picked = be.getitem(logp, (np.arange(n), safe))
    losses = be.elementwise("mul", be.elementwise("neg", picked), keep)
    total_weight = be.sum(keep, axis=None, keepdims=False)
    if reduction == "none":
        return losses, total_weight
    steps = -(-n // _NLL_THREADS)
    lanes = be.reshape(be.pad(losses, ((0, steps * _NLL_THREADS - n),), 0.0),
                       (steps, _NLL_THREADS))
    partial = be.getitem(lanes, 0)
    for s in range(1, steps):
        partial = be.elementwise("add", partial, be.getitem(lanes, s))
    total = order.fold_halves(be, partial, _NLL_THREADS)
    if reduction == "mean":
        total = be.elementwise("div", total, total_weight)
    return total, total_weight


def nll_loss_backward(be, grad, target, ignore_index, reduction, total_weight, shape, fmt):
    """Gradient of nll_loss for (N, C) = `shape`: -(grad / total_weight) ('mean', rounded to
    `fmt`, the loss's format) or -grad at each target, zero elsewhere and at ignored rows."""
    n, c = shape
    keep, safe = _nll_rows(be, target, ignore_index)
    if reduction == "none":
        scale = be.elementwise("neg", grad)
    else:
        if reduction == "mean":
            grad = be.round(be.elementwise("div", grad, total_weight), fmt)
        scale = be.broadcast_to(be.reshape(be.elementwise("neg", grad), (1,)), (n,))
    scale = be.elementwise("mul", scale, keep)
    return be.index_add((n, c), (np.arange(n), safe), scale)


# ---- embedding (Embedding.cu, embedding_dense_backward) ----

def embedding_backward(be, grad, ids, num_weights, padding_idx, fmt=None,
                       scale_grad_by_freq=False):
    """The weight gradient of an embedding lookup in the order of torch's CUDA kernels
    (`_embedding.embedding_backward`): (num_weights, D) in `fmt`'s container, 0 for rows never
    looked up and for `padding_idx`. grad: ids.shape + (D,)."""
    return _embedding.embedding_backward(be, grad, ids, num_weights, padding_idx, fmt,
                                         scale_grad_by_freq)


# ---- the GradScaler's kernels (AmpKernels.cu) ----

def amp_unscale(be, grads, fmts, inv_scale):
    """_amp_foreach_non_finite_check_and_unscale_: (grads * inv_scale rounded into `fmts`,
    found_inf) where found_inf is an fp32 array () on the backend, 1.0 when any gradient holds
    an inf or NaN (checked on the scaled values), else 0.0. With inv_scale 1 the gradients are
    returned as they are."""
    found = None
    for g in grads:
        # max(g * 0) is NaN exactly when g holds an inf or NaN (max propagates NaN)
        peak = be.max(be.elementwise("mul_scalar", g, scalar=0.0), axis=None, keepdims=False)
        bad = be.astype(be.elementwise("isnan", peak), "float")
        found = bad if found is None else be.elementwise("maximum", found, bad)
    if found is None:
        found = be.full((), 0.0, fp32)
    if np.float32(inv_scale) != np.float32(1.0):
        grads = [be.elementwise("mul_scalar", g, scalar=float(inv_scale), fmt=f)
                 for g, f in zip(grads, fmts, strict=True)]
    return list(grads), found


def amp_update_scale(be, scale, tracker, found_inf, growth_factor, backoff_factor,
                     growth_interval):
    """_amp_update_scale_ on backend arrays: (new scale (fp32, ()), new growth tracker (int,
    ())). found: scale * backoff, tracker 0; else tracker + 1, and at growth_interval the scale
    grows (when the product stays finite) and the tracker restarts at 0. The kernel multiplies
    the float scale by a double factor and stores a float; here the product is fp32 with
    float32(factor), the same whenever the factor is an fp32 number (2.0, 0.5: torch's
    defaults)."""
    found = be.elementwise("gt", found_inf, 0.0)
    backed = be.elementwise("mul_scalar", scale, scalar=backoff_factor)
    grown = be.elementwise("mul_scalar", scale, scalar=growth_factor)
    grown = be.elementwise("where", be.elementwise("isfinite", grown), grown, scale)
    successful = be.elementwise("add_scalar", be.astype(tracker, "float"), scalar=1.0)
    at_interval = be.elementwise("ge", successful, float(growth_interval))
    new_scale = be.elementwise("where", found, backed,
                               be.elementwise("where", at_interval, grown, scale))
    restart = be.elementwise("gt", be.elementwise("add", be.astype(found, "float"),
                                                  be.astype(at_interval, "float")), 0.0)
    new_tracker = be.elementwise("where", restart, 0.0, successful)
    return be.round(new_scale, fp32), be.astype(new_tracker, "int")


# ---- the optimizers' foreach kernels (ForeachBinaryOp*.cu, ForeachPointwiseOp.cu) ----

def _fma(be, a, s, c):
    """fma(a, float32(s), c): the contraction of `c + s * a` in torch's foreach kernels."""
    return be.elementwise("fma", a, np.float32(s), c)


def adam_foreach(be, params, grads, exp_avgs, exp_avg_sqs, fmts, *, lr, beta1, beta2, eps,
                 weight_decay, decoupled, step):
    """torch's `_multi_tensor_adam`, tensor by tensor (each line one `_foreach_*` kernel, its
    result rounded into the tensor's format; Python numbers as fp32 `opmath_t`, computed on the
    host in double):

        param *= 1 - lr*wd (AdamW)  |  g = g + wd*param (Adam: fma)
        exp_avg.lerp_(g, 1 - beta1)               fma(w, g - m, m), w < 0.5
        exp_avg_sq *= beta2; exp_avg_sq += (1 - beta2) * g*g           fma
        denom = sqrt(exp_avg_sq) / sqrt(1 - beta2**step) + eps         true division
        param += -(lr / (1 - beta1**step)) * (exp_avg / denom)         fma

    the same arithmetic as `simprec.optim.adam.Adam`'s foreach path."""
    f32 = np.float32
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    neg_step_size = (lr / bias_correction1) * -1
    new_params, new_avgs, new_sqs = [], [], []
    for param, g, m, v, fmt in zip(params, grads, exp_avgs, exp_avg_sqs, fmts, strict=True):
        if weight_decay != 0:
            if decoupled:
                param = be.elementwise("mul_scalar", param, scalar=1 - lr * weight_decay,
                                       fmt=fmt)
            elif weight_decay == 1:
                g = be.elementwise("add", g, param, fmt=fmt)
            else:
                g = be.round(_fma(be, param, weight_decay, g), fmt)
        w = f32(1 - beta1)
        diff = be.elementwise("sub", g, m)
        m = be.round(_fma(be, diff, w, m) if abs(float(w)) < 0.5
                     else _fma(be, diff, w - f32(1.0), g), fmt)
        v = be.elementwise("mul_scalar", v, scalar=beta2, fmt=fmt)
        v = be.round(_fma(be, be.elementwise("mul", g, g), 1 - beta2, v), fmt)
        root = be.elementwise("sqrt", v, fmt=fmt)
        divisor = be.asarray(np.asarray(f32(bias_correction2_sqrt), dtype=np.float32), fp32)
        denom = be.elementwise("div", root, divisor, fmt=fmt)
        denom = be.elementwise("add_scalar", denom, scalar=eps, fmt=fmt)
        quotient = be.elementwise("div", m, denom)
        new_params.append(be.round(_fma(be, quotient, neg_step_size, param), fmt))
        new_avgs.append(m)
        new_sqs.append(v)
    return new_params, new_avgs, new_sqs
