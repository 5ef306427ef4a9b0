"""`simprec.nn.functional` (import as `F`): the functional ops under torch's names.

Each is the op of `simprec.ops` itself (same precision rules: fp32 opmath, one rounding, the
autocast policy), so `F.gelu(x, approximate="tanh")`, `F.softmax(x, dim=-1)`,
`F.layer_norm(x, shape, w, b)` and `F.cross_entropy(logits, target)` read as in torch.
`F.dropout` takes its randomness from `generator=` (a NumPy Generator): simprec has no hidden
global random state.
"""

from __future__ import annotations

from ..ops import (
    avg_pool2d,
    conv2d,
    cross_entropy,
    dropout,
    embedding,
    gelu,
    layer_norm,
    linear,
    log_softmax,
    logsumexp,
    max_pool2d,
    mse_loss,
    nll_loss,
    pad,
    relu,
    scaled_dot_product_attention,
    sigmoid,
    silu,
    softmax,
    softplus,
    tanh,
)

__all__ = [
    "avg_pool2d", "conv2d", "cross_entropy", "dropout", "embedding", "gelu", "layer_norm",
    "linear", "log_softmax", "logsumexp", "max_pool2d", "mse_loss", "nll_loss", "pad", "relu",
    "scaled_dot_product_attention", "sigmoid", "silu", "softmax", "softplus", "tanh",
]
