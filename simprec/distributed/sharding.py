"""Each rank's share of a global batch: every ranks-th example, as DistributedSampler deals.

torch's ``DistributedSampler`` gives rank r the indices ``r, r + N, r + 2N, ...`` of the epoch's
order, and each rank's DataLoader batches them: the k-th local batch of rank r holds the
examples ``k*B + r + N*j`` (B the global batch, j < B/N) — the strided slice ``[r::N]`` of the
k-th global batch. Every rank draws the same global batch from the same seeded stream and keeps
its slice, so the data order is the single-process run's, and a resume needs no per-rank state.
"""

from __future__ import annotations

from ..tensor import Tensor

__all__ = ["shard"]


def shard(batch, rank: int, ranks: int):
    """Rank ``rank``'s examples (first dimension, strided) of each tensor of ``batch``."""
    if ranks == 1:
        return batch

    def take(t: Tensor) -> Tensor:
        n = t.shape[0]
        if n <= rank:
            raise ValueError(f"a batch of {n} examples leaves rank {rank} of {ranks} none; "
                             "use a batch size of at least the number of ranks")
        data = t.backend.getitem(t.data, slice(rank, None, ranks))
        return Tensor._make(data, t.fmt, t.backend)

    return tuple(take(t) for t in batch)
