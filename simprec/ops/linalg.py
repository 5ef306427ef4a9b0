"""matmul and linear: GEMMs through the accumulation model (simprec.accumulate).

The backward GEMMs (grad @ Bᵀ, Aᵀ @ grad) run through the same model and round to the same
format, as the GPU's backward GEMMs do on tensor cores.
"""

from __future__ import annotations

from .. import _state, hooks
from ..autograd import Function
from ..formats import bf16, fp16, fp32, promote
from ..tensor import Tensor
from ._util import (
    accumulate_model,
    autocast,
    broadcast_shape,
    float_input,
    promoted_format,
    reduce_sum,
    reduce_to_shape,
)
from .movement import reshape


def _gemm_out(fmt):
    """The format a GEMM writes: fp32 while observers watch (they see the accumulator before its
    rounding), else `fmt` itself: the one rounding happens in the GEMM's epilogue (a half-output
    GEMM on the GPU, no fp32 output and separate cast)."""
    return fmt if fmt in (fp16, bf16) and not hooks.observers else fp32


def _swap_last(be, x):
    nd = len(be.shape(x))
    axes = tuple(range(nd - 2)) + (nd - 1, nd - 2)
    return be.transpose(x, axes)


class Matmul(Function):
    """a @ b for a (…,M,K), b (…,K,N); 1-D operands are promoted and squeezed like torch."""

    def forward(self, a, b, accumulate):
        fa, fb = self.inputs[0].fmt, self.inputs[1].fmt
        self.fmt = promote(fa, fb)
        be = self.backend
        a, b = (
            be.round(a, self.fmt) if fa != self.fmt else a,
            be.round(b, self.fmt) if fb != self.fmt else b,
        )
        self.a, self.b, self.accumulate = a, b, accumulate
        out = be.matmul(a, b, fmt=self.fmt, accumulate=accumulate, out_fmt=_gemm_out(self.fmt))
        return self.finish(out, self.fmt, owned=True), self.fmt

    def backward(self, g):
        be = self.backend
        grads = [None, None]
        if self.needs_input_grad[0]:
            ga = be.matmul(
                g, _swap_last(be, self.b), fmt=self.fmt, accumulate=self.accumulate,
                out_fmt=_gemm_out(self.fmt)
            )
            grads[0] = self.grad_for(0, self._reduce(ga, 0), owned=True)
        if self.needs_input_grad[1]:
            gb = be.matmul(
                _swap_last(be, self.a), g, fmt=self.fmt, accumulate=self.accumulate,
                out_fmt=_gemm_out(self.fmt)
            )
            grads[1] = self.grad_for(1, self._reduce(gb, 1), owned=True)
        return tuple(grads)

    def _reduce(self, grad, i):
        """Sum a batched GEMM gradient over broadcast batch dimensions (after its rounding)."""
        if tuple(self.backend.shape(grad)) == self.inputs[i].shape:
            return grad
        grad = self.backend.round(grad, self.fmt)
        return reduce_to_shape(self.backend, grad, self.inputs[i].shape, self.fmt)


class Linear(Function):
    """x @ wᵀ + b, the bias fused into the fp32 accumulator: one rounding (cuBLASLt epilogue)."""

    def forward(self, x, w, *bias, accumulate):
        self.fmt = promoted_format(self.inputs)
        be = self.backend
        self.has_bias, self.accumulate = bool(bias), accumulate
        self.in_shape = self.inputs[0].shape
        x2 = be.reshape(x, (-1, self.in_shape[-1]))
        self.x2, self.w = x2, w
        out = be.matmul(
            x2,
            be.transpose(w, (1, 0)),
            fmt=self.fmt,
            accumulate=accumulate,
            out_fmt=_gemm_out(self.fmt),
            bias=bias[0] if bias else None,
        )
        out = be.reshape(out, self.in_shape[:-1] + (self.inputs[1].shape[0],))
        return self.finish(out, self.fmt, owned=True), self.fmt

    def backward(self, g):
        be = self.backend
        g2 = be.reshape(g, (-1, self.inputs[1].shape[0]))
        grads = [None, None, None]
        if self.needs_input_grad[0]:
            gx = be.matmul(g2, self.w, fmt=self.fmt, accumulate=self.accumulate,
                           out_fmt=_gemm_out(self.fmt))
            grads[0] = self.grad_for(0, be.reshape(gx, self.in_shape), owned=True)
        if self.needs_input_grad[1]:
            gw = be.matmul(
                be.transpose(g2, (1, 0)),
                self.x2,
                fmt=self.fmt,
                accumulate=self.accumulate,
                out_fmt=_gemm_out(self.fmt),
            )
            grads[1] = self.grad_for(1, gw, owned=True)
        if self.has_bias and self.needs_input_grad[2]:  # torch: grad.sum(0) in the grad's format
            gb = be.round(reduce_sum(be, g2, (0,), keepdims=False), self.fmt)
            grads[2] = self.grad_for(2, gb)
        return tuple(grads[: 3 if self.has_bias else 2])


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b (torch.matmul semantics for 1-D and batched operands)."""
    float_input("matmul", a, b)
    a, b = autocast("matmul", a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: both operands need at least one dimension")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} do not line up "
            f"({a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]})"
        )
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = reshape(a, (1, a.shape[0]))
    if squeeze_b:
        b = reshape(b, (b.shape[0], 1))
    broadcast_shape("matmul", a.shape[:-2], b.shape[:-2])
    out = Matmul.apply(a, b, accumulate=accumulate_model())
    if squeeze_a:
        out = reshape(out, out.shape[:-2] + out.shape[-1:])
    if squeeze_b:
        out = reshape(out, out.shape[:-1])
    return out


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear: x @ weightᵀ + bias, bias fused before the one rounding."""
    float_input("linear", x, weight)
    fp8_region = _state.fp8.get()
    if fp8_region is not None:  # amp.fp8.fp8_autocast: the layer's GEMMs in fp8
        return fp8_region.linear(x, weight, bias)
    tensors = (x, weight) + ((bias,) if bias is not None else ())
    tensors = autocast("linear", *tensors)
    x, weight = tensors[0], tensors[1]
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input {x.shape} and weight {weight.shape} do not line up "
            f"(weight must be (out_features, {x.shape[-1] if x.ndim else '?'}))"
        )
    if bias is not None and tensors[2].shape != (weight.shape[0],):
        raise ValueError(f"linear: bias shape {tensors[2].shape} must be ({weight.shape[0]},)")
    return Linear.apply(*tensors, accumulate=accumulate_model())
