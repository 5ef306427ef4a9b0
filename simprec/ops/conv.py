"""Convolution and pooling over (N, C, H, W) tensors: conv2d, max_pool2d, avg_pool2d.

conv2d is im2col (the backend's patch gather) followed by one GEMM of the matmul accumulation
model with the bias fused into the fp32 accumulator: one rounding, like `linear`. The pools follow
torch's CUDA kernels (aten/src/ATen/native/cuda/DilatedMaxPool2d.cu, AveragePool2d.cu).
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..formats import fp32
from ._util import accumulate_model, autocast, float_input, pair, promoted_format


def _out_size(op, size, kernel, stride, padding):
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(
            f"{op}: the window ({kernel}, padding {padding}) does not fit the input size {size}"
        )
    return out


class Conv2d(Function):
    """x (N,C,H,W) * w (O,C,KH,KW) [+ b (O,)] -> (N,O,OH,OW), stride and zero padding.

    Precision: every output is one dot product over K = C*KH*KW (im2col order c, kh, kw) through
    the active matmul accumulation model, the bias added to the fp32 accumulator, one rounding to
    the promoted format. Backward: dgrad = col2im(grad @ W) summed in fp32 and rounded once; wgrad =
    grad^T @ patches through the accumulation model (K = N*OH*OW), rounded once; bias grad = fp32
    sum over (N, OH, OW), rounded once. cuDNN picks its own algorithms (implicit GEMM with another K
    order, Winograd, FFT) and its arithmetic is not modelled bit-exactly: only the accumulation
    model and the single rounding are.
    """

    def forward(self, x, w, *bias, stride, padding, accumulate):
        be = self.backend
        self.fmt = promoted_format(self.inputs)
        (n, c, h, wd), (o, _, kh, kw) = self.inputs[0].shape, self.inputs[1].shape
        self.kernel, self.stride, self.padding = (kh, kw), stride, padding
        self.accumulate = accumulate
        oh = _out_size("conv2d", h, kh, stride[0], padding[0])
        ow = _out_size("conv2d", wd, kw, stride[1], padding[1])
        self.dims = (n, c, h, wd, o, oh, ow)
        x = be.round(x, self.fmt) if self.inputs[0].fmt != self.fmt else x
        w = be.round(w, self.fmt) if self.inputs[1].fmt != self.fmt else w
        cols = be.reshape(be.im2col(x, self.kernel, stride, padding), (n * oh * ow, c * kh * kw))
        self.cols, self.wmat = cols, be.reshape(w, (o, c * kh * kw))
        self.has_bias = bool(bias)
        out = be.matmul(
            cols,
            be.transpose(self.wmat, (1, 0)),
            fmt=self.fmt,
            accumulate=accumulate,
            out_fmt=fp32,
            bias=bias[0] if bias else None,
        )
        out = be.transpose(be.reshape(out, (n, oh, ow, o)), (0, 3, 1, 2))
        return self.finish(out, self.fmt), self.fmt

    def backward(self, g):
        be = self.backend
        n, c, h, wd, o, oh, ow = self.dims
        g2 = be.reshape(be.transpose(g, (0, 2, 3, 1)), (n * oh * ow, o))
        grads = [None] * len(self.inputs)
        if self.needs_input_grad[0]:
            gcols = be.matmul(g2, self.wmat, fmt=self.fmt, accumulate=self.accumulate, out_fmt=fp32)
            gx = be.col2im(
                be.reshape(gcols, (n, oh * ow, -1)),
                (n, c, h, wd),
                self.kernel,
                self.stride,
                self.padding,
            )
            grads[0] = self.grad_for(0, gx)
        if self.needs_input_grad[1]:
            gw = be.matmul(
                be.transpose(g2, (1, 0)),
                self.cols,
                fmt=self.fmt,
                accumulate=self.accumulate,
                out_fmt=fp32,
            )
            grads[1] = self.grad_for(1, be.reshape(gw, self.inputs[1].shape))
        if self.has_bias and self.needs_input_grad[2]:
            grads[2] = self.grad_for(2, be.sum(g2, axis=0, keepdims=False))
        return tuple(grads)


def _windows(be, x, kernel, stride, padding, fill):
    """(N, OH*OW, C, KH*KW) windows of x padded with `fill` (the backend's im2col)."""
    n, c = be.shape(x)[:2]
    ph, pw = padding
    if ph or pw:
        x = be.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), fill)
    cols = be.im2col(x, kernel, stride, (0, 0))
    return be.reshape(cols, (n, -1, c, kernel[0] * kernel[1]))


