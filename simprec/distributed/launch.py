"""Who this process is in a data-parallel job: the variables ``torchrun`` sets.

``torchrun --nproc_per_node N -m simprec train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment (as
does any launcher that sets them: SLURM scripts, the tests' own).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["LaunchInfo", "launch_info"]


@dataclass(frozen=True)
class LaunchInfo:
    rank: int
    world_size: int
    local_rank: int


def launch_info(environ=None) -> LaunchInfo | None:
    """The rank, world size and local rank set by the launcher; None when the process was not
    started as one rank of a job (no ``WORLD_SIZE`` in the environment)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun)") \
            from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK {rank} is not a rank of WORLD_SIZE {world}")
    return LaunchInfo(rank, world, local)
