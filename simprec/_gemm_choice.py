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

* `block`: 16 products per block (sm_90 wgmma, CUTLASS wmma 16x16x16) or 8
  (`cutlass_75_tensorop_s1688gemm`, mma.m16n8k8), both with sm_90's 25 fractional bits and
  alignment floor.
* `residue`: 0, or the K tile T of a kernel that loads its partial K tile *first* (CUTLASS's
  predicated iterators): the first tile holds the K mod T leading products, walked in blocks
  from k = 0 with the tile's unused slots zero; the full tiles follow, from k = K mod T.
  Modelled by inserting zeros after the residue up to a multiple of the block: zero products
  take no part in a block's alignment, so the padded walk is exactly the kernel's. T = block
  is "the K remainder in the first block"; for K <= T nothing changes.
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
    """Model parameters of the kernel cuBLASLt picks for one GEMM (see the module docstring)."""
    block: int = 16
    residue: int = 0
    fused_bias: bool = True


DEFAULT = GemmChoice()


@functools.lru_cache(maxsize=4096)
def choose(m: int, n: int, k: int, dtype: str, *, bias: bool = False,
           batch: int = 1) -> GemmChoice:
    """The kernel parameters for C (M, N) = A (M, K) @ B (K, N) in `dtype` ("f16"/"bf16"),
    `batch` GEMMs of that shape at once (strided-batched), `bias`: F.linear's bias epilogue.

    Measured rules (docs/fidelity.md, "GEMM kernel choice"; an operand whose rows are not a
    multiple of 8 half values, 16 bytes, cannot be loaded by the sm_90 TMA kernels):
    * batched, K mod 8 != 0: blocks of 16, the K remainder first (fp16 and bf16);
    * bf16, one GEMM, K or N not a multiple of 8: blocks of 8 with a residue tile of 32 first
      (`cutlass_75_tensorop_s1688gemm_bf16`);
    * fp16, one GEMM, K mod 8 != 0, 2 <= M <= 16 and N > 1: blocks of 16, the K remainder
      first; M >= 17 and N > 1: blocks of 16 with a residue tile of 128 first (plain for
      K <= 128; K = 130 and 257 take the remainder first);
    * a bias with N == 1, M and K multiples of 8 is not fused.
    Everything else (fp16 with M == 1 or N == 1 included): the plain sm90 model.
    """
    fused = not (bias and n == 1 and m % 8 == 0 and k % 8 == 0)
    block, residue = 16, 0
    if batch > 1:
        if k % 8:
            residue = 16
    elif dtype == "bf16":
        if k % 8 or n % 8:
            block, residue = 8, 32
    elif k % 8 and n > 1 and m > 1:
        residue = 16 if m <= 16 else 128
    return GemmChoice(block=block, residue=residue, fused_bias=fused)


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
        return choose(int(rows), int(n), int(k), dtype, bias=bias)
    batch = 1
    for d in np.broadcast_shapes(a_shape[:-2], b_shape[:-2]):
        batch *= d
    return choose(int(m), int(n), int(k), dtype, bias=bias, batch=int(batch))


def k_slots(k: int, choice: GemmChoice) -> tuple[int, np.ndarray]:
    """Where the K products go in a *plain* 16-block walk that computes `choice`'s walk:
    (K', slots), K' a multiple of 16 and slots (K,) int64 the position of product k, every
    other position a zero product. Zero products take no part in a block, so a backend that
    runs the plain kernel (cuBLASLt on K' with K' a multiple of 16: blocks of 16 from 0) on
    operands scattered to these slots gets the chosen kernel's bits: the residue tile's unused
    slots after its K mod T products, and for blocks of 8 each 8 products followed by 8 zeros.
    """
    r = k % choice.residue if choice.residue else 0
    block = choice.block
    # block index of each product in the chosen walk, and its place inside the block
    ks = np.arange(k, dtype=np.int64)
    head = -(-r // block)                          # blocks of the residue tile
    blk = np.where(ks < r, ks // block, head + (ks - r) // block)
    pos = np.where(ks < r, ks % block, (ks - r) % block)
    slots = blk * 16 + pos                         # one 16-slot block per chosen block
    if block == 16 and r == 0:
        slots = ks
    total = int(slots[-1]) + 1 if k else 0
    return total + (-total % 16), slots


def accumulate(a3: np.ndarray, b3: np.ndarray, emin: int, choice: GemmChoice) -> np.ndarray:
    """fp32 accumulator of a3 (B, M, K) @ b3 (B, K, N) (float32 holding fp16/bf16 values)
    under `choice`. The default choice is exactly `tc_accumulate(..., arch="sm90")`."""
    block = choice.block
    k = a3.shape[-1]
    r = k % choice.residue if choice.residue else 0
    pad = (-r) % block
    if pad:                    # zeros after the residue tile's r products: its unused slots
        bsz, m, n = a3.shape[0], a3.shape[1], b3.shape[2]
        a3 = np.concatenate([a3[..., :r], np.zeros((bsz, m, pad), np.float32), a3[..., r:]],
                            axis=-1)
        b3 = np.concatenate([b3[:, :r], np.zeros((bsz, pad, n), np.float32), b3[:, r:]],
                            axis=-2)
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
