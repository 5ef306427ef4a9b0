"""Gradient all-reduce in buckets, started while backward still runs: DDP's Reducer for simprec.

simprec's autograd is its own, so data parallelism does what torch's
``DistributedDataParallel`` does (torch/csrc/distributed/c10d/reducer.cpp) rather than wrap it:

* **Buckets.** The parameters, in reverse order of ``model.parameters()`` (the order backward
  produces their gradients in a sequential network), are grouped by format into buckets: the
  first closes at 1 MiB, the next ones at 25 MiB (DDP's ``kDefaultFirstBucketBytes`` and
  ``bucket_cap_mb``).
* **Averaging.** When a parameter's gradient is accumulated (its post-accumulate-grad hook), it
  is multiplied by ``1/world_size`` in its own format — ``Reducer::mark_variable_ready_dense``
  without a communication hook: ``at::mul_out(bucket_view, grad, wrapped_scalar(1./div_factor))``,
  the scalar in fp32 opmath, the product rounded once to the gradient's dtype — *before* the sum,
  so an fp16 gradient can underflow there exactly as it does under DDP.
* **Overlap.** When every gradient of a bucket is in, and every earlier bucket has been started
  (DDP starts buckets in order, so that all ranks issue the same collectives), its sum over the
  ranks starts asynchronously while backward goes on; :meth:`GradientReducer.finish` waits for
  the rest and writes the sums back into ``.grad`` (DDP's ``finalize_backward``).
* **Format.** A bucket travels in its gradients' own dtype: fp16 for ``pure-fp16``, fp32 for the
  fp32 master gradients of ``amp-fp16`` (see :mod:`simprec.distributed.collectives`).

Every parameter must receive a gradient in every backward (DDP without
``find_unused_parameters``); one that does not is reported by name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..tensor import Tensor

__all__ = ["Bucket", "GradientReducer", "assign_buckets", "scale_for_average",
           "FIRST_BUCKET_BYTES", "BUCKET_BYTES"]

FIRST_BUCKET_BYTES = 1024 * 1024      # DDP's kDefaultFirstBucketBytes
BUCKET_BYTES = 25 * 1024 * 1024       # DDP's default bucket_cap_mb = 25


def scale_for_average(backend, grad_array, fmt, world_size: int):
    """``grad * float32(1/world_size)`` rounded once to ``fmt``: the division DDP applies to each
    gradient before the sum (reducer.cpp, ``mark_variable_ready_dense``)."""
    return backend.elementwise("mul_scalar", grad_array, fmt=fmt, scalar=1.0 / world_size)


@dataclass
class Bucket:
    """Parameters whose gradients travel together, in one format, in gradient-ready order."""

    index: int
    fmt: object
    backend: object
    params: list = field(default_factory=list)
    nbytes: int = 0


def assign_buckets(params, first_bytes: int = FIRST_BUCKET_BYTES,
                   cap_bytes: int = BUCKET_BYTES) -> list[Bucket]:
    """Group ``params`` (taken in reverse order) into buckets of one format and backend each,
    closing a bucket once it holds ``first_bytes`` (the first) or ``cap_bytes`` (later ones)."""
    buckets: list[Bucket] = []
    open_by_key: dict = {}
    for p in reversed(list(params)):
        key = (p.fmt, p.backend.name)
        bucket = open_by_key.get(key)
        if bucket is None:
            bucket = Bucket(len(buckets), p.fmt, p.backend)
            buckets.append(bucket)
            open_by_key[key] = bucket
        bucket.params.append(p)
        bucket.nbytes += p.size * p.fmt.bits // 8
        if bucket.nbytes >= (first_bytes if bucket.index == 0 else cap_bytes):
            del open_by_key[key]
    return buckets


def missing_gradients_error(names: list[str], where: str) -> RuntimeError:
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return RuntimeError(f"data parallelism: {len(names)} parameter(s) received no gradient "
                        f"{where} ({shown}); every parameter must take part in the loss (as "
                        "DDP requires without find_unused_parameters)")


class GradientReducer:
    """Hooks on ``params`` that average their gradients over the ranks of ``collectives``.

    After each backward call :meth:`finish`; :attr:`wait_seconds` is then the time it spent
    waiting for communication that backward did not hide. :meth:`remove` takes the hooks off.
    """

    def __init__(self, params, collectives, *, first_bucket_bytes: int = FIRST_BUCKET_BYTES,
                 bucket_bytes: int = BUCKET_BYTES, names=None):
        self.params = [p for p in params if p.requires_grad]
        self.collectives = collectives
        self.world_size = collectives.world_size
        self.buckets = assign_buckets(self.params, first_bucket_bytes, bucket_bytes)
        self._bucket_of = {id(p): b for b in self.buckets for p in b.params}
        self._names = dict(names or {})
        self._handles = [p.register_post_accumulate_grad_hook(self._grad_ready)
                         for p in self.params]
        self.wait_seconds = 0.0
        self._reset()

    def _reset(self) -> None:
        self._ready: list[dict] = [{} for _ in self.buckets]
        self._works: list = []
        self._next = 0  # the next bucket to start

    def _grad_ready(self, param) -> None:
        bucket = self._bucket_of[id(param)]
        if bucket.index < self._next:
            raise RuntimeError("data parallelism: a gradient arrived twice in one backward "
                               "(backward called again before finish())")
        self._ready[bucket.index][id(param)] = scale_for_average(
            bucket.backend, param.grad.data, bucket.fmt, self.world_size)
        while (self._next < len(self.buckets)
               and len(self._ready[self._next]) == len(self.buckets[self._next].params)):
            self._start(self.buckets[self._next])
            self._next += 1

    def _start(self, bucket: Bucket) -> None:
        ready = self._ready[bucket.index]
        arrays = [ready.pop(id(p)) for p in bucket.params]
        self._works.append(self.collectives.all_reduce_async(bucket.backend, bucket.fmt, arrays))

    def finish(self) -> None:
        """Wait for every bucket's sum and put the averaged gradients into ``.grad``."""
        try:
            if self._next < len(self.buckets):
                missing = [self._names.get(id(p), f"parameter {i}")
                           for i, p in enumerate(self.params) if p.grad is None]
                raise missing_gradients_error(missing or ["?"], "in this backward")
            t0 = time.perf_counter()
            results = [work.wait() for work in self._works]
            self.wait_seconds = time.perf_counter() - t0
            for bucket, sums in zip(self.buckets, results, strict=True):
                be, fmt = bucket.backend, bucket.fmt
                for p, total in zip(bucket.params, sums, strict=True):
                    p.grad = Tensor._make(be.round(total, fmt), fmt, be)
        finally:
            self._reset()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
