"""Probe 3: specials, zero signs, zero x huge, tiny results at tensor-core sizes; kernel names."""
import os, json
import numpy as np, ml_dtypes, torch, torch.nn.functional as F
OUT = os.environ.get("OUT", "."); dev = "cuda"
torch.backends.cuda.preferred_blas_library("cublaslt")
torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = (False, False)
torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = (False, False)
ND = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16}; TD = {"fp16": torch.float16, "bf16": torch.bfloat16}
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
def add(name, dt, A, B, C=None, bias=None):
    A = np.asarray(A, np.float32).astype(ND[dt]); B = np.asarray(B, np.float32).astype(ND[dt])
    At = torch.from_numpy(A.astype(np.float32)).to(dev).to(TD[dt]).contiguous()
    Bt = torch.from_numpy(B.astype(np.float32)).to(dev).to(TD[dt]).contiguous()
    r = {"A": A.view(np.uint16), "B": B.view(np.uint16), "D32": bits(torch.mm(At, Bt, out_dtype=torch.float32)), "D": bits(At @ Bt)}
    if bias is not None:
        bb = np.asarray(bias, np.float32).astype(ND[dt]); r["bias"] = bb.view(np.uint16)
        r["linear"] = bits(F.linear(At, Bt.t().contiguous(), torch.from_numpy(bb.astype(np.float32)).to(dev).to(TD[dt])))
    if C is not None:
        C = np.asarray(C, np.float32); r["C"] = C.view(np.uint32)
        M, K = A.shape; N = B.shape[1]
        D = torch.empty((M, N), device=dev, dtype=torch.float32)
        _k[(1,)](At, Bt, torch.from_numpy(C).to(dev).contiguous(), D, M, N, K, 64, 64, 16)
        r["tri16"] = bits(D)
    for k, v in r.items(): rec[f"{name}_{k}"] = v
    meta.append(dict(key=name, dtype=dt, M=A.shape[0], K=A.shape[1], N=B.shape[1], keys=sorted(r)))
rng = np.random.default_rng(5)
inf, nan = np.inf, np.nan
for dt in ("fp16", "bf16"):
    M = N = 32; K = 64
    A = rng.integers(-3, 4, (M, K)).astype(float); B = rng.integers(-3, 4, (K, N)).astype(float)
    A[0, 0] = inf; B[0, 0] = 0.0
    A[1, 0] = inf; A[1, 1] = -inf; B[:2, 1] = 1.0
    A[2, 0] = inf; B[0, 2] = 2.0
    A[3, 40] = -inf; B[40, 3] = 1.0
    A[4, 0] = inf; A[4, 40] = -inf; B[0, 4] = 1.0; B[40, 4] = 1.0
    A[5, 3] = nan
    A[6, 5] = inf; B[5, 6] = inf
    B[7, 7] = -inf; A[7, 7] = -2.0
    B[20, 9] = nan
    C = rng.standard_normal((M, N)).astype(np.float32)
    C[10:12] = inf; C[12:14] = -inf; C[14:16] = nan
    add(f"special_{dt}", dt, A, B, C=C, bias=rng.integers(-2, 3, N))
    # zero signs: rows/cols of +-0 and cancelling pairs; C rows of -0
    A = np.zeros((M, K)); B = np.zeros((K, N))
    A[0] = -0.0; A[1, :2] = [-1, 1]; A[2, 0] = 1.0; A[3, 0] = -1.0; A[5, 16:18] = [-1, 1]
    A[6, 0] = -(2.0**-10); A[7, :3] = [0.5, -0.25, -0.25]; A[8:] = rng.integers(-2, 3, (M - 8, K))
    B[:, 0] = 1.0; B[:, 1] = -1.0; B[:, 2] = -0.0; B[:, 3] = 0.0; B[:, 4:] = rng.integers(-2, 3, (K, N - 4))
    C = np.zeros((M, N), np.float32); C[:, ::2] = -0.0
    add(f"zeros_{dt}", dt, A, B, C=C, bias=np.r_[np.full(N // 2, -0.0), np.zeros(N // 2)])
# bf16 zero x huge and tiny products, tensor-core size
t = 2.0; K = 16; P = 32
A = rng.integers(-2, 3, (P, K)).astype(float) * 0; B = np.zeros((K, P))
cases = [[(0.0, 1.5 * 2**127), (1 + 2**-7, 2**-20 * (1 + 2**-7))], [(0.0, 1.5 * 2**100), (1 + 2**-7, 2**-20 * (1 + 2**-7))],
         [(t**-70, t**-70), (-(t**-77), t**-78)], [(t**-70, t**-70), (-(t**-80), t**-80)], [(t**-70, t**-70), (-(t**-72), t**-76 * (1 + 2**-7))],
         [(t**-60, t**-60 * (1 + 2**-7)), (t**-66, t**-70), (-(t**-70), t**-60)], [(t**-70, t**-70), (-(t**-75), t**-75)],
         [(1.5 * 2**-130, 1.0), (2.0**-10, 2.0**-10)],   # bf16 subnormal input
         [(2.0**-133, 2.0**10), (2.0**-130, 2.0**3), (-(2.0**-128), 2.0**-3)]]
for i, pl in enumerate(cases):
    for k, (x, y) in enumerate(pl): A[i, k] = x; B[k, i] = y
add("bf16_align", "bf16", A, B, C=np.zeros((P, P), np.float32))
# kernel names
from torch.profiler import profile, ProfilerActivity
names = {}
for dt in ("fp16", "bf16"):
    for (M, K, N) in ((6, 16, 6), (10, 64, 10), (28, 16, 28), (32, 64, 32), (40, 67, 40), (40, 130, 40), (40, 17, 40), (40, 100, 40), (96, 200, 40), (256, 256, 256)):
        At = torch.randn(M, K, device=dev).to(TD[dt]); Bt = torch.randn(K, N, device=dev).to(TD[dt])
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            torch.mm(At, Bt, out_dtype=torch.float32); torch.cuda.synchronize()
        names[f"{dt} {M}x{K}x{N}"] = [e.name for e in prof.events() if e.device_type.name == "CUDA"][:3]
print(json.dumps(names, indent=0))
rec["kernels"] = np.array(json.dumps(names))
rec["meta"] = np.array(json.dumps(meta))
np.savez_compressed(os.path.join(OUT, "tc_probe3.npz"), **rec)
print("ok", len(meta))