class _Pool2d(Function):
    """The window geometry shared by the pools."""

    def _geometry(self, op, kernel, stride, padding):
        """Save kernel, stride, padding and `dims` = (N, C, H, W, OH, OW); checks the fit."""
        n, c, h, w = self.inputs[0].shape
        oh = _out_size(op, h, kernel[0], stride[0], padding[0])
        ow = _out_size(op, w, kernel[1], stride[1], padding[1])
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.dims = (n, c, h, w, oh, ow)
        return self.dims


class MaxPool2d(_Pool2d):
    """Max over each window (padding counts as -inf); exact, no rounding. Ties go to the first
    maximum in window order (torch's `val > maxval` scan). Backward: each input element gets the
    fp32 sum of the gradients of the windows it won (col2im), rounded once."""

    def forward(self, x, kernel, stride, padding):
        be = self.backend
        n, c, h, w, oh, ow = self._geometry("max_pool2d", kernel, stride, padding)
        cols = _windows(be, x, kernel, stride, padding, -np.inf)
        self.index = be.argmax(cols, axis=3)  # (N, L, C)
        out = be.max(cols, axis=3, keepdims=False)
        return be.transpose(be.reshape(out, (n, oh, ow, c)), (0, 3, 1, 2)), self.inputs[0].fmt

    def backward(self, g):
        be = self.backend
        n, c, h, w, oh, ow = self.dims
        k = self.kernel[0] * self.kernel[1]
        grid = np.indices(be.shape(self.index))  # from the shape: the indices stay on the backend
        vals = be.reshape(be.transpose(g, (0, 2, 3, 1)), (n, oh * ow, c))
        onehot = be.index_add((n, oh * ow, c, k), (grid[0], grid[1], grid[2], self.index), vals)
        gx = be.col2im(
            be.reshape(onehot, (n, oh * ow, c * k)),
            (n, c, h, w),
            self.kernel,
            self.stride,
            self.padding,
        )
        return (self.grad_for(0, gx),)


class AvgPool2d(_Pool2d):
    """Mean over each window, as torch's CUDA kernel: a sequential fp32 sum in window order (h, then
    w; padding adds zeros), divided by the divisor (window size with count_include_pad, else the
    number of real elements, or divisor_override), one rounding. Backward: each input element
    accumulates grad/divisor of the windows covering it in fp32, in torch's (ph, pw) order, one
    rounding."""

    def forward(self, x, kernel, stride, padding, count_include_pad, divisor_override):
        be = self.backend
        n, c, h, w, oh, ow = self._geometry("avg_pool2d", kernel, stride, padding)
        self.fmt = self.inputs[0].fmt
        cols = _windows(be, x, kernel, stride, padding, 0.0)  # (N, L, C, K)
        total = be.getitem(cols, (Ellipsis, 0))
        for i in range(1, kernel[0] * kernel[1]):
            total = be.elementwise("add", total, be.getitem(cols, (Ellipsis, i)))
        self.divisor = be.asarray(self._divisors(count_include_pad, divisor_override), fp32)
        out = be.elementwise("div", total, self.divisor)  # (N, L, C) / (L, 1)
        out = be.transpose(be.reshape(out, (n, oh, ow, c)), (0, 3, 1, 2))
        return self.finish(out, self.fmt), self.fmt

    def _divisors(self, count_include_pad, divisor_override):
        """(OH*OW, 1) float32 divisors, from the window geometry alone."""
        n, c, h, w, oh, ow = self.dims
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        if divisor_override:
            return np.full((oh * ow, 1), divisor_override, np.float32)
        hs, ws = np.arange(oh) * sh - ph, np.arange(ow) * sw - pw
        if count_include_pad:  # the window clipped to the padded input
            hsz = np.minimum(hs + kh, h + ph) - hs
            wsz = np.minimum(ws + kw, w + pw) - ws
        else:
            hsz = np.minimum(hs + kh, h) - np.maximum(hs, 0)
            wsz = np.minimum(ws + kw, w) - np.maximum(ws, 0)
        return (hsz[:, None] * wsz[None, :]).reshape(-1, 1).astype(np.float32)

    def backward(self, g):
        be = self.backend
        n, c, h, w, oh, ow = self.dims
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        share = be.elementwise(
            "div", be.reshape(be.transpose(g, (0, 2, 3, 1)), (n, oh * ow, c)), self.divisor
        )
        share = be.transpose(be.reshape(share, (n, oh, ow, c)), (0, 3, 1, 2))  # (N, C, OH, OW)
        padded = (n, c, h + 2 * ph, w + 2 * pw)
        rows, cols = np.arange(oh) * sh, np.arange(ow) * sw
        total = None
        # For an input pixel, ph ascending means kernel row i descending (torch's loop order).
        for i in reversed(range(kh)):
            for j in reversed(range(kw)):
                index = (slice(None), slice(None), (rows + i)[:, None], (cols + j)[None, :])
                part = be.index_add(padded, index, share)
                total = part if total is None else be.elementwise("add", total, part)
        gx = be.getitem(total, (slice(None), slice(None), slice(ph, ph + h), slice(pw, pw + w)))
        return (self.grad_for(0, gx),)


