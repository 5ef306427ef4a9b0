"""Precision analysis: where a half-precision run loses information.

- `Recorder(model)`: a `simprec.hooks` observer that records, step by step and tensor by tensor,
  what rounding did (zeros, underflow, subnormals, overflow, exponent histograms, lost updates,
  the first non-finite op of a step). `load(run_dir)` reads a saved recording back.
- `write_report(run_dir)`: report.md and PNG figures for a run directory (`simprec report RUN`).
- `run_experiment(name, out_dir)`: the fixed experiments `underflow`, `stagnation`, `scaling`
  (`simprec experiment NAME`).

See docs/experiments.md.
"""

from __future__ import annotations

from .recorder import BINS, E_MAX, E_MIN, EXPONENTS, KINDS, Recorder, Recording, load

__all__ = ["BINS", "E_MAX", "E_MIN", "EXPONENTS", "EXPERIMENTS", "KINDS", "Recorder", "Recording",
           "load", "run_experiment", "write_report"]


def write_report(run_dir, **kwargs):
    """Write report.md and figures/*.png into `run_dir` (see simprec.analysis.report)."""
    from .report import write_report as _write

    return _write(run_dir, **kwargs)


def run_experiment(name, out_dir=None, **kwargs):
    """Run one of EXPERIMENTS and write its report (see simprec.analysis.experiments)."""
    from .experiments import run_experiment as _run

    return _run(name, out_dir, **kwargs)


EXPERIMENTS = ("underflow", "stagnation", "scaling")
