"""fp16/bf16 GEMMs on the device's own tensor cores through cuBLASLt (ctypes; CuPy 14 exposes
no cuBLASLt matmul), with the settings under which the sm90 model is bit-exact (DESIGN.md,
"Tensor-core arithmetic"): fp32 compute and output (CUBLAS_COMPUTE_32F, no TF32), split-K and
every other reduction scheme off (CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK = NONE), and K
padded with zeros to a multiple of 16 so that no kernel can fold a K remainder into its first
block. Which kernel cuBLASLt then picks (a 16-term or an 8-term block) is its heuristic's choice,
so `scripts/cupy_gpu_check.py` counts the outputs that differ from the emulated sm90 model.

Enum values and the heuristic-result layout are cublasLt.h's (CUDA 12 and 13).
"""

from __future__ import annotations

import ctypes
import functools

import cupy

COMPUTE_32F = 68                      # cublasComputeType_t CUBLAS_COMPUTE_32F
R_32F, R_16F, R_16BF = 0, 2, 14       # cudaDataType_t
PREF_MAX_WORKSPACE_BYTES = 1          # uint64
PREF_REDUCTION_SCHEME_MASK = 3        # uint32
REDUCTION_SCHEME_NONE = 0
WORKSPACE_BYTES = 32 << 20
_c = ctypes


class _Heuristic(_c.Structure):
    _fields_ = [("algo", _c.c_uint64 * 8), ("workspace_size", _c.c_size_t), ("state", _c.c_int),
                ("waves_count", _c.c_float), ("reserved", _c.c_int * 4)]


@functools.cache
def _lib():
    paths = []
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        paths.append(load_nvidia_dynamic_lib("cublasLt").abs_path)
    except Exception:  # noqa: BLE001  (any failure: try the usual names)
        pass
    paths += ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"]
    for path in paths:
        if path:
            try:
                return _c.CDLL(path)
            except OSError:
                continue
    raise RuntimeError("cuBLASLt (libcublasLt.so) not found")


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"cuBLASLt {what} failed with status {status}")


@functools.cache
def _handle(device_id: int):
    h = _c.c_void_p()
    _check(_lib().cublasLtCreate(_c.byref(h)), "cublasLtCreate")
    return h


def _layout(dtype: int, rows: int, cols: int, ld: int):
    lay = _c.c_void_p()
    _check(_lib().cublasLtMatrixLayoutCreate(_c.byref(lay), _c.c_int(dtype), _c.c_uint64(rows),
                                              _c.c_uint64(cols), _c.c_int64(ld)),
           "MatrixLayoutCreate")
    return lay


@functools.cache
def _plan(device_id: int, M: int, N: int, K: int, dtype: int):
    """The descriptors and the heuristic's first algorithm for row-major (M,K) @ (K,N) -> fp32
    (M,N), computed as the column-major (N,K) @ (K,M) of the same memory."""
    lib = _lib()
    desc = _c.c_void_p()
    _check(lib.cublasLtMatmulDescCreate(_c.byref(desc), _c.c_int(COMPUTE_32F), _c.c_int(R_32F)),
           "MatmulDescCreate")
    a_lay = _layout(dtype, N, K, N)   # b's memory
    b_lay = _layout(dtype, K, M, K)   # a's memory
    d_lay = _layout(R_32F, N, M, N)
    pref = _c.c_void_p()
    _check(lib.cublasLtMatmulPreferenceCreate(_c.byref(pref)), "PreferenceCreate")
    ws = _c.c_uint64(WORKSPACE_BYTES)
    _check(lib.cublasLtMatmulPreferenceSetAttribute(pref, _c.c_int(PREF_MAX_WORKSPACE_BYTES),
                                                    _c.byref(ws), _c.c_size_t(8)), "workspace")
    mask = _c.c_uint32(REDUCTION_SCHEME_NONE)
    _check(lib.cublasLtMatmulPreferenceSetAttribute(pref, _c.c_int(PREF_REDUCTION_SCHEME_MASK),
                                                    _c.byref(mask), _c.c_size_t(4)),
           "reduction scheme")
    result = _Heuristic()
    count = _c.c_int(0)
    _check(lib.cublasLtMatmulAlgoGetHeuristic(_handle(device_id), desc, a_lay, b_lay, d_lay,
                                              d_lay, pref, _c.c_int(1), _c.byref(result),
                                              _c.byref(count)), "AlgoGetHeuristic")
    if count.value < 1:
        raise RuntimeError(f"cuBLASLt has no algorithm without split-K for {M}x{K}x{N}")
    return desc, a_lay, b_lay, d_lay, result


def gemm_fp32_out(a3, b3, bf16: bool):
    """The fp32 result of a3 @ b3 ((B,M,K), (B,K,N) float32 containers of fp16 or bf16 values)
    on the tensor cores."""
    nb, M, K = a3.shape
    N = b3.shape[-1]
    pad = -K % 16
    if pad:  # zeros change nothing and fix the block order
        a3 = cupy.concatenate([a3, cupy.zeros((nb, M, pad), cupy.float32)], axis=2)
        b3 = cupy.concatenate([b3, cupy.zeros((nb, pad, N), cupy.float32)], axis=1)
        K += pad
    if bf16:  # CuPy has no bfloat16 arrays: the top halves of the fp32 patterns, exact
        ah = cupy.ascontiguousarray((a3.view(cupy.uint32) >> 16).astype(cupy.uint16))
        bh = cupy.ascontiguousarray((b3.view(cupy.uint32) >> 16).astype(cupy.uint16))
    else:
        ah, bh = a3.astype(cupy.float16), b3.astype(cupy.float16)
    device = cupy.cuda.Device().id
    desc, a_lay, b_lay, d_lay, result = _plan(device, M, N, K, R_16BF if bf16 else R_16F)
    out = cupy.empty((nb, M, N), cupy.float32)
    workspace = cupy.empty(max(int(result.workspace_size), 1), cupy.uint8)
    alpha, beta = _c.c_float(1.0), _c.c_float(0.0)
    stream = _c.c_void_p(cupy.cuda.get_current_stream().ptr)
    for z in range(nb):
        # fresh allocations are 256-byte aligned, what the heuristic assumes by default
        az, bz = (ah[z], bh[z]) if nb == 1 else (ah[z].copy(), bh[z].copy())
        dz = out[z] if nb == 1 else cupy.empty((M, N), cupy.float32)
        _check(_lib().cublasLtMatmul(
            _handle(device), desc, _c.byref(alpha), _c.c_void_p(bz.data.ptr), a_lay,
            _c.c_void_p(az.data.ptr), b_lay, _c.byref(beta), _c.c_void_p(dz.data.ptr),
            d_lay, _c.c_void_p(dz.data.ptr), d_lay, _c.byref(result.algo),
            _c.c_void_p(workspace.data.ptr), _c.c_size_t(workspace.nbytes), stream),
            "cublasLtMatmul")
        if nb > 1:
            out[z] = dz
    return out
