"""The NumPy reference backend: the living specification of every kernel.

Every float format up to fp32 is stored in float32 arrays. Elementwise kernels compute in fp32
with the formulas of torch's CUDA kernels (aten/src/ATen/native/cuda/*.cu, cited per kernel) and
CUDA's own math functions (`simprec.cudamath`: expf, logf, tanhf, erff, log1pf, rsqrtf
instruction for instruction, the special-function unit from measured tables), so that one
rounding of their result reproduces the GPU's fp16/bf16 output bit for bit. Where nvcc
contracts `a * b + c` into one fma the kernel does too (`fma32`).
"""

from __future__ import annotations

import numpy as np

from .. import _fast, formats
from ..cudamath import libdevice as cuda
from ..formats import Format
from .contract import Backend

f32 = np.float32
_ONE = f32(1.0)
_HALF = f32(0.5)
_ZERO = f32(0.0)
fma = cuda.fma32
# aten/src/ATen/native/cuda/ActivationGeluKernel.cu (constexpr opmath_t constants)
_SQRT1_2 = f32(0.7071067811865476)  # M_SQRT1_2
_GELU_TANH_BETA = f32(0.7978845608028654)  # M_SQRT2 * M_2_SQRTPI * 0.5
_GELU_TANH_KAPPA = f32(0.044715)
_GELU_TANH_3KAPPA = f32(3.0) * _GELU_TANH_KAPPA  # opmath_t(3) * kKappa, folded in fp32
_GELU_PDF_BETA = f32(0.3989422804014327)  # M_2_SQRTPI * M_SQRT1_2 * 0.5


def _sigmoid(x):
    # UnarySpecialOpsKernel.cu: one / (one + exp(-x)) in opmath
    return _ONE / (_ONE + cuda.expf(-x))


def _gelu(x):
    # x * 0.5 * (1 + erf(x * M_SQRT1_2))
    return x * _HALF * (_ONE + cuda.erff(x * _SQRT1_2))


def _gelu_tanh(x):
    # inner = kBeta * (x + kKappa * x^3), the sum contracted to one fma
    inner = _GELU_TANH_BETA * fma(_GELU_TANH_KAPPA, x * x * x, x)
    return _HALF * x * (_ONE + cuda.tanhf(inner))


def _gelu_backward(dy, x):
    cdf = _HALF * (_ONE + cuda.erff(x * _SQRT1_2))
    pdf = cuda.expf(f32(-0.5) * x * x) * _GELU_PDF_BETA
    return dy * (cdf + x * pdf)  # not contracted (measured)


def _gelu_tanh_backward(dy, x):
    x_sq = x * x
    inner = _GELU_TANH_BETA * fma(_GELU_TANH_KAPPA, x_sq * x, x)
    tanh_inner = cuda.tanhf(inner)
    left = _HALF * x
    left_derivative = _HALF * (_ONE + tanh_inner)
    tanh_derivative = fma(-tanh_inner, tanh_inner, _ONE)
    inner_derivative = _GELU_TANH_BETA * fma(_GELU_TANH_3KAPPA, x_sq, _ONE)
    right_derivative = left * tanh_derivative * inner_derivative
    return dy * (left_derivative + right_derivative)


def _silu(x):
    # ActivationSiluKernel.cu: x / (1 + exp(-x))
    return x / (_ONE + cuda.expf(-x))


def _silu_backward(dy, x):
    s = _ONE / (_ONE + cuda.expf(-x))
    return dy * s * fma(x, _ONE - s, _ONE)  # dy * s * (1 + x * (1 - s))


def _softplus(x, beta=1.0, threshold=20.0):
    # ActivationSoftplusKernel.cu: (x*beta) > threshold ? x : log1p(exp(x*beta)) / beta
    b, t = f32(beta), f32(threshold)
    xb = x * b
    return np.where(xb > t, x, cuda.log1pf(cuda.expf(xb)) / b)


