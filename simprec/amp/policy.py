"""The autocast op table: which ops run in the half format, which in fp32, which promote.

One table, keyed by torch's aten op names (simprec's ops call `autocast(op_name, *tensors)` with
these names). Source of truth: the CUDA registration in aten/src/ATen/autocast_mode.cpp
(`TORCH_LIBRARY_IMPL(aten, Autocast, m)`) expanding the lists of aten/src/ATen/autocast_mode.h
(`AT_FORALL_LOWER_PRECISION_FP`, `AT_FORALL_FP32`, `AT_FORALL_FP32_SET_OPT_DTYPE`,
`AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE`, `AT_FORALL_PROMOTE`); see docs/amp.md and
shared/notes/torch-amp.md §1.2.
An op not in the table is not autocast: it runs in the format of its inputs (binary ops promote
by themselves: fp16 with fp32 gives fp32).
"""

from __future__ import annotations

__all__ = ["LOWER", "FP32", "FP32_OUT", "PROMOTE", "BANNED", "TABLE", "POLICY_OF", "NATIVE_PROMOTE",
           "policy_of"]

LOWER = "lower"        # cast floating inputs to the autocast format (fp16 / bf16)
FP32 = "fp32"          # cast floating inputs to fp32
FP32_OUT = "fp32_out"  # torch sets the op's dtype= to fp32 (inputs read as they are, result fp32)
PROMOTE = "promote"    # cast floating inputs to the widest floating input format
BANNED = "banned"      # unsafe under autocast: an error

TABLE: dict[str, tuple[str, ...]] = {
    # AT_FORALL_LOWER_PRECISION_FP + cudnn_convolution(_transpose): GEMMs and convolutions.
    LOWER: (
        "_convolution", "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d",
        "conv_transpose2d", "conv_transpose3d", "convolution", "cudnn_convolution",
        "cudnn_convolution_transpose", "prelu", "addmm", "addmv", "addr", "matmul", "einsum", "mm",
        "mv", "linalg_vecdot", "linear", "addbmm", "baddbmm", "bmm", "chain_matmul",
        "linalg_multi_dot", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell", "lstm_cell",
        "gru_cell", "rnn_tanh_cell", "rnn_relu_cell", "_scaled_dot_product_flash_attention",
        "scaled_dot_product_attention",
    ),
    # AT_FORALL_FP32: ops whose range or accuracy needs fp32 (transcendentals, norms, losses).
    # cross_entropy has no entry: aten composes it as nll_loss(log_softmax(x, 1, dtype=x.dtype)),
    # so under fp16 autocast the log-probabilities are fp16 and only nll_loss runs in fp32.
    FP32: (
        "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p",
        "reciprocal", "rsqrt", "sinh", "tan", "pow", "softplus", "layer_norm", "native_layer_norm",
        "group_norm", "frobenius_norm", "nuclear_norm", "cosine_similarity", "poisson_nll_loss",
        "cosine_embedding_loss", "nll_loss", "nll_loss2d", "hinge_embedding_loss", "kl_div",
        "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss", "margin_ranking_loss",
        "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss",
        "binary_cross_entropy_with_logits", "dist", "pdist", "cdist", "renorm", "logsumexp",
        "upsample_nearest1d", "_upsample_nearest_exact1d", "upsample_nearest2d",
        "_upsample_nearest_exact2d", "upsample_nearest3d", "_upsample_nearest_exact3d",
        "upsample_linear1d", "upsample_bilinear2d", "_upsample_bilinear2d_aa",
        "upsample_trilinear3d", "upsample_bicubic2d", "_upsample_bicubic2d_aa",
    ),
    # AT_FORALL_FP32_SET_OPT_DTYPE (+ AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE: norm): torch
    # passes dtype=float32 when the caller gave none, so the result is fp32. Each such kernel
    # computes in fp32 from exactly-converted inputs, so simprec casts the input to fp32: the same
    # numbers forward, and one rounding back to the input format in backward (the cast's backward).
    FP32_OUT: (
        "prod", "softmax", "log_softmax", "cumprod", "cumsum", "linalg_vector_norm",
        "linalg_matrix_norm", "sum", "norm",
    ),
    # AT_FORALL_PROMOTE (CUDA), plus cat / stack / index_copy / where: these promote natively on
    # CUDA and are autocast "promote" ops on CPU; the result is the widest input either way.
    PROMOTE: (
        "addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler",
        "index_put", "tensordot", "scatter_add", "cat", "stack", "index_copy", "where",
    ),
    # autocast_mode.cpp: m.impl("aten::binary_cross_entropy", binary_cross_entropy_banned)
    BANNED: ("binary_cross_entropy",),
}

POLICY_OF: dict[str, str] = {op: policy for policy, ops in TABLE.items() for op in ops}

# PROMOTE ops that CUDA promotes natively rather than through autocast: fp16 with bf16 gives
# fp32 there, where autocast's own promote wrapper raises "Unexpected floating ScalarType".
NATIVE_PROMOTE = frozenset({"cat", "stack", "index_copy", "where"})

BANNED_MESSAGE = (
    "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast.\n"
    "Many models use a sigmoid layer right before the binary cross entropy layer.\n"
    "In this case, combine the two layers using "
    "torch.nn.functional.binary_cross_entropy_with_logits\n"
    "or torch.nn.BCEWithLogitsLoss.  binary_cross_entropy_with_logits and BCEWithLogits are\n"
    "safe to autocast.")


def policy_of(op: str) -> str | None:
    """The autocast policy of aten op `op` (None: not autocast, runs in its inputs' format)."""
    return POLICY_OF.get(op)
