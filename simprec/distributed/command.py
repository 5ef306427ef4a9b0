"""The ``simprec train`` options of data parallelism, and how a run gets its strategy.

* ``torchrun --nproc_per_node N -m simprec train --out RUN ...``: each process is one rank of a
  torch.distributed job (gloo for CPU backends, NCCL for CUDA ones; ``--dist-engine``);
* ``simprec train --simulate-ranks N ...``: the same N-rank run computed in one process.

Both set the run's ``ranks`` to N; a resumed run keeps its number of ranks (either way: a run
trained by torchrun on 2 processes can be continued, bit for bit, with ``--simulate-ranks 2``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..train.errors import ConfigError
from .launch import launch_info

__all__ = ["DataParallelPlan", "add_arguments", "plan"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group(
        "data parallelism",
        "Under torchrun (torchrun --nproc_per_node N -m simprec train --out RUN ...) every "
        "process is one rank; each takes batch_size/N examples of every batch and the "
        "gradients are averaged as DistributedDataParallel averages them. Rank 0 writes the "
        "run directory; RUN/ranks/rank-R.jsonl holds each rank's throughput and communication "
        "wait.")
    group.add_argument("--simulate-ranks", type=int, default=None, metavar="N",
                       help="compute an N-rank data-parallel run in this one process, bit for "
                            "bit what N torchrun processes compute (for N = 2; see "
                            "docs/distributed.md for N > 2)")
    group.add_argument("--dist-engine", choices=("gloo", "nccl"), default=None,
                       help="torch.distributed engine under torchrun (default: nccl for a CUDA "
                            "backend, gloo otherwise)")
    group.add_argument("--bucket-cap-mb", type=float, default=25.0, metavar="MB",
                       help="gradients travel in buckets of about MB megabytes, the first one "
                            "at most 1 MB (DDP's bucket_cap_mb; default: 25)")
    group.add_argument("--dist-timeout", type=float, default=300.0, metavar="SECONDS",
                       help="a collective that waits longer fails and ends the job (default: "
                            "300)")


class DataParallelPlan:
    """What ``simprec train`` will do about ranks: ``simulate`` N or join a torchrun job."""

    def __init__(self, ranks: int, *, launched, engine, timeout, bucket_cap_mb=25.0):
        self.ranks, self.launched = ranks, launched
        self.engine, self.timeout = engine, timeout
        self.bucket_bytes = max(1, int(bucket_cap_mb * 1024 * 1024))

    @property
    def rank(self) -> int:
        return self.launched.rank if self.launched is not None else 0

    def check_resumed(self, config) -> None:
        if config.ranks != self.ranks:
            raise ConfigError(f"the run was trained on {config.ranks} rank(s); resume it on "
                              f"the same number (torchrun --nproc_per_node {config.ranks} or "
                              f"--simulate-ranks {config.ranks}), not {self.ranks}")

    def attach(self, trainer):
        """Build the strategy and attach it to ``trainer``; returns the strategy."""
        from .parallel import ProcessGroupRanks, SimulatedRanks, attach
        from .reducer import FIRST_BUCKET_BYTES

        if self.launched is None:
            strategy = SimulatedRanks(self.ranks)
        else:
            from .collectives import process_group

            group = process_group(trainer.config.backend, engine=self.engine,
                                  timeout=self.timeout)
            strategy = ProcessGroupRanks(
                group, first_bucket_bytes=min(FIRST_BUCKET_BYTES, self.bucket_bytes),
                bucket_bytes=self.bucket_bytes)
        try:
            attach(trainer, strategy)
        except BaseException:
            strategy.close()
            raise
        return strategy


def _backend_of(args, given: dict) -> str:
    """The backend the run will use: the option, or the resumed run's configuration."""
    if args.resume is None:
        return str(given.get("backend", "numpy"))
    import json

    try:
        run = Path(args.resume)
        run = run.parent.parent if run.suffix == ".npz" else run
        return str(json.loads((run / "config.json").read_text()).get("backend", "numpy"))
    except (OSError, ValueError, AttributeError):
        return "numpy"  # Trainer.resume reports a bad run directory


def _restarted() -> bool:
    """Whether torchrun restarted this worker (``--max-restarts``)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    except ValueError:
        return False


def plan(args: argparse.Namespace, given: dict) -> DataParallelPlan | None:
    """The data-parallel plan of a ``simprec train`` command line (None: one process, one
    rank). Sets ``given["ranks"]`` for a new run; raises ConfigError for contradictions."""
    launched = launch_info()
    simulate = getattr(args, "simulate_ranks", None)
    engine = getattr(args, "dist_engine", None)
    timeout = getattr(args, "dist_timeout", 300.0)
    if timeout is None or not timeout > 0:
        raise ConfigError(f"--dist-timeout must be positive, got {timeout}")
    bucket_cap_mb = getattr(args, "bucket_cap_mb", 25.0)
    if not bucket_cap_mb > 0:
        raise ConfigError(f"--bucket-cap-mb must be positive, got {bucket_cap_mb}")
    if launched is not None and simulate is not None:
        raise ConfigError("--simulate-ranks runs the ranks in one process; under torchrun "
                          "every process is already one rank (leave --simulate-ranks out)")
    if simulate is not None and simulate < 1:
        raise ConfigError(f"--simulate-ranks must be positive, got {simulate}")
    if engine is not None and launched is None:
        raise ConfigError("--dist-engine needs a torchrun job")
    if launched is None and simulate is None:
        return None
    if launched is not None and args.out is None and args.resume is None:
        raise ConfigError("under torchrun give --out RUN (or --resume RUN): every rank must "
                          "name the same run directory")
    if (launched is not None and args.resume is None and _restarted()
            and (Path(args.out) / "config.json").is_file()):
        args.resume, args.out = args.out, None  # torchrun restarted the job: continue the run
    ranks = simulate if simulate is not None else launched.world_size
    if args.resume is None:
        given["ranks"] = ranks
    if launched is not None:
        backend = _backend_of(args, given)
        if backend.startswith(("torch:cuda", "cupy")):  # before the model is built on a GPU
            from .collectives import select_device

            select_device(backend, launched.local_rank)
    return DataParallelPlan(ranks, launched=launched, engine=engine, timeout=timeout,
                            bucket_cap_mb=bucket_cap_mb)
