"""Errors of the training layer that mean "the input is wrong", not "simprec is broken".

The command line turns them into exit code 2 and a one-line message, without a traceback.
A :class:`ConfigError` about one configuration field carries the field (``key``) and the
problem, so that the message can name what the user actually wrote: the option
``--batch-size`` on the command line, the key ``"batch_size"`` of a ``config.json`` on resume
(:meth:`ConfigError.in_file`).
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "RunWarning", "TrainError"]


class TrainError(Exception):
    """Base class: a problem with what the user asked for (names, numbers, paths, files)."""


class ConfigError(TrainError, ValueError):
    """An invalid or inconsistent training configuration, or an unusable output path.

    ``ConfigError(message)``, or ``ConfigError(key=FIELD, problem=TEXT)`` for one field: the
    message is then ``--FIELD TEXT`` (the command-line spelling of the field).
    """

    def __init__(self, message: str | None = None, *, key: str | None = None,
                 problem: str | None = None):
        self.key, self.problem = key, problem
        if message is None:
            message = f"{option_flag(key)} {problem}" if key else str(problem)
        super().__init__(message)

    def in_file(self, path) -> CheckpointError:
        """The same error told about a stored configuration: ``PATH, key "FIELD": TEXT``."""
        if self.key is not None and self.problem is not None:
            return CheckpointError(f'{path}, key "{self.key}": {self.problem} (fix the file, or '
                                   "start a new run)")
        return CheckpointError(f"{path}: {self}")


class CheckpointError(TrainError):
    """A checkpoint or run directory that is missing, corrupt, or does not fit the run."""


class RunWarning(UserWarning):
    """Something the user should know about a run that still went on: an older checkpoint used
    because the newest is corrupt, a run whose steps were mostly skipped, gaps in metrics.jsonl.
    ``simprec train`` prints these as one ``simprec train: warning: ...`` line each."""


def option_flag(name: str) -> str:
    """The command-line spelling of a config field (``batch_size`` -> ``--batch-size``,
    ``model_options`` -> ``--model-opt``)."""
    return _FLAGS.get(name) or "--" + name.replace("_", "-")


_FLAGS = {"model_options": "--model-opt", "recipe_options": "--recipe-opt"}
