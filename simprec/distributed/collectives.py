"""The collectives data parallelism needs, as a small interface, and where its engine is found.

simprec's core imports no GPU library, so the engine that moves gradients between processes,
torch.distributed (gloo between CPUs, NCCL between GPUs), lives beside the GPU backends, in the
plugin package ``backends/simprec_torchdist``; :func:`process_group` imports it by name (from a
plain checkout as well). The data-parallel layer above calls only this interface:

* ``all_reduce_async(backend, fmt, arrays)``: the element-wise sum over the ranks of a *bucket*
  of gradients (arrays of ``backend`` with values exact in ``fmt``), communicated in ``fmt``'s
  own dtype where the engine has one (fp16, bf16, fp32), started now and finished by the
  returned :class:`Work`'s ``wait()``, which gives the sums back as fp32 arrays of ``backend``.
* ``all_reduce_host(values)``: a blocking float64 sum of a few host numbers (the loss, the stop
  flag).
* ``all_gather_host(array)``: every rank's copy of a small uint8 host array (fingerprints).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod

import numpy as np

from ..train.errors import TrainError

__all__ = ["CollectiveError", "Collectives", "Work", "process_group", "select_device"]

PLUGIN = "simprec_torchdist"


class CollectiveError(TrainError):
    """A collective failed: another rank died (its connection closed) or did not answer within
    the timeout. The job cannot go on; the last checkpoint is intact."""


class Work(ABC):
    """A collective in flight: ``wait()`` blocks until it is done and returns its arrays."""

    @abstractmethod
    def wait(self) -> list: ...


class Collectives(ABC):
    """One process's handle on a group of ``world_size`` ranks (this one is ``rank``)."""

    rank: int = 0
    world_size: int = 1
    name: str = "abstract"

    @abstractmethod
    def all_reduce_async(self, backend, fmt, arrays: list) -> Work:
        """Start the sum over the ranks of each array of the bucket ``arrays`` (see above)."""

    @abstractmethod
    def all_reduce_host(self, values: np.ndarray) -> np.ndarray:
        """The float64 sum over the ranks of ``values`` (a small host array); blocking."""

    @abstractmethod
    def all_gather_host(self, array: np.ndarray) -> list[np.ndarray]:
        """Every rank's ``array`` (uint8, the same shape on every rank), in rank order."""

    @abstractmethod
    def close(self) -> None:
        """Leave the group (the process group is destroyed)."""


def _import_plugin():
    try:
        return importlib.import_module(PLUGIN)
    except ImportError:
        import pathlib
        import sys

        plugins = pathlib.Path(__file__).resolve().parents[2] / "backends"
        if plugins.is_dir() and str(plugins) not in sys.path:
            sys.path.append(str(plugins))
        return importlib.import_module(PLUGIN)


def select_device(backend_name: str, local_rank: int) -> None:
    """Make GPU ``local_rank % number of GPUs`` this process's current device for ``backend_name``
    (before the model is built): each rank of a node on its own GPU, or several on one."""
    plugin = _import_plugin()
    plugin.select_device(backend_name, local_rank)


def process_group(backend_name: str, *, engine: str | None = None,
                  timeout: float = 300.0) -> Collectives:
    """Join the job ``torchrun`` started (its ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` variables)
    with torch.distributed: ``engine`` "gloo" or "nccl" (default: NCCL for a CUDA backend,
    gloo otherwise); a collective that waits longer than ``timeout`` seconds fails."""
    try:
        plugin = _import_plugin()
    except ImportError as err:
        raise RuntimeError(f"data parallelism needs torch.distributed (the {PLUGIN} plugin "
                           f"and torch): {err}") from None
    return plugin.TorchDistCollectives(backend_name, engine=engine, timeout=timeout)
