"""Long-row and whole-tensor sums on the H200: torch's Reduce.cuh over the trailing dimension
when it splits a row across the warps of a block and across blocks (global reduction), for
aligned and misaligned rows; plus mean, an fp16 sum and mse_loss's mean over a whole tensor.

    python tests/data/capture_h200_longsums.py tests/data/h200_longsums.npz   # on the GPU machine

Inputs are regenerated from their seeds by `inputs` (numpy's PCG64 stream); the file keeps
each input's SHA-256 so that a reader can check it made the same ones. Outputs are bit
patterns (uint32 / uint16).
"""

import hashlib
import sys

import numpy as np

# (name, shape, dtype): every case is reduced over its last dimension and over everything
CASES = [
    ("r1x256000", (1, 256000), "f32"), ("r1x1048576", (1, 1048576), "f32"),
    ("r1x1000003", (1, 1000003), "f32"), ("r1x12345677", (1, 12345677), "f32"),
    ("r4x100000", (4, 100000), "f32"), ("r2x65536", (2, 65536), "f32"),
    ("r3x70001", (3, 70001), "f32"), ("r8x20000", (8, 20000), "f32"),
    ("r16x5000", (16, 5000), "f32"), ("r32x40000", (32, 40000), "f32"),
    ("r64x4096", (64, 4096), "f32"), ("r5x3333", (5, 3333), "f32"),
    ("r1000x1000", (1000, 1000), "f32"), ("r1x4000", (1, 4000), "f32"),
    ("h1x1048576", (1, 1048576), "f16"), ("h6x50001", (6, 50001), "f16"),
    # several warps per row and several blocks: the last block's fold order
    ("r2x300000", (2, 300000), "f32"), ("r4x600001", (4, 600001), "f32"),
    ("r8x1000000", (8, 1000000), "f32"),
]


def inputs(shape, seed, dtype):
    rng = np.random.default_rng(1000 + seed)
    x = rng.standard_normal(shape, dtype=np.float32) * np.exp2(
        rng.integers(-6, 7, shape).astype(np.float32))
    return x.astype(np.float16 if dtype == "f16" else np.float32)


def bits(t):
    a = t.detach().cpu().numpy()
    return a.view(np.uint16 if a.dtype == np.float16 else np.uint32)


def main(path):
    import torch

    out = {}
    for seed, (name, shape, dtype) in enumerate(CASES):
        x = inputs(shape, seed, dtype)
        out[name + "_sha"] = np.frombuffer(hashlib.sha256(x.tobytes()).digest(), np.uint8)
        xt = torch.from_numpy(x).cuda()
        out[name + "_rows"] = bits(xt.sum(-1))
        out[name + "_all"] = bits(xt.sum())
        out[name + "_mean"] = bits(xt.mean())
        if dtype == "f32":
            y = torch.from_numpy(inputs(shape, seed + 500, dtype)).cuda()
            out[name + "_mse"] = bits(torch.nn.functional.mse_loss(xt, y))
    out["torch_version"] = np.frombuffer(torch.__version__.encode(), np.uint8)
    np.savez(path, **out)
    print(f"{len(CASES)} cases -> {path}")


if __name__ == "__main__":
    main(sys.argv[1])
