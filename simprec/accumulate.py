"""Matmul accumulation models: how the K products of a dot product are summed.

simprec never lets NumPy's defaults decide how a half-precision matmul accumulates (NumPy's
float16 matmul has no BLAS and sums sequentially in float). A matmul names its model:

``"fp32"``
    Products exact, fp32 accumulation through BLAS sgemm (``np.matmul`` on float32), then the
    bias, then one round-to-nearest-even to the output format. Fast; the summation order is the
    BLAS library's, so the last bits can differ between machines.
``"fp16"``
    Reduced-precision accumulation, a simple model of GEMMs that accumulate in the half format
    (e.g. cuBLAS with ``CUBLAS_COMPUTE_16F``), not bit-exact to any GPU. K is walked in
    increasing order in blocks of 16. The accumulator ``acc`` is a value of the input format
    ``fmt``, starting at +0. For each block, ``s = fp32(acc)``, then for each k of the block in
    order ``s = fl32(s + fl32(a_k * b_k))`` (the product is exact for fp16; for bf16 it is
    exact unless it leaves the fp32 range), then ``acc = round_nearest_even(s, fmt)``.
``"sm70"``, ``"sm80"``, ``"sm90"``
    Bit-exact models of NVIDIA tensor cores (Volta, Ampere, Hopper), see
    :mod:`simprec._tensor_core` and docs/fidelity.md: blocks of 4/8/16 products aligned with
    the accumulator and truncated to 23/24/25 fractional bits, RZ to fp32 after each block.
    ``matmul``'s "sm90" is the H200 running torch's GEMMs: the kernel cuBLASLt picks for each
    shape (:mod:`simprec._gemm_choice`) sets the block size, where the K remainder goes and
    whether the bias is fused.

For every model a bias is added to the fp32 accumulator in fp32 (round to nearest) before the
single rounding to the output format, like a fused GEMM epilogue (``F.linear``). When the
inputs are fp32 (``fmt=fp32``) every model is plain fp32 BLAS: there is no fp32-input tensor-core
model here (TF32 is a different format).

Entry points: :func:`matmul` (float32 containers in and out; the autograd uses it) and
:func:`tensor_core_matmul` (the public model of one tensor-core GEMM, native half arrays
accepted).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from . import _gemm_choice, _tensor_core
from .formats import Format, bf16, fp16, fp32

__all__ = ["MODELS", "ARCHS", "check_model", "matmul", "tensor_core_matmul"]

MODELS = ("fp32", "fp16", "sm70", "sm80", "sm90")
ARCHS = ("sm70", "sm80", "sm90")
FP16_BLOCK = 16  # K block after which the "fp16" model rounds its accumulator


def check_model(model, where: str = "") -> str:
    """`model` if it names an accumulation model (one of `MODELS`), else a ValueError that
    starts with `where` (the caller's name)."""
    if model not in MODELS:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}accumulate must be one of {', '.join(MODELS)}; got {model!r}")
    return model

_NATIVE = {fp16: np.dtype(np.float16), bf16: np.dtype(ml_dtypes.bfloat16)}
_EMIN = {fp16: fp16.min_exp, bf16: bf16.min_exp}
_DTYPES = {fp16: "f16", bf16: "bf16"}  # the names of simprec._gemm_choice
_NAMES = {"fp32": fp32, "fp16": fp16, "bf16": bf16}
_HALF_NAN = np.uint16(0x7FFF)  # the NaN an NVIDIA GPU writes for fp16 and bf16 results


# ---------------------------------------------------------------------------------------------
# public entry points