def _softplus_backward(dy, x, beta=1.0, threshold=20.0):
    b, t = f32(beta), f32(threshold)
    xb = x * b
    z = cuda.expf(xb)
    return np.where(xb > t, dy, dy * z / (z + _ONE))


def _add_scaled(x, y, alpha):
    # BinaryAddSubKernel.cu AddFunctor: a + alpha * b, contracted to fma(alpha, b, a)
    return fma(f32(alpha), y, x)


def _div_scalar(x, scalar):
    # BinaryDivTrueKernel.cu: a CPU-scalar divisor becomes a multiplication by its fp32 reciprocal
    return x * (_ONE / f32(scalar))


def _pow_scalar(x, scalar):
    # CUDA powf for a general exponent; modelled as the correctly rounded float64 pow
    return np.power(x.astype(np.float64), np.float64(scalar)).astype(f32)


def _relu(x):
    # clamp_min(x, 0): NaN stays NaN; max(-0, 0) + 0 = +0
    out = np.maximum(x, _ZERO)
    out += _ZERO
    return out


def _threshold_backward(dy, x, threshold):
    # x <= threshold ? +0 : dy. A multiply by the 0/1 mask is 8x faster than np.where; "+ 0"
    # turns the -0 of a negative dy into +0; non-finite dy (inf * 0 = NaN) takes the slow path.
    drop = np.less_equal(x, threshold)
    if not np.isfinite(dy).all():
        return np.where(drop, _ZERO, dy)
    out = np.multiply(dy, ~drop, dtype=np.float32)
    out += _ZERO
    return out


_KERNELS = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "neg": np.negative,
    "add_scaled": _add_scaled,
    "fma": fma,  # x * y + z, one rounding (what nvcc emits for a contracted a * b + c)
    "mul_scalar": lambda x, scalar: x * f32(scalar),
    "add_scalar": lambda x, scalar: x + f32(scalar),
    "rsub_scalar": lambda x, scalar: f32(scalar) - x,
    "div_scalar": _div_scalar,
    "rdiv_scalar": lambda x, scalar: f32(scalar) / x,
    "pow_scalar": _pow_scalar,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "abs": np.abs,
    "sign": np.sign,
    "reciprocal": lambda x: _ONE / x,
    "square": lambda x: x * x,
    "exp": cuda.expf,
    "log": cuda.logf,
    "sqrt": np.sqrt,
    "rsqrt": cuda.rsqrtf,
    "tanh": cuda.tanhf,
    "sigmoid": _sigmoid,
    "softplus": _softplus,
    "erf": cuda.erff,
    "relu": _relu,
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "silu": _silu,
    # BinaryMiscBackwardOpsKernels.cu, fp32 instantiation (scalar_t arithmetic; for fp16/bf16
    # each operation rounds to the half type: the ops layer does those roundings)
    "tanh_backward": lambda dy, y: dy * fma(-y, y, _ONE),
    "sigmoid_backward": lambda dy, y: dy * (_ONE - y) * y,
    "gelu_backward": _gelu_backward,
    "gelu_tanh_backward": _gelu_tanh_backward,
    "silu_backward": _silu_backward,
    "softplus_backward": _softplus_backward,
    # threshold_backward(grad, result, 0): result <= 0 ? 0 : grad (a NaN result passes grad)
    "relu_backward": lambda dy, y: _threshold_backward(dy, y, _ZERO),
    "threshold_backward": lambda dy, x, threshold=0.0: _threshold_backward(dy, x, f32(threshold)),
    "gt": np.greater,
    "ge": np.greater_equal,
    "lt": np.less,
    "le": np.less_equal,
    "eq": np.equal,
    "ne": np.not_equal,
    "isfinite": np.isfinite,
    "isnan": np.isnan,
    "where": np.where,
    "clamp": lambda x, lo=None, hi=None: np.clip(
        x, -np.inf if lo is None else f32(lo), np.inf if hi is None else f32(hi)
    ),
}


