"""Speed of one training step (forward + cross_entropy + backward) of simprec against torch.

    python benchmarks/bench_step.py [--repeats 15] [--batch 256] [--profile]

The network is the 3-layer MLP 784-1024-1024-10 with ReLU, batch 256, in three versions timed
alternately in one run: simprec with fp16 weights and activations (the "fp32" matmul
accumulation model: exact products, fp32 BLAS sums, one rounding to fp16), the same network with
fp32 tensors in simprec, and torch CPU fp32 eager. The table gives medians and minima (the
minimum is the better estimate on a shared, loaded machine); the two ratios are the figures of
docs/benchmarks.md (targets: fp16/fp32 <= 1.3, simprec fp32 / torch <= 1.5).
`--profile` prints cProfile's top functions of the fp16 step instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

# One BLAS thread for every library (numpy's OpenBLAS, torch): the machines are small and shared,
# and one thread makes the ratios stable. Override with BENCH_THREADS=n.
THREADS = os.environ.get("BENCH_THREADS", "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = THREADS

import numpy as np  # noqa: E402

import simprec as sp  # noqa: E402
from simprec import amp, nn  # noqa: E402
from simprec.nn import functional as F  # noqa: E402

SIZES = (784, 1024, 1024, 10)


def simprec_step(fmt, batch, seed=0, autocast=False, weights=None):
    """A closure running one simprec step (forward, loss, backward) on fixed data, the weights
    and inputs in `weights` (default: `fmt`, or fp32 with `autocast`). With `autocast`, the
    step runs under `amp.autocast(fmt)`: with fp32 weights their fp16 copies are made once per
    step, by the autocast cache, as torch does; with fp16 weights the casts are no-ops."""
    if weights is None:
        weights = sp.fp32 if autocast else fmt
    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=False)):
        layers.append(nn.Linear(a, b, fmt=weights,
                                generator=np.random.default_rng(seed + i)))
        if i < len(SIZES) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    x = sp.tensor(rng.standard_normal((batch, SIZES[0])).astype(np.float32),
                  weights)
    y = sp.tensor(rng.integers(0, SIZES[-1], batch))
    params = list(model.parameters())

    def step():
        for p in params:
            p.grad = None
        with amp.autocast(sp.fp16, enabled=autocast):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return step


def torch_step(batch, seed=0):
    import torch

    torch.set_num_threads(int(THREADS))
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=False)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(SIZES) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal((batch, SIZES[0])).astype(np.float32))
    y = torch.tensor(rng.integers(0, SIZES[-1], batch))

    def step():
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    cases = {
        "simprec fp16": simprec_step(sp.fp16, args.batch),
        "simprec fp16, autocast": simprec_step(sp.fp16, args.batch, autocast=True,
                                               weights=sp.fp16),
        "simprec amp-fp16 (fp32 weights, autocast)": simprec_step(sp.fp16, args.batch,
                                                                  autocast=True),
        "simprec fp32": simprec_step(sp.fp32, args.batch),
        "torch fp32": torch_step(args.batch),
    }
    if args.profile:
        import cProfile
        import pstats

        cases["simprec fp16"]()
        cProfile.runctx(
            "for _ in range(5): step()", {"step": cases["simprec fp16"]}, {}, "/tmp/bench_step.prof"
        )
        pstats.Stats("/tmp/bench_step.prof").sort_stats("tottime").print_stats(20)
        return
    times = {name: [] for name in cases}
    for fn in cases.values():  # warm-up (BLAS threads, caches, first-use tables)
        fn()
    for _ in range(args.repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    low = {name: min(t) * 1e3 for name, t in times.items()}
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, {THREADS} BLAS thread(s), "
        f"numpy {np.__version__}, "
        f"{args.repeats} interleaved repeats, batch {args.batch}"
    )
    print("| case | median ms / step | min ms / step |")
    print("|---|---:|---:|")
    for name in med:
        print(f"| {name} | {med[name]:.1f} | {low[name]:.1f} |")
    for label, a, b, target in (
        ("fp16 / fp32 (simprec)", "simprec fp16", "simprec fp32", 1.3),
        ("fp16 under autocast / fp32 (simprec)", "simprec fp16, autocast", "simprec fp32", 1.3),
        ("amp-fp16 / fp32 (simprec)", "simprec amp-fp16 (fp32 weights, autocast)",
         "simprec fp32", 1.3),
        ("simprec fp32 / torch fp32", "simprec fp32", "torch fp32", 1.5),
    ):
        # the targets are issue 4's, for batch 256 (smaller batches weigh the weight-sized
        # roundings more against the GEMMs)
        goal = f"target <= {target}" if args.batch == 256 else f"target <= {target} at batch 256"
        print(
            f"{label}: {med[a] / med[b]:.2f} (medians), {low[a] / low[b]:.2f} (minima); {goal}"
        )


if __name__ == "__main__":
    main()
