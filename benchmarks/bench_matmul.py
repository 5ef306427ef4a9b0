"""Speed of the matmul accumulation models against fp32 BLAS (``np.matmul`` on float32).

    python benchmarks/bench_matmul.py [--m 256 --k 1024 --n 256] [--repeats 7]

Inputs are standard normal values rounded to fp16 (and bf16 for one row). The models run in
interleaved rounds, `repeats` rounds; the table gives the median and best wall-clock time, the
best CPU time of this process (the models are single-threaded NumPy; on a shared machine CPU
time is the steadier figure), multiply-adds per second from the median, and how many times
slower than BLAS the model is (BLAS: float32 sgemm of the same shape on one thread; with
threadpoolctl installed the models and that row run with BLAS held to one thread, and sgemm
with OpenBLAS's default threads is timed afterwards, on its own).
The target of issue 3 was 3e8 multiply-adds/s for sm90 on 256x1024x256 fp16; issue 16's is
3e9 on 256x1024x256 and 2048^3 on every call path (native fp16/bf16 arrays or float32
containers with fmt=, fp32 or half results), which the sm90 rows cover. The models run on
numba's compiled kernels unless SIMPREC_FAST=0 (then on the NumPy specification); they use
every core (numba's threads), BLAS is held to one. `--m 2048 --k 2048 --n 2048 --repeats 3`
for the large case. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import ml_dtypes
import numpy as np

import simprec as sp
from simprec.accumulate import matmul, tensor_core_matmul
from simprec.bench_cli import machine_line


def timed(fs, repeats):
    """[(median wall, best wall, best CPU) seconds] of each f, in `repeats` interleaved rounds."""
    walls = [[] for _ in fs]
    cpus = [[] for _ in fs]
    for _ in range(repeats):
        for i, f in enumerate(fs):
            w0, c0 = time.perf_counter(), time.process_time()
            f()
            walls[i].append(time.perf_counter() - w0)
            cpus[i].append(time.process_time() - c0)
    return [(statistics.median(w), min(w), min(c)) for w, c in zip(walls, cpus, strict=True)]


@contextlib.contextmanager
def blas_threads(n):
    """Limit BLAS to n threads if threadpoolctl is installed; yields whether it is."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield False
        return
    with threadpool_limits(n, user_api="blas"):
        yield True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=256)
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    M, K, N = args.m, args.k, args.n
    macs = M * K * N
    rng = np.random.default_rng(0)
    a32 = rng.standard_normal((M, K)).astype(np.float32)
    b32 = rng.standard_normal((K, N)).astype(np.float32)
    a16, b16 = a32.astype(np.float16), b32.astype(np.float16)
    ab, bb = a32.astype(ml_dtypes.bfloat16), b32.astype(ml_dtypes.bfloat16)
    a16f, b16f = a16.astype(np.float32), b16.astype(np.float32)

    rows = [("fp32 BLAS, one thread", lambda: np.matmul(a16f, b16f))]
    for arch in ("sm90", "sm80", "sm70"):
        rows.append((f"{arch}, fp16", lambda arch=arch: tensor_core_matmul(a16, b16, arch=arch)))
    rows.append(("sm90, bf16", lambda: tensor_core_matmul(ab, bb, arch="sm90")))
    rows.append(("sm90, fp16 arrays, fp16 result",
                 lambda: tensor_core_matmul(a16, b16, arch="sm90", out=sp.fp16)))
    rows.append(("sm90, float32 containers with fmt=fp16",
                 lambda: tensor_core_matmul(a16f, b16f, arch="sm90", fmt=sp.fp16)))
    rows.append(('sm90, matmul(accumulate="sm90"), fp16 result',
                 lambda: matmul(a16f, b16f, fmt=sp.fp16, accumulate="sm90")))
    rows.append(('"fp16" model (matmul accumulate="fp16")',
                 lambda: matmul(a16f, b16f, fmt=sp.fp16, accumulate="fp16")))
    rows.append(('"fp32" model (matmul accumulate="fp32")',
                 lambda: matmul(a16f, b16f, fmt=sp.fp16, accumulate="fp32")))
    # The models are single-threaded, and so are their small BLAS calls. Time them with BLAS
    # held to one thread: idle OpenBLAS workers spinning after a threaded sgemm would take the
    # second core of a small machine. Threaded sgemm is timed on its own afterwards.
    with blas_threads(1) as limited:
        for _, f in rows:
            f()  # warm up
        times = timed([f for _, f in rows], args.repeats)
    results = [(name, *t) for (name, _), t in zip(rows, times, strict=True)]
    if not limited:
        results[0] = ("fp32 BLAS, default threads (threadpoolctl absent)",) + results[0][1:]
    else:
        np.matmul(a16f, b16f)
        results.append(("fp32 BLAS, default threads",
                        *timed([lambda: np.matmul(a16f, b16f)], args.repeats)[0]))
    blas = results[0][1]
    print(f"{M}x{K}x{N} ({macs:.3g} multiply-adds), {args.repeats} rounds; {machine_line()}\n")
    print("| model | median s | best s | best CPU s | MAC/s (median) | x slower than BLAS* |")
    print("|---|---|---|---|---|---|")
    for name, med, best, cpu in results:
        print(f"| {name} | {med:.4f} | {best:.4f} | {cpu:.4f} | {macs / med:.3g} | "
              f"{med / blas:.3g} |")
    print("\n*BLAS: the first row (median).")


if __name__ == "__main__":
    main()
