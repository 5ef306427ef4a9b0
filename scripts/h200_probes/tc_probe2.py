"""Probe 2: fp32-subnormal rounding, alignment floor, bf16 product overflow, kernel choice by K."""
import os, json
import numpy as np, ml_dtypes, torch
OUT = os.environ.get("OUT", ".")
dev = "cuda"
torch.backends.cuda.preferred_blas_library("cublaslt")
torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = (False, False)
torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = (False, False)
ND = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16}
TD = {"fp16": torch.float16, "bf16": torch.bfloat16}
rec, meta = {}, []
def bits(t):
    t = t.detach().cpu()
    if t.dtype in (torch.float16, torch.bfloat16): return t.view(torch.int16).numpy().view(np.uint16)
    return t.view(torch.int32).numpy().view(np.uint32)
import triton, triton.language as tl
@triton.jit
def _k(A, B, C, D, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm = tl.arange(0, BM); rn = tl.arange(0, BN)
    msk = (rm[:, None] < M) & (rn[None, :] < N)
    acc = tl.load(C + rm[:, None] * N + rn[None, :], mask=msk, other=0.0)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        a = tl.load(A + rm[:, None] * K + rk[None, :], mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
        b = tl.load(B + rk[:, None] * N + rn[None, :], mask=(rk[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc)
    tl.store(D + rm[:, None] * N + rn[None, :], acc, mask=msk)
def tri(At, Bt, Ct, BK):
    M, K = At.shape; N = Bt.shape[1]
    D = torch.empty((M, N), device=dev, dtype=torch.float32)
    _k[(1,)](At, Bt, Ct, D, M, N, K, 64, 64, BK)
    return D
def add(name, dt, A, B, C=None, triton_bk=()):
    A = np.asarray(A, np.float32).astype(ND[dt]); B = np.asarray(B, np.float32).astype(ND[dt])
    At = torch.from_numpy(A.astype(np.float32)).to(dev).to(TD[dt]).contiguous()
    Bt = torch.from_numpy(B.astype(np.float32)).to(dev).to(TD[dt]).contiguous()
    r = {"A": A.view(np.uint16), "B": B.view(np.uint16), "D32": bits(torch.mm(At, Bt, out_dtype=torch.float32)), "D": bits(At @ Bt)}
    if C is not None or triton_bk:
        C = np.zeros((A.shape[0], B.shape[1]), np.float32) if C is None else np.asarray(C, np.float32)
        r["C"] = C.view(np.uint32); Ct = torch.from_numpy(C).to(dev).contiguous()
        for bk in triton_bk:
            try: r[f"tri{bk}"] = bits(tri(At, Bt, Ct, bk))
            except Exception as e: print(name, "triton", bk, repr(e)[:300])
    for k, v in r.items(): rec[f"{name}_{k}"] = v
    meta.append(dict(key=name, dtype=dt, M=A.shape[0], K=A.shape[1], N=B.shape[1], keys=sorted(r)))

def pairs(prod_lists, K=16):
    """Each entry: list of (a, b) pairs -> one row of A and the matching column of B."""
    P = len(prod_lists); A = np.zeros((P, K)); B = np.zeros((K, P))
    for i, pl in enumerate(prod_lists):
        for k, (x, y) in enumerate(pl): A[i, k] = x; B[k, i] = y
    return A, B
t = 2.0
sub_cases = [
    [(t**-70, t**-70), (t**-75, t**-75)],                       # 512.5 units of 2^-149: tie
    [(t**-70, t**-70), (t**-75, t**-75), (t**-76, t**-76)],     # 512.625 (floor -126 drops 2^-152)
    [(t**-70, t**-70), (t**-75, t**-75), (t**-80, t**-80)],     # 512.5 + 2^-11
    [(t**-70, t**-70), (t**-75, t**-75), (-t**-80, t**-80)],    # 512.5 - 2^-11
    [(t**-70, t**-70), (3 * t**-76, t**-75)],                   # 512 + 0.75
    [(t**-70, t**-70), (t**-76, t**-75)],                       # 512.25
    [(t**-69, t**-70), (t**-75, t**-75)],                       # 1024.5: tie, odd base? (1024 even)
    [(t**-70, t**-70), (3 * t**-75, t**-75)],                   # 513.5 tie -> 514 (even) or 514 (away)
    [(t**-64, t**-64), (t**-64, t**-64), (t**-75, t**-75), (t**-76, t**-77)],  # 2^-127 + 2^-150 + 2^-153
    [(t**-64, t**-64), (t**-64, t**-64), (t**-75, t**-75), (t**-80, t**-80)],  # 2^-127 + 2^-150 + 2^-160
    [(t**-75, t**-75)],                                          # 2^-150 alone: 0.5 -> 0 (even)
    [(t**-75, 1.5 * t**-75)],                                    # 0.75 -> 1
    [(3 * t**-76, t**-75)],                                      # 1.5 -> 2
    [(t**-63, t**-63), (-(t**-63), t**-63), (t**-75, t**-75)],   # E=-126 cancels, 2^-150 left
]
sub_cases += [[(-x, y) for x, y in pl] for pl in sub_cases]      # negated
A, B = pairs(sub_cases)
add("sub_bf16", "bf16", A, B, triton_bk=(16,))
big = 2.0 ** 100
over_cases = [
    [(big, big), (-big, big)],                 # 2^200 - 2^200
    [(-big, big), (big, big)],
    [(big, big), (-big, 2 * big)],              # 2^200 - 2^201 = -2^200
    [(-2 * big, big), (big, big)],
    [(big, big), (-big, big), (-1.0, 1.0)],
    [(-big, big), (big, big), (1.0, 1.0)],
    [(1.5 * 2**63, 1.5 * 2**64), (-1.5 * 2**63, 1.5 * 2**64)],   # e = 127, value 2.25*2^127, cancels
    [(2.0**64, 2.0**64), (-(2.0**64), 2.0**64)],                 # e = 128, cancels
    [(2.0**64, 2.0**64), (-(2.0**64), 2.0**64), (2.0**60, 2.0**60)],
    [(1.5 * 2**63, 1.5 * 2**64), (-1.5 * 2**63, 1.5 * 2**64), (2.0**60, 2.0**60)],
    [(2.0**100, 2.0**27), (-(2.0**100), 2.0**27)],               # e = 127 exactly, sig 1
    [(1.5 * 2**100, 1.5 * 2**26), (-1.5 * 2**100, 1.5 * 2**26)], # e = 126, value 2.25*2^126 < 2^128
]
over_cases += [[(-x, y) for x, y in pl] for pl in over_cases]
A, B = pairs(over_cases)
A = np.concatenate([A, np.zeros_like(A)], 1); B = np.concatenate([B, np.ones_like(B)], 0)  # K=32, block 2 adds 1s*0
add("over_bf16", "bf16", A, B, triton_bk=(16,))
rng = np.random.default_rng(11)
def wide(shape, lo, hi, pzero=0.05):
    x = rng.standard_normal(shape) * 2.0 ** rng.integers(lo, hi + 1, shape)
    x[rng.random(shape) < pzero] = 0.0
    return x
for dt, lo, hi in (("fp16", -20, 8), ("bf16", -60, 40)):
    for K in (8, 12, 17, 24, 31, 33, 48, 67, 100, 130, 257):
        add(f"k{K}_{dt}", dt, wide((40, K), lo, hi), wide((K, 40), lo, hi))
    for K in (17, 64):
        add(f"tri{K}_{dt}", dt, wide((64, K), lo, hi), wide((K, 64), lo, hi), C=wide((64, 64), lo, hi), triton_bk=(16, 32))
rec["meta"] = np.array(json.dumps(meta))
np.savez_compressed(os.path.join(OUT, "tc_probe2.npz"), **rec)
print("ok", len(meta))
