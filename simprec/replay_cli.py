"""``simprec capture`` and ``simprec replay``: record a native torch AMP run, replay it here.

`capture` hands out the capture tool (simprec/tools/simprec_capture.py, torch and numpy only) to
copy to a GPU machine; `replay` replays a capture on the NumPy reference (simprec.replay) and
says whether the whole run is bit-identical, or where it first departs. Exit status of replay:
0 bit-identical, 1 departs, 2 bad input (unreadable file, unknown format version, a network
that cannot be built or does not match the capture).
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["COMMANDS", "tool_path"]

CAPTURE_DESCRIPTION = """\
Hand out simprec_capture.py, the single-file capture tool (torch and numpy only, no simprec
needed): copy it to your GPU machine, record your native torch AMP run there, replay it here.

  simprec capture --write-tool simprec_capture.py      # then, on the GPU machine:
  python simprec_capture.py --demo gpt --out run.npz   # or sc.capture_run(model, batches, opt, ...)
  simprec replay run.npz                               # back here

What is recorded and compared: docs/capture.md.
"""

REPLAY_DESCRIPTION = """\
Replay a capture (from simprec_capture.py) on the NumPy reference: the same initial weights,
batches and learning rates, the recipe (autocast format, sm90 tensor-core GEMMs), the optimizer
on the CUDA path torch ran (single-tensor, foreach or fused), GradScaler and clip_grad_norm_.
Every step's loss, loss scale and gradient norm, the recorded gradients and weights and the
final weights are compared bit for bit; the first departure is named (step, tensor, and the
first module whose recorded forward output differs).

The network: the capture's built-in one (the demo GPT / MLP), --model mlp|gpt, or your torch
module through simprec_torch's from_torch (--torch-module FILE.py:FACTORY, FACTORY() returns
the torch.nn.Module; needs torch on this machine; built on the CPU).

Exit status: 0 bit-identical, 1 departs, 2 bad input.
"""


def tool_path() -> str:
    """The path of the capture tool shipped with simprec."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools",
                        "simprec_capture.py")


def _capture_arguments(p):
    group = p.add_mutually_exclusive_group()
    group.add_argument("--print-tool", action="store_true",
                       help="print simprec_capture.py to stdout")
    group.add_argument("--write-tool", metavar="PATH", default=None,
                       help="write simprec_capture.py to PATH (a folder: PATH/simprec_capture.py)")


def _capture(args):
    """Hand out the capture tool (simprec_capture.py) to copy to a GPU machine."""
    with open(tool_path(), encoding="utf-8") as f:
        text = f.read()
    if args.print_tool:
        sys.stdout.write(text)
        return 0
    if args.write_tool:
        path = args.write_tool
        if os.path.isdir(path):
            path = os.path.join(path, "simprec_capture.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {path}; on the GPU machine: python {os.path.basename(path)} --help")
        return 0
    print(CAPTURE_DESCRIPTION, end="")
    return 0


def _replay_arguments(p):
    p.add_argument("capture", metavar="CAPTURE.npz", help="a capture from simprec_capture.py")
    net = p.add_mutually_exclusive_group()
    net.add_argument("--model", choices=("mlp", "gpt"), default=None,
                     help="the built-in network, sized from the capture (default: the one the "
                          "capture names)")
    net.add_argument("--torch-module", metavar="FILE.py:FACTORY", default=None,
                     help="your torch network: FACTORY() in FILE.py returns it (from_torch)")
    p.add_argument("--steps", type=int, default=None,
                   help="replay only the first N steps (final weights are then not compared)")
    p.add_argument("--json", metavar="FILE", default=None, nargs="?", const="-",
                   help="write the result as JSON to FILE ('-' or no FILE: stdout)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-step lines")


def _torch_module(spec: str):
    """FILE.py:FACTORY -> the simprec network of FACTORY()'s torch module (on the CPU)."""
    import importlib.util

    from .cli import UsageError

    path, sep, factory = spec.rpartition(":")
    if not sep or not path or not factory:
        raise UsageError(f"--torch-module {spec!r}: give FILE.py:FACTORY")
    if not os.path.isfile(path):
        raise UsageError(f"--torch-module: no file {path}")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError("--torch-module needs torch on this machine (pip install torch)") \
            from None
    from .backend import _import_factory

    interop = sys.modules[_import_factory("simprec_torch.interop:__name__")]
    module_spec = importlib.util.spec_from_file_location("_simprec_replay_user", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - the user's file: say what failed, in one line
        raise UsageError(f"--torch-module: {path} failed to import "
                         f"({type(err).__name__}: {err})") from None
    make = getattr(module, factory, None)
    if make is None:
        raise UsageError(f"--torch-module: {path} has no {factory!r}")
    try:
        torch_module = make().cpu()
        return interop.from_torch(torch_module)
    except TypeError as err:
        raise UsageError(str(err)) from None


def _replay(args):
    """Replay a captured torch AMP run on the NumPy reference; name where it departs."""
    from .cli import UsageError
    from .replay import CaptureError, build_model, capture_summary, format_report, load_capture
    from .replay import replay as run

    to_stdout = args.json == "-"
    out = sys.stderr if to_stdout else sys.stdout

    def say(line=""):
        if not args.quiet or line.startswith(("bit-identical", "departs", "losses")):
            print(line, file=out, flush=True)

    try:
        capture = load_capture(args.capture)
        model = _torch_module(args.torch_module) if args.torch_module else None
        model = build_model(capture, model if model is not None else args.model)
    except CaptureError as err:
        raise UsageError(str(err)) from None
    if args.steps is not None and args.steps < 1:
        raise UsageError("--steps must be at least 1")
    say(capture_summary(capture))
    env = capture.meta.get("env") or {}
    if env.get("capability") not in (None, [9, 0]):
        say(f"note: simprec models the H200 (sm_90); this capture ran on "
            f"{env.get('gpu')} (sm_{''.join(map(str, env['capability']))}): expect differences")

    def on_step(step, report):
        s, ours, theirs, same = report.step_rows[-1]
        say(f"step {s:>4}  loss {ours:.9g}  capture {theirs:.9g}  {'same' if same else 'DIFFERS'}")

    try:
        report = run(capture, model, steps=args.steps, on_step=on_step)
    except CaptureError as err:
        raise UsageError(str(err)) from None
    for line in format_report(capture, report).splitlines():
        print(line, file=out, flush=True)
    if args.json is not None:
        text = json.dumps(dict(report.as_dict(), capture=os.path.abspath(capture.path)),
                          indent=1)
        if to_stdout:
            print(text)
        else:
            with open(args.json, "w", encoding="utf-8") as f:
                f.write(text + "\n")
    return 0 if report.identical else 1


COMMANDS = {
    "capture": {"help": "hand out simprec_capture.py, the tool that records a torch AMP run",
                "add_arguments": _capture_arguments, "run": _capture,
                "description": CAPTURE_DESCRIPTION},
    "replay": {"help": "replay a captured torch AMP run bit for bit; name where it departs",
               "add_arguments": _replay_arguments, "run": _replay,
               "description": REPLAY_DESCRIPTION},
}
