"""``simprec parity``: hold simprec against the real H200 results and print what differs.

The cases and the comparison live in :mod:`simprec.parity` (shared with the parity tests); this
module is the command: it finds the data, prints one table row per case as it is computed (the
trace replay takes ~25 s, so rows appear as they are ready), a total line, and optionally writes
the results as JSON. Exit status: 0 when every case is bit-identical (or within its documented
known differences), 1 when something differs, 2 when the data is missing.

Listed in simprec.cli.COMMAND_MODULES; imports nothing heavy until the command runs, so that
``simprec --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
import time

__all__ = ["COMMANDS"]

DESCRIPTION = """\
Hold simprec against real NVIDIA H200 results (torch 2.11 + CUDA 13.0) and print, for each case,
how many elements were compared and how many differ, bit for bit (NaN compared by NaN-ness):

  matmul       every fp16/bf16 GEMM of matmul_dev.npz: raw fp32 accumulator (D32), half output
               (D) and fused bias (linear), with the sm90 tensor-core model
  elementwise  every fp16/bf16 input through each op of elementwise_dev.npz, random pairs, casts;
               with tests/data/h200_ops.npz also backward kernels, pow/division, fp32 kernels
  rows         softmax, sums, layer_norm on 256 rows of 1,000 (and their backward passes,
               means, cross_entropy with h200_ops.npz)
  reductions   sums over leading, middle and trailing dims in every launch configuration of
               Reduce.cuh, var (Welford), long rows and whole tensors, softmax / log_softmax /
               cross_entropy over rows of 1,000 to 50,257 (h200_{colsums,middlesums,longsums,
               var,softmax}.npz)
  trace        the 60-step fp16 AMP training run of amp_trace_dev.npz replayed on the CPU:
               skipped steps, loss scales, losses and final weights (~25 s)

The data: the checkout's tests/data/h200 (shipped with the repository), or --data DIR.
Exit status 0: everything matches (a case within its documented known differences, see
docs/fidelity.md, counts as matching unless --strict); 1: something differs; 2: data missing.

