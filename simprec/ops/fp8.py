"""FP8 linear layers with per-tensor scaling, the GEMMs of Transformer Engine's fp8 recipe.

`FP8Linear` is `F.linear` as `te.Linear` computes it under `fp8_autocast` with the HYBRID format:
the input and the weight are scaled by their per-tensor scale factors and cast to e4m3, the
output gradient to e5m2 (TE's casts saturate: `__NV_SATFINITE`), each cast one fused
multiply-and-round; the GEMM runs on the fp8 values under the matmul accumulation model (every
fp8 value is an fp16 value, so the models take them as fp16 operands); the fp32 result is
multiplied by the product of the two inverse scales (cuBLASLt's A/B scale factors), the bias is
added in fp32, and the sum rounds once to the output format. The amax of every tensor it casts
is handed to `meta.record` for the delayed scaling (`simprec.amp.fp8`). Scales live on the
backend's device: no host synchronisation.
"""

from __future__ import annotations

from .. import _state
from ..autograd import Function
from ..formats import fp8_e4m3, fp8_e5m2, fp16, fp32
from ._util import reduce_sum

# TE casts with saturation to the finite range
E4M3 = fp8_e4m3.replace(overflow="saturate")
E5M2 = fp8_e5m2.replace(overflow="saturate")
GEMM_FORMAT = fp16  # the format the accumulation models read fp8 values in (exactly)


def quantize(be, meta, role: str, x, fmt):
    """x * scale[role] rounded once into `fmt`; records amax(|x|) while training."""
    if _state.grad_enabled.get():
        meta.record(role, be.max(be.elementwise("abs", x), None, False))
    return be.elementwise("mul", x, meta.scale[role], fmt=fmt)


class FP8Linear(Function):
    """x @ wᵀ + b through fp8 casts (see the module docstring); `meta` holds the scales."""

    def forward(self, x, w, *bias, meta, accumulate, out_fmt, fwd_fmt=E4M3, bwd_fmt=E5M2):
        be = self.backend
        self.meta, self.accumulate, self.bwd_fmt = meta, accumulate, bwd_fmt
        self.has_bias = bool(bias)
        self.in_shape = self.inputs[0].shape
        n_out = self.inputs[1].shape[0]
        self.qx = quantize(be, meta, "x", be.reshape(x, (-1, self.in_shape[-1])), fwd_fmt)
        self.qw = quantize(be, meta, "w", w, fwd_fmt)
        acc = be.matmul(self.qx, be.transpose(self.qw, (1, 0)), fmt=GEMM_FORMAT,
                        accumulate=accumulate, out_fmt=fp32)
        wide = be.elementwise("mul", acc, be.elementwise("mul", meta.scale_inv["x"],
                                                         meta.scale_inv["w"]))
        if bias:
            wide = be.elementwise("add", wide, bias[0])
        wide = be.reshape(wide, self.in_shape[:-1] + (n_out,))
        return self.finish(wide, out_fmt, owned=True), out_fmt

    def backward(self, g):
        be, meta = self.backend, self.meta
        g2 = be.reshape(g, (-1, self.inputs[1].shape[0]))
        qg = quantize(be, meta, "dy", g2, self.bwd_fmt)
        grads = [None, None, None]
        if self.needs_input_grad[0]:
            acc = be.matmul(qg, self.qw, fmt=GEMM_FORMAT, accumulate=self.accumulate,
                            out_fmt=fp32)
            wide = be.elementwise("mul", acc, be.elementwise("mul", meta.scale_inv["dy"],
                                                             meta.scale_inv["w"]))
            grads[0] = self.grad_for(0, be.reshape(wide, self.in_shape), owned=True)
        if self.needs_input_grad[1]:
            acc = be.matmul(be.transpose(qg, (1, 0)), self.qx, fmt=GEMM_FORMAT,
                            accumulate=self.accumulate, out_fmt=fp32)
            wide = be.elementwise("mul", acc, be.elementwise("mul", meta.scale_inv["dy"],
                                                             meta.scale_inv["x"]))
            grads[1] = self.grad_for(1, wide, owned=True)
        if self.has_bias and self.needs_input_grad[2]:  # the unquantized gradient, summed
            grads[2] = self.grad_for(2, reduce_sum(be, g2, (0,), keepdims=False))
        return tuple(grads[: 3 if self.has_bias else 2])
