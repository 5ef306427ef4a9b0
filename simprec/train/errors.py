"""Errors of the training layer that mean "the input is wrong", not "simprec is broken".

The command line turns them into exit code 2 and a one-line message, without a traceback.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "TrainError"]


class TrainError(Exception):
    """Base class: a problem with what the user asked for (names, numbers, paths, files)."""


class ConfigError(TrainError, ValueError):
    """An invalid or inconsistent training configuration, or an unusable output path."""


class CheckpointError(TrainError):
    """A checkpoint or run directory that is missing, corrupt, or does not fit the run."""
