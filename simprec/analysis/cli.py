"""``simprec report`` and ``simprec experiment`` (listed in simprec.cli.COMMAND_MODULES)."""

from __future__ import annotations

import os
import sys

__all__ = ["COMMANDS"]

REPORT_DESCRIPTION = """\
Write RUN/report.md and PNG figures (RUN/figures/) for a run directory: loss curves, the loss-scale
trace with skipped steps, and, for a run trained with --record, the exponent histogram of the
activation gradients against fp16's normal, subnormal and lost ranges, the underflow share per
layer over time, the lost-update share per parameter and the first non-finite op of every
skipped step. Without matplotlib the markdown is still written (pip install 'simprec[plot]').
"""

EXPERIMENT_DESCRIPTION = """\
Run a small, fixed precision experiment on the 8x8 digits and write its report (report.md,
figures/ and one run directory per arm, each readable by 'simprec report'):

  underflow   the same network in fp16 without and with (dynamic) loss scaling, and in fp32
  stagnation  pure fp16 (fp16 weights and updates) against fp32 master weights
  scaling     static loss scales 1 ... 2^16 against dynamic loss scaling

Each takes under a minute on 2 CPU cores (--quick: a smaller version, in seconds).
The same arms on a GPU and a larger network: --backend cupy --model gpt --model-opt n_layer=8
--model-opt n_embd=1024 --model-opt n_head=16 --model-opt block_size=512 --batch-size 32 (and
--steps, --record-every, --lr to fit the time). See docs/experiments.md.
"""


def _report_arguments(p):
    p.add_argument("run", metavar="RUN", help="a run directory (made by simprec train or "
                                              "simprec experiment)")
    p.add_argument("--no-figures", action="store_true",
                   help="write report.md only (no PNGs)")


def _report(args):
    """Write report.md and PNG figures for a run directory."""
    from ..cli import UsageError
    from . import figures
    from .report import write_report

    if not os.path.isdir(args.run):
        raise UsageError(f"{args.run}: no such run directory")
    has_files = any(os.path.exists(os.path.join(args.run, f))
                    for f in ("config.json", "metrics.jsonl", "analysis", "experiment.json"))
    if not has_files:
        raise UsageError(f"{args.run} is not a run directory (no config.json, metrics.jsonl or "
                         "analysis/)")
    from .report import read_run

    if not os.path.exists(os.path.join(args.run, "experiment.json")):
        problems = read_run(args.run).metrics_problems()
        if problems:
            print(f"simprec report: warning: {os.path.join(args.run, 'metrics.jsonl')} is "
                  f"incomplete: {'; '.join(problems)} (noted in the report)", file=sys.stderr)
    if os.path.exists(os.path.join(args.run, "experiment.json")):
        from .experiments import rewrite_report

        path = rewrite_report(args.run, figures_on=False if args.no_figures else None)
    else:
        path = write_report(args.run, figures_on=False if args.no_figures else None)
    print(path)
    if not args.no_figures and not figures.have_matplotlib():
        print(f"(no figures: matplotlib is not installed; {figures.INSTALL_HINT})")
    return 0


def _experiment_arguments(p):
    from .experiments import EXPERIMENTS

    p.add_argument("name", metavar="NAME", help=f"one of: {', '.join(EXPERIMENTS)}")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="where to write it (default: runs/experiment-NAME)")
    p.add_argument("--quick", action="store_true",
                   help="a smaller version (fewer steps, smaller network): seconds, not minutes")
    p.add_argument("--seed", type=int, default=0, help="seed of data order and initialisation "
                                                        "(default: 0)")
    p.add_argument("--no-figures", action="store_true", help="write the markdown only")
    from ..train.command import _kv

    v = p.add_argument_group("another backend or network (default: the fixed CPU experiment)")
    v.add_argument("--backend", default=None, help="simprec backend (default: numpy), e.g. cupy")
    v.add_argument("--model", choices=("mlp", "gpt"), default=None,
                   help="mlp on the digits (default) or gpt on the text corpus")
    v.add_argument("--model-opt", dest="model_options", action="append", type=_kv,
                   metavar="KEY=VALUE", help="the network's options: the MLP's hidden=[64,64]; "
                   "the GPT's n_layer, n_head, n_embd, block_size (repeatable)")
    v.add_argument("--steps", type=int, default=None, help="training steps of every arm")
    v.add_argument("--batch-size", type=int, default=None, help="batch size (GPT: sequences)")
    v.add_argument("--record-every", type=int, default=None,
                   help="record the roundings of every Nth step (default: every step)")
    v.add_argument("--eval-every", type=int, default=None, help="test every N steps")
    v.add_argument("--lr", type=float, default=None,
                   help="learning rate (underflow, scaling: before the loss-weight division)")


def _variant(args) -> dict:
    return {"backend": args.backend, "model": args.model,
            "model_options": dict(args.model_options or []), "steps": args.steps,
            "batch_size": args.batch_size, "record_every": args.record_every,
            "eval_every": args.eval_every, "lr": args.lr}


def _experiment(args):
    """Run a small, fixed precision experiment and write its report."""
    from ..cli import UsageError
    from . import figures
    from .experiments import (
        EXPERIMENTS,
        check_out_dir,
        check_variant,
        experiment_command,
        finished_arms,
        run_experiment,
    )

    if args.name not in EXPERIMENTS:
        raise UsageError(f"unknown experiment {args.name!r}; valid names: {', '.join(EXPERIMENTS)}")
    if args.seed < 0:
        raise UsageError(f"--seed must be zero or positive, got {args.seed}")
    out = args.out or os.path.join("runs", f"experiment-{args.name}")
    try:
        variant = check_variant(_variant(args))
        if variant.get("backend", "numpy") != "numpy":
            from ..backend import get_backend

            get_backend(variant["backend"])
        state = check_out_dir(out, args.name, quick=args.quick, seed=args.seed, variant=variant)
    except (ValueError, ImportError) as err:
        raise UsageError(str(err).splitlines()[0]) from None
    if state == "continue":
        done, total = finished_arms(out)
        print(f"continuing the interrupted experiment in {out} ({done} of {total} arms done)")
    try:
        result = run_experiment(args.name, out, quick=args.quick, seed=args.seed, progress=True,
                                figures_on=False if args.no_figures else None, variant=variant)
    except KeyboardInterrupt:
        done, total = finished_arms(out)
        again = experiment_command(args.name, args.quick, args.seed, variant)
        if args.out:
            again += f" --out {args.out}"
        print(f"\nsimprec experiment: interrupted ({done} of {total} arms done); continue with: "
              f"{again}", file=sys.stderr)
        return 130
    print(result["report"])
    if not args.no_figures and not figures.have_matplotlib():
        print(f"(no figures: matplotlib is not installed; {figures.INSTALL_HINT})")
    return 0


COMMANDS = {
    "report": {"help": "write report.md and PNG figures for a run directory",
               "add_arguments": _report_arguments, "run": _report,
               "description": REPORT_DESCRIPTION},
    "experiment": {"help": "run a small precision experiment (underflow, stagnation, scaling)",
                   "add_arguments": _experiment_arguments, "run": _experiment,
                   "description": EXPERIMENT_DESCRIPTION},
}
