"""The backend's compiled kernels: built on first use from kernels/*.cuh, cached per device."""

from __future__ import annotations

import functools

import cupy
import numpy as np

from . import _ftz, _params

# No fast-math (the default): expf & co. must be libdevice's exact sequences. The default
# --fmad=true is what nvcc compiled torch's kernels with; our own arithmetic is written with
# intrinsics (__fadd_rn, __fmul_rn, __fmaf_rn) that the compiler never contracts or splits.
# IEEE_MARKER: compiled without the -ftz=true that CuPy adds to every kernel (_ftz.py).
# --std=c++17: CuPy 14 bundles CCCL, whose Thrust headers require C++17.
OPTIONS = ("--std=c++17", _ftz.IEEE_MARKER)

_FMT_PARAMS = "int32 m, int32 emin, float32 fmax, int32 ovf, int32 sub"
_ROUND_CALL = "sp_round(r, m, emin, fmax, ovf, sub, SP_RN, 0u)"


@functools.cache
def _preamble(*names: str) -> str:
    return _params.source(*names)


@functools.cache
def _options() -> tuple:
    """OPTIONS, once CuPy's compiler honours their IEEE_MARKER (_ftz.install)."""
    _ftz.install(cupy.cuda.compiler)
    return OPTIONS


@functools.cache
def round_kernel(source: str) -> cupy.ElementwiseKernel:
    """Rounding with the word of element i from `source`: "none" (nearest, toward_zero),
    "philox" (the stream's word offset + i) or "words" (a host-drawn array)."""
    extra, word = {
        "none": ("", "0u"),
        "philox": (", uint64 seed, uint64 stream, uint64 offset, uint32 keep",
                   "(sp_philox_word(seed, stream, offset + (unsigned long long)i) & keep)"),
        "words": (", raw uint32 words, uint32 keep", "(words[i] & keep)"),
    }[source]
    return cupy.ElementwiseKernel(
        f"float32 x, {_FMT_PARAMS}, int32 mode{extra}", "float32 y",
        f"y = sp_round(x, m, emin, fmax, ovf, sub, mode, {word})",
        f"simprec_round_{source}", preamble=_preamble("round.cuh", "philox.cuh"),
        options=_options())


# op -> (number of array operands, scalar parameters, C expression over a, b, c and them)
OPS = {
    "add": (2, (), "SP_ADD(a, b)"),
    "sub": (2, (), "SP_SUB(a, b)"),
    "mul": (2, (), "SP_MUL(a, b)"),
    "div": (2, (), "SP_DIV(a, b)"),
    "neg": (1, (), "-a"),
    "add_scaled": (2, ("alpha",), "SP_FMA(alpha, b, a)"),  # AddFunctor: fma(alpha, b, a)
    "fma": (3, (), "SP_FMA(a, b, c)"),
    "mul_scalar": (1, ("scalar",), "SP_MUL(a, scalar)"),
    "add_scalar": (1, ("scalar",), "SP_ADD(a, scalar)"),
    "rsub_scalar": (1, ("scalar",), "SP_SUB(scalar, a)"),
    "div_scalar": (1, ("scalar",), "SP_MUL(a, scalar)"),   # scalar: the fp32 reciprocal
    "rdiv_scalar": (1, ("scalar",), "SP_DIV(scalar, a)"),
    "pow_scalar": (1, ("scalar",), "sp_pow_scalar(a, scalar)"),
    "maximum": (2, (), "sp_maximum(a, b)"),
    "minimum": (2, (), "sp_minimum(a, b)"),
    "abs": (1, (), "fabsf(a)"),
    "sign": (1, (), "sp_sign(a)"),
    "reciprocal": (1, (), "SP_DIV(1.0f, a)"),
    "square": (1, (), "SP_MUL(a, a)"),
    "exp": (1, (), "expf(a)"),
    "log": (1, (), "logf(a)"),
    "sqrt": (1, (), "SP_SQRT(a)"),
    "rsqrt": (1, (), "sp_rsqrt(a)"),
    "tanh": (1, (), "tanhf(a)"),
    "sigmoid": (1, (), "sp_sigmoid(a)"),
    "softplus": (1, ("beta", "threshold"), "sp_softplus(a, beta, threshold)"),
    "erf": (1, (), "erff(a)"),
    "relu": (1, (), "sp_relu(a)"),
    "gelu": (1, (), "sp_gelu(a)"),
    "gelu_tanh": (1, (), "sp_gelu_tanh(a)"),
    "silu": (1, (), "sp_silu(a)"),
    "tanh_backward": (2, (), "SP_MUL(a, SP_FMA(-b, b, 1.0f))"),
    "sigmoid_backward": (2, (), "SP_MUL(SP_MUL(a, SP_SUB(1.0f, b)), b)"),
    "gelu_backward": (2, (), "sp_gelu_backward(a, b)"),
    "gelu_tanh_backward": (2, (), "sp_gelu_tanh_backward(a, b)"),
    "silu_backward": (2, (), "sp_silu_backward(a, b)"),
    "softplus_backward": (2, ("beta", "threshold"), "sp_softplus_backward(a, b, beta, threshold)"),
    "relu_backward": (2, (), "sp_threshold_backward(a, b, 0.0f, finite[0])"),
    "threshold_backward": (2, ("threshold",), "sp_threshold_backward(a, b, threshold, finite[0])"),
    "clamp": (1, ("lo", "hi"), "sp_clamp(a, lo, hi)"),
}
NEEDS_FINITE_FLAG = ("relu_backward", "threshold_backward")


