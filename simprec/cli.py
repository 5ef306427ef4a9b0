"""The ``simprec`` command: subcommands registered by the modules that implement them.

A module that provides subcommands defines ``COMMANDS``, a dict ``name -> Command`` (or
``name -> (add_arguments, run)``, the help then being the first line of ``run``'s docstring).
``add_arguments(parser)`` adds the subcommand's options to an ``argparse`` parser;
``run(args) -> int | None`` does the work and returns the exit status (None means 0).

The modules are listed in :data:`COMMAND_MODULES`; a listed module that does not exist is left
out, so ``simprec --help`` lists only the subcommands that work. Packages outside simprec can add
subcommands through the entry-point group ``simprec.commands`` (each entry point loads a
``COMMANDS`` dict).

Errors: a subcommand raises :class:`UsageError` (or a ``simprec.train.errors.TrainError``) for
bad input; ``main`` prints ``simprec CMD: error: REASON`` on one line and returns 2, with no
traceback; so does a write the machine refuses (disk full, read-only or forbidden path). Ctrl-C
returns 130.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["COMMAND_MODULES", "Command", "UsageError", "build_parser", "commands", "main"]

# Modules that may define COMMANDS, in the order their subcommands are listed.
COMMAND_MODULES = (
    "simprec.train.command",    # train
    "simprec.analysis.cli",     # report, experiment
    "simprec.parity_cli",       # parity (if implemented)
    "simprec.bench_cli",        # bench (if implemented)
    "simprec.replay_cli",       # capture, replay
)


class UsageError(Exception):
    """Bad input to a subcommand: exit status 2 and a one-line message, no traceback."""


def parse_only(only: str | None, valid, what: str) -> list[str]:
    """The names picked by a comma-separated `--only` value, in `valid`'s order (all if None);
    an empty or unknown pick is a UsageError listing the valid names."""
    if only is None:
        return list(valid)
    chosen = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in valid]
    if unknown or not chosen:
        raise UsageError(f"--only {only!r}: unknown {what}(s) {', '.join(unknown) or '(none)'}; "
                         f"valid: {','.join(valid)}")
    return [n for n in valid if n in chosen]


class Command(NamedTuple):
    """A subcommand: one-line ``help``, ``add_arguments(parser)``, ``run(args) -> int | None``;
    ``description`` (optional) is the longer text of ``simprec CMD --help``."""

    help: str
    add_arguments: Callable
    run: Callable
    description: str | None = None


def _as_command(value) -> Command:
    if isinstance(value, Command):
        return value
    if isinstance(value, dict):
        return Command(**value)
    value = tuple(value)
    if len(value) == 2:
        add_arguments, run = value
        doc = (run.__doc__ or "").strip()
        return Command(doc.splitlines()[0] if doc else "", add_arguments, run, doc or None)
    return Command(*value)


def _warn(text: str) -> None:
    print(f"simprec: warning: {text}", file=sys.stderr)


def commands() -> dict[str, Command]:
    """Every available subcommand, by name."""
    found: dict[str, Command] = {}
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
                continue  # not implemented (yet): not listed
            _warn(f"subcommands of {module_name} are unavailable ({err})")
            continue
        except Exception as err:  # noqa: BLE001 - one broken module must not break the others
            _warn(f"subcommands of {module_name} are unavailable ({type(err).__name__}: {err})")
            continue
        for name, value in getattr(module, "COMMANDS", {}).items():
            found.setdefault(name, _as_command(value))
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group="simprec.commands"):
            try:
                for name, value in ep.load().items():
                    found.setdefault(name, _as_command(value))
            except Exception as err:  # noqa: BLE001
                _warn(f"plugin {ep.name!r} failed to load ({type(err).__name__}: {err})")
    except Exception:  # noqa: BLE001 - broken metadata
        pass
    return found


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``PROG: error: MESSAGE (see PROG --help)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=32, width=min(100, _terminal_width()))


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns - 2
    except OSError:
        return 98


DESCRIPTION = """\
simprec: a bit-exact laboratory for fp16/bf16 mixed-precision training.

It simulates half-precision training on the CPU exactly as a GPU computes it (fp16/bf16 math,
fp32 master weights, dynamic loss scaling), so you can see every rounding.
"""

EPILOG = """\
Start here:
  simprec train                                   # MLP on handwritten digits, amp-fp16, < 1 min
  simprec train --recipe fp32 --out runs/fp32     # the same in fp32, into a chosen directory
  simprec train --help                            # every option of a training run

Run 'simprec COMMAND --help' for the options of a command.
"""


def build_parser(cmds: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    from . import __version__

    cmds = commands() if cmds is None else cmds
    parser = _Parser(prog="simprec", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"simprec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands",
                                parser_class=_Parser)
    for name, cmd in cmds.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.description or cmd.help,
                           formatter_class=_Formatter)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


# OSErrors that mean "this machine cannot do it", reported in one line (exit status 2).
_MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``simprec`` console script; returns the exit status."""
    from ._alloc import keep_freed_memory
    from .train.errors import TrainError

    keep_freed_memory()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        status = args._run(args)
    except (UsageError, TrainError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"simprec {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nsimprec {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # the machine's, not simprec's: a full disk, a read-only folder
        if err.errno not in _MACHINE_ERRNOS:
            raise
        where = f" {err.filename}" if err.filename else ""
        print(f"simprec {args.command}: error: cannot write{where}: {err.strerror}",
              file=sys.stderr)
        return 2
    except BrokenPipeError:  # `simprec ... | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    return 0 if status is None else int(status)


if __name__ == "__main__":
    sys.exit(main())
