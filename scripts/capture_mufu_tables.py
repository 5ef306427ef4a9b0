"""Measure the H200's special-function-unit tables (ex2, rcp, rsqrt) and write
simprec/cudamath/mufu_tables.npz. Run on a CUDA GPU with CuPy:
`python scripts/capture_mufu_tables.py`.

simprec/cudamath/mufu.py explains the tables and how the simulator reads them.
"""

import pathlib

import numpy as np

TABLES = pathlib.Path(__file__).resolve().parents[1] / "simprec" / "cudamath" / "mufu_tables.npz"


def capture(path=TABLES):
    """Measure the four tables on the current GPU and write them to `path`."""
    import cupy as cp

    src = r"""
    extern "C" __global__ void run(int op, unsigned lo, float* y, int n) {
      int i = blockIdx.x * blockDim.x + threadIdx.x; if (i >= n) return;
      float x = __uint_as_float(lo + (unsigned)i), r;
      float q = (float)i * 1.1920928955078125e-07f;
      if (op == 0) asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(q));
      if (op == 1) asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(-q));
      if (op == 2) asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
      if (op == 3) asm("rsqrt.approx.f32 %0, %1;" : "=f"(r) : "f"(x));
      y[i] = r; }"""
    kernel = cp.RawModule(code=src).get_function("run")
    one = int(np.float32(1).view(np.uint32))
    out = {}
    for op, (name, n) in enumerate(
        (("ex2_pos", 2**23), ("ex2_neg", 2**23), ("rcp", 2**23), ("rsqrt", 2**24))
    ):
        y = cp.empty(n, cp.float32)
        kernel(((n + 255) // 256,), (256,), (np.int32(op), np.uint32(one), y, np.int32(n)))
        bits = cp.asnumpy(y).view(np.uint32).astype(np.int64)
        deltas = np.diff(bits)
        low = int(deltas.min())
        d = np.concatenate([deltas - low, np.zeros(-len(deltas) % 4, np.int64)]).astype(np.uint8)
        d = d.reshape(-1, 4)
        out[name] = (d[:, 0] | (d[:, 1] << 2) | (d[:, 2] << 4) | (d[:, 3] << 6)).astype(np.uint8)
        out[name + "_meta"] = np.array([bits[0], low, n], np.int64)
    np.savez_compressed(path, **out)


if __name__ == "__main__":
    capture()
