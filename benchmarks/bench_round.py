"""Speed of `sp.round` against the numpy / ml_dtypes round trip `x.astype(dtype).astype(float32)`.

    python benchmarks/bench_round.py [--n 10000000] [--repeats 7]

Each case rounds n float32 values, standard normal times random powers of two spanning every
binade of the format (from below its smallest subnormal to above its max), except the
"in range" case (plain standard normal, like activations). The baseline and sp.round run
alternately, `repeats` times each; the table gives medians (output allocation included in both)
and their ratio. "vs bf16" divides by the bf16 round trip (ml_dtypes' fast integer cast) of the
same data, timed alongside: a stricter yardstick for formats without a fast cast of their own.
Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import ml_dtypes as md
import numpy as np

import simprec as sp
from simprec.bench_cli import machine_line

# name, format, mode, baseline dtype, data range (None: the format's), limit from the brief
CASES = [
    ("fp16", sp.fp16, "nearest", np.float16, None, 1.5),
    ("fp16, in range", sp.fp16, "nearest", np.float16, "normal", 1.5),
    ("bf16", sp.bf16, "nearest", md.bfloat16, None, 1.5),
    ("e3m2 (custom; baseline e3m2fn)", sp.Format(3, 2), "nearest", md.float6_e3m2fn, None, 3.0),
    ("e5m2 (custom Format(5, 2))", sp.Format(5, 2), "nearest", md.float8_e5m2, None, 3.0),
    ("e4m3 (custom Format(4, 3), IEEE)", sp.Format(4, 3), "nearest", md.float8_e4m3, None, 3.0),
    ("fp8_e4m3 (OCP e4m3fn)", sp.fp8_e4m3, "nearest", md.float8_e4m3fn, None, 3.0),
    ("fp16 stochastic", sp.fp16, "stochastic", np.float16, None, 3.0),
    ("fp16 stochastic, in range", sp.fp16, "stochastic", np.float16, "normal", 3.0),
    ("bf16 stochastic", sp.bf16, "stochastic", md.bfloat16, None, 3.0),
    ("e4m3 stochastic (custom)", sp.Format(4, 3), "stochastic", md.float8_e4m3, None, 3.0),
    ("fp16 toward_zero", sp.fp16, "toward_zero", np.float16, None, 3.0),
    ("bf16 toward_zero", sp.bf16, "toward_zero", md.bfloat16, None, 3.0),
]


def data(fmt: sp.Format, kind, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(n).astype(np.float32)
    lo, hi = fmt.min_exp - fmt.man_bits - 2, min(fmt.max_exp + 2, 127)
    with np.errstate(over="ignore"):
        return (rng.standard_normal(n) * np.exp2(rng.integers(lo, hi + 1, n))).astype(np.float32)


def round_trip(x: np.ndarray, dtype) -> np.ndarray:
    return x.astype(dtype).astype(np.float32)


def timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def bench(n: int, repeats: int):
    rng = np.random.default_rng(0)
    rows = []
    with np.errstate(all="ignore"):
        for name, fmt, mode, dtype, kind, limit in CASES:
            x = data(fmt, kind, n, rng)
            kw = dict(rng=np.random.default_rng(1)) if mode == "stochastic" else {}
            runs = {"ours": functools.partial(sp.round, x, fmt, mode, **kw),
                    "base": functools.partial(round_trip, x, dtype),
                    "bf16": functools.partial(round_trip, x, md.bfloat16)}
            times = {k: [] for k in runs}
            for f in runs.values():
                f()  # warm up
            for _ in range(repeats):  # interleaved, so that load from others hits all alike
                for k, f in runs.items():
                    times[k].append(timed(f))
            mo, mb, m16 = (1e3 * statistics.median(times[k]) for k in ("ours", "base", "bf16"))
            rows.append((name, mode, mo, np.dtype(dtype).name, mb, mo / mb, limit, mo / m16))
    return rows


def table(rows) -> str:
    out = ["| case | mode | sp.round ms | round trip | round trip ms | ratio | limit | vs bf16 |",
           "|---|---|---:|---|---:|---:|---:|---:|"]
    for name, mode, mo, base, mb, ratio, limit, vs_bf16 in rows:
        out.append(f"| {name} | {mode} | {mo:.1f} | {base} | {mb:.1f} | {ratio:.2f} | "
                   f"{limit:g} | {vs_bf16:.2f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    print(f"n = {args.n:,} float32 values, median of {args.repeats}; {machine_line()}, "
          f"ml_dtypes {md.__version__}\n")
    print(table(bench(args.n, args.repeats)))


if __name__ == "__main__":
    main()
