"""Neural-network ops with their own kernels: softmax family, layer_norm, losses.

Each is one GPU kernel in torch, so each computes in fp32 opmath and rounds its result once
(aten/src/ATen/native/cuda/SoftMax.cu, layer_norm_kernel.cu, Loss.cu).
"""

from __future__ import annotations

from ..autograd import Function
from ..formats import fp32, int64
from ..tensor import Tensor
from ._util import autocast, float_input
from .reduce import normalize_axes


class Softmax(Function):
    """exp(x - max) / sum(exp(x - max)) along `axis`, fp32 inside, one rounding to `out_fmt`."""

    def forward(self, x, axis, out_fmt):
        be = self.backend
        self.axis, self.out_fmt = axis, out_fmt
        shifted = be.elementwise("sub", x, be.max(x, axis=axis, keepdims=True))
        exps = be.elementwise("exp", shifted)
        self.out = self.finish(be.elementwise("div", exps, be.sum(exps, axis=axis, keepdims=True)), out_fmt)
        return self.out, out_fmt

    def backward(self, g):  # torch: grad_input = y * (g - sum(g * y)) in fp32, rounded once
        be = self.backend
        dot = be.sum(be.elementwise("mul", g, self.out), axis=self.axis, keepdims=True)
        return (self.grad_for(0, be.elementwise("mul", self.out, be.elementwise("sub", g, dot))),)


class LogSoftmax(Function):
    """x - max - log(sum(exp(x - max))) along `axis`, fp32 inside, one rounding."""

    def forward(self, x, axis, out_fmt):
        be = self.backend
        self.axis, self.out_fmt = axis, out_fmt
        shifted = be.elementwise("sub", x, be.max(x, axis=axis, keepdims=True))
        log_sum = be.elementwise("log", be.sum(be.elementwise("exp", shifted), axis=axis, keepdims=True))
        self.out = self.finish(be.elementwise("sub", shifted, log_sum), out_fmt)
        return self.out, out_fmt

    def backward(self, g):  # torch: g - exp(y) * sum(g)
        be = self.backend
        total = be.sum(g, axis=self.axis, keepdims=True)
        probs = be.elementwise("exp", self.out)
        return (self.grad_for(0, be.elementwise("sub", g, be.elementwise("mul", probs, total))),)


class LogSumExp(Function):
    def forward(self, x, axes, keepdims):
        be = self.backend
        self.axes, self.keepdims, self.fmt = axes, keepdims, self.inputs[0].fmt
        peak = be.max(x, axis=axes, keepdims=True)
        finite_peak = be.elementwise("where", be.elementwise("isfinite", peak), peak,
                                     be.elementwise("mul_scalar", peak, scalar=0.0))
        total = be.sum(be.elementwise("exp", be.elementwise("sub", x, finite_peak)), axis=axes, keepdims=True)
        self.x = x
        self.out_keep = be.elementwise("add", be.elementwise("log", total), finite_peak)
        out = self.out_keep if keepdims else be.reshape(
            self.out_keep, tuple(d for i, d in enumerate(self.inputs[0].shape) if i not in axes))
        return self.finish(out, self.fmt), self.fmt

    def backward(self, g):  # d lse / dx = exp(x - lse)
        be = self.backend
        shape = tuple(1 if i in self.axes else d for i, d in enumerate(self.inputs[0].shape))
        g = be.reshape(g, shape)
        weights = be.elementwise("exp", be.elementwise("sub", self.x, self.out_keep))
        return (self.grad_for(0, be.elementwise("mul", g, weights)),)


