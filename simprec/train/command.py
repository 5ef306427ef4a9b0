"""``simprec train``: options, resume rules, and the table printed at the end."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import warnings

from .config import OPTIMIZERS, PRESETS, SCHEDULES, TrainConfig
from .errors import ConfigError

__all__ = ["COMMANDS", "add_arguments", "run"]

DESCRIPTION = """\
Train a reference model with a mixed-precision recipe, on the CPU, bit-exactly simulated.

With no options: an MLP learns the 8x8 handwritten digits with the amp-fp16 recipe (fp16
autocast, fp32 master weights, dynamic loss scaling) in 1000 steps, well under a minute on 2
CPU cores, and ends at about 96-97% test accuracy. The run directory (default
runs/MODEL-RECIPE-TIMESTAMP) receives config.json, metrics.jsonl (one line per step),
checkpoints/ and summary.json.

Defaults depend on the model (shown as mlp / cnn / gpt below). A killed or interrupted run
continues with --resume RUN and ends bit-identical to a run that was never interrupted.
"""

EPILOG = """\
examples:
  simprec train                                    # mlp, digits, amp-fp16
  simprec train --recipe fp32 --out runs/fp32      # the fp32 baseline
  simprec train --recipe pure-fp16 --accumulate sm90
  simprec train --model gpt --steps 300            # tiny GPT on the CPython docs text
  simprec train --resume runs/mlp-amp-fp16-20260101-120000
"""


def _preset_text(key: str) -> str:
    values = []
    for model in ("mlp", "cnn", "gpt"):
        v = PRESETS.get(model, {}).get(key)
        values.append("-" if v is None else str(v))
    return " / ".join(values)


def _choices(fn) -> str:
    try:
        return ", ".join(fn())
    except Exception:  # noqa: BLE001 - the help must work even if a layer is broken
        return "?"


def _kv(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE parsed as JSON when it is JSON (numbers, true, lists), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def add_arguments(p: argparse.ArgumentParser) -> None:
    from . import registry

    p.description = DESCRIPTION
    p.epilog = EPILOG
    S = argparse.SUPPRESS  # options left out stay out of the namespace: "not given"
    what = p.add_argument_group("what to train")
    what.add_argument("--model", default=S, metavar="NAME",
                      help=f"network: {_choices(registry.model_names)} (default: mlp)")
    what.add_argument("--data", default=S, metavar="NAME",
                      help=f"dataset: {_choices(registry.data_names)} (default: digits for "
                           "mlp and cnn, text for gpt)")
    what.add_argument("--recipe", default=S, metavar="NAME",
                      help=f"precision recipe: {_choices(registry.recipe_names)} "
                           "(default: amp-fp16)")
    what.add_argument("--backend", default=S, metavar="NAME",
                      help="where the math runs: numpy (the bit-exact CPU reference, default), "
                           "or a GPU backend such as cupy or torch:cuda (when its package and "
                           "library are installed)")
    what.add_argument("--accumulate", default=S, metavar="MODEL",
                      help="matmul accumulation model for half-precision matmuls: "
                           f"{_choices(registry.accumulate_names)} (default: fp32, fast; "
                           "sm90 is the bit-exact H100/H200 tensor core, slower)")
    what.add_argument("--model-opt", dest="model_options", action="append", type=_kv,
                      default=S, metavar="KEY=VALUE",
                      help="option for the model's constructor, e.g. hidden=256 (repeatable)")
    what.add_argument("--recipe-opt", dest="recipe_options", action="append", type=_kv,
                      default=S, metavar="KEY=VALUE",
                      help="option for the recipe, e.g. init_scale=1024 (repeatable)")

    how = p.add_argument_group("how long and how")
    n = how.add_mutually_exclusive_group()
    n.add_argument("--steps", type=int, default=S, metavar="N",
                   help=f"optimizer steps (default: {_preset_text('steps')})")
    n.add_argument("--epochs", type=int, default=S, metavar="N",
                   help="passes over the training set instead of --steps (digits only)")
    how.add_argument("--batch-size", type=int, default=S, metavar="N",
                     help=f"examples (or text windows) per step (default: "
                          f"{_preset_text('batch_size')})")
    how.add_argument("--lr", type=float, default=S, metavar="LR",
                     help=f"peak learning rate (default: {_preset_text('lr')})")
    how.add_argument("--optimizer", default=S, metavar="NAME",
                     help=f"{', '.join(OPTIMIZERS)} (default: {_preset_text('optimizer')})")
    how.add_argument("--momentum", type=float, default=S, metavar="M",
                     help="SGD momentum (default: 0.9)")
    how.add_argument("--weight-decay", type=float, default=S, metavar="WD",
                     help=f"weight decay (default: {_preset_text('weight_decay')})")
    how.add_argument("--schedule", default=S, metavar="NAME",
                     help=f"learning-rate schedule: {', '.join(SCHEDULES)} (default: cosine)")
    how.add_argument("--warmup-steps", type=int, default=S, metavar="N",
                     help=f"linear warm-up steps (default: {_preset_text('warmup_steps')})")
    how.add_argument("--clip-grad-norm", type=float, default=S, metavar="MAX",
                     help="clip the global gradient norm to MAX, after unscaling "
                          f"(default: {_preset_text('clip_grad_norm')}; 0 = off)")
    how.add_argument("--block-size", type=int, default=S, metavar="N",
                     help="text: tokens per training window (default: 64)")
    how.add_argument("--seed", type=int, default=S, metavar="N",
                     help="seed of the initial weights and of the data order (default: 0)")
    how.add_argument("--threads", type=int, default=S, metavar="N",
                     help="BLAS threads of the NumPy backend's fp32 matmuls (default: 1, the "
                          "fastest for these small models; 0 = the BLAS library's default). "
                          "Part of the configuration: OpenBLAS may sum in another order with "
                          "another thread count")

    out = p.add_argument_group("run directory")
    out.add_argument("--out", default=None, metavar="DIR",
                     help="new run directory (default: runs/MODEL-RECIPE-TIMESTAMP)")
    out.add_argument("--resume", default=None, metavar="RUN",
                     help="continue the run in directory RUN from its newest checkpoint (or "
                          "from the checkpoint file RUN); other options must match the run's "
                          "config or be left out")
    out.add_argument("--eval-every", type=int, default=S, metavar="N",
                     help=f"evaluate every N steps, 0 = only at the end (default: "
                          f"{_preset_text('eval_every')})")
    out.add_argument("--checkpoint-every", type=int, default=S, metavar="N",
                     help=f"checkpoint every N steps, 0 = only at the end (default: "
                          f"{_preset_text('checkpoint_every')})")
    out.add_argument("--keep-checkpoints", type=int, default=S, metavar="N",
                     help="how many of the newest checkpoints to keep (default: 2)")
    out.add_argument("--record", action="store_true", default=S,
                     help="record rounding statistics of every tensor (simprec.analysis); "
                          "saved in RUN/analysis/, read by 'simprec report RUN'")
    out.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bar and no table (errors still go to stderr)")
    from ..distributed.command import add_arguments as add_data_parallel_arguments

    add_data_parallel_arguments(p)


def config_overrides(args: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line (options left out are absent)."""
    names = set(TrainConfig.__dataclass_fields__)
    given = {k: v for k, v in vars(args).items() if k in names}
    for key in ("model_options", "recipe_options"):
        if key in given:
            given[key] = dict(given[key])
    return given


