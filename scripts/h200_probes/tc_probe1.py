"""Probe H200 tensor-core edge cases (run on the GPU machine). Writes $OUT/tc_probe.npz."""
import os, json
import numpy as np, ml_dtypes, torch, torch.nn.functional as F
OUT = os.environ.get("OUT", ".")
dev = os.environ.get("PROBE_DEV", "cuda")
if dev == "cuda": torch.backends.cuda.preferred_blas_library("cublaslt")
torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = (False, False)
torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = (False, False)
torch.backends.cuda.matmul.allow_tf32 = False
ND = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16}
TD = {"fp16": torch.float16, "bf16": torch.bfloat16}
rec, meta = {}, []

def tt(x, dt):  # numpy fp values -> torch cuda tensor of dtype dt (exact)
    return torch.from_numpy(np.asarray(x, np.float32)).to(dev).to(TD[dt])

def bits(t):
    t = t.detach().cpu()
    if t.dtype in (torch.float16, torch.bfloat16): return t.view(torch.int16).numpy().view(np.uint16)
    return t.view(torch.int32).numpy().view(np.uint32)

def add(name, dt, A, B, C=None, bias=None):
    A = np.asarray(A, np.float32).astype(ND[dt]); B = np.asarray(B, np.float32).astype(ND[dt])
    At, Bt = tt(A, dt), tt(B, dt)
    r = {"A": A.view(np.uint16), "B": B.view(np.uint16)}
    r["D32"] = bits(torch.mm(At, Bt, out_dtype=torch.float32) if dev == "cuda" else At.float() @ Bt.float())
    r["D"] = bits(At @ Bt)
    if bias is not None:
        bb = np.asarray(bias, np.float32).astype(ND[dt]); r["bias"] = bb.view(np.uint16)
        r["linear"] = bits(F.linear(At, Bt.t().contiguous(), tt(bb, dt)))
    if C is not None:
        C = np.asarray(C, np.float32); r["C"] = C.view(np.uint32)
        Ct = torch.from_numpy(C).to(dev)
        try:
            r["addmm32"] = bits(torch.addmm(Ct, At, Bt, out_dtype=torch.float32))
        except Exception as e:
            print(name, "addmm", repr(e)[:200])
        try:
            r["tri16"] = bits(triton_mm(At, Bt, Ct, 16))
            r["tri64"] = bits(triton_mm(At, Bt, Ct, 64))
        except Exception as e:
            print(name, "triton", repr(e)[:300])
    for k, v in r.items(): rec[f"{name}_{k}"] = v
    meta.append(dict(key=name, dtype=dt, M=A.shape[0], K=A.shape[1], N=B.shape[1], keys=sorted(r)))

try:
    import triton, triton.language as tl
    @triton.jit
    def _k(A, B, C, D, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, BK: tl.constexpr):
        rm = tl.arange(0, M); rn = tl.arange(0, N)
        acc = tl.load(C + rm[:, None] * N + rn[None, :])
        for k0 in range(0, K, BK):
            rk = k0 + tl.arange(0, BK)
            a = tl.load(A + rm[:, None] * K + rk[None, :])
            b = tl.load(B + rk[:, None] * N + rn[None, :])
            acc = tl.dot(a, b, acc)
        tl.store(D + rm[:, None] * N + rn[None, :], acc)
    def triton_mm(A, B, C, BK):
        M, K = A.shape; N = B.shape[1]
        D = torch.empty((M, N), device=dev, dtype=torch.float32)
        _k[(1,)](A.contiguous(), B.contiguous(), C.contiguous(), D, M, N, K, BK)
        return D
except Exception as e:
    print("no triton", repr(e)[:200])
    def triton_mm(*a): raise RuntimeError("no triton")

rng = np.random.default_rng(7)
inf, nan = np.inf, np.nan

# G1: zero signs (fp16 and bf16), K=32, every row x every column
for dt in ("fp16", "bf16"):
    K = 32
    rows = [np.full(K, -0.0), np.r_[-1.0, 1.0, np.zeros(K - 2)], np.r_[1.0, np.zeros(K - 1)],
            np.r_[-1.0, np.zeros(K - 1)], np.zeros(K), np.r_[np.zeros(16), -1.0, 1.0, np.zeros(14)],
            np.r_[-2.0**-10, np.zeros(K - 1)], np.r_[0.5, -0.25, -0.25, np.zeros(K - 3)]]
    A = np.array(rows); B = np.array(rows).T.copy()
    B = np.concatenate([B, np.full((K, 1), 1.0), np.full((K, 1), -1.0), np.full((K, 1), -0.0)], 1)
    add(f"zeros_{dt}", dt, A, B, bias=np.r_[np.full(B.shape[1] - 2, -0.0), 0.0, 1.0],
        C=np.zeros((A.shape[0], B.shape[1]), np.float32) * -1)

