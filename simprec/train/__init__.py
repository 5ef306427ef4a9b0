"""Training runs: the loop, checkpoints, the run directory, the progress bar.

    from simprec.train import TrainConfig, train
    result = train(TrainConfig(model="mlp", recipe="amp-fp16", steps=500), out="runs/demo")
    print(result.summary["test_accuracy"], result.run_dir)

    from simprec.train import Trainer
    Trainer.resume("runs/demo").run()      # continue a killed run, bit for bit

The command line is ``simprec train`` (:mod:`simprec.train.command`); see docs/cli.md.
"""

from __future__ import annotations

from .checkpoint import load_checkpoint, save_checkpoint
from .config import OPTIMIZERS, PRESETS, SCHEDULES, TrainConfig
from .errors import CheckpointError, ConfigError, TrainError
from .loop import Trainer, TrainResult, train
from .rundir import RunDir, read_metrics

__all__ = [
    "OPTIMIZERS", "PRESETS", "SCHEDULES", "CheckpointError", "ConfigError", "RunDir",
    "TrainConfig", "TrainError", "TrainResult", "Trainer", "load_checkpoint", "read_metrics",
    "save_checkpoint", "train",
]