Across backends (--backends): one training run (--model, --recipe, --steps, --seed, the
model's `simprec train` preset for the rest) on two backends, e.g. --backends numpy,torch:cuda,
or on one backend and native torch (--backends numpy --against native: the network through
simprec_torch.to_torch under hand-written torch.autocast + GradScaler + torch optimizer), from
the same initial weights, batches and learning rates. A row per step: losses, loss scales, how
many gradient and parameter elements are bit-identical and the largest distance in ulps; then
the first op (two simprec backends) or layer (native) whose output differs. Exit status 0 when
every step is bit-identical, 1 when something differs, 2 on bad input or a backend that is not
usable here.
"""

COLUMNS = (("group", 11, "<"), ("case", 40, "<"), ("source", 15, "<"),
           ("compared", 11, ">"), ("differing", 9, ">"), ("", 0, "<"))


def _arguments(p):
    from .parity import GROUPS

    p.add_argument("--data", metavar="DIR", default=None,
                   help="the folder of the H200 captures (matmul_dev.npz, elementwise_dev.npz, "
                        "amp_trace_dev.npz; default: the checkout's tests/data/h200)")
    p.add_argument("--only", metavar="GROUPS", default=None,
                   help=f"comma-separated groups to run, of: {','.join(GROUPS)} (default: all)")
    p.add_argument("--json", metavar="FILE", default=None, nargs="?", const="-",
                   help="also write the results as JSON to FILE ('-' or no FILE: to stdout, "
                        "no table)")
    p.add_argument("--strict", action="store_true",
                   help="count documented known differences (none today) as differing")
    run = p.add_argument_group("across backends (a training run on two backends)")
    run.add_argument("--backends", metavar="A,B", default=None,
                     help="compare a training run on backends A and B (numpy, torch:cpu, "
                          "torch:cuda, ...); with --against native, one backend")
    run.add_argument("--against", choices=("native",), default=None,
                     help="compare the backend with the same network in hand-written torch AMP")
    run.add_argument("--model", default="mlp", help="mlp, cnn or gpt (default: mlp)")
    run.add_argument("--recipe", default="amp-fp16", help="a recipe (default: amp-fp16)")
    run.add_argument("--steps", type=int, default=10, help="training steps (default: 10)")
    run.add_argument("--seed", type=int, default=0, help="the run's seed (default: 0)")
    run.add_argument("--accumulate", default="sm90",
                     help="the matmul accumulation model of the simprec runs (default: sm90, "
                          "the H200's tensor cores)")
    run.add_argument("--batch-size", type=int, default=None,
                     help="batch size (default: the model's preset)")
    run.add_argument("--native-device", default=None,
                     help="the device of the native run (default: a torch backend's device, "
                          "else cuda where there is one, else cpu)")
    run.add_argument("--attention", choices=("explicit", "sdpa"), default="explicit",
                     help="the native GPT's attention kernel (default: explicit, the math "
                          "composite simprec models)")
    run.add_argument("--no-trace", action="store_true",
                     help="do not record op / layer outputs (faster; no first difference)")


def _groups(only: str | None) -> list[str]:
    from .cli import parse_only
    from .parity import GROUPS

    return parse_only(only, list(GROUPS), "group")


def _row(*cells) -> str:
    parts = [f"{c:{align}{width}}" for c, (_, width, align) in zip(cells, COLUMNS, strict=True)]
    return "  ".join(parts).rstrip()


def _status_note(result, strict: bool) -> str:
    status = result.status
    if status == "ok":
        return ""
    if status == "known" and not strict:
        return f"known ({result.known} documented, docs/fidelity.md)"
    return "DIFFERS"


def _run(args):
    """Hold simprec against real H200 results; print a table of differing elements per case.
    With --backends, compare a training run across backends instead (_run_backends)."""
    if args.backends is not None:
        return _run_backends(args)
    if args.against is not None:
        raise _usage("--against native needs --backends (the backend to compare)")
    from . import __version__
    from .cli import UsageError
    from .parity import MissingData, locate_data, run_cases

    groups = _groups(args.only)
    try:
        paths = locate_data(args.data, groups)
    except MissingData as err:
        raise UsageError(str(err)) from None
    to_stdout = args.json == "-"
    out = sys.stderr if to_stdout else sys.stdout

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    say(f"simprec {__version__} against real H200 results (how they were made: README.md "
        "beside the data)")
    say(f"  data: {paths.h200} ({paths.how})")
    if paths.extra:
        say(f"  h200_ops.npz: {paths.extra}")
    if paths.own:
        say(f"  reduction captures: {paths.own}")
    say()
    say(_row(*(name for name, _, _ in COLUMNS)))
    say(_row(*("-" * w for _, w, _ in COLUMNS[:-1]), ""))
    results = []
    start = time.perf_counter()
    try:
        for result in run_cases(paths, groups):
            results.append(result)
            say(_row(result.group, result.name, result.source, f"{result.compared:,}",
                     f"{result.differing:,}", _status_note(result, args.strict)))
    except MissingData as err:
        raise UsageError(str(err)) from None
    elapsed = time.perf_counter() - start

    compared = sum(r.compared for r in results)
    differing = sum(r.differing for r in results)
    failed = [r for r in results
              if r.status == "differs" or (args.strict and r.status == "known")]
    known = [r for r in results if r.status == "known" and not args.strict]
    if failed:
        verdict = f"{len(failed)} of {len(results)} cases differ"
    elif known:
        verdict = (f"bit-identical except {sum(r.differing for r in known):,} known "
                   f"({', '.join(r.name for r in known)})")
    else:
        verdict = f"all {len(results)} cases bit-identical"
    say(_row(*("-" * w for _, w, _ in COLUMNS[:-1]), ""))
    say(_row("total", f"{len(results)} cases, {elapsed:.1f} s", "", f"{compared:,}",
             f"{differing:,}", verdict))
    status = 1 if failed else 0

    if args.json is not None:
        report = {
            "simprec": __version__,
            "data": {"h200": str(paths.h200), "found_by": paths.how,
                     "h200_ops": str(paths.extra) if paths.extra else None,
                     "reductions": str(paths.own) if paths.own else None},
            "groups": groups,
            "strict": bool(args.strict),
            "cases": [r.as_dict() for r in results],
            "total": {"cases": len(results), "compared": compared, "differing": differing,
                      "failed_cases": len(failed), "known_cases": len(known)},
            "seconds": round(elapsed, 3),
            "exit_status": status,
        }
        text = json.dumps(report, indent=1)
        if to_stdout:
            print(text)
        else:
            try:
                with open(args.json, "w") as f:
                    f.write(text + "\n")
            except OSError as err:
                raise UsageError(f"--json {args.json}: cannot write ({err.strerror})") from None
    return status


def _usage(message: str):
    from .cli import UsageError

    return UsageError(message)


def _backends_config(args):
    """The TrainConfig of a cross-backend run, checked (UsageError on a bad name)."""
    from .train import TrainConfig
    from .train.errors import ConfigError

    if args.only is not None or args.data is not None or args.strict:
        raise _usage("--only, --data and --strict apply to the H200 captures, not to --backends")
    if args.steps < 1:
        raise _usage(f"--steps must be at least 1, got {args.steps}")
    cfg = TrainConfig(model=args.model, recipe=args.recipe, accumulate=args.accumulate,
                      seed=args.seed, steps=args.steps, batch_size=args.batch_size,
                      eval_every=0, checkpoint_every=0)
    try:
        return cfg.resolve()
    except ConfigError as err:
        raise _usage(str(err)) from None


def _parse_backends(text: str, against: str | None) -> tuple[str, ...]:
    from .backend import get_backend

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    want = 1 if against else 2
    if len(names) != want:
        wanted = "one backend with --against native" if against else "two backends, A,B"
        raise _usage(f"--backends {text!r}: give {wanted}")
    for name in names:
        try:
            get_backend(name)
        except (ValueError, TypeError, ImportError, RuntimeError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise _usage(f"backend {name!r} is not usable here: {first}") from None
    return names


def _check_native_device(args, backend: str) -> None:
    """--against native: torch is installed and sees the device the native run needs."""
    from .parity_backends import _plugin, native_device

    try:
        native = _plugin("simprec_torch.native")
    except ImportError:
        raise _usage("--against native needs torch, which is not installed") from None
    problem = native.device_problem(args.native_device or native_device(backend))
    if problem is not None:
        raise _usage(problem)


def _run_backends(args):
    """A training run on two backends (or a backend and native torch), compared step by step."""
    from . import __version__
    from .parity_backends import format_header, format_step, format_summary, run_parity

    cfg = _backends_config(args)
    backends = _parse_backends(args.backends, args.against)
    if args.against == "native":
        _check_native_device(args, backends[0])
    to_stdout = args.json == "-"
    out = sys.stderr if to_stdout else sys.stdout

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    against = " against native torch" if args.against else ""
    say(f"simprec {__version__} parity across backends: {' and '.join(backends)}{against}")
    say(f"  model {cfg.model}, recipe {cfg.recipe}, {cfg.steps} steps, seed {cfg.seed}, "
        f"batch {cfg.batch_size}, optimizer {cfg.optimizer}, accumulate {cfg.accumulate}")
    say()
    for line in format_header():
        say(line)
    try:
        report = run_parity(cfg, backends, against=args.against,
                            native_device_name=args.native_device, attention=args.attention,
                            trace=not args.no_trace, on_step=lambda s: say(format_step(s)))
    except (ValueError, TypeError, ImportError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _usage(first) from None
    say()
    for line in format_summary(report):
        say(line)
    say(f"({report.seconds:.1f} s)")
    status = 0 if report.identical else 1
    if args.json is not None:
        document = {"simprec": __version__, "mode": "backends", **report.as_dict(),
                    "exit_status": status}
        _write_json(document, args.json)
    return status


def _write_json(document: dict, target: str) -> None:
    text = json.dumps(document, indent=1)
    if target == "-":
        print(text)
        return
    try:
        with open(target, "w") as f:
            f.write(text + "\n")
    except OSError as err:
        raise _usage(f"--json {target}: cannot write ({err.strerror})") from None


COMMANDS = {
    "parity": {"help": "hold simprec against real H200 results, bit for bit",
               "add_arguments": _arguments, "run": _run, "description": DESCRIPTION},
}
