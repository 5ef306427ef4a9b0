"""Data-parallel training steps for the trainer: real ranks, or N ranks simulated in one process.

A strategy is attached to a :class:`~simprec.train.Trainer` (:func:`attach`) and runs its
steps. Both strategies compute the same numbers, step for step (for two ranks, bit for bit):

1. the trainer's global batch of B examples is dealt out, rank r taking every N-th example from
   the r-th (:func:`~simprec.distributed.sharding.shard`, DistributedSampler's order);
2. each rank runs the recipe's forward and the backward of its scaled loss on its B/N examples,
   with the same dropout generator state (every rank seeds it alike, as ranks of a torch job
   that call ``manual_seed(seed)`` do);
3. the gradients are averaged — scaled by 1/N in their format, then summed over the ranks
   (:mod:`~simprec.distributed.reducer`, :mod:`~simprec.distributed.simulate`);
4. every rank applies the recipe's update to identical gradients: the GradScaler finds the same
   infs, skips the same steps, keeps the same scale, so weights and optimizer state stay
   identical on all ranks without any further exchange (DDP does not all-reduce found_inf
   either);
5. the logged loss is the mean of the ranks' losses (float64: ``sum / N``), and a stop request
   (SIGINT/SIGTERM on any rank) is agreed on, so that all ranks stop after the same step.

Rank 0 alone writes the run directory (metrics, checkpoints, summary, all atomically as in a
single-process run); each rank of a real job appends its throughput and the share of its step
time spent waiting on communication to ``RUN/ranks/rank-R.jsonl``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..tensor import Tensor
from .consistency import check_ranks_agree
from .reducer import BUCKET_BYTES, FIRST_BUCKET_BYTES, GradientReducer
from .sharding import shard
from .simulate import combine_gradients, gather_rank_gradients

__all__ = ["DataParallel", "ProcessGroupRanks", "SimulatedRanks", "attach", "RANK_LOG_EVERY"]

RANK_LOG_EVERY = 10  # steps between two lines of a rank's log


def _param_names(model) -> dict:
    return {id(p): name for name, p in model.named_parameters()}


def _mean_loss(total: float, ranks: int) -> float:
    return float(np.float64(total) / np.float64(ranks))


class DataParallel:
    """What the trainer asks of a data-parallel strategy."""

    ranks: int = 1
    rank: int = 0
    devices: int = 1  # the devices a step's work is spread over (for the MFU of metrics)

    @property
    def writer(self) -> bool:
        """Whether this process writes the run directory (rank 0)."""
        return self.rank == 0

    def attach(self, trainer) -> None:
        if trainer.config.ranks != self.ranks:
            raise ValueError(f"the run is configured for {trainer.config.ranks} rank(s), the "
                             f"strategy has {self.ranks}")

    def run_dir_ready(self, trainer) -> None:
        """Called by every rank once rank 0 has created (or, resuming, cleaned) the run dir."""

    def train_step(self, trainer, loss_fn, batch):
        raise NotImplementedError

    def close(self) -> None:
        pass


class SimulatedRanks(DataParallel):
    """``ranks`` ranks computed one after another in this process (``--simulate-ranks N``)."""

    def __init__(self, ranks: int):
        if ranks < 1:
            raise ValueError(f"--simulate-ranks must be positive, got {ranks}")
        self.ranks = int(ranks)

    def attach(self, trainer) -> None:
        super().attach(trainer)
        self._params = [p for p in trainer.model.parameters() if p.requires_grad]
        self._names = _param_names(trainer.model)

    def train_step(self, trainer, loss_fn, batch):
        model, recipe, n = trainer.model, trainer.recipe, self.ranks
        rng = model.rng_state_dict()
        per_rank, total = [], np.float64(0.0)
        for rank in range(n):
            if rank:
                model.load_rng_state_dict(rng)  # every rank's generator starts alike
            loss, scale = recipe.forward_backward(model, loss_fn, shard(batch, rank, n))
            total += np.float64(loss.item())
            per_rank.append(gather_rank_gradients(self._params, self._names))
        for i, p in enumerate(self._params):
            be, fmt = p.backend, p.fmt
            p.grad = Tensor._make(combine_gradients(be, fmt, [g[i] for g in per_rank]), fmt, be)
        facts = recipe.update(trainer.optimizer)
        return loss, {"loss": _mean_loss(total, n), "scale": scale, **facts}


class ProcessGroupRanks(DataParallel):
    """This process as one rank of a job of ``collectives.world_size`` processes."""

    def __init__(self, collectives, *, first_bucket_bytes: int = FIRST_BUCKET_BYTES,
                 bucket_bytes: int = BUCKET_BYTES, log_every: int = RANK_LOG_EVERY):
        self.collectives = collectives
        self.rank, self.ranks = collectives.rank, collectives.world_size
        self.devices = self.ranks
        self._bucket_sizes = (first_bucket_bytes, bucket_bytes)
        self.log_every = int(log_every)
        self.reducer = None
        self._log = None
        self._window = _Window()

    def attach(self, trainer) -> None:
        super().attach(trainer)
        check_ranks_agree(trainer, self.collectives)
        first, cap = self._bucket_sizes
        self.reducer = GradientReducer(trainer.model.parameters(), self.collectives,
                                       first_bucket_bytes=first, bucket_bytes=cap,
                                       names=_param_names(trainer.model))

    def run_dir_ready(self, trainer) -> None:
        self.collectives.all_reduce_host(np.zeros(1))  # a barrier: rank 0 has made the run dir
        ranks_dir = Path(trainer.run_dir.path) / "ranks"
        ranks_dir.mkdir(exist_ok=True)
        self._log = open(ranks_dir / f"rank-{self.rank}.jsonl", "a", encoding="utf-8")
        self._batch_examples = trainer.config.batch_size // self.ranks

    def train_step(self, trainer, loss_fn, batch):
        recipe = trainer.recipe
        t0 = time.perf_counter()
        loss, scale = recipe.forward_backward(trainer.model, loss_fn,
                                              shard(batch, self.rank, self.ranks))
        local_loss = float(loss.item())
        self.reducer.finish()
        t1 = time.perf_counter()
        totals = self.collectives.all_reduce_host(
            np.array([local_loss, 1.0 if trainer._signalled else 0.0]))
        wait = self.reducer.wait_seconds + time.perf_counter() - t1
        trainer._stop_requested = bool(totals[1] > 0)
        facts = recipe.update(trainer.optimizer)
        self._window.add(time.perf_counter() - t0, wait)
        if self._log is not None and ((trainer.step + 1) % self.log_every == 0
                                      or trainer._stop_requested
                                      or trainer.step + 1 == trainer.config.steps):
            self._write_log(trainer.step + 1)
        return loss, {"loss": _mean_loss(totals[0], self.ranks), "scale": scale, **facts}

    def _write_log(self, step: int) -> None:
        w = self._window
        line = {"rank": self.rank, "step": step, "steps": w.steps,
                "step_seconds": round(w.seconds / w.steps, 6),
                "steps_per_second": round(w.steps / w.seconds, 3) if w.seconds else None,
                "examples_per_second": (round(w.steps * self._batch_examples / w.seconds, 1)
                                        if w.seconds else None),
                "comm_wait_seconds": round(w.wait, 6),
                "comm_wait_share": round(w.wait / w.seconds, 4) if w.seconds else None,
                "pid": os.getpid()}
        self._log.write(json.dumps(line) + "\n")
        self._log.flush()
        self._window = _Window()

    def close(self) -> None:
        if self.reducer is not None:
            self.reducer.remove()
        if self._log is not None:
            self._log.close()
        self.collectives.close()


class _Window:
    """Step and communication-wait times since a rank's last log line."""

    def __init__(self):
        self.steps, self.seconds, self.wait = 0, 0.0, 0.0

    def add(self, seconds: float, wait: float) -> None:
        self.steps += 1
        self.seconds += seconds
        self.wait += wait


def attach(trainer, strategy: DataParallel) -> None:
    """Make ``trainer`` run its steps with ``strategy`` (before ``trainer.run()``)."""
    strategy.attach(trainer)
    trainer.parallel = strategy
