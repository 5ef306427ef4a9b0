"""SGD with momentum, dampening, weight decay and Nesterov: torch's `_single_tensor_sgd`.

torch/optim/sgd.py, per parameter (each line one torch kernel, fp32 opmath, rounded once into the
parameter's format; the momentum buffer has the parameter's format, as torch's clone of grad):

    g = grad.add(param, alpha=weight_decay)            # if weight_decay != 0   (fma)
    buf = clone(g)  on the first step, else  buf.mul_(momentum).add_(g, alpha=1 - dampening)
    g = g.add(buf, alpha=momentum) if nesterov else buf                         (fma)
    param.add_(g, alpha=-lr)                                                    (fma)
"""

from __future__ import annotations

from . import _kernels as K
from .optimizer import Optimizer, required

__all__ = ["SGD"]


class SGD(Optimizer):
    """`SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
    maximize=False)`, torch's defaults."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group):
        lr = group["lr"]
        if lr is required or not isinstance(lr, (int, float)) or lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if group["momentum"] < 0.0:
            raise ValueError(f"Invalid momentum value: {group['momentum']}")
        if group["weight_decay"] < 0.0:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _update(self, p, group, state):
        be, fmt = p.backend, p.fmt
        lr, momentum = group["lr"], group["momentum"]
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
