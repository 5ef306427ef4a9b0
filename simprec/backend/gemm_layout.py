"""The layout a GPU backend gives an ``accumulate="sm90"`` GEMM so that the plain tensor-core
kernel computes the kernel cuBLASLt picks on the H200 (the reference's map,
`simprec._gemm_choice`; docs/fidelity.md "GEMM kernel choice").

A backend's fp16/bf16 GEMM is one plain kernel: K zero-padded to a multiple of 16, blocks of 16
products from k = 0 (cuBLASLt with K % 16 == 0, or the CuPy backend's emulated sm90 kernel).
For most shapes that *is* the chosen kernel. For the others (a K remainder walked first, blocks
of 8) the K products are scattered to `slots` in K' positions, zeros elsewhere: zero products
take no part in a block's alignment, so the plain walk over K' is the chosen walk
(`_gemm_choice.k_slots`). Where the chosen kernel has no bias epilogue (`fused_bias` False) the
product is rounded to the input format, then the bias is added in fp32 and rounded again.

This module is the backends' one door to the map: they import it, never `simprec._gemm_choice`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .. import _gemm_choice

_DTYPES = {"fp16": "f16", "bf16": "bf16"}


@dataclass(frozen=True, eq=False)
class GemmLayout:
    """Where one GEMM's K products go. `slots` is None when the plain layout is the chosen kernel
    (products at 0..K-1, zeros up to `k_padded`): the backend pads as it always did. Otherwise
    `slots` (K,) int64 (read-only) holds product k's position in `k_padded` (a multiple of 16)
    positions; `key` names the layout for a backend's cache of device-side indices."""
    k_padded: int
    slots: np.ndarray | None
    fused_bias: bool
    key: tuple


@functools.lru_cache(maxsize=1024)
def _layout(k: int, block: int, residue: int, fused_bias: bool) -> GemmLayout:
    k_padded, slots = _gemm_choice.k_slots(k, _gemm_choice.GemmChoice(block, residue, fused_bias))
    if np.array_equal(slots, np.arange(k)):
        return GemmLayout(k + (-k % 16), None, fused_bias, (k, 16, 0))
    slots.setflags(write=False)
    return GemmLayout(k_padded, slots, fused_bias, (k, block, residue))


def sm90_gemm_layout(a_shape, b_shape, fmt, *, bias: bool = False) -> GemmLayout:
    """The layout of ``a @ b`` (shapes as `np.matmul` takes them, 1-D included) on fp16/bf16
    values (`fmt`: simprec's format or its name) under the sm90 model, `bias`: a bias is added
    (F.linear). Cached: one dictionary lookup per GEMM after the first."""
    name = fmt if isinstance(fmt, str) else fmt.name
    if name not in _DTYPES:
        raise ValueError(f"sm90_gemm_layout: fp16 or bf16 inputs, not {fmt!r}")
    return _for_shapes(tuple(a_shape), tuple(b_shape), _DTYPES[name], bool(bias))


@functools.lru_cache(maxsize=4096)
def _for_shapes(a_shape, b_shape, dtype, bias):
    choice = _gemm_choice.for_operands(a_shape, b_shape, dtype, bias=bias)
    return _layout(int(a_shape[-1]), choice.block, choice.residue, choice.fused_bias)


__all__ = ["GemmLayout", "sm90_gemm_layout"]