def _container(fmt):
    if fmt is None or not fmt.is_float:
        return np.dtype(np.bool_) if fmt is not None and fmt.bits == 1 else np.dtype(np.int64)
    return np.dtype(np.float32) if fmt.container == np.float32 else np.dtype(np.float64)


class NumpyBackend(Backend):
    """fp32-opmath kernels on NumPy float32 arrays; the reference the GPU backends are held to."""

    name = "numpy"
    host_memory = True

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
    def round(self, x, fmt, *, inplace=False, exact=False):
        if exact:  # float32 holds every format up to fp32: nothing to move
            return x
        if fmt == formats.fp32 or not isinstance(fmt, Format):
            return np.asarray(x, dtype=np.float32)
        x = np.asarray(x, dtype=np.float32)
        if not x.flags.c_contiguous:
            x, inplace = x.copy(), True
        if fmt.container != np.float32:
            return formats.round(x, fmt)
        return formats.round_array(x, fmt, out=x if inplace and x.flags.writeable else None)

    def elementwise(self, op, *xs, fmt=None, **params):
        try:
            kernel = _KERNELS[op]
        except KeyError:
            raise ValueError(f"numpy backend: unknown elementwise op {op!r}") from None
        fast = _fast.kernels("elementwise")
        if fast is not None and (out := fast.elementwise(op, xs, fmt, params)) is not None:
            return out                         # computed and rounded in one compiled pass
        with np.errstate(all="ignore"):
            out = kernel(*xs, **params)
        if fmt is None:
            return out
        # a kernel's result is a fresh array unless it is one of its inputs (a selection)
        return self.round(out, fmt, inplace=not any(out is x for x in xs))

    def matmul(self, a, b, *, fmt, accumulate, out_fmt, bias=None):
        if (accumulate == "fp32" or fmt == formats.fp32) and fmt.container == np.float32:
            # The "fp32" model itself (simprec.accumulate): exact products, fp32 BLAS sums, the
            # bias added in fp32, one rounding. The autograd only hands over values exact in
            # `fmt`, so accumulate.matmul's input validation (a cast round trip per operand,
            # most of an fp16 training step) is skipped here.
            with np.errstate(over="ignore", invalid="ignore"):
                acc = np.matmul(a, b)
                if bias is not None:
                    acc += bias
            return self.round(acc, out_fmt, inplace=True)
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
        if _basic(index) or _distinct_rows(index, shape):
            # nothing accumulates: a scatter of 0 + v (-0 -> +0)
            out = np.zeros(shape, dtype=f32)
            out[index] = (np.asarray(values, dtype=np.float64) + 0.0).astype(f32)
            return out
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
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        s = xp.strides
        windows = np.lib.stride_tricks.as_strided(
            xp,
            (n, oh, ow, c, kh, kw),
            (s[0], s[2] * sh, s[3] * sw, s[1], s[2], s[3]),
            writeable=False,
        )
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
                out[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] += patches[
                    :, :, :, :, i, j
                ].transpose(0, 3, 1, 2)
        return out[:, :, ph : ph + h, pw : pw + w].astype(f32)

    def astype(self, x, kind):
        dtype = {"float": np.float32, "int": np.int64, "bool": np.bool_}[kind]
        return np.asarray(x).astype(dtype)


def _basic(index) -> bool:
    """Whether `index` is basic indexing (slices, integers, Ellipsis, None), which selects no
    element twice (the slices of a GPT's fused q, k, v projection)."""
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, slice)
               or (isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)))
               for i in items)


def _distinct_rows(index, shape) -> bool:
    """Whether `index` is one integer array into the first axis without a repeated row."""
    if not (isinstance(index, tuple) and len(index) == 1):
        return False
    rows = index[0]
    if not (isinstance(rows, np.ndarray) and rows.ndim == 1 and rows.dtype.kind in "iu"):
        return False
    if not rows.size:
        return True
    seen = np.zeros(shape[0], dtype=bool)
    seen[rows] = True
    return int(seen.sum()) == rows.size
