"""scaled_dot_product_attention as torch's math backend composes it, from simprec's own ops."""

from __future__ import annotations

import math

import numpy as np

from .. import _state
from ..tensor import Tensor, bool_
from ._util import autocast, float_input
from .dropout import dropout
from .elementwise import add, masked_fill, mul
from .linalg import matmul
from .nn_ops import softmax


def scaled_dot_product_attention(
    query,
    key,
    value,
    attn_mask=None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale=None,
    enable_gqa: bool = False,
    *,
    generator=None,
) -> Tensor:
    """softmax(q k^T * scale + mask) v, composed like torch's `_scaled_dot_product_attention_math`.

    Precision: under autocast the three inputs are cast to the half format ("scaled_dot_product
    _attention" is on the lower-precision list) and the internal ops are not autocast again, as in
    torch. Then, each op rounding in the inputs' format: q and k are each multiplied by
    float32(sqrt(scale)) (scale = 1/sqrt(E) by default; torch scales both before the matmul, for
    range), `attn = q @ k^T` through the matmul accumulation model, a bool mask (True = take part;
    `is_causal`: lower-triangular) sets masked scores to -inf and a float mask is added, softmax
    along the last dim (fp32 inside, one rounding), dropout with `dropout_p` (mask from
    `generator`), then `attn @ v`. This is the reduced-precision math path (torch >= 2.5 upcasts
    fp16/bf16 to fp32 there unless `allow_fp16_bf16_reduction_math_sdp(True)`); the GPU's flash and
    memory-efficient kernels keep scores in fp32 with an online softmax and are not modelled
    bit-exactly.
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        float_input("scaled_dot_product_attention", t)
        if t.ndim < 2:
            raise ValueError(
                f"scaled_dot_product_attention: {name} must have at least 2 dims, "
                f"got shape {t.shape}"
            )
    if enable_gqa:
        raise NotImplementedError("scaled_dot_product_attention: enable_gqa is not modelled")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"scaled_dot_product_attention: query {query.shape}, key {key.shape} and "
            f"value {value.shape} do not line up (E of query and key, S of key and value)"
        )
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal, not both")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(
            f"scaled_dot_product_attention: dropout_p must be in [0, 1], got {dropout_p}"
        )
    query, key, value = autocast("scaled_dot_product_attention", query, key, value)
    if query.fmt != key.fmt or query.fmt != value.fmt:
        raise TypeError(
            f"scaled_dot_product_attention: query, key and value must have one format, "
            f"got {query.fmt.name}, {key.fmt.name} and {value.fmt.name}"
        )
    token = _state.autocast.set(None)  # torch runs the composite with autocast excluded
    try:
        s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
        factor = math.sqrt(abs(s))
        q = mul(query, -factor if s < 0 else factor)
        attn = matmul(q, mul(key.transpose(-2, -1), factor))
        length, source = query.shape[-2], key.shape[-2]
        if is_causal:
            keep = Tensor._from_data(
                np.tril(np.ones((length, source), dtype=bool)), bool_, query.backend
            )
            attn = masked_fill(attn, _logical_not(keep), float("-inf"))
        elif attn_mask is not None:
            if attn_mask.fmt == bool_:
                attn = masked_fill(attn, _logical_not(attn_mask), float("-inf"))
            else:
                attn = add(attn, attn_mask)
        attn = softmax(attn, dim=-1)
        if dropout_p > 0.0:
            attn = dropout(attn, dropout_p, True, generator=generator)
        return matmul(attn, value)
    finally:
        _state.autocast.reset(token)


def _logical_not(mask: Tensor) -> Tensor:
    return Tensor._make(mask.backend.elementwise("eq", mask.data, False), bool_, mask.backend)