def matmul(a, b, *, fmt, accumulate="fp32", out_fmt=None, bias=None):
    """``a @ b`` under the accumulation model `accumulate`, rounded once to `out_fmt`.

    a (..., M, K) and b (..., K, N): float arrays (float32 containers) whose values are exact
    in `fmt`; batch dimensions broadcast as in ``np.matmul`` (1-D operands too). `fmt`: fp16,
    bf16 or fp32 (any format whose values fit float32 with the "fp32" model). `accumulate`: one
    of :data:`MODELS`. `out_fmt` (default `fmt`): the format of the result; fp32 returns the raw
    fp32 accumulator. `bias` (N,) (broadcast against the result): added in fp32 before the
    rounding. Returns a float32 array whose values are exact in `out_fmt`.

    With ``accumulate="sm90"`` on fp16/bf16 values the GEMM runs as the kernel cuBLASLt picks
    for its shape on the H200 (`simprec._gemm_choice`, docs/fidelity.md "GEMM kernel choice"):
    blocks of 16 from k = 0 for most shapes, the K remainder first or blocks of 8 for others.
    Where that kernel has no bias epilogue, the product is rounded to `fmt` before the bias is
    added (with out_fmt=fp32 the result is that fp32 sum, which the caller rounds).
    """
    fmt = _as_format(fmt, "fmt")
    out_fmt = fmt if out_fmt is None else _as_format(out_fmt, "out_fmt")
    if accumulate not in MODELS:
        raise ValueError(f"matmul: unknown accumulate={accumulate!r}; choose one of {MODELS}")
    if out_fmt.container != np.float32:
        raise ValueError(f"matmul: out_fmt={out_fmt!r} does not fit a float32 container")
    a32 = _as_f32_in(a, fmt, "a")
    b32 = _as_f32_in(b, fmt, "b")
    shape = _result_shape(a32, b32, "matmul")
    bias32 = _bias(bias, shape, "matmul")
    choice = None
    if fmt == fp32 or accumulate == "fp32":
        if fmt.container != np.float32:
            raise ValueError(f"matmul: fmt={fmt!r} does not fit a float32 container")
        acc = np.matmul(a32, b32)
    elif fmt not in _NATIVE:
        raise ValueError(f"matmul: accumulate={accumulate!r} models fp16 and bf16 inputs "
                         f"(and fp32, as plain BLAS), not fmt={fmt!r}")
    else:
        a3, b3 = _stacked(a32, b32)
        if accumulate == "fp16":
            acc = _half_accumulate(a3, b3, fmt)
        elif accumulate == "sm90":             # the kernel cuBLASLt picks on the H200
            choice = _gemm_choice.for_operands(a32.shape, b32.shape, _DTYPES[fmt],
                                               bias=bias32 is not None)
            acc = _gemm_choice.accumulate(a3, b3, _EMIN[fmt], choice)
        else:
            zeros = np.zeros(a3.shape[:-1] + b3.shape[-1:], dtype=np.float32)
            acc = _tensor_core.tc_accumulate(a3, b3, zeros, emin=_EMIN[fmt], arch=accumulate)
        acc = acc.reshape(shape)
        if choice is not None and bias32 is not None and not choice.fused_bias:
            # no bias epilogue: the kernel rounds the product to `fmt`, then the bias is added
            # in fp32 (and rounded again below, or by the caller when out_fmt is fp32)
            acc = _round(acc, fmt)
    if bias32 is not None:
        acc = acc + bias32
    return _round(acc, out_fmt)


