"""Neural-network ops with their own CUDA kernels: softmax family, layer_norm, losses.

Each is one GPU kernel in torch, so each computes in fp32 opmath and rounds its result once
(aten/src/ATen/native/cuda/PersistentSoftmax.cuh, SoftMax.cu, layer_norm_kernel.cu, Loss.cu),
and sums in that kernel's order: each is one op-level kernel of the backend contract
(`backend.softmax`, `layer_norm`, `nll_loss`, ...), whose reference model
(`simprec.backend.reference_ops`) is bit-exact to the GPU for the shapes documented there.
cross_entropy is torch's composition: log_softmax, nll_loss and (with label smoothing) a few
more ops.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..formats import fp32, int64, promote
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
    """exp(x - max) / sum(exp(x - max)) along `axis`, fp32 inside, one rounding to `out_fmt`:
    the backend's torch._softmax kernel (`backend.softmax`; the reference's model,
    `reference_ops.softmax`, adds along the last dim in the order of the kernel torch launches,
    SoftMax.cu / PersistentSoftmax.cuh; bf16 input with fp32 output is converted first; along
    other dims the fp32 sum is exactly rounded).
    Backward (torch's _softmax_backward_data): y * (g - sum(g * y)) as fma(-y, sum, g*y) with
    g*y rounded to the output format first (the kernel's input type), the sum in the same order.
    """

    log = False

    def forward(self, x, axis, out_fmt):
        self.axis, self.out_fmt, self.in_fmt = axis, out_fmt, self.inputs[0].fmt
        wide = self.backend.softmax(x, axis, self.in_fmt, out_fmt, log=self.log)
        self.out = self.finish(wide, out_fmt)
        return self.out, out_fmt

    def backward(self, g):
        grad = self.backend.softmax_backward(g, self.out, self.axis, self.in_fmt, self.out_fmt,
                                             log=self.log)
        return (self.grad_for(0, grad),)


class LogSoftmax(Softmax):
    """(x - max) - log(sum(exp(x - max))) along `axis` (two fp32 subtractions), one rounding
    (`backend.softmax(..., log=True)`). Backward (_log_softmax_backward_data):
    fma(-exp(y), sum(g), g), the sum in the kernel's order."""

    log = True


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
    Welford statistics in its thread/warp order (`backend.layer_norm`), rstd = rsqrtf(var +
    eps) (the special-function unit), y = fma(w, rstd * (x - mean), b). Other lengths use exactly
    rounded two-pass statistics and the same output formula (not bit-exact). Backward: the input
    gradient is torch's vectorized kernel, bit for bit (`backend.layer_norm_backward`; other
    lengths: torch's formula with exactly rounded sums) and the weight and bias gradients are
    torch's GammaBetaBackward kernel, bit for bit up to 65,536 rows (`backend.layer_norm_backward`;
    more rows: exactly rounded sums).
    """

    def forward(self, x, *affine, axes, eps):
        be = self.backend
        self.axes, self.fmt, self.has_affine = axes, self.inputs[0].fmt, bool(affine)
        shape = self.inputs[0].shape
        self.n = n = math.prod(shape[a] for a in axes)
        self.w = be.reshape(affine[0], (n,)) if affine else None
        bias = be.reshape(affine[1], (n,)) if affine else None
        self.x = be.reshape(x, (-1, n))
        out, self.mean, self.rstd = be.layer_norm(self.x, self.w, bias, eps, self.fmt)
        return self.finish(be.reshape(out, shape), self.fmt), self.fmt

    def backward(self, g):
        be = self.backend
        needs = (self.needs_input_grad[0],
                 self.has_affine and self.needs_input_grad[1],
                 self.has_affine and self.needs_input_grad[2])
        dx, dw, db = be.layer_norm_backward(be.reshape(g, (-1, self.n)), self.x, self.mean,
                                            self.rstd, self.w, self.fmt, needs)
        grads = [None] * len(self.inputs)
        if needs[0]:
            grads[0] = self.grad_for(0, be.reshape(dx, be.shape(g)))
        for i, s in ((1, dw), (2, db)):
            if needs[i]:
                grads[i] = self.grad_for(i, be.reshape(s, self.inputs[i].shape))
        return tuple(grads)


class NllLoss(Function):
    """Negative log-likelihood of class indices (N, C), with ignore_index and reduction: the
    backend's nll_loss kernel (`backend.nll_loss`; the reference's model of torch's 2-D CUDA
    kernel, Loss.cu: thread t of 32 accumulates -logp[i, target[i]] for i = t, t+32, ... in
    fp32, a warp-shuffle tree adds the 32 partial sums, 'mean' divides by the count of
    non-ignored targets; one rounding). The targets stay on the backend.
    Backward: -(grad / count) (or -grad) in the loss's format at each target, zero elsewhere.
    """

    def forward(self, logp, target, ignore_index, reduction):
        be = self.backend
        self.fmt = self.inputs[0].fmt
        self.shape = n, c = self.inputs[0].shape
        if be.host_memory:  # on a device, as in torch, a bad target is the kernel's error
            tgt = np.asarray(be.to_numpy(target), dtype=np.int64)
            valid = tgt != ignore_index
            if np.any((tgt[valid] < 0) | (tgt[valid] >= c)):
                raise ValueError(
                    f"nll_loss: target values must be in [0, {c}) or ignore_index; "
                    f"got {tgt[valid].min()}..{tgt[valid].max()}"
                )
        self.target, self.ignore_index, self.reduction = target, ignore_index, reduction
        loss, self.total_weight = be.nll_loss(logp, target, ignore_index, reduction)
        return self.finish(loss, self.fmt), self.fmt

    def backward(self, g):
        grad = self.backend.nll_loss_backward(g, self.target, self.ignore_index, self.reduction,
                                              self.total_weight, self.shape, self.fmt)
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
        be = target.backend
        kept = be.astype(be.elementwise("ne", target.data, ignore_index), "float")
        count = Tensor._make(be.sum(kept, axis=None, keepdims=False), fp32, be)
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