# G2: bf16 zero x huge in the same block; G3: bf16 tiny products (c = 0 exponent, min exp clamp)
K = 16
A = np.zeros((6, K)); B = np.zeros((K, 6))
A[0, :2] = [0.0, 1 + 2**-7];          B[:2, 0] = [1.5 * 2**127, 2**-20 * (1 + 2**-7)]
A[1, :2] = [0.0, 1 + 2**-7];          B[:2, 1] = [1.5 * 2**100, 2**-20 * (1 + 2**-7)]
A[2, :2] = [2**-70, -(2**-77)];       B[:2, 2] = [2**-70, 2**-78]            # 2^-140 - 2^-155
A[3, :2] = [2**-70, -(2**-80)];       B[:2, 3] = [2**-70, 2**-80]            # 2^-140 - 2^-160
A[4, :2] = [2**-70, -(2**-72)];       B[:2, 4] = [2**-70, 2**-76 * (1 + 2**-7)]
A[5, :3] = [2**-60, 2**-66, -(2**-70)]; B[:3, 5] = [2**-60 * (1 + 2**-7), 2**-70, 2**-60]
add("bf16_align", "bf16", A, B, C=np.zeros((6, 6), np.float32))

# G4: specials, block 0 vs later blocks (K=64)
for dt in ("fp16", "bf16"):
    K = 64; A = rng.integers(-3, 4, (10, K)).astype(float); B = rng.integers(-3, 4, (K, 10)).astype(float)
    A[0, 0] = inf; B[0, 0] = 0.0            # inf * 0
    A[1, 0] = inf; A[1, 1] = -inf; B[:2, 1] = 1.0   # +inf and -inf in one block
    A[2, 0] = inf; B[0, 2] = 2.0            # inf in block 0 (col 2)
    A[3, 40] = -inf; B[40, 3] = 1.0         # -inf in block 2
    A[4, 0] = inf; A[4, 40] = -inf          # +inf block 0, -inf block 2 (with B rows 0,40 nonzero)
    B[0, 4] = 1.0; B[40, 4] = 1.0
    A[5, 3] = nan                            # NaN input
    A[6, 5] = inf; B[5, 6] = inf             # inf * inf
    B[7, 7] = -inf; A[7, 7] = -2.0           # finite * -inf
    add(f"special_{dt}", dt, A, B, bias=np.ones(10), C=rng.standard_normal((10, 10)).astype(np.float32))

# G5: bf16 overflow
K = 32; A = np.zeros((6, K)); B = np.zeros((K, 6))
m = 2 - 2**-7
A[0, :1] = [2**100]; B[:1, 0] = [2**100]                                  # 2^200 -> inf?
A[1, :3] = [2**100, -(2**100), 1.0]; B[:3, 1] = [2**100, 2**100, 1.0]       # cancel inside block
A[2, :2] = [m * 2**63, 2**60]; B[:2, 2] = [2**64, 2**60 * (1 - 2**-8)]      # just above max, < 2^128
A[3, :2] = [m * 2**63, 2**63]; B[:2, 3] = [2**64, 2**64]                    # > 2^128
A[4, 0] = m * 2**63; B[0, 4] = 2**64; A[4, 16] = m * 2**63; B[16, 4] = 2**64  # overflow across blocks
A[5, 0] = m * 2**63; B[0, 5] = 2**64; A[5, 16] = -m * 2**63; B[16, 5] = 2**64 # back down
add("bf16_over", "bf16", A, B, C=np.zeros((6, 6), np.float32))

# G6: random stress, wide exponents, zeros, -0, subnormals
def wide(shape, dt, lo, hi, pzero=0.1):
    x = rng.standard_normal(shape) * 2.0 ** rng.integers(lo, hi + 1, shape)
    z = rng.random(shape) < pzero
    x[z] = np.where(rng.random(z.sum()) < 0.5, 0.0, -0.0)
    return x
for name, dt, lo, hi, K in [("rand_fp16", "fp16", -30, 13, 67), ("rand_fp16b", "fp16", -24, 5, 200),
                            ("rand_bf16", "bf16", -133, 60, 67), ("rand_bf16_tiny", "bf16", -133, -40, 67),
                            ("rand_bf16_mixed", "bf16", -133, 60, 40)]:
    A = wide((48, K), dt, lo, hi); B = wide((K, 48), dt, lo, hi)
    C = (rng.standard_normal((48, 48)) * 2.0 ** rng.integers(lo, hi + 1, (48, 48))).astype(np.float32)
    C[rng.random((48, 48)) < 0.1] = 0.0
    add(name, dt, A, B, C=C, bias=rng.standard_normal(48))
# G7: c semantics with tiny, huge, -0 c (fp16)
K = 32; A = wide((32, K), "fp16", -8, 4); B = wide((K, 32), "fp16", -8, 4)
C = np.zeros((32, 32), np.float32)
C[:8] = 2.0 ** rng.integers(10, 30, (8, 32)) * rng.standard_normal((8, 32))
C[8:16] = -0.0
C[16:24] = 2.0 ** -140
C[24:] = 3.0e38
add("c_fp16", "fp16", A, B, C=C)
rec["meta"] = np.array(json.dumps(meta))
rec["versions"] = np.array(json.dumps(dict(torch=torch.__version__, cuda=torch.version.cuda, dev=torch.cuda.get_device_name())))
np.savez_compressed(os.path.join(OUT, "tc_probe.npz"), **rec)
print("ok", len(meta), "cases", torch.__version__, torch.cuda.get_device_name())