# ---------------------------------------------------------------- public functions


def _check_nchw(op, x):
    float_input(op, x)
    if x.ndim != 4:
        raise ValueError(f"{op}: input must be (N, C, H, W), got shape {x.shape}")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # noqa: A002
    """F.conv2d (dilation 1, groups 1): im2col + one accumulation-model GEMM with fused bias."""
    _check_nchw("conv2d", input)
    float_input("conv2d", weight)
    if dilation not in (1, (1, 1)) or groups != 1:
        raise NotImplementedError("conv2d: only dilation=1 and groups=1 are modelled")
    stride, padding = pair("conv2d", stride, "stride"), pair("conv2d", padding, "padding")
    if min(stride) < 1:
        raise ValueError(f"conv2d: stride must be positive, got {stride}")
    tensors = (input, weight) + ((bias,) if bias is not None else ())
    tensors = autocast("conv2d", *tensors)
    x, w = tensors[0], tensors[1]
    if w.ndim != 4 or w.shape[1] != x.shape[1]:
        raise ValueError(
            f"conv2d: weight {w.shape} does not fit input {x.shape} "
            f"(expected (out_channels, {x.shape[1]}, kh, kw))"
        )
    if bias is not None:
        float_input("conv2d", tensors[2])
        if tensors[2].shape != (w.shape[0],):
            raise ValueError(f"conv2d: bias shape {tensors[2].shape} must be ({w.shape[0]},)")
    return Conv2d.apply(*tensors, stride=stride, padding=padding, accumulate=accumulate_model())


def _pool_args(op, kernel_size, stride, padding):
    kernel = pair(op, kernel_size, "kernel_size")
    stride = kernel if stride is None or stride == () else pair(op, stride, "stride")
    padding = pair(op, padding, "padding")
    if min(kernel) < 1 or min(stride) < 1:
        raise ValueError(f"{op}: kernel_size and stride must be positive")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel size {kernel}")
    return kernel, stride, padding


def max_pool2d(
    input,  # noqa: A002
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    return_indices=False,
):
    """F.max_pool2d (dilation 1, floor mode): exact window maxima."""
    _check_nchw("max_pool2d", input)
    if dilation not in (1, (1, 1)) or ceil_mode or return_indices:
        raise NotImplementedError(
            "max_pool2d: dilation, ceil_mode and return_indices are not modelled"
        )
    kernel, stride, padding = _pool_args("max_pool2d", kernel_size, stride, padding)
    (x,) = autocast("max_pool2d", input)
    return MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding)


def avg_pool2d(
    input,  # noqa: A002
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """F.avg_pool2d (floor mode): torch's CUDA arithmetic, one rounding."""
    _check_nchw("avg_pool2d", input)
    if ceil_mode:
        raise NotImplementedError("avg_pool2d: ceil_mode is not modelled")
    if divisor_override is not None and divisor_override <= 0:
        raise ValueError(f"avg_pool2d: divisor_override must be positive, got {divisor_override}")
    kernel, stride, padding = _pool_args("avg_pool2d", kernel_size, stride, padding)
    (x,) = autocast("avg_pool2d", input)
    return AvgPool2d.apply(
        x,
        kernel=kernel,
        stride=stride,
        padding=padding,
        count_include_pad=bool(count_include_pad),
        divisor_override=divisor_override,
    )
