"""Column sums on the H200: torch's Reduce.cuh over a leading dimension, for shapes that take
each launch configuration (output vector width 4, 2, 1; rows in one thread, split across warps,
split across blocks), plus mean(0), a 3-D reduction over two leading dims, fp16 inputs, a
linear layer's bias gradient and a broadcast add's gradient.

    python tests/data/capture_h200_colsums.py tests/data/h200_colsums.npz     # on the GPU machine

Inputs are regenerated from their seeds by `inputs(case)` (numpy's PCG64 stream); the file
keeps each input's SHA-256 so that a reader can check it made the same ones. Outputs are bit
patterns (uint32 / uint16).
"""

import hashlib
import sys

import numpy as np

# (name, shape, reduced leading dims, dtype)
CASES = [
    ("c256x1000", (256, 1000), 1, "f32"), ("c3x5", (3, 5), 1, "f32"), ("c7x6", (7, 6), 1, "f32"),
    ("c17x10", (17, 10), 1, "f32"), ("c64x10", (64, 10), 1, "f32"),
    ("c64x1024", (64, 1024), 1, "f32"), ("c63x1024", (63, 1024), 1, "f32"),
    ("c1000x30", (1000, 30), 1, "f32"), ("c4096x10", (4096, 10), 1, "f32"),
    ("c20000x10", (20000, 10), 1, "f32"), ("c2048x1000", (2048, 1000), 1, "f32"),
    ("c1025x7", (1025, 7), 1, "f32"), ("c100000x3", (100000, 3), 1, "f32"),
    ("c300x50", (300, 50), 1, "f32"), ("c5000x333", (5000, 333), 1, "f32"),
    ("c8x32x100", (8, 32, 100), 2, "f32"),
    ("h256x1000", (256, 1000), 1, "f16"), ("h2048x1000", (2048, 1000), 1, "f16"),
    ("h300x50", (300, 50), 1, "f16"),
]


def inputs(shape, seed, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-6, 7, shape))
    return x.astype(np.float16 if dtype == "f16" else np.float32)


def bits(t):
    a = t.detach().cpu().numpy()
    return a.view(np.uint16 if a.dtype == np.float16 else np.uint32)


def main(path):
    import torch

    out = {}
    dev = "cuda"
    for seed, (name, shape, lead, dtype) in enumerate(CASES):
        x = inputs(shape, seed, dtype)
        out[name + "_sha"] = np.frombuffer(hashlib.sha256(x.tobytes()).digest(), np.uint8)
        xt = torch.from_numpy(x).to(dev)
        out[name + "_sum"] = bits(xt.sum(tuple(range(lead))))
        if name in ("c256x1000", "c2048x1000", "h256x1000"):
            out[name + "_mean"] = bits(xt.mean(0))
        if name in ("c300x50", "h300x50", "c1000x30"):
            # linear's bias gradient and a broadcast add's gradient, both grad.sum(0)
            rows, cols = shape
            gy = xt
            w = torch.zeros(cols, 7, device=dev, dtype=xt.dtype, requires_grad=True)
            b = torch.zeros(cols, device=dev, dtype=xt.dtype, requires_grad=True)
            inp = torch.zeros(rows, 7, device=dev, dtype=xt.dtype)
            torch.nn.functional.linear(inp, w, b).backward(gy)
            out[name + "_linear_db"] = bits(b.grad)
            c = torch.zeros(cols, device=dev, dtype=xt.dtype, requires_grad=True)
            (torch.zeros(rows, cols, device=dev, dtype=xt.dtype) + c).backward(gy)
            out[name + "_bcast_dc"] = bits(c.grad)
    out["torch_version"] = np.frombuffer(torch.__version__.encode(), np.uint8)
    np.savez(path, **out)
    print(f"{len(CASES)} cases -> {path}")


if __name__ == "__main__":
    main(sys.argv[1])
