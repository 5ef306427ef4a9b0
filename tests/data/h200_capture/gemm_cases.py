"""The GEMM capture cases (capture_gemm.py) regenerated in NumPy and run through simprec's
kernel-choice map (simprec/_gemm_choice.py); shared by make_gemm_digests.py and
tests/test_gemm_choice.py. Needs simprec, not torch."""

from __future__ import annotations

import hashlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from capture_gemm import operands  # noqa: E402


def _fmt(dtype):
    from simprec.formats import bf16, fp16
    return {"f16": fp16, "bf16": bf16}[dtype]


def _cast(x, dtype):
    """fp32 -> the half format, round to nearest-even (as torch's CPU cast), float32 values."""
    from simprec.formats import round as fround
    return np.asarray(fround(np.asarray(x, np.float32), _fmt(dtype)), np.float32)


def parse(key: str):
    """`op__dims` (grid files, dtype given) or `op__dtype__dims` (big file) -> op, dims."""
    parts = key.split("__")
    return parts[0], (parts[1] if len(parts) == 3 else None), tuple(map(int, parts[-1].split("_")))


def inputs(op, dtype, dims):
    """A (B, M, K), B (B, K, N) float32 holding half values, and the bias or None."""
    tag = "-".join([op, dtype, *map(str, dims)])
    bias = None
    if op == "mm":
        m, n, k = dims
        a, b = (_cast(x, dtype)[None] for x in operands(tag, (m, k), (k, n)))
    elif op in ("lin", "linb"):
        m, n, k = dims
        shapes = [(m, k), (n, k)] + ([(n,)] if op == "linb" else [])
        v = [_cast(x, dtype) for x in operands(tag, *shapes)]
        a, b = v[0][None], v[1].T[None]
        bias = v[2] if op == "linb" else None
    elif op in ("bmm3", "bmm4"):
        *batch, m, n, k = dims
        a, b = operands(tag, (*batch, m, k), (*batch, k, n))
        a, b = _cast(a, dtype).reshape(-1, m, k), _cast(b, dtype).reshape(-1, k, n)
    else:
        bsz, h, t, d = dims
        if op == "qk":
            (qkv,) = operands(tag, (bsz, t, 3 * h * d))
            x = _cast(qkv, dtype).reshape(bsz, t, 3, h, d).transpose(2, 0, 3, 1, 4)
            a, b = x[0].reshape(-1, t, d), np.swapaxes(x[1], -1, -2).reshape(-1, d, t)
        else:
            qkv, p = operands(tag, (bsz, t, 3 * h * d), (bsz, h, t, t))
            x = _cast(qkv, dtype).reshape(bsz, t, 3, h, d).transpose(2, 0, 3, 1, 4)
            a, b = _cast(p, dtype).reshape(-1, t, t), x[2].reshape(-1, t, d)
    return np.ascontiguousarray(a), np.ascontiguousarray(b), bias


def model_bits(op, dtype, dims) -> np.ndarray:
    """simprec's output bits (uint16) for one case under the kernel-choice map."""
    from simprec import _gemm_choice

    a, b, bias = inputs(op, dtype, dims)
    choice = _gemm_choice.choose(a.shape[1], b.shape[2], a.shape[2], dtype,
                                 bias=bias is not None, batch=a.shape[0])
    out = _gemm_choice.gemm(a, b, _fmt(dtype), choice, bias)
    from simprec.accumulate import _to_native
    return np.ascontiguousarray(_to_native(out, _fmt(dtype))).view(np.uint16).reshape(-1)


def digest(bits: np.ndarray) -> str:
    """First 16 hex digits of the SHA-256 of the little-endian uint16 bits."""
    return hashlib.sha256(np.ascontiguousarray(bits, "<u2").tobytes()).hexdigest()[:16]
