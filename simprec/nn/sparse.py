"""Embedding: a lookup table of vectors, indexed by int64 token ids."""

from __future__ import annotations

from .. import ops
from ..formats import fp32
from . import init
from ._layers_util import float_format, new_parameter, positive_int
from .module import Module

__all__ = ["Embedding"]


class Embedding(Module):
    """`Embedding(num_embeddings, embedding_dim)`: weight (num, dim), init N(0, 1) (torch's).

    `forward(ids)` takes an int64 Tensor of any shape and returns shape + (dim,); the backward
    sums repeated ids' gradients in fp32 and rounds once.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, fmt=fp32, generator=None):
        super().__init__()
        self.num_embeddings = positive_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = positive_int("Embedding", "embedding_dim", embedding_dim)
        fmt = float_format("Embedding", fmt)
        self.weight = new_parameter((self.num_embeddings, self.embedding_dim), fmt)
        init.normal_(self.weight, 0.0, 1.0, generator=init.get_generator(generator))

    def forward(self, ids):
        return ops.embedding(ids, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"