def tensor_core_matmul(a, b, arch="sm90", out=fp32, bias=None, c=None, fmt=None):
    """Bit-exact model of one NVIDIA tensor-core GEMM ``c + a @ b`` (cuBLAS/cuBLASLt with
    split-K off, K walked in order; see docs/fidelity.md).

    a (..., M, K), b (..., K, N): ``np.float16`` or ``ml_dtypes.bfloat16`` arrays (the format is
    read from the dtype), or float32 arrays holding fp16/bf16 values together with `fmt=`.
    Batch dimensions broadcast as in ``np.matmul``. `arch`: "sm70", "sm80" or "sm90".
    `c` (..., M, N) float32: the accumulator the first block starts from (default 0).
    `out`: fp32 returns the raw fp32 accumulator (float32 array); the input format returns it
    rounded to nearest-even, as a native array if the inputs were native, else as a float32
    container. `bias` (N,): added to the accumulator in fp32 (round to nearest) before that
    rounding, as cuBLASLt's bias epilogue (``F.linear``) does; with out=fp32 the fp32 sum is
    returned. NaN results of a native half output are the GPU's canonical NaN 0x7FFF.
    """
    if arch not in ARCHS:
        raise ValueError(f"tensor_core_matmul: unknown arch={arch!r}; choose one of {ARCHS}")
    fmt, native = _input_format(a, b, fmt)
    out = _as_format(out, "out")
    if out not in (fp32, fmt):
        raise ValueError(f"tensor_core_matmul: out must be fp32 or the input format {fmt!r}, "
                         f"got {out!r}")
    a32 = _as_f32_in(a, fmt, "a")
    b32 = _as_f32_in(b, fmt, "b")
    shape = _result_shape(a32, b32, "tensor_core_matmul")
    a3, b3 = _stacked(a32, b32)
    c3 = np.zeros(a3.shape[:-1] + b3.shape[-1:], dtype=np.float32)
    if c is not None:
        c32 = _as_f32_in(c, fp32, "c")
        try:
            c3[...] = np.broadcast_to(c32, shape).reshape(c3.shape)
        except ValueError:
            raise ValueError(f"tensor_core_matmul: c of shape {c32.shape} does not broadcast "
                             f"to the result shape {shape}") from None
    bias32 = _bias(bias, shape, "tensor_core_matmul")
    acc = _tensor_core.tc_accumulate(a3, b3, c3, emin=_EMIN[fmt], arch=arch).reshape(shape)
    if bias32 is not None:
        acc = acc + bias32
    if out == fp32:
        return acc
    if native:
        return _to_native(acc, fmt)
    return _round(acc, fmt)


# ---------------------------------------------------------------------------------------------
# the "fp16" model

def _half_accumulate(a3, b3, fmt, block=FP16_BLOCK):
    """Accumulator in `fmt`, rounded after each block of `block` k; sequential fp32 inside."""
    B, M, K = a3.shape
    N = b3.shape[-1]
    aT = np.ascontiguousarray(np.swapaxes(a3, -1, -2))       # (B, K, M): row k contiguous
    b3 = np.ascontiguousarray(b3)
    acc = np.zeros((B, M, N), dtype=np.float32)
    q = np.empty_like(acc)
    with np.errstate(over="ignore", invalid="ignore"):
        for j0 in range(0, K, block):
            for k in range(j0, min(K, j0 + block)):
                np.multiply(aT[:, k, :, None], b3[:, k, None, :], out=q)
                acc += q
            acc = _round(acc, fmt)
    return acc


# ---------------------------------------------------------------------------------------------
# arguments

def _as_format(f, what):
    if isinstance(f, Format):
        return f
    if isinstance(f, str) and f in _NAMES:
        return _NAMES[f]
    raise ValueError(f"{what} must be a Format (sp.fp32, sp.fp16, sp.bf16, ...), got {f!r}")


def _input_format(a, b, fmt):
    """The input format of tensor_core_matmul and whether the inputs are native half arrays."""
    da, db = np.asarray(a).dtype, np.asarray(b).dtype
    native = {v: k for k, v in _NATIVE.items()}
    fa, fb = native.get(da), native.get(db)
    if fa is not None or fb is not None:
        if fa != fb:
            raise ValueError(f"tensor_core_matmul: a ({da}) and b ({db}) must both be float16 "
                             "or both bfloat16 (or float32 containers with fmt=)")
        if fmt is not None and _as_format(fmt, "fmt") != fa:
            raise ValueError(f"tensor_core_matmul: fmt={fmt!r} contradicts the dtype {da}")
        return fa, True
    if fmt is None:
        raise ValueError(f"tensor_core_matmul: a and b are {da} and {db}; pass float16 or "
                         "bfloat16 arrays, or float32 arrays together with fmt=sp.fp16/sp.bf16")
    fmt = _as_format(fmt, "fmt")
    if fmt not in _NATIVE:
        raise ValueError(f"tensor_core_matmul: the tensor-core models take fp16 or bf16 inputs, "
                         f"not fmt={fmt!r}")
    return fmt, False