class LayerNorm(Function):
    """(x - mean) * rstd * w + b over the last dims; statistics in fp32, output rounded once."""

    def forward(self, x, *affine, axes, eps):
        be = self.backend
        self.axes, self.fmt, self.has_affine = axes, self.inputs[0].fmt, bool(affine)
        n = 1
        for a in axes:
            n *= self.inputs[0].shape[a]
        self.n = n
        mean = be.elementwise("div_scalar", be.sum(x, axis=axes, keepdims=True), scalar=float(n))
        centered = be.elementwise("sub", x, mean)
        var = be.elementwise("div_scalar", be.sum(be.elementwise("square", centered), axis=axes, keepdims=True),
                             scalar=float(n))
        self.rstd = be.elementwise("rsqrt", be.elementwise("add_scalar", var, scalar=eps))
        self.xhat = be.elementwise("mul", centered, self.rstd)
        out = self.xhat
        if affine:
            self.w = affine[0]
            out = be.elementwise("add", be.elementwise("mul", out, affine[0]), affine[1])
        return self.finish(out, self.fmt), self.fmt

    def backward(self, g):
        be = self.backend
        grads = [None] * len(self.inputs)
        lead = tuple(range(len(be.shape(g)) - len(self.axes)))
        gx = be.elementwise("mul", g, self.w) if self.has_affine else g
        if self.needs_input_grad[0]:
            # dx = rstd * (gx - mean(gx) - xhat * mean(gx * xhat))
            mean_g = be.elementwise("div_scalar", be.sum(gx, axis=self.axes, keepdims=True), scalar=float(self.n))
            mean_gx = be.elementwise("div_scalar", be.sum(be.elementwise("mul", gx, self.xhat), axis=self.axes,
                                                          keepdims=True), scalar=float(self.n))
            inner = be.elementwise("sub", be.elementwise("sub", gx, mean_g), be.elementwise("mul", self.xhat, mean_gx))
            grads[0] = self.grad_for(0, be.elementwise("mul", self.rstd, inner))
        if self.has_affine and self.needs_input_grad[1]:
            grads[1] = self.grad_for(1, be.sum(be.elementwise("mul", g, self.xhat), axis=lead, keepdims=False))
        if self.has_affine and self.needs_input_grad[2]:
            grads[2] = self.grad_for(2, be.sum(g, axis=lead, keepdims=False))
        return tuple(grads)


class NllLoss(Function):
    """Negative log-likelihood of class indices, with ignore_index, label smoothing and reduction.

    Input: log-probabilities (N, C) (and the smoothing term sums them over C). Computed in fp32
    and rounded once, like torch's nll_loss kernel.
    """

    def forward(self, logp, target, ignore_index, label_smoothing, reduction):
        import numpy as np

        be = self.backend
        self.fmt = self.inputs[0].fmt
        n, c = self.inputs[0].shape
        tgt = np.asarray(be.to_numpy(target), dtype=np.int64)
        valid = tgt != ignore_index
        if np.any((tgt[valid] < 0) | (tgt[valid] >= c)):
            raise ValueError(f"cross_entropy: target values must be in [0, {c}) or ignore_index; "
                             f"got {tgt[valid].min()}..{tgt[valid].max()}")
        safe = np.where(valid, tgt, 0)
        self.rows, self.safe, self.valid, self.c = np.arange(n), safe, valid, c
        self.eps, self.reduction = label_smoothing, reduction
        picked = be.getitem(logp, (self.rows, safe))
        weights = be.asarray(valid.astype(np.float32), fp32)
        per_sample = be.elementwise("mul", be.elementwise("neg", picked), weights)
        if label_smoothing > 0:
            smooth = be.elementwise("mul", be.elementwise("neg", be.sum(logp, axis=1, keepdims=False)), weights)
            per_sample = be.elementwise(
                "add", be.elementwise("mul_scalar", per_sample, scalar=1.0 - label_smoothing),
                be.elementwise("mul_scalar", smooth, scalar=label_smoothing / c))
        self.count = float(valid.sum())
        if reduction == "none":
            out = per_sample
        elif reduction == "sum":
            out = be.sum(per_sample, axis=None, keepdims=False)
        else:
            out = be.elementwise("div_scalar", be.sum(per_sample, axis=None, keepdims=False), scalar=self.count)
        return self.finish(out, self.fmt), self.fmt

    def backward(self, g):
        import numpy as np

        be = self.backend
        n = len(self.rows)
        if self.reduction == "none":
            scale = g
        elif self.reduction == "sum":
            scale = be.broadcast_to(be.reshape(g, (1,)), (n,))
        else:
            scale = be.broadcast_to(be.reshape(be.elementwise("div_scalar", g, scalar=self.count), (1,)), (n,))
        scale = be.elementwise("mul", scale, be.asarray(self.valid.astype(np.float32), fp32))
        picked_grad = be.elementwise("mul_scalar", be.elementwise("neg", scale), scalar=1.0 - self.eps)
        grad = be.index_add((n, self.c), (self.rows, self.safe), picked_grad)
        if self.eps > 0:
            spread = be.elementwise("mul_scalar", be.elementwise("neg", scale), scalar=self.eps / self.c)
            grad = be.elementwise("add", grad, be.broadcast_to(be.reshape(spread, (n, 1)), (n, self.c)))
        return (self.grad_for(0, grad), None)


