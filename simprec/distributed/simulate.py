"""N ranks in one process: each shard's gradients computed apart, then combined as the
collective combines them.

A rank's gradient is first scaled by ``1/N`` in its own format (as DDP does, see
:mod:`simprec.distributed.reducer`); the scaled gradients are then summed element by element in
rank order, each partial sum rounded to the gradient's format: ``((g0 + g1) + g2) + ...``.

* **Two ranks**: the sum is one addition, rounded once in the gradient's format, whatever the
  engine (gloo adds fp16/bf16 in fp32 and rounds, NCCL rounds each addition; fp32 + fp32 is
  IEEE): a 2-rank run and its simulation agree bit for bit, which the tests check.
* **More ranks**: gloo's and NCCL's ring (or tree) algorithms add in an order that depends on
  the element's position (the ring's chunks) and on the engine's tuning, so this rank-order
  fold is a model, not a replay. The difference is bounded by the usual bound of recursive
  summation: for each element, ``|fold - exact| <= (N - 1) u sum_r |g_r / N|`` for any order,
  with u the format's unit roundoff (2^-11 for fp16, 2^-24 for fp32), so two orders differ by
  at most twice that (docs/distributed.md).
"""

from __future__ import annotations

from .reducer import missing_gradients_error, scale_for_average

__all__ = ["combine_gradients"]


def combine_gradients(backend, fmt, per_rank: list):
    """The average over the ranks of ``per_rank`` (one gradient array per rank, exact in
    ``fmt``), as a data-parallel step computes it (see the module docstring)."""
    n = len(per_rank)
    scaled = [scale_for_average(backend, g, fmt, n) for g in per_rank]
    total = scaled[0]
    for s in scaled[1:]:
        total = backend.elementwise("add", total, s, fmt=fmt)
    return total


def gather_rank_gradients(params, names) -> list:
    """The ``.grad`` arrays of ``params`` after one rank's backward; ``.grad`` is cleared for
    the next rank. Every parameter must have one."""
    missing = [names.get(id(p), f"parameter {i}") for i, p in enumerate(params) if p.grad is None]
    if missing:
        raise missing_gradients_error(missing, "in a simulated rank's backward")
    grads = [p.grad.data for p in params]
    for p in params:
        p.grad = None
    return grads
