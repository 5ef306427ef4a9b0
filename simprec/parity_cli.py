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
  trace        the 60-step fp16 AMP training run of amp_trace_dev.npz replayed on the CPU:
               skipped steps, loss scales, losses and final weights (~25 s)

The data: the checkout's tests/data/h200 (shipped with the repository), or --data DIR.
Exit status 0: everything matches (a case within its documented known differences, see
docs/fidelity.md, counts as matching unless --strict); 1: something differs; 2: data missing.
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
    p.add_argument("--json", metavar="FILE", default=None,
                   help="also write the results as JSON to FILE ('-': to stdout, no table)")
    p.add_argument("--strict", action="store_true",
                   help="count documented known differences (none today) as differing")


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
    """Hold simprec against real H200 results; print a table of differing elements per case."""
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


COMMANDS = {
    "parity": {"help": "hold simprec against real H200 results, bit for bit",
               "add_arguments": _arguments, "run": _run, "description": DESCRIPTION},
}