# ---------------------------------------------------------------- public functions

def _axis(op, x, dim):
    (axis,) = normalize_axes(op, dim, x.ndim)
    return axis


def softmax(x: Tensor, dim: int = -1, *, dtype=None) -> Tensor:
    float_input("softmax", x)
    (x,) = autocast("softmax", x)
    return Softmax.apply(x, axis=_axis("softmax", x, dim), out_fmt=dtype or x.fmt)


def log_softmax(x: Tensor, dim: int = -1, *, dtype=None) -> Tensor:
    float_input("log_softmax", x)
    (x,) = autocast("log_softmax", x)
    return LogSoftmax.apply(x, axis=_axis("log_softmax", x, dim), out_fmt=dtype or x.fmt)


def logsumexp(x: Tensor, dim, keepdim: bool = False) -> Tensor:
    float_input("logsumexp", x)
    (x,) = autocast("logsumexp", x)
    return LogSumExp.apply(x, axes=normalize_axes("logsumexp", dim, x.ndim), keepdims=keepdim)


def layer_norm(x: Tensor, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """F.layer_norm over the trailing `normalized_shape` dims."""
    float_input("layer_norm", x)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"layer_norm: normalized_shape {shape} does not match the end of input shape {x.shape}")
    if (weight is None) != (bias is None):
        raise ValueError("layer_norm: give both weight and bias, or neither")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != shape:
            raise ValueError(f"layer_norm: {name} shape {p.shape} must be {shape}")
    tensors = autocast("layer_norm", *((x,) + ((weight, bias) if weight is not None else ())))
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    return LayerNorm.apply(*tensors, axes=axes, eps=float(eps))


def nll_loss(logp: Tensor, target: Tensor, *, ignore_index: int = -100, reduction: str = "mean",
             label_smoothing: float = 0.0) -> Tensor:
    float_input("nll_loss", logp)
    if not isinstance(target, Tensor) or target.fmt != int64:
        raise TypeError("nll_loss: target must be an int64 Tensor of class indices")
    if logp.ndim != 2 or target.shape != logp.shape[:1]:
        raise ValueError(f"nll_loss: input must be (N, C) and target (N,); got {logp.shape} and {target.shape}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"nll_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    (logp,) = autocast("nll_loss", logp)
    return NllLoss.apply(logp, target, ignore_index=ignore_index, label_smoothing=float(label_smoothing),
                         reduction=reduction)


def cross_entropy(logits: Tensor, target: Tensor, *, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """F.cross_entropy with class-index targets: log_softmax then nll_loss, as torch composes it.
    Inputs of shape (N, C, d1, ...) are moved to (N*d1*..., C)."""
    from .movement import permute, reshape

    float_input("cross_entropy", logits)
    (logits,) = autocast("cross_entropy", logits)
    if logits.ndim > 2:
        c = logits.shape[1]
        order = (0,) + tuple(range(2, logits.ndim)) + (1,)
        logits = reshape(permute(logits, order), (-1, c))
        target = reshape(target, (-1,))
    logp = log_softmax(logits, dim=1)
    return nll_loss(logp, target, ignore_index=ignore_index, reduction=reduction,
                    label_smoothing=label_smoothing)


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    from .elementwise import sub
    from .reduce import mean, sum

    float_input("mse_loss", input)
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input {input.shape} and target {target.shape} must have the same shape")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"mse_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    input, target = autocast("mse_loss", input, target)
    diff = sub(input, target)
    squared = diff * diff
    return {"mean": mean, "sum": sum}[reduction](squared) if reduction != "none" else squared
