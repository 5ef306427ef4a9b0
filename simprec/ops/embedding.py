"""embedding: rows of a weight matrix gathered by integer ids."""

from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..formats import int64
from ..tensor import Tensor, common_backend
from ._util import autocast, float_input


class Embedding(Function):
    """weight[idx]: an exact gather in the weight's format.

    Backward (torch's CUDA embedding_dense_backward, `backend.embedding_backward`): the gradient
    rows of equal ids summed in the order of torch's kernels (backend/_embedding.py); rows never
    looked up get 0, and so does `padding_idx`. The ids stay on the backend.
    """

    def forward(self, weight, idx, padding_idx, scale_grad_by_freq=False):
        be = self.backend
        self.idx, self.padding_idx = idx, padding_idx
        self.scale_grad_by_freq = scale_grad_by_freq
        return be.take(weight, idx, axis=0), self.inputs[0].fmt

    def backward(self, g):
        weight = self.inputs[0]
        grad = self.backend.embedding_backward(g, self.idx, weight.shape[0], self.padding_idx,
                                               weight.fmt, self.scale_grad_by_freq)
        return (self.grad_for(0, grad, exact=True), None)


def embedding(
    input,  # noqa: A002
    weight,
    padding_idx=None,
    max_norm=None,
    norm_type=2.0,
    scale_grad_by_freq=False,
    sparse=False,
) -> Tensor:
    """F.embedding(input, weight): rows `weight[input]`, shape input.shape + (D,)."""
    if not isinstance(input, Tensor) or input.fmt != int64:
        raise TypeError("embedding: input must be an int64 Tensor of ids")
    float_input("embedding", weight)
    common_backend([input, weight], "embedding")
    if max_norm is not None or sparse:
        raise NotImplementedError("embedding: max_norm and sparse are not modelled")
    if weight.ndim != 2:
        raise ValueError(
            f"embedding: weight must be (num_embeddings, dim), got shape {weight.shape}"
        )
    rows = weight.shape[0]
    if padding_idx is not None:
        if not -rows <= padding_idx < rows:
            raise ValueError(
                f"embedding: padding_idx {padding_idx} is out of range for {rows} rows"
            )
        padding_idx %= rows
    if input.backend.host_memory:  # on a device, as in torch, a bad id is the kernel's error
        ids = np.asarray(input.backend.to_numpy(input.data))
        if ids.size and (ids.min() < 0 or ids.max() >= rows):
            raise IndexError(f"embedding: ids must be in [0, {rows}); "
                             f"got {ids.min()}..{ids.max()}")
    (weight,) = autocast("embedding", weight)
    return Embedding.apply(weight, input, padding_idx=padding_idx,
                           scale_grad_by_freq=bool(scale_grad_by_freq))
