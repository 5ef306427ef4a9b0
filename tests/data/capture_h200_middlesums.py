"""Sums over middle dims on the H200: torch's Reduce.cuh reducing the middle of (outer, rows,
inner) tensors (the same "vectorize along output" kernel as column sums, with outer * inner
outputs), and the gradient of a tensor broadcast over a middle dim.

    python tests/data/capture_h200_middlesums.py tests/data/h200_middlesums.npz   # on the GPU

Inputs are regenerated from their seeds by `inputs` (numpy's PCG64 stream); the file keeps
each input's SHA-256. Outputs are bit patterns (uint32 / uint16).
"""

import hashlib
import sys

import numpy as np

# (name, shape, reduced dims, dtype)
CASES = [
    ("m4x100x52", (4, 100, 52), (1,), "f32"), ("m2x3000x6", (2, 3000, 6), (1,), "f32"),
    ("m8x64x1000", (8, 64, 1000), (1,), "f32"), ("m3x5000x7", (3, 5000, 7), (1,), "f32"),
    ("m16x20x3", (16, 20, 3), (1,), "f32"), ("m2x256x1024", (2, 256, 1024), (1,), "f32"),
    ("m5x1000x40", (5, 1000, 40), (1,), "f32"), ("m64x300x4", (64, 300, 4), (1,), "f32"),
    ("m2x4x500x6", (2, 4, 500, 6), (1, 2), "f32"), ("m3x20000x2", (3, 20000, 2), (1,), "f32"),
    ("h8x64x1000", (8, 64, 1000), (1,), "f16"),
]


def inputs(shape, seed, dtype):
    rng = np.random.default_rng(3000 + seed)
    x = rng.standard_normal(shape, dtype=np.float32) * np.exp2(
        rng.integers(-6, 7, shape).astype(np.float32))
    return x.astype(np.float16 if dtype == "f16" else np.float32)


def main(path):
    import torch

    def bits(t):
        a = t.detach().cpu().numpy()
        return a.view(np.uint16 if a.dtype == np.float16 else np.uint32)

    out = {}
    for seed, (name, shape, dims, dtype) in enumerate(CASES):
        x = inputs(shape, seed, dtype)
        out[name + "_sha"] = np.frombuffer(hashlib.sha256(x.tobytes()).digest(), np.uint8)
        xt = torch.from_numpy(x).cuda()
        out[name + "_sum"] = bits(xt.sum(dims))
        # d/dc of (zeros + c) with c of shape (outer, 1, ..., inner): grad.sum(dims, keepdim)
        kept = tuple(1 if i in dims else s for i, s in enumerate(shape))
        c = torch.zeros(kept, device="cuda", dtype=xt.dtype, requires_grad=True)
        (torch.zeros_like(xt) + c).backward(xt)
        out[name + "_bcast"] = bits(c.grad)
    out["torch_version"] = np.frombuffer(torch.__version__.encode(), np.uint8)
    np.savez(path, **out)
    print(f"{len(CASES)} cases -> {path}")


if __name__ == "__main__":
    main(sys.argv[1])