def _as_f32_in(x, fmt, name):
    """x as a float32 array, checked to hold only values of `fmt` (NaN and +-inf allowed
    where the format has them)."""
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.floating) or x.dtype in _NATIVE.values()):
        raise ValueError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    if x.dtype.itemsize > 4:
        same = (x32 == x) | (np.isnan(x32) & np.isnan(x))
        if not same.all():
            raise ValueError(f"{name} holds values that are not exact in float32, let alone "
                             f"in {fmt!r}")
    if x.dtype == _NATIVE.get(fmt) or fmt == fp32:
        return x32                         # exact by construction
    bad = ~_exact_in(x32, fmt)
    if bad.any():
        v = x32[bad].flat[0]
        raise ValueError(f"{name} holds {int(bad.sum())} values that are not exact in {fmt!r} "
                         f"(e.g. {v!r}); round them first (sp.round)")
    return x32


def _exact_in(x32, fmt):
    """Elementwise: is the float32 value exactly representable in `fmt`."""
    if fmt == fp32:
        return np.ones(x32.shape, dtype=bool)
    if fmt in _NATIVE:
        back = x32.astype(_NATIVE[fmt]).astype(np.float32)
        return (back == x32) | np.isnan(x32)
    # any other format: finite values are multiples of 2^(e - man_bits) with e >= min_exp
    fin = np.isfinite(x32)
    m, e = np.frexp(np.where(fin, x32, 0).astype(np.float64))
    e = np.maximum(e - 1, fmt.min_exp)
    scaled = np.ldexp(np.where(fin, x32, 0).astype(np.float64), fmt.man_bits - e)
    ok = fin & (scaled == np.round(scaled)) & (np.abs(x32) <= fmt.max)
    ok |= np.isinf(x32) & fmt.has_inf
    ok |= np.isnan(x32) & fmt.has_nan
    return ok


def _result_shape(a, b, who):
    """The shape of np.matmul(a, b), or a ValueError naming both shapes."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"{who}: operands must have at least one dimension, got shapes "
                         f"{a.shape} and {b.shape}")
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"{who}: shapes {a.shape} and {b.shape} do not match: a has "
                         f"K={a2.shape[-1]} columns, b has {b2.shape[-2]} rows")
    try:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        raise ValueError(f"{who}: batch dimensions of shapes {a.shape} and {b.shape} do not "
                         "broadcast") from None
    rows = (a2.shape[-2],) if a.ndim > 1 else ()
    cols = (b2.shape[-1],) if b.ndim > 1 else ()
    return batch + rows + cols


def _stacked(a, b):
    """a and b as (B, M, K) and (B, K, N) stacks, batch dimensions broadcast (shapes valid)."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    M, K, N = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    nb = int(np.prod(batch, dtype=np.int64))
    return (np.broadcast_to(a2, batch + (M, K)).reshape(nb, M, K),
            np.broadcast_to(b2, batch + (K, N)).reshape(nb, K, N))


def _bias(bias, shape, who):
    if bias is None:
        return None
    b32 = _as_f32_in(bias, fp32, "bias")
    try:
        np.broadcast_shapes(b32.shape, shape)
    except ValueError:
        raise ValueError(f"{who}: bias of shape {b32.shape} does not broadcast to the result "
                         f"shape {shape}") from None
    if np.broadcast_shapes(b32.shape, shape) != shape:
        raise ValueError(f"{who}: bias of shape {b32.shape} would enlarge the result shape "
                         f"{shape}")
    return b32


# ---------------------------------------------------------------------------------------------
# output rounding

def _round(x32, fmt):
    """Round float32 values to nearest-even in `fmt` (fp16/bf16), returned in float32."""
    if fmt == fp32:
        return np.asarray(x32, dtype=np.float32)
    if fmt not in _NATIVE:
        raise ValueError(f"output rounding to {fmt!r} is not supported here (fp32, fp16, bf16)")
    return _to_native(x32, fmt).astype(np.float32)


def _to_native(x32, fmt):
    """float32 -> np.float16 / bfloat16, round to nearest-even; NaN -> canonical 0x7FFF."""
    with np.errstate(over="ignore", invalid="ignore"):
        h = np.asarray(x32, dtype=np.float32).astype(_NATIVE[fmt])
    nan = np.isnan(x32)
    if nan.any():
        h.view(np.uint16)[nan] = _HALF_NAN
    return h
