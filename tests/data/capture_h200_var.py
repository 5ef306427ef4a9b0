"""torch.var / torch.std over the last dim on the H200 (Reduce.cuh with WelfordOps, two
accumulators a thread), unbiased and with correction 0, fp32 and fp16.

    python tests/data/capture_h200_var.py tests/data/h200_var.npz   # on the GPU machine

Inputs are regenerated from their seeds by `inputs` (numpy's PCG64 stream); the file keeps
each input's SHA-256. Outputs are bit patterns (uint32 / uint16).
"""

import hashlib
import sys

import numpy as np

# (name, shape, dtype)
CASES = [(f"f{r}x{n}", (r, n), "f32") for r, n in
         ((64, 16), (32, 100), (16, 127), (16, 128), (8, 1000), (8, 1001), (4, 4096), (6, 5000),
          (3, 30000), (256, 1000), (1, 300000))]
CASES += [("h8x1000", (8, 1000), "f16"), ("h4x4097", (4, 4097), "f16")]


def inputs(shape, seed, dtype):
    rng = np.random.default_rng(4000 + seed)
    x = rng.standard_normal(shape, dtype=np.float32) * 3 + 1.5
    return x.astype(np.float16 if dtype == "f16" else np.float32)


def main(path):
    import torch

    def bits(t):
        a = t.detach().cpu().numpy()
        return a.view(np.uint16 if a.dtype == np.float16 else np.uint32)

    out = {}
    for seed, (name, shape, dtype) in enumerate(CASES):
        x = inputs(shape, seed, dtype)
        out[name + "_sha"] = np.frombuffer(hashlib.sha256(x.tobytes()).digest(), np.uint8)
        xt = torch.from_numpy(x).cuda()
        out[name + "_var1"] = bits(torch.var(xt, -1))
        out[name + "_var0"] = bits(torch.var(xt, -1, correction=0))
        out[name + "_std1"] = bits(torch.std(xt, -1))
    out["torch_version"] = np.frombuffer(torch.__version__.encode(), np.uint8)
    np.savez(path, **out)
    print(f"{len(CASES)} cases -> {path}")


if __name__ == "__main__":
    main(sys.argv[1])
