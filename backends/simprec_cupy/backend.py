"""CupyBackend: the backend contract (simprec/backend/contract.py) over CuPy arrays.

Every float format up to fp32 lives in float32 arrays, as in the NumPy reference, so that the
same bits are at hand on both; the kernels are kernels/*.cuh (rounding, elementwise, GEMMs).
Where a contract kernel is a pure data movement, or a comparison, CuPy's own routine runs.
docs/backend-cupy.md: what is bit-identical to the reference and what is not.
"""

from __future__ import annotations

import os

import cupy
import cupyx
import numpy as np

from simprec import formats
from simprec._philox import Philox
from simprec.accumulate import FP16_BLOCK, check_model
from simprec.backend.contract import Backend
from simprec.backend.gemm_layout import sm90_gemm_layout
from simprec.formats import Format, bf16, fp16, fp32

from . import _cublaslt, _kernels, _params

f32 = np.float32
_FP32_ARGS = _params.format_args(fp32)
# the input formats of the emulated accumulation models (those of simprec.accumulate)
_MODEL_FORMATS = (fp16, bf16)
# NumPy-semantics fallbacks for operands that are not float32 (integer and bool tensors)
_UFUNCS = {"add": cupy.add, "sub": cupy.subtract, "mul": cupy.multiply, "div": cupy.true_divide,
           "neg": cupy.negative, "maximum": cupy.maximum, "minimum": cupy.minimum,
           "abs": cupy.abs, "sign": cupy.sign}
_COMPARE = {"gt": cupy.greater, "ge": cupy.greater_equal, "lt": cupy.less,
            "le": cupy.less_equal, "eq": cupy.equal, "ne": cupy.not_equal,
            "isfinite": cupy.isfinite, "isnan": cupy.isnan}
_DEFAULTS = {"softplus": {"beta": 1.0, "threshold": 20.0},
             "softplus_backward": {"beta": 1.0, "threshold": 20.0},
             "threshold_backward": {"threshold": 0.0},
             "clamp": {"lo": None, "hi": None}}


def _container(fmt):
    if fmt is None or not fmt.is_float:
        return np.dtype(np.bool_) if fmt is not None and fmt.bits == 1 else np.dtype(np.int64)
    return np.dtype(np.float32) if fmt.container == np.float32 else np.dtype(np.float64)


def _on_device(index):
    """An index with its NumPy arrays (and lists of ints) moved to the device."""
    if isinstance(index, tuple):
        return tuple(_on_device(i) for i in index)
    if isinstance(index, np.ndarray):
        return cupy.asarray(index)
    return index


def _is_array(x) -> bool:
    return isinstance(x, (cupy.ndarray, np.ndarray))


