"""MultiheadAttention (self-attention) over scaled_dot_product_attention."""

from __future__ import annotations

from .. import ops
from ..formats import fp32
from . import init
from ._layers_util import RandomStateMixin, float_format, new_parameter, positive_int
from .linear import Linear
from .module import Module

__all__ = ["MultiheadAttention"]


class MultiheadAttention(RandomStateMixin, Module):
    """Multi-head self-attention with torch's parameters and init.

    `MultiheadAttention(embed_dim, num_heads, dropout=0.0, bias=True, batch_first=True)`.
    Parameters, named as torch's: `in_proj_weight` (3E, E) (rows: q, k, v projections),
    `in_proj_bias` (3E), `out_proj.weight`, `out_proj.bias`. Init as torch's
    `_reset_parameters`: in_proj_weight xavier_uniform, both biases zero, out_proj.weight
    Linear's default.

    Differences from torch: self-attention only; `forward(x, causal=False)` returns the output
    tensor alone (torch returns `(output, weights)`; the fused attention never materialises the
    weights, like torch with need_weights=False); `batch_first` defaults to True. `dropout` is
    applied to the attention probabilities in training mode, from the layer's own Generator.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = True, *, fmt=fp32, generator=None):
        super().__init__()
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
        extra = {"generator": self.generator} if p > 0 else {}
        out = ops.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal, **extra)
        out = self.out_proj(out.transpose(1, 2).reshape(b, t, e))          # (B, T, E)
        if unbatched:
            return out.reshape(t, e)
        return out if self.batch_first else out.transpose(0, 1)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
                f"batch_first={self.batch_first}")
