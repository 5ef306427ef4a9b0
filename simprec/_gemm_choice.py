"""Which GEMM kernel cuBLASLt runs on the H200, as parameters of the sm90 tensor-core model.

The sm90 model (`simprec._tensor_core`) is one kernel's arithmetic: K walked from 0 in blocks
of 16 products. torch's cuBLASLt call (aten/src/ATen/cuda/CUDABlas.cpp, heuristics from
`cublasLtMatmulAlgoGetHeuristic`) does not always pick such a kernel. This module maps a GEMM's
shape, dtype and bias to the model's parameters, as measured on the H200 captures
`tests/data/h200_capture/h200_gemm_{f16,bf16,big}.npz` (torch 2.11 + CUDA 13, cuBLASLt,
reduced-precision reduction and split-K off); docs/fidelity.md carries the map and the cases
it does not explain.

`choose` returns a `GemmChoice` (cached per shape: one dictionary lookup per GEMM after the
first); `gemm` runs the sm90 model with it. `simprec.accumulate.matmul` consults the map for
every ``accumulate="sm90"`` GEMM on fp16/bf16 values (`for_operands` names the GEMM as torch's
`at::matmul` hands it to cuBLASLt), so every op that runs a GEMM (matmul, linear with its bias
epilogue, batched attention products, conv's im2col GEMMs, their backward GEMMs) gets the
kernel's arithmetic, on the NumPy path and on the compiled one (`simprec._fast`). The
parameters:

* `remainder_first`: the K remainder (K mod block) forms the *first* block (CUTLASS kernels
  that peel the partial K tile first). Modelled by padding K with leading zeros: zero products
  take no part in a block, so the padded walk is exactly the peeled one.
* `block`: 16 products per block (sm_90 wgmma) or 8 (`cutlass_75_tensorop_s1688gemm`,
  mma.m16n8k8, with sm_90's 25 fractional bits and floor).
* `fused_bias`: the bias is added to the fp32 accumulator before the one rounding (cuBLASLt's
  bias epilogue). With N == 1 and M, K multiples of 8 it is not (measured: every such
  `F.linear` case, fp16 and bf16): the product is rounded to the half format, then the bias
  is added in fp32 and rounded again.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from . import _tensor_core

# sm_90 arithmetic (25 fractional bits, floor -133) in blocks of 8 products (additive entry).
_tensor_core.ARCHS.setdefault("sm90_k8", (8, 25, -133))


@dataclass(frozen=True)
class GemmChoice:
    """Model parameters of the kernel cuBLASLt picks for one GEMM."""
    block: int = 16
    remainder_first: bool = False
    fused_bias: bool = True


DEFAULT = GemmChoice()


@functools.lru_cache(maxsize=4096)
def choose(m: int, n: int, k: int, dtype: str, *, bias: bool = False,
           batch: int = 1) -> GemmChoice:
    """The kernel parameters for C (M, N) = A (M, K) @ B (K, N) in `dtype` ("f16"/"bf16").

    Measured rules (docs/fidelity.md, "GEMM kernel choice"):
    * fp16, K not a multiple of 8, N > 1, and K > 128 with M >= 17, or K > 64 in a batched
      GEMM (attention's P @ v with T = 65): the remainder first;
    * a bias with N == 1, M and K multiples of 8 is not fused (another kernel: the
      epilogue adds the bias to the rounded product).
    Everything else: the plain sm90 model.
    """
    remainder_first = (dtype == "f16" and k % 8 != 0 and n > 1
                       and ((k > 128 and m >= 17) or (k > 64 and batch > 1)))
    return GemmChoice(block=16, remainder_first=remainder_first,
                      fused_bias=not (bias and n == 1 and m % 8 == 0 and k % 8 == 0))


def for_operands(a_shape, b_shape, dtype: str, *, bias: bool = False) -> GemmChoice:
    """The choice for ``a @ b`` with a (..., M, K), b (..., K, N) (1-D operands promoted as in
    `np.matmul`), named as torch's `at::matmul` hands it to cuBLASLt: a batched `a` against a
    2-D `b` is folded into one GEMM of prod(batch) * M rows (aten/src/ATen/native/
    LinearAlgebra.cpp, `should_fold`), otherwise batch = the product of the broadcast batch
    dimensions (one strided-batched GEMM)."""
    a_shape = (1,) + tuple(a_shape) if len(a_shape) == 1 else tuple(a_shape)
    b_shape = tuple(b_shape) + (1,) if len(b_shape) == 1 else tuple(b_shape)
    m, k, n = a_shape[-2], a_shape[-1], b_shape[-1]
    if len(b_shape) == 2:
        rows = 1
        for d in a_shape[:-1]:
            rows *= d
        return choose(rows, n, k, dtype, bias=bias)
    batch = 1
    for d in np.broadcast_shapes(a_shape[:-2], b_shape[:-2]):
        batch *= d
    return choose(m, n, k, dtype, bias=bias, batch=batch)


def accumulate(a3: np.ndarray, b3: np.ndarray, emin: int, choice: GemmChoice) -> np.ndarray:
    """fp32 accumulator of a3 (B, M, K) @ b3 (B, K, N) (float32 holding fp16/bf16 values)
    under `choice`. The default choice is exactly `tc_accumulate(..., arch="sm90")`."""
    block = choice.block
    k = a3.shape[-1]
    pad = (-k) % block if choice.remainder_first else 0
    if pad:
        a3 = np.concatenate([np.zeros(a3.shape[:-1] + (pad,), np.float32), a3], axis=-1)
        b3 = np.concatenate([np.zeros((b3.shape[0], pad, b3.shape[2]), np.float32), b3], axis=-2)
    c = np.zeros((a3.shape[0], a3.shape[1], b3.shape[2]), np.float32)
    arch = "sm90" if block == 16 else "sm90_k8"
    return _tensor_core.tc_accumulate(a3, b3, c, emin=emin, arch=arch)


def gemm(a3, b3, fmt, choice: GemmChoice, bias=None) -> np.ndarray:
    """a3 @ b3 (+ bias) rounded to `fmt` (simprec's fp16 or bf16) as the chosen kernel computes
    it; float32 container."""
    from .accumulate import _EMIN, _round

    acc = accumulate(a3, b3, _EMIN[fmt], choice)
    if bias is None:
        return _round(acc, fmt)
    bias32 = np.asarray(bias, np.float32)
    if choice.fused_bias:
        return _round((acc + bias32).astype(np.float32), fmt)
    return _round((_round(acc, fmt) + bias32).astype(np.float32), fmt)