def run(args: argparse.Namespace) -> int:
    """Train a model with a precision recipe; write a run directory."""
    with _warnings_as_lines("train"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ..distributed.command import plan
    from .errors import TrainError
    from .loop import Trainer

    given = config_overrides(args)
    parallel = plan(args, given)  # torchrun's ranks or --simulate-ranks (None: one rank)
    if parallel is not None and parallel.rank > 0:
        args.quiet = True  # rank 0 reports
    try:
        if args.resume is not None:
            if args.out is not None:
                raise ConfigError("--resume continues the run in its own directory; leave --out "
                                  "out")
            trainer = Trainer.resume(args.resume, overrides=given, quiet=args.quiet,
                                     handle_signals=True)
        else:
            try:
                config = TrainConfig(**given)
            except TypeError as err:
                raise ConfigError(str(err)) from None
            trainer = Trainer(config, out=args.out, quiet=args.quiet, handle_signals=True)
        if parallel is not None:
            parallel.check_resumed(trainer.config)
            strategy = parallel.attach(trainer)
            try:
                result = trainer.run()
            finally:
                strategy.close()
        elif trainer.config.ranks > 1:
            n = trainer.config.ranks
            raise ConfigError(f"the run was trained on {n} data-parallel ranks; resume it with "
                              f"torchrun --nproc_per_node {n} -m simprec train --resume ... or "
                              f"with --simulate-ranks {n}")
        else:
            result = trainer.run()
    except MemoryError:
        raise TrainError("out of memory: this run needs more memory than the machine has (try "
                         "a smaller --batch-size, --block-size or model)") from None
    if result.interrupted:
        print(f"simprec train: interrupted after step {result.summary['steps_done']} (checkpoint "
              f"saved); continue with: simprec train --resume {result.run_dir}", file=sys.stderr)
        return 130
    if not args.quiet:
        print(result.table())
        if importlib.util.find_spec("simprec.analysis.report") is not None:
            print(f"curves and a precision report: simprec report {result.run_dir}")
    if result.summary.get("diverged"):
        print(f"simprec train: warning: the run did not train: {result.summary['diverged']} "
              "(a smaller --lr? see docs/cli.md); exit status 3", file=sys.stderr)
        return DIVERGED
    return 0


DIVERGED = 3  # the exit status of a run that finished but did not train (docs/cli.md)


@contextlib.contextmanager
def _warnings_as_lines(command: str):
    """Show the training layer's RunWarnings as ``simprec COMMAND: warning: TEXT`` lines (no
    file and line number: they are about the run, not about the code)."""
    from .errors import RunWarning

    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RunWarning):
            text = " ".join(str(message).split())
            print(f"simprec {command}: warning: {text}", file=sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", RunWarning)
        warnings.showwarning = show
        yield


COMMANDS = {
    "train": {
        "help": "train a model with a precision recipe (default: MLP on digits, amp-fp16, < 1 min)",
        "add_arguments": add_arguments,
        "run": run,
        "description": DESCRIPTION,
    },
}

if __name__ == "__main__":  # pragma: no cover
    from ..cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
