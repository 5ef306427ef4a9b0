"""fp16 and bf16 GEMMs on the GPU (cuBLAS/cuBLASLt kernel choice, block sizes, K remainders),
with allow_fp16/bf16_reduced_precision_reduction=False.

    python tests/data/h200_capture/capture_gemm.py --out DIR [--device cuda]

Writes h200_gemm_f16.npz, h200_gemm_bf16.npz (grids and batched shapes) and h200_gemm_big.npz
(larger shapes, both dtypes; linb only for 1024x192x64 and the 33/48/65
permutations). Inputs are not stored: `operands(tag, *shapes)` regenerates them
(fp32 N(0,1) from the seed crc32(tag), rounded to the dtype by torch's cast); the tag of each
output is its key below with the dtype inserted: `{op}-{dtype}-{dims}`, e.g. "mm-f16-7-8-9".
Outputs (bits, uint16), key `{op}__{dims}` (big file: `{op}__{dtype}__{dims}`):
- `mm__M_N_K`: torch.matmul(A (M,K), B (K,N)), both contiguous.
- `lin__M_N_K`: F.linear(X (M,K), W (N,K)); `linb__M_N_K`: with bias b (N,) (operands X, W, b).
- `bmm3__B_M_N_K`: torch.matmul(A (B,M,K), B (B,K,N)).
- `bmm4__B_H_M_N_K`: torch.matmul(A (B,H,M,K), B (B,H,K,N)), contiguous.
- `qk__B_H_T_D`: attention scores as a causal GPT computes them: qkv (B,T,3*H*D) reshaped
  (B,T,3,H,D).permute(2,0,3,1,4), then q @ k.transpose(-2, -1) (strided views).
- `av__B_H_T_D`: P (B,H,T,T) contiguous @ v, v the strided view of the same qkv layout
  (operands qkv then P).
"""

from __future__ import annotations

import itertools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bits, cli, save, seed_of, setup_torch, to_torch  # noqa: E402

MN = [1, 7, 8, 17, 33, 64, 65, 128]
KS = [1, 2, 3, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 96, 127, 128, 130]
LIN_MN = [1, 8, 17, 33, 65, 128]
LIN_K = [7, 8, 16, 33, 48, 64, 65, 127, 128]
BIG = [(128, 128, 4096), (128, 4096, 128), (256, 256, 1024), (256, 1024, 256),
       (1024, 192, 64), *sorted(set(itertools.permutations((33, 48, 65))))]
BMM3 = [(3, 17, 33, 65), (3, 64, 64, 64), (3, 33, 48, 65), (3, 128, 8, 128), (5, 7, 9, 130)]
BMM4 = [(2, 4, 64, 64, 16), (2, 4, 65, 65, 16), (2, 3, 17, 33, 65), (2, 4, 128, 128, 32)]
ATTN = [(2, 4, t, d) for t in (16, 17, 64, 65, 128) for d in (8, 16, 64)]
SMALL = dict(MN=[1, 7, 8], KS=[1, 8, 9, 17], LIN_MN=[1, 8], LIN_K=[7, 8], BIG=[(33, 48, 65)],
             BMM3=BMM3[:1], BMM4=BMM4[:1], ATTN=ATTN[:2])


def operands(tag: str, *shapes) -> list[np.ndarray]:
    g = np.random.default_rng(seed_of(tag))
    return [g.standard_normal(s, dtype=np.float32) for s in shapes]


def one(torch, F, op, dtype, dims, device):
    """The output of case (op, dims) in `dtype`."""
    tag = "-".join([op, dtype, *map(str, dims)])
    if op == "mm":
        m, n, k = dims
        a, b = operands(tag, (m, k), (k, n))
        return torch.matmul(to_torch(a, dtype, device), to_torch(b, dtype, device))
    if op in ("lin", "linb"):
        m, n, k = dims
        shapes = [(m, k), (n, k)] + ([(n,)] if op == "linb" else [])
        t = [to_torch(v, dtype, device) for v in operands(tag, *shapes)]
        return F.linear(*t)
    if op in ("bmm3", "bmm4"):
        *batch, m, n, k = dims
        a, b = operands(tag, (*batch, m, k), (*batch, k, n))
        return torch.matmul(to_torch(a, dtype, device), to_torch(b, dtype, device))
    bsz, h, t, d = dims
    if op == "qk":
        (qkv,) = operands(tag, (bsz, t, 3 * h * d))
        q, k, _ = to_torch(qkv, dtype, device).reshape(bsz, t, 3, h, d).permute(2, 0, 3, 1, 4)
        return q @ k.transpose(-2, -1)
    qkv, p = operands(tag, (bsz, t, 3 * h * d), (bsz, h, t, t))
    _, _, v = to_torch(qkv, dtype, device).reshape(bsz, t, 3, h, d).permute(2, 0, 3, 1, 4)
    return to_torch(p, dtype, device) @ v


def capture(out_dir: str, device: str = "cuda", small: bool = False) -> None:
    import torch
    import torch.nn.functional as F

    meta = setup_torch(device)
    sizes = SMALL if small else dict(MN=MN, KS=KS, LIN_MN=LIN_MN, LIN_K=LIN_K, BIG=BIG,
                                     BMM3=BMM3, BMM4=BMM4, ATTN=ATTN)
    cases = [("mm", (m, n, k)) for m in sizes["MN"] for n in sizes["MN"] for k in sizes["KS"]]
    cases += [(op, (m, n, k)) for op in ("lin", "linb") for m in sizes["LIN_MN"]
              for n in sizes["LIN_MN"] for k in sizes["LIN_K"]]
    cases += [("bmm3", dims) for dims in sizes["BMM3"]] + [("bmm4", d) for d in sizes["BMM4"]]
    cases += [(op, dims) for op in ("qk", "av") for dims in sizes["ATTN"]]
    big = {}
    for dtype in ("f16", "bf16"):
        out = {}
        for op, dims in cases:
            out[f"{op}__{'_'.join(map(str, dims))}"] = bits(one(torch, F, op, dtype, dims,
                                                                device))
        save(out_dir, f"h200_gemm_{dtype}", out, dict(meta, dtype=dtype, sizes=sizes))
        for op in ("mm", "linb"):
            for dims in sizes["BIG"] if op == "mm" else sizes["BIG"][-7:]:
                big[f"{op}__{dtype}__{'_'.join(map(str, dims))}"] = bits(
                    one(torch, F, op, dtype, dims, device))
    save(out_dir, "h200_gemm_big", big, dict(meta, sizes=sizes))


if __name__ == "__main__":
    cli(capture, __doc__)
