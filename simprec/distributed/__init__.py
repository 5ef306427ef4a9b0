"""Data parallelism: a global batch dealt to N ranks, gradients averaged as DDP averages them.

    torchrun --nproc_per_node 2 -m simprec train --out runs/dp2 ...   # 2 processes (gloo/NCCL)
    simprec train --simulate-ranks 2 --out runs/dp2-sim ...           # the same run, 1 process

The modules, each with one job:

* :mod:`~simprec.distributed.launch` — the rank and world size torchrun sets;
* :mod:`~simprec.distributed.sharding` — each rank's examples of a global batch;
* :mod:`~simprec.distributed.reducer` — DDP's bucketed gradient all-reduce, started from
  backward's post-accumulate-grad hooks;
* :mod:`~simprec.distributed.simulate` — the same average computed from N shards in-process;
* :mod:`~simprec.distributed.collectives` — the interface to the engine (torch.distributed, in
  the ``backends/simprec_torchdist`` plugin: the core imports no GPU library);
* :mod:`~simprec.distributed.consistency` — refusing ranks started on different runs;
* :mod:`~simprec.distributed.parallel` — the trainer's data-parallel steps;
* :mod:`~simprec.distributed.command` — ``simprec train``'s options.

docs/distributed.md explains the arithmetic and what is bit-exact.
"""

from __future__ import annotations

from .launch import LaunchInfo, launch_info
from .parallel import DataParallel, ProcessGroupRanks, SimulatedRanks, attach
from .reducer import GradientReducer, assign_buckets
from .sharding import shard
from .simulate import combine_gradients

__all__ = [
    "DataParallel", "GradientReducer", "LaunchInfo", "ProcessGroupRanks", "SimulatedRanks",
    "assign_buckets", "attach", "combine_gradients", "launch_info", "shard",
]
