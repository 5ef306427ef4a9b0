"""softmax / log_softmax over long rows on the H200 (torch's SoftMax.cu past the persistent
warp kernel: the register, shared-memory and general block kernels, forward and backward),
plus cross_entropy over a large vocabulary.

    python tests/data/capture_h200_softmax.py tests/data/h200_softmax.npz   # on the GPU machine

Inputs are regenerated from their seeds by `inputs` (numpy's PCG64 stream); the file keeps
each input's SHA-256. Each output is kept as the SHA-256 of its bit patterns (uint32 / uint16,
C order) and its first 64 of them, `<key>_sha` and `<key>_head`: 126 KB instead of 15 MB, and
equal digests are equal bits.
"""

import hashlib
import sys

import numpy as np

ROWS = 3
# (name, row length, dtype)
CASES = [(f"f{n}", n, "f32") for n in (1025, 1536, 2048, 2049, 3000, 4096, 5001, 9216, 9217,
                                        10000, 12289, 16384, 32000, 50257)]
CASES += [(f"h{n}", n, "f16") for n in (1536, 2048, 3000, 4096, 9217, 20000, 50257)]
# fp16 in, fp32 out (`dtype=torch.float32`: torch's half_to_float kernels), and bf16 in, fp32
# out (converted to fp32 first)
CASES += [(f"h2f{n}", n, "h2f") for n in (1000, 1025, 1500, 3000)]
CASES += [(f"b2f{n}", n, "b2f") for n in (1500, 3000)]


def inputs(n, seed, dtype):
    rng = np.random.default_rng(2000 + seed)
    x = (rng.standard_normal((ROWS, n), dtype=np.float32) * 3).astype(np.float32)
    g = rng.standard_normal((ROWS, n), dtype=np.float32)
    t = rng.integers(0, n, ROWS)
    if dtype in ("f16", "h2f"):
        x = x.astype(np.float16)
    elif dtype == "b2f":
        import ml_dtypes

        x = x.astype(ml_dtypes.bfloat16)
    return x, g.astype(np.float16 if dtype == "f16" else np.float32), t


def bits(t):
    import torch

    if t.dtype == torch.bfloat16:
        return t.detach().view(torch.int16).cpu().numpy().view(np.uint16)
    a = t.detach().cpu().numpy()
    return a.view(np.uint16 if a.dtype == np.float16 else np.uint32)


def digest(out, key, pattern):
    """Store the bit patterns `pattern` under `key` as their SHA-256 and first 64 values."""
    pattern = np.ascontiguousarray(pattern)
    out[key + "_sha"] = np.frombuffer(hashlib.sha256(pattern.tobytes()).digest(), np.uint8)
    out[key + "_head"] = pattern.ravel()[:64]


def main(path):
    import torch
    import torch.nn.functional as F

    out = {}
    for seed, (name, n, dtype) in enumerate(CASES):
        x, g, t = inputs(n, seed, dtype)
        out[name + "_in_sha"] = np.frombuffer(
            hashlib.sha256(x.tobytes() + g.tobytes() + t.tobytes()).digest(), np.uint8)
        kw = {"dtype": torch.float32} if dtype in ("h2f", "b2f") else {}
        for op, fn in (("sm", F.softmax), ("lsm", F.log_softmax)):
            xt = torch.from_numpy(x.astype(np.float32)).cuda()
            xt = xt.to(torch.bfloat16 if dtype == "b2f" else torch.from_numpy(x).dtype)
            xt.requires_grad_()
            y = fn(xt, -1, **kw)
            y.backward(torch.from_numpy(g).cuda())
            digest(out, f"{name}_{op}", bits(y))
            digest(out, f"{name}_{op}_dx", bits(xt.grad))
        xt = torch.from_numpy(x.astype(np.float32)).cuda()
        xt = xt.to(torch.bfloat16 if dtype == "b2f" else torch.from_numpy(x).dtype)
        xt.requires_grad_()
        loss = F.cross_entropy(xt, torch.from_numpy(t).cuda())
        loss.backward()
        digest(out, name + "_ce", bits(loss))
        digest(out, name + "_ce_dx", bits(xt.grad))
    out["torch_version"] = np.frombuffer(torch.__version__.encode(), np.uint8)
    np.savez(path, **out)
    print(f"{len(CASES)} cases -> {path}")


if __name__ == "__main__":
    main(sys.argv[1])
