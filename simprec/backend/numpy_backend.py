"""The NumPy reference backend: the living specification of every kernel.

Every float format up to fp32 is stored in float32 arrays; elementwise kernels compute in fp32
with the formulas of torch's CUDA kernels (aten/src/ATen/native/cuda/*.cu, cited per kernel),
so that one rounding of their result reproduces the GPU's fp16/bf16 output.
"""

from __future__ import annotations

import numpy as np

from .. import formats
from ..formats import Format
from ._erf import erf32
from .contract import Backend

f32 = np.float32
_ONE = f32(1.0)
_HALF = f32(0.5)
# aten/src/ATen/native/cuda/ActivationGeluKernel.cu
_SQRT1_2 = f32(0.7071067811865476)
_GELU_TANH_BETA = f32(0.7978845608028654)  # M_SQRT2 * M_2_SQRTPI * 0.5
_GELU_TANH_KAPPA = f32(0.044715)
_GELU_PDF_BETA = f32(0.3989422804014327)  # M_2_SQRTPI * M_SQRT1_2 * 0.5
_SOFTPLUS_THRESHOLD = f32(20.0)


def _sigmoid(x):
    # aten/src/ATen/native/cuda/UnarySpecialOpsKernel.cu: one / (one + exp(-x)) in opmath
    with np.errstate(over="ignore"):
        return _ONE / (_ONE + np.exp(-x))


def _gelu(x):
    return x * _HALF * (_ONE + erf32(x * _SQRT1_2))


def _gelu_tanh(x):
    inner = _GELU_TANH_BETA * (x + _GELU_TANH_KAPPA * (x * x * x))
    return _HALF * x * (_ONE + np.tanh(inner))


def _gelu_backward(dy, x):
    cdf = _HALF * (_ONE + erf32(x * _SQRT1_2))
    pdf = np.exp(-_HALF * x * x) * _GELU_PDF_BETA
    return dy * (cdf + x * pdf)


def _gelu_tanh_backward(dy, x):
    x_sq = x * x
    inner = _GELU_TANH_BETA * (x + _GELU_TANH_KAPPA * x_sq * x)
    tanh_inner = np.tanh(inner)
    left = _HALF * x
    right = _ONE + tanh_inner
    left_derivative = _HALF * right
    right_derivative = left * (_ONE - tanh_inner * tanh_inner)
    inner_derivative = _GELU_TANH_BETA * (_ONE + f32(3.0) * _GELU_TANH_KAPPA * x_sq)
    return dy * (left_derivative + right_derivative * inner_derivative)


def _silu(x):
    with np.errstate(over="ignore"):
        return x / (_ONE + np.exp(-x))


def _silu_backward(dy, x):
    s = _sigmoid(x)
    return dy * s * (_ONE + x * (_ONE - s))


def _softplus(x):
    # torch's default beta=1, threshold=20 (aten/src/ATen/native/cuda/ActivationSoftplusKernel.cu)
    with np.errstate(over="ignore"):
        return np.where(x > _SOFTPLUS_THRESHOLD, x, np.log1p(np.exp(x)))


def _softplus_backward(dy, x):
    with np.errstate(over="ignore", invalid="ignore"):
        z = np.exp(x)
        return np.where(x > _SOFTPLUS_THRESHOLD, dy, dy * z / (z + _ONE))


def _rsqrt(x):
    with np.errstate(divide="ignore", invalid="ignore"):
        return (1.0 / np.sqrt(x.astype(np.float64))).astype(f32)


def _add_scaled(x, y, alpha):
    # torch.add(x, y, alpha=a) on CUDA is fma(a, y, x) in fp32: the product a*y (48 bits) is exact
    # in float64, so float64 add then one fp32 rounding differs from the fma only on double-rounding
    # ties of the sum.
    return (x.astype(np.float64) + np.float64(f32(alpha)) * y.astype(np.float64)).astype(f32)


def _pow_scalar(x, scalar):
    s = f32(scalar)
    if s == 2:
        return x * x
    if s == 0.5:
        return np.sqrt(x)
    if s == -1:
        return _ONE / x
    return np.power(x, s)


_KERNELS = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "neg": np.negative,
    "add_scaled": _add_scaled,
    "mul_scalar": lambda x, scalar: x * f32(scalar),
    "add_scalar": lambda x, scalar: x + f32(scalar),
    "rsub_scalar": lambda x, scalar: f32(scalar) - x,
    "div_scalar": lambda x, scalar: x / f32(scalar),
    "rdiv_scalar": lambda x, scalar: f32(scalar) / x,
    "pow_scalar": _pow_scalar,
    "maximum": np.maximum, "minimum": np.minimum, "abs": np.abs, "sign": np.sign,
    "reciprocal": lambda x: _ONE / x, "square": lambda x: x * x,
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "rsqrt": _rsqrt, "tanh": np.tanh,
    "sigmoid": _sigmoid, "softplus": _softplus, "erf": erf32,
    "relu": lambda x: np.where(x > 0, x, np.where(np.isnan(x), x, f32(0))),
    "gelu": _gelu, "gelu_tanh": _gelu_tanh, "silu": _silu,
    "tanh_backward": lambda dy, y: dy * (_ONE - y * y),
    "sigmoid_backward": lambda dy, y: dy * (_ONE - y) * y,
    "gelu_backward": _gelu_backward, "gelu_tanh_backward": _gelu_tanh_backward,
    "silu_backward": _silu_backward, "softplus_backward": _softplus_backward,
    "relu_backward": lambda dy, y: np.where(y > 0, dy, f32(0)),
    "threshold_backward": lambda dy, x, threshold=0.0: np.where(x > threshold, dy, f32(0)),
    "gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal,
    "eq": np.equal, "ne": np.not_equal, "isfinite": np.isfinite, "isnan": np.isnan,
    "where": np.where,
    "clamp": lambda x, lo=None, hi=None: np.clip(x, -np.inf if lo is None else f32(lo),
                                                 np.inf if hi is None else f32(hi)),
}