@functools.cache
def op_kernel(op: str) -> cupy.ElementwiseKernel:
    """The fused kernel of `op`: the fp32 result, rounded to nearest-even into the format
    given by the trailing parameters when `rnd` is nonzero."""
    arity, params, expr = OPS[op]
    ins = [f"float32 {n}" for n in "abc"[:arity]] + [f"float32 {p}" for p in params]
    if op in NEEDS_FINITE_FLAG:
        ins.append("raw bool finite")
    ins += ["int32 rnd", _FMT_PARAMS]
    return cupy.ElementwiseKernel(
        ", ".join(ins), "float32 out",
        f"float r = {expr}; out = rnd ? {_ROUND_CALL} : r",
        f"simprec_{op}", preamble=_preamble("elementwise.cuh", "round.cuh"),
        options=_options())


@functools.cache
def _gemm_module_for(device_id: int) -> cupy.RawModule:
    return cupy.RawModule(code=_preamble("gemm.cu"), options=_options())


def gemm_function(name: str):
    """sp_tc_gemm, sp_half_gemm or sp_simple_gemm of kernels/gemm.cu on the current device."""
    return _gemm_module_for(cupy.cuda.Device().id).get_function(name)


# CuPy's own kernels flush fp32 subnormals too (astype, +, sum's fp32 -> fp64 read, max):
# where the backend needs them on fp32 values, it runs these instead.
@functools.cache
def _cast_kernel(src: str, dst: str) -> cupy.ElementwiseKernel:
    return cupy.ElementwiseKernel(f"{src} x", f"{dst} y", f"y = ({_C_TYPES[dst]})x",
                                  f"simprec_cast_{src}_{dst}", options=_options())


_C_TYPES = {"float32": "float", "float64": "double"}


def cast(x, dtype) -> cupy.ndarray:
    """x as `dtype` (float32 or float64): exact widening, or narrowing rounded to nearest-even
    into fp32 with its subnormals (numpy's astype); other dtypes: CuPy's astype."""
    src, dst = np.dtype(x.dtype).name, np.dtype(dtype).name
    if src == dst:
        return x
    if src not in _C_TYPES or dst not in _C_TYPES:
        return x.astype(dtype)
    return _cast_kernel(src, dst)(x)


@functools.cache
def _max_kernel() -> cupy.ReductionKernel:
    # numpy's max: NaN propagates (a NaN operand wins whichever side it is on)
    return cupy.ReductionKernel(
        "float32 x", "float32 y", "x", "(a != a || a > b) ? a : b", "y = a",
        "-__int_as_float(0x7f800000)", "simprec_max", options=_options())


def max_(x, axis=None, keepdims=False) -> cupy.ndarray:
    """numpy.max of a float32 array, compared as IEEE values (subnormals above zero)."""
    return _max_kernel()(x, axis=axis, keepdims=keepdims)


def sum_f64(x, axis=None, keepdims=False) -> cupy.ndarray:
    """The sum of a float32 (or float64) array in float64, in CuPy's reduction order, rounded
    once to fp32."""
    return cast(cupy.sum(cast(x, np.float64), axis=axis, keepdims=keepdims), np.float32)


COMPARISONS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}


@functools.cache
def _compare_kernel(op: str) -> cupy.ElementwiseKernel:
    return cupy.ElementwiseKernel("float32 a, float32 b", "bool y", f"y = a {COMPARISONS[op]} b",
                                  f"simprec_{op}", options=_options())


def compare(op: str, a, b) -> cupy.ndarray:
    """numpy's comparison `op` of float32 operands, a subnormal compared as itself (CuPy's own
    comparisons flush it to zero first)."""
    return _compare_kernel(op)(a, b)


def check_subnormals() -> None:
    """Raise unless the compiled kernels keep fp32 subnormals (a fp32 subnormal times 1 and
    exp(-87.5) = 2^-126.2 are nonzero), i.e. unless _ftz took effect on this CuPy."""
    x = cupy.asarray(np.array([1e-40, -87.5], np.float32))
    mul = op_kernel("mul")(x[:1], np.float32(1), np.int32(0), *_FP32_ARGS)
    ex = op_kernel("exp")(x[1:], np.int32(0), *_FP32_ARGS)
    got = np.concatenate([cupy.asnumpy(mul), cupy.asnumpy(ex)]).view(np.uint32)
    want = np.array([np.float32(1e-40), np.exp(np.float32(-87.5))], np.float32).view(np.uint32)
    if got[0] != want[0] or got[1] == 0:
        raise RuntimeError(
            f"simprec_cupy: the kernels flush fp32 subnormals to zero (1e-40 * 1 -> "
            f"{got[0]:#010x}, exp(-87.5) -> {got[1]:#010x}); CuPy's -ftz=true was not turned "
            f"off (backends/simprec_cupy/_ftz.py)")


_FP32_ARGS = _params.format_args(_params.formats.fp32)


def precompile() -> None:
    """Compile every kernel now (the first use of each would otherwise pay for it)."""
    for name in ("sp_tc_gemm", "sp_half_gemm", "sp_simple_gemm"):
        gemm_function(name)
    x = cupy.zeros(4, cupy.float32)
    args = _params.format_args(_params.formats.fp16)
    round_kernel("none")(x, *args, np.int32(0))
    round_kernel("philox")(x, *args, np.int32(2), np.uint64(0), np.uint64(0), np.uint64(0),
                           np.uint32(0xFFFFFFFF))
    for op, (arity, params, _) in OPS.items():
        extra = [cupy.ones(1, bool)] if op in NEEDS_FINITE_FLAG else []
        op_kernel(op)(*([x] * arity), *([cupy.float32(1)] * len(params)), *extra,
                      cupy.int32(0), *args)
    for src, dst in (("float32", "float64"), ("float64", "float32")):
        cast(x.astype(src), dst)
    max_(x)
    for op in COMPARISONS:
        compare(op, x, x)
