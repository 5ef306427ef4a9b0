"""``simprec bench``: run the benchmark scripts of ``benchmarks/`` and print their tables.

The benchmarks are plain scripts beside the package in a source checkout (``benchmarks/*.py``,
not part of the installed wheel), each with its own size and repeat options. This command runs
them, one after the other, in fresh interpreters (``sys.executable``, with this simprec first on
``PYTHONPATH``) so that one benchmark's caches, threads and memory do not colour the next, and
prints a machine line and each script's output (its markdown table) under a heading naming the
exact command, so that a result can be reproduced or pasted into docs/benchmarks.md.
``--quick`` passes smaller sizes and fewer repeats (seconds instead of minutes; the ratios get
noisier). Exit status: 0 when every benchmark ran, 1 when one failed, 2 when benchmarks/ is absent.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

__all__ = ["BENCHMARKS", "COMMANDS"]


class Benchmark(NamedTuple):
    """A script of benchmarks/: what it measures, the options of --quick, the imports it needs."""

    script: str
    what: str
    quick: tuple[str, ...]
    needs: tuple[str, ...] = ()
    gpu: bool = False  # needs a CUDA GPU, except for its --quick CPU dry run


BENCHMARKS = {
    "round": Benchmark("bench_round.py",
                       "sp.round against the NumPy / ml_dtypes round trip, 13 formats and modes",
                       ("--n", "1000000", "--repeats", "3")),
    "matmul": Benchmark("bench_matmul.py",
                        "the matmul accumulation models (sm90/80/70, fp16, fp32) against BLAS",
                        ("--m", "128", "--k", "512", "--n", "128", "--repeats", "3")),
    "step": Benchmark("bench_step.py",
                      "one training step of an MLP 784-1024-1024-10: simprec fp16 (with and "
                      "without autocast), amp-fp16, fp32, torch",
                      ("--repeats", "5", "--batch", "128"), needs=("torch",)),
    "recorder": Benchmark("bench_recorder.py",
                          "the cost of recording (Recorder) on the default training step",
                          ("--steps", "20")),
    "gpu": Benchmark("bench_gpu.py",
                     "simprec's torch:cuda step against hand-written torch AMP: GPT 8x1024 "
                     "(explicit attention and SDPA), MLP 784-4096-4096-10; time and peak memory "
                     "(a CUDA GPU; --quick: a CPU dry run)",
                     ("--quick",), needs=("torch",), gpu=True),
}

DESCRIPTION = """\
Run the benchmark scripts of benchmarks/ (a source checkout; they are not installed with the
wheel) and print their tables with the machine they ran on:

""" + "\n".join(f"  {name:<9} {b.what}" for name, b in BENCHMARKS.items()) + """

Without --quick each script runs at its own default sizes (about a minute in all on 2 CPU
cores); --quick uses smaller sizes and fewer repeats (about 10 s in all). The machines are
shared: compare ratios measured in the same run, not absolute times across runs.
"""


def _arguments(p):
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes and fewer repeats: seconds per benchmark, noisier")
    p.add_argument("--only", metavar="NAMES", default=None,
                   help=f"comma-separated benchmarks to run, of: {','.join(BENCHMARKS)} "
                        "(default: all)")
    p.add_argument("--dir", metavar="DIR", default=None,
                   help="the benchmarks folder (default: benchmarks/ of the checkout simprec is "
                        "imported from)")


def _package_parent() -> Path:
    """The folder that holds the simprec package (a checkout root, or site-packages)."""
    return Path(__file__).resolve().parents[1]


def benchmarks_dir(given: str | None = None) -> Path:
    """The benchmarks folder: ``given``, else ``<checkout>/benchmarks``; UsageError if absent."""
    from .cli import UsageError

    if given is not None:
        path = Path(given)
        if not path.is_dir():
            raise UsageError(f"--dir {given}: no such directory")
        return path
    path = _package_parent() / "benchmarks"
    if not path.is_dir():
        raise UsageError(f"no benchmarks/ folder beside the simprec package ({path} is absent): "
                         "the benchmarks ship with the source checkout, not the installed "
                         "package; run from a checkout, or pass --dir DIR")
    return path


def _selected(only: str | None) -> list[str]:
    from .cli import parse_only

    return parse_only(only, list(BENCHMARKS), "benchmark")


def machine_line() -> str:
    """CPU model, cores, load average, Python, NumPy and simprec versions: the context of every
    number that follows (the machines are shared; load matters)."""
    import numpy as np

    from . import __version__

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (f"{cpu}, {os.cpu_count()} cores{load}; Python {platform.python_version()}, "
            f"NumPy {np.__version__}, simprec {__version__}")


def _missing(modules: tuple[str, ...]) -> list[str]:
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


def _cuda_present() -> bool:
    """Whether torch sees a CUDA GPU (asked in a child, so this process never imports torch)."""
    done = subprocess.run([sys.executable, "-c",
                           "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"],
                          capture_output=True, check=False)
    return done.returncode == 0


def _run_one(path: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    parent = str(_package_parent())  # the same simprec as this command, checkout or installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, str(path), *args], cwd=path.parent.parent, env=env,
                          capture_output=True, text=True, check=False)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _run(args):
    """Run the benchmark scripts of benchmarks/ and print their markdown tables."""
    folder = benchmarks_dir(args.dir)
    names = _selected(args.only)
    from .cli import UsageError

    absent = [BENCHMARKS[n].script for n in names if not (folder / BENCHMARKS[n].script).is_file()]
    if absent:
        raise UsageError(f"{folder} lacks {', '.join(absent)}")
    print(f"machine: {machine_line()}", flush=True)
    failed, skipped = [], []
    for name in names:
        bench = BENCHMARKS[name]
        script = folder / bench.script
        options = list(bench.quick) if args.quick else []
        shown = " ".join(["python", f"{folder.name}/{bench.script}", *options])
        print(f"\n## {name}: {bench.what}\n\n$ {shown}\n", flush=True)
        missing = _missing(bench.needs)
        if missing:
            skipped.append(name)
            print(f"(skipped: needs {', '.join(missing)}, which is not installed)", flush=True)
            continue
        if bench.gpu and not args.quick and not _cuda_present():
            skipped.append(name)
            print("(skipped: needs a CUDA GPU, which torch does not see here; --quick runs "
                  "its CPU dry run)", flush=True)
            continue
        start = time.perf_counter()
        done = _run_one(script, options)
        print(done.stdout.rstrip(), flush=True)
        if done.returncode != 0:
            failed.append(name)
            print(f"(failed, exit status {done.returncode}: {_last_line(done.stderr)})",
                  flush=True)
        else:
            if done.stderr.strip():
                print(done.stderr.rstrip(), file=sys.stderr, flush=True)
            print(f"\n({time.perf_counter() - start:.1f} s)", flush=True)
    summary = f"{len(names) - len(failed) - len(skipped)} of {len(names)} benchmarks ran"
    if skipped:
        summary += f"; skipped: {', '.join(skipped)}"
    if failed:
        summary += f"; FAILED: {', '.join(failed)}"
    print(f"\nsimprec bench: {summary}")
    return 1 if failed else 0


COMMANDS = {
    "bench": {"help": "run the speed benchmarks of benchmarks/ and print their tables",
              "add_arguments": _arguments, "run": _run, "description": DESCRIPTION},
}
