"""SGD with momentum, dampening, weight decay and Nesterov, as torch computes it on CUDA.

Three paths, chosen like torch's (`foreach=`, `fused=`; torch's default for CUDA parameters is
foreach). torch/optim/sgd.py `_single_tensor_sgd` and `_multi_tensor_sgd` run the same kernels
(one per line below, fp32 opmath, rounded once into the parameter's format; the momentum
buffer has the parameter's format, as torch's clone of grad), so they agree bit for bit:

    g = -grad if maximize
    g = grad.add(param, alpha=weight_decay)            # if weight_decay != 0   fma(wd, p, g)
    buf = clone(g)  on the first step, else  buf.mul_(momentum).add_(g, alpha=1 - dampening)
    g = g.add(buf, alpha=momentum) if nesterov else buf                       fma(mom, buf, g)
    param.add_(g, alpha=-lr)                                                  fma(-lr, g, p)

`fused=True` (FusedSgdKernel.cu `sgd_math`) is one kernel per step: every intermediate stays
in an fp32 register (for fp16 parameters, g and the buffer are not rounded to fp16 before
they are used), the parameter and the buffer are rounded into their format when stored:

    g = -grad if maximize;  g = fma(wd, p, g)
    buf = g (first step) else fma(1 - dampening, g, momentum * buf)    (H200 captures: the
    g = fma(momentum, buf, g) if nesterov else buf                      second product fused)
    p = fma(-lr, g, p)
"""

from __future__ import annotations

from . import _kernels as K
from .optimizer import Optimizer, required

__all__ = ["SGD"]


class SGD(Optimizer):
    """`SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
    maximize=False, foreach=None, fused=None)`, torch's defaults; `foreach`/`fused` pick
    torch's CUDA path (see `resolve_path`)."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, foreach=None, fused=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach, fused=fused)
        super().__init__(params, defaults)

    def _check_group(self, group):
        lr = K.scalar_value(group["lr"])
        if lr is required or not isinstance(lr, (int, float)) or lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if group["momentum"] < 0.0:
            raise ValueError(f"Invalid momentum value: {group['momentum']}")
        if group["weight_decay"] < 0.0:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        K.resolve_path(group)

    def _update(self, p, group, state):
        if K.resolve_path(group) == "fused":
            return self._fused_update(p, group, state)
        be, fmt = p.backend, p.fmt
        lr, momentum = K.scalar_value(group["lr"]), group["momentum"]
        g = p.grad.data
        if group["maximize"]:
            g = be.elementwise("neg", g)
        if group["weight_decay"] != 0:
            g = be.round(K.add(be, g, p.data, group["weight_decay"]), fmt)
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = self._state_tensor(p, g)
            else:
                buf.data = be.round(K.mul_scalar(be, buf.data, momentum), fmt)
                buf.data = be.round(K.add(be, buf.data, g, 1 - group["dampening"]), fmt)
            state["momentum_buffer"] = buf
            g = be.round(K.add(be, g, buf.data, momentum), fmt) if group["nesterov"] else buf.data
        new = K.add(be, p.data, g, -lr)
        return new, K.mul_scalar(be, g, -lr)

    def _fused_update(self, p, group, state):
        """FusedSgdKernel.cu `sgd_math`: one kernel, every intermediate an fp32 register (the
        parameter and the buffer rounded into their format only when stored)."""
        be, fmt = p.backend, p.fmt
        lr, momentum = K.scalar_value(group["lr"]), group["momentum"]
        g = p.grad.data
        if group["maximize"]:
            g = be.elementwise("neg", g)
        if group["weight_decay"] != 0:
            g = K.fma(be, p.data, group["weight_decay"], g)  # g += weight_decay * p
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                mb = g
                buf = self._state_tensor(p, g)
            else:
                # momentum * buf + (1 - dampening) * g: nvcc fuses the second product
                mb = K.fma(be, g, 1 - group["dampening"], K.mul_scalar(be, buf.data, momentum))
                buf.data = be.round(mb, fmt)
            state["momentum_buffer"] = buf
            g = K.fma(be, mb, momentum, g) if group["nesterov"] else mb
        new = K.fma(be, g, -lr, p.data)  # p -= lr * g
        return new, K.mul_scalar(be, g, -lr)
