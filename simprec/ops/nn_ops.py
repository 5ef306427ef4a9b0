"""Neural-network ops with their own CUDA kernels: softmax family, layer_norm, losses.

Each is one GPU kernel in torch, so each computes in fp32 opmath and rounds its result once
(aten/src/ATen/native/cuda/PersistentSoftmax.cuh, SoftMax.cu, layer_norm_kernel.cu, Loss.cu),
and sums in that kernel's order (`_cuda_order`), which makes softmax, log_softmax, layer_norm and
nll_loss bit-exact to the GPU for the shapes documented there. cross_entropy is torch's
composition: log_softmax, nll_loss and (with label smoothing) a few more ops.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..backend import _order as order
from ..formats import fp16, fp32, int64, promote
from ..tensor import Tensor, bool_
from ._util import autocast, float_input, kept_shape, reduced_shape, scalar_in_format
from .elementwise import add, cast, div, masked_fill, mul, neg
from .movement import permute, reshape
from .reduce import normalize_axes, reduce_sum
from .reduce import sum as sum_op


def _rows(be, x, axis):
    """x as a 2-D (rows, n) array reduced along its last axis (None if `axis` is not last)."""
    shape = be.shape(x)
    if axis != len(shape) - 1:
        return None
    n = shape[-1] if shape else 1
    return be.reshape(x, (-1, n))


def _itemsize(fmt) -> int:
    """Bytes of the GPU dtype that holds `fmt` (2 for fp16/bf16, else 4): SoftMax.cu's vector
    width and launch limits depend on it."""
    return 2 if fmt.bits <= 16 else 4


class Softmax(Function):
    """exp(x - max) / sum(exp(x - max)) along `axis`, fp32 inside, one rounding to `out_fmt`.

    Along the last dim the sum adds in the order of the kernel torch launches (SoftMax.cu): the
    persistent warp kernel up to 2048 elements forward (1024 when fp16 input gives fp32 output,
    whose block kernels also skip the register variant) and 1024 backward, the block kernels
    beyond (`_cuda_order.softmax_block_sum`); bf16 input with fp32 output is converted first;
    along other dims the fp32 sum is exactly rounded (order unspecified).
    Backward (torch's _softmax_backward_data): y * (g - sum(g * y)) as fma(-y, sum, g*y) with
    g*y rounded to the output format first (the kernel's input type), the sum in the same order.
    """

    def forward(self, x, axis, out_fmt):
        be = self.backend
        self.axis, self.out_fmt = axis, out_fmt
        peak = be.max(x, axis=axis, keepdims=True)
        exps = be.elementwise("exp", be.elementwise("sub", x, peak))
        total = self._sum(exps, backward=False)
        self.out = self.finish(be.elementwise("div", exps, total), out_fmt)
        return self.out, out_fmt

    def _sum(self, v, backward):
        be = self.backend
        rows = _rows(be, v, self.axis)
        if rows is None:
            return be.sum(v, axis=self.axis, keepdims=True)
        n = be.shape(rows)[1]
        in_fmt = self.inputs[0].fmt
        in_size, out_size = _itemsize(in_fmt), _itemsize(self.out_fmt)
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
        shape = list(be.shape(v))
        shape[-1] = 1
        return be.reshape(sums, tuple(shape))

    def backward(self, g):
        be = self.backend
        gy = be.round(be.elementwise("mul", g, self.out), self.out_fmt)
        dot = self._sum(gy, backward=True)
        return (self.grad_for(0, be.elementwise("fma", be.elementwise("neg", self.out), dot, gy)),)


class LogSoftmax(Softmax):
    """(x - max) - log(sum(exp(x - max))) along `axis` (two fp32 subtractions), one rounding.
    Backward (_log_softmax_backward_data): fma(-exp(y), sum(g), g), the sum in the kernel's
    order."""

    def forward(self, x, axis, out_fmt):
        be = self.backend
        self.axis, self.out_fmt = axis, out_fmt
        shifted = be.elementwise("sub", x, be.max(x, axis=axis, keepdims=True))
        log_sum = be.elementwise("log", self._sum(be.elementwise("exp", shifted), backward=False))
        self.out = self.finish(be.elementwise("sub", shifted, log_sum), out_fmt)
        return self.out, out_fmt

    def backward(self, g):
        be = self.backend
        total = self._sum(g, backward=True)
        probs = be.elementwise("exp", self.out)
        return (self.grad_for(0, be.elementwise("fma", be.elementwise("neg", probs), total, g)),)


class LogSumExp(Function):
    """torch.logsumexp, composed as torch composes it (ReduceOps.cpp), every op rounded to x's
    format: m = amax (inf -> 0), exp(x - m), sum, log, + m. Backward: grad * exp(x - result)."""

    def forward(self, x, axes, keepdims):
        be = self.backend
        self.axes, self.fmt, self.x = axes, self.inputs[0].fmt, x
        rnd = lambda v: be.round(v, self.fmt)  # noqa: E731
        peak = be.max(x, axis=axes, keepdims=True)
        peak = be.elementwise(
            "where",
            be.elementwise("isfinite", peak),
            peak,
            be.elementwise("mul_scalar", peak, scalar=0.0),
        )
        exps = rnd(be.elementwise("exp", rnd(be.elementwise("sub", x, peak))))
        total = rnd(reduce_sum(be, exps, axes, keepdims=True))
        self.out_keep = self.finish(
            be.elementwise("add", rnd(be.elementwise("log", total)), peak), self.fmt
        )
        if keepdims:
            return self.out_keep, self.fmt
        return be.reshape(self.out_keep, reduced_shape(self.inputs[0].shape, axes)), self.fmt

    def backward(self, g):
        be = self.backend
        g = be.reshape(g, kept_shape(self.inputs[0].shape, self.axes))
        weights = be.round(
            be.elementwise("exp", be.round(be.elementwise("sub", self.x, self.out_keep), self.fmt)),
            self.fmt,
        )
        return (self.grad_for(0, be.elementwise("mul", g, weights)),)


class LayerNorm(Function):
    """(x - mean) * rstd * w + b over the trailing dims; statistics in fp32, output rounded once.

    For rows whose length is a multiple of 4 this is torch's vectorized CUDA kernel, bit for bit:
    Welford statistics in its thread/warp order (`_cuda_order.welford_rows`), rstd = rsqrtf(var +
    eps) (the special-function unit), y = fma(w, rstd * (x - mean), b). Other lengths use exactly
    rounded two-pass statistics and the same output formula (not bit-exact). Backward: the input
    gradient is torch's vectorized kernel, bit for bit (`_cuda_order.layer_norm_dx`; other lengths:
    torch's formula with exactly rounded sums) and the weight and bias gradients are torch's
    GammaBetaBackward kernel, bit for bit up to 65,536 rows (`_cuda_order.layer_norm_gamma_beta`;
    more rows: exactly rounded sums).
    """

    def forward(self, x, *affine, axes, eps):
        be = self.backend
        self.axes, self.fmt, self.has_affine = axes, self.inputs[0].fmt, bool(affine)
        shape = self.inputs[0].shape
        self.n = n = math.prod(shape[a] for a in axes)
        rows = be.reshape(x, (-1, n))
        stats = order.welford_rows(be, rows)
        if stats is None:
            mean = be.elementwise(
                "div_scalar", be.sum(rows, axis=1, keepdims=False), scalar=float(n)
            )
            centered = be.elementwise("sub", rows, be.reshape(mean, (-1, 1)))
            var = be.elementwise(
                "div_scalar",
                be.sum(be.elementwise("square", centered), axis=1, keepdims=False),
                scalar=float(n),
            )
        else:
            mean, var = stats
        keep = kept_shape(shape, axes)
        mean = be.reshape(mean, keep)
        self.x, self.mean = x, mean
        self.rstd = be.reshape(
            be.elementwise("rsqrt", be.elementwise("add_scalar", var, scalar=eps)), keep
        )
        self.xhat = be.elementwise("mul", self.rstd, be.elementwise("sub", x, mean))
        out = self.xhat
        if affine:
            self.w = affine[0]
            out = be.elementwise("fma", affine[0], self.xhat, affine[1])
        return self.finish(out, self.fmt), self.fmt

    def backward(self, g):
        be = self.backend
        grads = [None] * len(self.inputs)
        lead = tuple(range(len(be.shape(g)) - len(self.axes)))
        if self.needs_input_grad[0]:
            grads[0] = self.grad_for(0, self._dx(g))
        if self.has_affine and (self.needs_input_grad[1] or self.needs_input_grad[2]):
            sums = order.layer_norm_gamma_beta(be, *self._rows(g))
            if sums is None:  # exactly rounded fp32 sums over the rows
                sums = (
                    be.sum(be.elementwise("mul", g, self.xhat), axis=lead, keepdims=False),
                    be.sum(g, axis=lead, keepdims=False),
                )
            shape = self.inputs[1].shape
            for i, s in ((1, sums[0]), (2, sums[1])):
                if self.needs_input_grad[i]:
                    grads[i] = self.grad_for(i, be.reshape(s, shape))
        return tuple(grads)

    def _rows(self, g):
        """x and g as (rows, n), mean and rstd as (rows, 1): the kernels' view."""
        be, rows = self.backend, (-1, self.n)
        return (be.reshape(self.x, rows), be.reshape(g, rows),
                be.reshape(self.mean, (-1, 1)), be.reshape(self.rstd, (-1, 1)))

    def _dx(self, g):
        be = self.backend
        x, g_rows, mean, rstd = self._rows(g)
        w = be.reshape(self.w, (self.n,)) if self.has_affine else None
        dx = order.layer_norm_dx(be, x, g_rows, w, mean, rstd)
        if dx is not None:
            return be.reshape(dx, be.shape(g))
        # other row lengths: dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)), exact sums
        gx = be.elementwise("mul", g, self.w) if self.has_affine else g
        mean_g = be.elementwise(
            "div_scalar", be.sum(gx, axis=self.axes, keepdims=True), scalar=float(self.n)
        )
        mean_gx = be.elementwise(
            "div_scalar",
            be.sum(be.elementwise("mul", gx, self.xhat), axis=self.axes, keepdims=True),
            scalar=float(self.n),
        )
        inner = be.elementwise(
            "sub", be.elementwise("sub", gx, mean_g), be.elementwise("mul", self.xhat, mean_gx)
        )
        return be.elementwise("mul", self.rstd, inner)


_NLL_THREADS = 32  # Loss.cu NLL_LOSS_THREADS


class NllLoss(Function):
    """Negative log-likelihood of class indices (N, C), with ignore_index and reduction.

    torch's CUDA kernel for 2-D input (Loss.cu, nll_loss_forward_reduce_cuda_kernel_2d): thread t
    of 32 accumulates -logp[i, target[i]] for i = t, t+32, ... in fp32, a warp-shuffle tree
    (BlockReduceSum) adds the 32 partial sums, and 'mean' divides by the count of non-ignored
    targets; one rounding.
    Backward: -(grad / count) (or -grad) in the loss's format at each target, zero elsewhere.
    """

    def forward(self, logp, target, ignore_index, reduction):
        be = self.backend
        self.fmt = self.inputs[0].fmt
        n, c = self.inputs[0].shape
        tgt = np.asarray(be.to_numpy(target), dtype=np.int64)
        valid = tgt != ignore_index
        if np.any((tgt[valid] < 0) | (tgt[valid] >= c)):
            raise ValueError(
                f"nll_loss: target values must be in [0, {c}) or ignore_index; "
                f"got {tgt[valid].min()}..{tgt[valid].max()}"
            )
        safe = np.where(valid, tgt, 0)
        self.rows, self.safe, self.valid, self.c, self.reduction = (
            np.arange(n),
            safe,
            valid,
            c,
            reduction,
        )
        keep = be.asarray(valid.astype(np.float32), fp32)
        losses = be.elementwise(
            "mul", be.elementwise("neg", be.getitem(logp, (self.rows, safe))), keep
        )
        self.count = float(valid.sum())
        if reduction == "none":
            return self.finish(losses, self.fmt), self.fmt
        steps = -(-n // _NLL_THREADS)
        lanes = be.reshape(
            be.pad(losses, ((0, steps * _NLL_THREADS - n),), 0.0), (steps, _NLL_THREADS)
        )
        partial = be.getitem(lanes, 0)
        for s in range(1, steps):
            partial = be.elementwise("add", partial, be.getitem(lanes, s))
        total = order.fold_halves(be, partial, _NLL_THREADS)
        if reduction == "mean":
            total = be.elementwise("div", total, np.float32(self.count))
        return self.finish(total, self.fmt), self.fmt

    def backward(self, g):
        be = self.backend
        n = len(self.rows)
        if self.reduction == "none":
            scale = be.elementwise("neg", g)
        else:
            if self.reduction == "mean":
                g = be.round(be.elementwise("div", g, np.float32(self.count)), self.fmt)
            scale = be.broadcast_to(be.reshape(be.elementwise("neg", g), (1,)), (n,))
        scale = be.elementwise("mul", scale, be.asarray(self.valid.astype(np.float32), fp32))
        grad = be.index_add((n, self.c), (self.rows, self.safe), scale)
        return (self.grad_for(0, grad), None)


class MseLoss(Function):
    """F.mse_loss: (input - target)**2 in one fp32 kernel (one rounding), then torch's mean/sum
    (Reduce.cuh order). Backward (mse_backward kernel): norm * (a - b) * grad in the input's own
    type (norm = 2/numel for 'mean'), each op rounded for fp16/bf16."""

    def forward(self, a, b, reduction):
        be = self.backend
        self.fmt, self.a, self.b, self.reduction = self.inputs[0].fmt, a, b, reduction
        diff = be.elementwise("sub", a, b)
        losses = be.round(be.elementwise("mul", diff, diff), self.fmt)
        if reduction == "none":
            return self.finish(losses, self.fmt), self.fmt
        shape = self.inputs[0].shape
        total = reduce_sum(be, losses, tuple(range(len(shape))), keepdims=False)
        if reduction == "mean":
            total = be.elementwise("mul_scalar", total, scalar=1.0 / max(math.prod(shape), 1))
        return self.finish(total, self.fmt), self.fmt

    def backward(self, g):
        be = self.backend
        numel = math.prod(self.inputs[0].shape)
        norm = 2.0 / max(numel, 1) if self.reduction == "mean" else 2.0
        alpha = scalar_in_format(be, norm, self.fmt)
        grads = []
        for i, (x, y) in enumerate(((self.a, self.b), (self.b, self.a))):
            if not self.needs_input_grad[i]:
                grads.append(None)
                continue
            d = be.round(be.elementwise("sub", x, y), self.fmt)
            scaled = be.round(be.elementwise("mul_scalar", d, scalar=alpha), self.fmt)
            grads.append(self.grad_for(i, be.elementwise("mul", scaled, g)))
        return tuple(grads)


# ---------------------------------------------------------------- public functions


def _axis(op, x, dim):
    (axis,) = normalize_axes(op, dim, x.ndim)
    return axis


def softmax(x: Tensor, dim: int = -1, *, dtype=None) -> Tensor:
    """Softmax along `dim`: fp32 inside, one rounding to `dtype` (default x's format)."""
    float_input("softmax", x)
    if dtype is None:  # torch's autocast sets dtype=fp32 only when the caller gave none
        (x,) = autocast("softmax", x)
    return Softmax.apply(x, axis=_axis("softmax", x, dim), out_fmt=dtype or x.fmt)


def log_softmax(x: Tensor, dim: int = -1, *, dtype=None) -> Tensor:
    """log(softmax) along `dim`: fp32 inside, one rounding to `dtype` (default x's format)."""
    float_input("log_softmax", x)
    if dtype is None:
        (x,) = autocast("log_softmax", x)
    return LogSoftmax.apply(x, axis=_axis("log_softmax", x, dim), out_fmt=dtype or x.fmt)


def logsumexp(x: Tensor, dim, keepdim: bool = False) -> Tensor:
    """log(sum(exp(x))) over `dim`, stabilised by the maximum, as torch composes it."""
    float_input("logsumexp", x)
    (x,) = autocast("logsumexp", x)
    return LogSumExp.apply(x, axes=normalize_axes("logsumexp", dim, x.ndim), keepdims=keepdim)


def layer_norm(x: Tensor, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """F.layer_norm over the trailing `normalized_shape` dims (torch's CUDA kernel: LayerNorm)."""
    float_input("layer_norm", x)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape) :] != shape or len(shape) > x.ndim:
        raise ValueError(
            f"layer_norm: normalized_shape {shape} does not match the end of input shape {x.shape}"
        )
    if (weight is None) != (bias is None):
        raise ValueError("layer_norm: give both weight and bias, or neither")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None:
            float_input("layer_norm", p)
            if p.shape != shape:
                raise ValueError(f"layer_norm: {name} shape {p.shape} must be {shape}")
    tensors = autocast("layer_norm", *((x,) + ((weight, bias) if weight is not None else ())))
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    return LayerNorm.apply(*tensors, axes=axes, eps=float(eps))


def _check_target(op, target):
    if not isinstance(target, Tensor) or target.fmt != int64:
        raise TypeError(f"{op}: target must be an int64 Tensor of class indices")


def _check_reduction(op, reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def nll_loss(
    input: Tensor,  # noqa: A002
    target: Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """F.nll_loss for (N, C) log-probabilities and (N,) class indices."""
    float_input("nll_loss", input)
    _check_target("nll_loss", target)
    if input.ndim != 2 or target.shape != input.shape[:1]:
        raise ValueError(
            f"nll_loss: input must be (N, C) and target (N,); got {input.shape} and {target.shape}"
        )
    _check_reduction("nll_loss", reduction)
    (input,) = autocast("nll_loss", input)
    return NllLoss.apply(input, target, ignore_index=ignore_index, reduction=reduction)


def cross_entropy(
    input: Tensor,  # noqa: A002
    target: Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """F.cross_entropy with class-index targets, composed as torch composes it (LossNLL.cpp):
    logp = log_softmax(x, 1, dtype=x's format); nll_loss(logp, target); with label smoothing,
    (1 - s) * nll + (s / C) * smooth, where smooth = -sum_c logp (0 at ignored targets), reduced
    like the nll term ('mean' divides by the number of non-ignored targets). Inputs (N, C, d1, ...)
    are moved to (N*d1*..., C)."""
    float_input("cross_entropy", input)
    _check_target("cross_entropy", target)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    _check_reduction("cross_entropy", reduction)
    if input.ndim < 2:
        raise ValueError(f"cross_entropy: input must be (N, C, ...), got shape {input.shape}")
    if target.shape != input.shape[:1] + input.shape[2:]:
        raise ValueError(
            f"cross_entropy: target shape {target.shape} does not match input {input.shape} "
            f"(expected {input.shape[:1] + input.shape[2:]})"
        )
    (input,) = autocast("cross_entropy", input)
    if input.ndim > 2:
        c = input.shape[1]
        input = reshape(permute(input, (0,) + tuple(range(2, input.ndim)) + (1,)), (-1, c))
        target = reshape(target, (-1,))
    # torch: at::log_softmax(self, class_dim, self.scalar_type()): an explicit dtype, so under
    # autocast the log-probabilities stay in the logits' format, then nll_loss (fp32 list)
    logp = log_softmax(input, dim=1, dtype=input.fmt)
    loss = nll_loss(logp, target, ignore_index=ignore_index, reduction=reduction)
    if label_smoothing == 0.0:
        return loss
    ignored = target.backend.elementwise("eq", target.data, ignore_index)
    ignored = Tensor._make(ignored, bool_, target.backend)
    smooth = masked_fill(neg(sum_op(logp, 1)), ignored, 0.0)
    if reduction == "mean":  # smooth.sum() / (non-ignored count), a true division by a tensor
        count = np.float32(np.sum(~np.asarray(target.backend.to_numpy(ignored.data))))
        count = Tensor._from_data(count, fp32, target.backend)
        smooth = cast(div(sum_op(smooth), count), logp.fmt)
    elif reduction == "sum":
        smooth = sum_op(smooth)
    c = input.shape[1]
    return add(mul(loss, 1.0 - label_smoothing), mul(smooth, label_smoothing / c))


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    """F.mse_loss: one kernel for (input - target)**2, then mean or sum (see MseLoss)."""
    float_input("mse_loss", input, target)
    if input.shape != target.shape:
        raise ValueError(
            f"mse_loss: input {input.shape} and target {target.shape} must have the same shape"
        )
    _check_reduction("mse_loss", reduction)
    input, target = autocast("mse_loss", input, target)
    if input.fmt != target.fmt:
        fmt = promote(input.fmt, target.fmt)
        input, target = cast(input, fmt), cast(target, fmt)
    return MseLoss.apply(input, target, reduction=reduction)
