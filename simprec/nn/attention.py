"""MultiheadAttention (self-attention) over scaled_dot_product_attention, or written out by hand
as nanoGPT's "manual implementation of attention" does (`attention="manual"`)."""

from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..formats import fp32
from ..tensor import Tensor, bool_
from . import init
from ._layers_util import RandomStateMixin, float_format, new_parameter, positive_int
from .linear import Linear
from .module import Module

__all__ = ["ATTENTION_KERNELS", "MultiheadAttention", "manual_attention"]

ATTENTION_KERNELS = ("sdpa", "manual")


def manual_attention(q, k, v, causal: bool):
    """softmax(q kᵀ / sqrt(D)) v written out as a torch user (nanoGPT's manual path) writes it:
    `att = (q @ k.transpose(-2, -1)) * (1 / sqrt(D))`, `att.masked_fill(upper, -inf)`,
    `F.softmax(att, dim=-1)`, `att @ v`, each op under the ambient autocast. Under fp16/bf16
    autocast softmax is on autocast's fp32-output list, so the probabilities are fp32 and the
    second matmul rounds them into the half format; their backward (softmax_backward in fp32
    against the fp32 output, then the gradient cast back) differs from the sdpa composite's,
    where every op rounds in the half format."""
    t = q.shape[-2]
    att = ops.mul(ops.matmul(q, k.transpose(-2, -1)), 1.0 / math.sqrt(q.shape[-1]))
    if causal:
        upper = Tensor._from_data(np.triu(np.ones((t, k.shape[-2]), dtype=bool), 1), bool_,
                                  q.backend)
        att = ops.masked_fill(att, upper, float("-inf"))
    return ops.matmul(ops.softmax(att, dim=-1), v)


class MultiheadAttention(RandomStateMixin, Module):
    """Multi-head self-attention with torch's parameters and init.

    `MultiheadAttention(embed_dim, num_heads, dropout=0.0, bias=True, batch_first=True)`.
    Parameters, named as torch's: `in_proj_weight` (3E, E) (rows: q, k, v projections),
    `in_proj_bias` (3E), `out_proj.weight`, `out_proj.bias`. Init as torch's
    `_reset_parameters`: in_proj_weight xavier_uniform, both biases zero, out_proj.weight
    Linear's default.

    `attention`: "sdpa" (default; torch's `scaled_dot_product_attention` math composite) or
    "manual" (`manual_attention`: the hand-written attention of nanoGPT-style torch code, no
    dropout on the probabilities).

    Differences from torch: self-attention only; `forward(x, causal=False)` returns the output
    tensor alone (torch returns `(output, weights)`; the fused attention never materialises the
    weights, like torch with need_weights=False); `batch_first` defaults to True. `dropout` is
    applied to the attention probabilities in training mode, from the layer's own Generator.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = True, *, attention: str = "sdpa", fmt=fp32,
                 generator=None):
        super().__init__()
        if attention not in ATTENTION_KERNELS:
            raise ValueError(f"MultiheadAttention: attention must be one of "
                             f"{', '.join(ATTENTION_KERNELS)}, got {attention!r}")
        self.attention = attention
        self.embed_dim = positive_int("MultiheadAttention", "embed_dim", embed_dim)
        self.num_heads = positive_int("MultiheadAttention", "num_heads", num_heads)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be divisible by "
                             f"num_heads ({num_heads})")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"MultiheadAttention: dropout must be in [0, 1], got {dropout}")
        self.head_dim = self.embed_dim // self.num_heads
        self.dropout, self.batch_first = float(dropout), bool(batch_first)
        fmt = float_format("MultiheadAttention", fmt)
        gen = init.get_generator(generator)
        e = self.embed_dim
        self.in_proj_weight = new_parameter((3 * e, e), fmt)
        if bias:
            self.in_proj_bias = new_parameter((3 * e,), fmt)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(e, e, bias=bias, fmt=fmt, generator=gen)
        init.xavier_uniform_(self.in_proj_weight, generator=gen)
        if bias:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)
        self.generator = self._spawn(gen)

    def forward(self, x, causal: bool = False):
        """x (B, T, E) (or (T, B, E) with batch_first=False, or unbatched (T, E)) -> same shape.
        With `causal`, position t attends to positions <= t only."""
        unbatched = x.ndim == 2
        if unbatched:
            x = x.unsqueeze(0)
        elif x.ndim != 3:
            raise ValueError(f"MultiheadAttention: input must be (B, T, E) or (T, E), "
                             f"got {x.shape}")
        elif not self.batch_first:
            x = x.transpose(0, 1)
        b, t, e = x.shape
        if e != self.embed_dim:
            raise ValueError(f"MultiheadAttention: input has {e} features, "
                             f"expected {self.embed_dim}")
        h, d = self.num_heads, self.head_dim
        qkv = ops.linear(x, self.in_proj_weight, self.in_proj_bias)          # (B, T, 3E)
        qkv = qkv.reshape(b, t, 3, h, d).permute(2, 0, 3, 1, 4)             # (3, B, H, T, D)
        q, k, v = qkv[0], qkv[1], qkv[2]
        p = self.dropout if self.training else 0.0
        if self.attention == "manual":
            if p > 0:
                raise NotImplementedError("MultiheadAttention(attention='manual'): dropout on "
                                          "the attention probabilities is not modelled")
            out = manual_attention(q, k, v, causal)
        else:
            extra = {"generator": self.generator} if p > 0 else {}
            out = ops.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal,
                                                   **extra)
        out = self.out_proj(out.transpose(1, 2).reshape(b, t, e))          # (B, T, E)
        if unbatched:
            return out.reshape(t, e)
        return out if self.batch_first else out.transpose(0, 1)

    def extra_repr(self) -> str:
        extra = ", attention='manual'" if self.attention == "manual" else ""
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
                f"batch_first={self.batch_first}{extra}")