def _container(fmt):
    if not fmt.is_float:
        return np.dtype(np.bool_) if fmt.bits == 1 else np.dtype(np.int64)
    return np.dtype(np.float32) if fmt.container == np.float32 else np.dtype(np.float64)


class NumpyBackend(Backend):
    """fp32-opmath kernels on NumPy float32 arrays; the reference the GPU backends are held to."""

    name = "numpy"

    def __init__(self, device: str = ""):
        if device not in ("", "cpu"):
            raise ValueError(f"the numpy backend has one device, 'cpu'; got {device!r}")

    # ---- arrays ----
    def asarray(self, data, fmt):
        return np.array(data, dtype=_container(fmt), copy=True)

    def to_numpy(self, x):
        return np.asarray(x)

    def full(self, shape, value, fmt):
        return np.full(shape, value, dtype=_container(fmt))

    def shape(self, x):
        return x.shape

    # ---- precision ----
    def round(self, x, fmt):
        if fmt == formats.fp32 or not isinstance(fmt, Format):
            return np.asarray(x, dtype=np.float32)
        return formats.round(np.asarray(x, dtype=np.float32), fmt)

    def elementwise(self, op, *xs, **params):
        try:
            kernel = _KERNELS[op]
        except KeyError:
            raise ValueError(f"numpy backend: unknown elementwise op {op!r}") from None
        with np.errstate(all="ignore"):
            return kernel(*xs, **params)

    def matmul(self, a, b, *, fmt, accumulate, out_fmt, bias=None):
        from ..accumulate import matmul

        return matmul(a, b, fmt=fmt, accumulate=accumulate, out_fmt=out_fmt, bias=bias)

    # ---- reductions: float64 accumulation, one rounding to fp32 ----
    def sum(self, x, axis, keepdims):
        if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer):
            return np.sum(x, axis=axis, keepdims=keepdims)
        return np.sum(x, axis=axis, keepdims=keepdims, dtype=np.float64).astype(f32)

    def max(self, x, axis, keepdims):
        return np.max(x, axis=axis, keepdims=keepdims)

    def argmax(self, x, axis):
        return np.argmax(x, axis=axis)

    def all_finite(self, xs):
        return all(bool(np.isfinite(x).all()) for x in xs)

    # ---- movement ----
    def reshape(self, x, shape):
        return np.reshape(x, shape)

    def transpose(self, x, axes):
        return np.transpose(x, axes)

    def broadcast_to(self, x, shape):
        return np.broadcast_to(x, shape)

    def getitem(self, x, index):
        return x[index]

    def index_add(self, shape, index, values):
        out = np.zeros(shape, dtype=np.float64)
        np.add.at(out, index, values)
        return out.astype(f32)

    def concatenate(self, xs, axis):
        return np.concatenate(xs, axis=axis)

    def pad(self, x, pad_width, value):
        return np.pad(x, pad_width, constant_values=value)

    def take(self, x, indices, axis):
        return np.take(x, indices, axis=axis)

    def im2col(self, x, kernel, stride, padding):
        n, c, h, w = x.shape
        kh, kw = kernel
        (sh, sw), (ph, pw) = stride, padding
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        s = xp.strides
        windows = np.lib.stride_tricks.as_strided(
            xp, (n, oh, ow, c, kh, kw), (s[0], s[2] * sh, s[3] * sw, s[1], s[2], s[3]),
            writeable=False)
        return windows.reshape(n, oh * ow, c * kh * kw)

    def col2im(self, cols, input_shape, kernel, stride, padding):
        n, c, h, w = input_shape
        kh, kw = kernel
        (sh, sw), (ph, pw) = stride, padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        out = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=np.float64)
        patches = cols.reshape(n, oh, ow, c, kh, kw)
        for i in range(kh):
            for j in range(kw):
                out[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += patches[:, :, :, :, i, j].transpose(0, 3, 1, 2)
        return out[:, :, ph:ph + h, pw:pw + w].astype(f32)

    def astype(self, x, kind):
        dtype = {"float": np.float32, "int": np.int64, "bool": np.bool_}[kind]
        return np.asarray(x).astype(dtype)