class CupyBackend(Backend):
    """The reference's kernels as CUDA kernels on one GPU ("cupy" or "cupy:N").

    `gemm` (env SIMPREC_CUPY_GEMM): "tiled" (default) or "simple" (one thread per output, the
    cross-check). `native_sm90` (env SIMPREC_CUPY_NATIVE): fp16/bf16 GEMMs under the sm90 model
    on an sm_90 device run on its own tensor cores: "1" through cuBLASLt with split-K off
    (`_cublaslt`), "gemmex" through cuBLAS GemmEx (split-K not controllable); off ("0", the
    default): the emulated kernel. docs/backend-cupy.md says when the native paths are
    bit-exact.
    """

    name = "cupy"

    def __init__(self, device: str = ""):
        index = int(device) if device not in ("", "cuda") else cupy.cuda.runtime.getDevice()
        self.device = cupy.cuda.Device(index)
        self.device.use()
        self.name = "cupy" if device == "" else f"cupy:{device}"
        self.gemm = os.environ.get("SIMPREC_CUPY_GEMM", "tiled")
        native = os.environ.get("SIMPREC_CUPY_NATIVE", "0")
        self.native_sm90 = {"0": False, "1": True}.get(native, native)
        self._k_slot_cache = {}  # GemmLayout.key -> its K slots on this device
        _kernels.check_subnormals()  # fails loudly where CuPy's -ftz=true could not be undone

    # ---- arrays ----
    def asarray(self, data, fmt):
        return cupy.array(data, dtype=_container(fmt), copy=True)

    def to_numpy(self, x):
        return cupy.asnumpy(x) if isinstance(x, cupy.ndarray) else np.asarray(x)

    def full(self, shape, value, fmt):
        return cupy.full(shape, value, dtype=_container(fmt))

    def shape(self, x):
        return tuple(x.shape)

    # ---- precision ----
    def round(self, x, fmt, *, inplace=False, exact=False, mode="nearest", rng=None,
              random_bits=formats.DEFAULT_RANDOM_BITS):
        """The contract's round, plus the reference's other modes: `mode` "toward_zero" or
        "stochastic" with `rng` an `sp.Philox` (the same words as `sp.round` draws; the kernel
        computes them, and `rng.offset` advances by x.size) or a numpy Generator (its words
        are drawn on the host and copied)."""
        if not isinstance(x, cupy.ndarray):
            x = cupy.asarray(x)
        if exact and mode == "nearest":
            return x
        if fmt == fp32 or not isinstance(fmt, Format):
            return _kernels.cast(x, cupy.float32)
        if x.dtype != cupy.float32 or not _params.fits_kernels(fmt):
            return self._round_on_host(x, fmt, mode, rng, random_bits)
        if not x.flags.c_contiguous:
            x, inplace = cupy.ascontiguousarray(x), True
        out = x if inplace else cupy.empty_like(x)
        args = (*_params.format_args(fmt), np.int32(_params.MODES[mode]))
        if mode != "stochastic":
            _kernels.round_kernel("none")(x, *args, out)
            return out
        keep = _params.keep_mask(random_bits)
        if isinstance(rng, Philox):
            offset = rng.advance(x.size)
            _kernels.round_kernel("philox")(x, *args, np.uint64(rng.seed), np.uint64(rng.stream),
                                            np.uint64(offset), keep, out)
        elif isinstance(rng, np.random.Generator):
            # drawn block by block, as the reference's round_array draws them
            block = formats._E32.block
            words = cupy.asarray(np.concatenate(
                [formats._random_words(rng, min(block, x.size - lo))
                 for lo in range(0, x.size, block)]) if x.size else np.empty(0, np.uint32))
            _kernels.round_kernel("words")(x, *args, words, keep, out)
        else:
            raise TypeError(f"round: mode='stochastic' needs rng, an sp.Philox(seed) or a "
                            f"numpy.random.Generator, got {rng!r}")
        return out

    def _round_on_host(self, x, fmt, mode, rng, random_bits):
        """Formats beyond fp32's range (float64 containers) and float64 inputs: the reference's
        own rounding, on the host (rare; not a hot path)."""
        kw = {"rng": rng, "random_bits": random_bits} if mode == "stochastic" else {}
        host = formats.round(cupy.asnumpy(x), fmt, mode, **kw)
        return cupy.asarray(host)

    def elementwise(self, op, *xs, fmt=None, **params):
        xs = tuple(cupy.asarray(x) if isinstance(x, np.ndarray) else x for x in xs)
        if op in _kernels.COMPARISONS and all(
                x.dtype == np.float32 if _is_array(x) else isinstance(x, (float, int, np.floating))
                for x in xs):
            return _kernels.compare(op, *(self._operand(x) for x in xs))
        if op in _COMPARE:
            return _COMPARE[op](*xs)
        if op == "where":  # a selection: exact in the operands' format, rounded if asked
            out = self._where(*xs)
            return out if fmt is None else self.round(out, fmt)
        if op not in _kernels.OPS:
            raise ValueError(f"cupy backend: unknown elementwise op {op!r}")
        arrays = [x for x in xs if _is_array(x)]
        if any(a.dtype != np.float32 for a in arrays) and op in _UFUNCS:
            out = _UFUNCS[op](*xs)  # integer / bool / float64 operands: NumPy's promotion
            return out if fmt is None else self.round(out, fmt)
        arity, names, _ = _kernels.OPS[op]
        args = [self._operand(x) for x in xs]
        values = {**_DEFAULTS.get(op, {}), **params}
        if op == "div_scalar":  # BinaryDivTrueKernel.cu: times the fp32 reciprocal
            values["scalar"] = f32(1.0) / f32(values["scalar"])
        if op == "clamp":
            values = {"lo": -np.inf if values["lo"] is None else values["lo"],
                      "hi": np.inf if values["hi"] is None else values["hi"]}
        args += [f32(values[n]) for n in names]
        if op in _kernels.NEEDS_FINITE_FLAG:
            args.append(cupy.isfinite(args[0]).all().reshape(1))
        rounded = fmt is not None and fmt != fp32 and _params.fits_kernels(fmt)
        fmt_args = _params.format_args(fmt) if rounded else _FP32_ARGS
        out = _kernels.op_kernel(op)(*args, np.int32(rounded), *fmt_args)
        if fmt is not None and not rounded and fmt != fp32:
            out = self.round(out, fmt)  # a float64-container format
        return out

    @staticmethod
    def _operand(x):
        if isinstance(x, cupy.ndarray):
            return _kernels.cast(x, np.float32)
        if isinstance(x, np.ndarray):
            return cupy.asarray(x, dtype=np.float32)
        return f32(x)  # Python and NumPy scalars are fp32 (DESIGN.md, principle 2)

    def _where(self, cond, a, b):
        fix = lambda v: f32(v) if isinstance(v, float) else _on_device(v)  # noqa: E731
        return cupy.where(_on_device(cond), fix(a), fix(b))

    def matmul(self, a, b, *, fmt, accumulate, out_fmt, bias=None):
        check_model(accumulate, "matmul")
        if accumulate == "fp32" or fmt == fp32:
            # The "fp32" model: fp32 sums in cuBLAS's order (unspecified, as BLAS's is on the
            # host), then the bias in fp32, then one rounding.
            acc = cupy.matmul(a, b)
            if bias is not None:
                acc = _add_fp32(acc, bias)
            return self.round(acc, out_fmt, inplace=True)
        if fmt not in _MODEL_FORMATS:
            raise ValueError(f"matmul: accumulate={accumulate!r} models fp16 and bf16 inputs "
                             f"(and fp32, as plain BLAS), not fmt={fmt!r}")
        a3, b3, shape = _stacked(a, b)
        if accumulate == "sm90":  # the kernel cuBLASLt picks on the H200 (the reference's map)
            layout = sm90_gemm_layout(a.shape, b.shape, fmt, bias=bias is not None)
            if not layout.fused_bias:  # no bias epilogue: product rounded, bias added, rounded
                prod = self.matmul(a, b, fmt=fmt, accumulate=accumulate, out_fmt=fmt)
                return self.round(_add_fp32(prod, bias), out_fmt, inplace=True)
            if layout.slots is not None:
                a3, b3 = self._laid_out(a3, b3, layout)
        native = self.native_sm90 if accumulate == "sm90" and self._native_ok() else False
        if native == "gemmex" and fmt == fp16:
            acc = _native_gemm(a3, b3).reshape(shape)
        elif native is True:
            acc = _tma_gemm(a3, b3, fmt == bf16).reshape(shape)
        elif bias is None or (bias.ndim <= 1 and bias.size == b3.shape[-1]):
            # one kernel: the model, the bias (fp32, round to nearest), the output rounding
            fused = out_fmt if out_fmt != fp32 and _params.fits_kernels(out_fmt) else None
            acc = self._emulated_gemm(a3, b3, fmt, accumulate, bias, fused).reshape(shape)
            return acc if fused is not None or out_fmt == fp32 else self.round(acc, out_fmt)
        else:
            acc = self._emulated_gemm(a3, b3, fmt, accumulate, None, None).reshape(shape)
        if bias is not None:
            acc = _add_fp32(acc, bias)
        return self.round(acc, out_fmt, inplace=True)

    def _laid_out(self, a3, b3, layout):
        """a3 (B, M, K), b3 (B, K, N) with the K products at `layout.slots` of K' positions,
        zeros elsewhere: the plain 16-block kernel on them is the map's kernel
        (simprec.backend.gemm_layout). The slot index is kept on the device per layout."""
        slots = self._k_slot_cache.get(layout.key)
        if slots is None:
            slots = self._k_slot_cache[layout.key] = cupy.asarray(layout.slots)
        nb, m, _ = a3.shape
        a_lay = cupy.zeros((nb, m, layout.k_padded), cupy.float32)
        a_lay[:, :, slots] = a3
        b_lay = cupy.zeros((nb, layout.k_padded, b3.shape[-1]), cupy.float32)
        b_lay[:, slots, :] = b3
        return a_lay, b_lay

    def _native_ok(self) -> bool:
        return self.device.compute_capability == "90"

    def _emulated_gemm(self, a3, b3, fmt, accumulate, bias, out_fmt):
        nb, M, K = a3.shape
        N = b3.shape[-1]
        out = cupy.empty((nb, M, N), cupy.float32)
        if out.size == 0:
            return out
        if K == 0:
            out[...] = 0
            if bias is not None:
                out = _add_fp32(out, bias.reshape(-1))
            return out if out_fmt is None else self.round(out, out_fmt, inplace=True)
        bias_arg = (cupy.ascontiguousarray(bias, dtype=cupy.float32).reshape(-1)
                    if bias is not None else _NULL)
        out_args = ((np.int32(1), *_params.format_args(out_fmt)) if out_fmt is not None
                    else (np.int32(0), *_FP32_ARGS))
        m, emin, fmax, ovf, sub = _params.format_args(fmt)
        dims = (np.int32(M), np.int32(N), np.int32(K))
        if accumulate == "fp16":
            model, (blk, frac, floor) = 1, (np.int32(FP16_BLOCK), np.int32(0), np.int32(0))
        else:
            model, (blk, frac, floor) = 0, _params.tc_args(accumulate)
        if self.gemm == "simple":
            kernel = _kernels.gemm_function("sp_simple_gemm")
            kernel(((M * N + 127) // 128, 1, nb), (128,),
                   (a3, b3, bias_arg, out, *dims, np.int32(model), m, emin, blk, frac, floor,
                    fmax, ovf, sub, *out_args))
            return out
        grid = ((N + 63) // 64, (M + 63) // 64, nb)
        if model == 0:
            _kernels.gemm_function("sp_tc_gemm")(
                grid, (256,), (a3, b3, bias_arg, out, *dims, m, emin, blk, frac, floor,
                               *out_args))
        else:
            _kernels.gemm_function("sp_half_gemm")(
                grid, (256,), (a3, b3, bias_arg, out, *dims, blk, m, emin, fmax, ovf, sub,
                               *out_args))
        return out

    # ---- reductions: float64 accumulation, one rounding to fp32 ----
    def sum(self, x, axis, keepdims):
        if x.dtype == np.bool_ or cupy.issubdtype(x.dtype, cupy.integer):
            return cupy.sum(x, axis=axis, keepdims=keepdims)
        return _kernels.sum_f64(x, axis=axis, keepdims=keepdims)

    def max(self, x, axis, keepdims):
        if x.dtype == np.float32:
            return _kernels.max_(x, axis=axis, keepdims=keepdims)
        return cupy.max(x, axis=axis, keepdims=keepdims)

    def argmax(self, x, axis):
        return cupy.argmax(x, axis=axis).astype(cupy.int64, copy=False)

    def all_finite(self, xs):
        flags = [cupy.isfinite(x).all() for x in xs]
        return True if not flags else bool(cupy.stack(flags).all())  # one host sync

    # ---- movement ----
    def reshape(self, x, shape):
        return cupy.reshape(x, shape)

    def transpose(self, x, axes):
        return cupy.transpose(x, axes)

    def broadcast_to(self, x, shape):
        return cupy.broadcast_to(x, shape)

    def getitem(self, x, index):
        return x[_on_device(index)]

    def index_add(self, shape, index, values):
        out = cupy.zeros(shape, dtype=cupy.float64)
        index = _on_device(index)
        values = _kernels.cast(cupy.asarray(values), cupy.float64)
        vals = cupy.broadcast_to(values, out[index].shape)
        cupyx.scatter_add(out, index, vals)
        return _kernels.cast(out, cupy.float32)

    def concatenate(self, xs, axis):
        return cupy.concatenate(xs, axis=axis)

    def pad(self, x, pad_width, value):
        return cupy.pad(x, pad_width, constant_values=value)

    def take(self, x, indices, axis):
        return cupy.take(x, _on_device(indices), axis=axis)

    def im2col(self, x, kernel, stride, padding):
        n, c, h, w = x.shape
        kh, kw = kernel
        (sh, sw), (ph, pw) = stride, padding
        xp = cupy.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        xp = cupy.ascontiguousarray(xp)
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        s = xp.strides
        windows = cupy.lib.stride_tricks.as_strided(
            xp, (n, oh, ow, c, kh, kw), (s[0], s[2] * sh, s[3] * sw, s[1], s[2], s[3]))
        return windows.reshape(n, oh * ow, c * kh * kw)

    def col2im(self, cols, input_shape, kernel, stride, padding):
        n, c, h, w = input_shape
        kh, kw = kernel
        (sh, sw), (ph, pw) = stride, padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        out = cupy.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cupy.float64)
        patches = _kernels.cast(cols, cupy.float64).reshape(n, oh, ow, c, kh, kw)
        for i in range(kh):
            for j in range(kw):
                out[:, :, i: i + sh * oh: sh, j: j + sw * ow: sw] += patches[
                    :, :, :, :, i, j].transpose(0, 3, 1, 2)
        return _kernels.cast(out[:, :, ph: ph + h, pw: pw + w], cupy.float32)

    def astype(self, x, kind):
        dtype = {"float": cupy.float32, "int": cupy.int64, "bool": cupy.bool_}[kind]
        x = cupy.asarray(x)
        return _kernels.cast(x, dtype) if x.dtype == cupy.float64 else x.astype(dtype)


_NULL = np.uint64(0)  # a null pointer kernel argument (no bias)


def _add_fp32(acc, bias):
    """acc + bias in fp32, broadcast, rounded to nearest (subnormals kept: not CuPy's +)."""
    bias = _kernels.cast(cupy.asarray(bias), cupy.float32)
    return _kernels.op_kernel("add")(acc, bias, np.int32(0), *_FP32_ARGS)


def _stacked(a, b):
    """a (..., M, K) and b (..., K, N) as C-contiguous float32 (B, M, K), (B, K, N) stacks
    (batch dimensions broadcast, 1-D operands as in np.matmul) and the result's shape."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not match")
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    M, K, N = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    nb = int(np.prod(batch, dtype=np.int64))
    a3 = cupy.ascontiguousarray(cupy.broadcast_to(a2, batch + (M, K)).reshape(nb, M, K),
                                dtype=cupy.float32)
    b3 = cupy.ascontiguousarray(cupy.broadcast_to(b2, batch + (K, N)).reshape(nb, K, N),
                                dtype=cupy.float32)
    rows = (M,) if a.ndim > 1 else ()
    cols = (N,) if b.ndim > 1 else ()
    return a3, b3, batch + rows + cols


def _tma_gemm(a3, b3, bf16: bool):
    """`_cublaslt.gemm_fp32_out` on operands the sm_90 TMA kernel loads: N padded to a multiple
    of 8 and M to at least 32 with zeros (else cuBLASLt runs CUTLASS 2.x or gemv kernels, not
    the plain 16-block one; docs/fidelity.md "GEMM kernel choice"), the result sliced back."""
    nb, m, k = a3.shape
    n = b3.shape[-1]
    mp, np_ = (m if m > 16 else 32), n + (-n % 8)
    if (mp, np_) == (m, n):
        return _cublaslt.gemm_fp32_out(a3, b3, bf16)
    a_pad = cupy.zeros((nb, mp, k), cupy.float32)
    a_pad[:, :m] = a3
    b_pad = cupy.zeros((nb, k, np_), cupy.float32)
    b_pad[:, :, :n] = b3
    return cupy.ascontiguousarray(_cublaslt.gemm_fp32_out(a_pad, b_pad, bf16)[:, :m, :n])


def _native_gemm(a3, b3):
    """The fp32 accumulator of a3 @ b3 on the device's own tensor cores: cuBLAS GemmEx with
    fp16 inputs (CuPy has no bfloat16 arrays), fp32 output, fp32 compute (CUBLAS_COMPUTE_32F, no
    TF32). Bit-exact to the sm90 model where cuBLAS picks a 16-term-block kernel without
    split-K, which GemmEx cannot force (docs/backend-cupy.md)."""
    from cupy_backends.cuda.libs import cublas

    nb, M, K = a3.shape
    N = b3.shape[-1]
    ah, bh = a3.astype(cupy.float16), b3.astype(cupy.float16)  # exact: fp16 values
    out = cupy.empty((nb, M, N), cupy.float32)
    handle = cupy.cuda.device.get_cublas_handle()
    one, zero = np.array(1.0, np.float32), np.array(0.0, np.float32)
    CUDA_R_16F, CUDA_R_32F, COMPUTE_32F = 2, 0, 68
    for z in range(nb):
        # row-major C = A B is column-major C^T = B^T A^T
        cublas.gemmEx(handle, 0, 0, N, M, K, one.ctypes.data, bh[z].data.ptr, CUDA_R_16F, N,
                      ah[z].data.ptr, CUDA_R_16F, K, zero.ctypes.data, out[z].data.ptr,
                      CUDA_R_32F, N, COMPUTE_32F, -1)
    return out
