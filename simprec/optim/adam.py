"""Adam and AdamW: torch's `_single_tensor_adam` (AdamW = decoupled weight decay).

torch/optim/adam.py, per parameter (each line one torch kernel, fp32 opmath, rounded once into
the parameter's format; exp_avg / exp_avg_sq have the parameter's format, as torch's zeros_like):

    step += 1
    param.mul_(1 - lr * weight_decay)                       # AdamW (decoupled)
    g = grad.add(param, alpha=weight_decay)                 # Adam with weight_decay    (fma)
    exp_avg.lerp_(g, 1 - beta1)                                                        (fma)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)                             (fma)
    bias_correction1 = 1 - beta1 ** step; bias_correction2 = 1 - beta2 ** step   (Python floats)
    step_size = lr / bias_correction1; bias_correction2_sqrt = bias_correction2 ** 0.5
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-step_size)
"""

from __future__ import annotations

from ..tensor import zeros_like
from . import _kernels as K
from .optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """`Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
    maximize=False)`; `decoupled_weight_decay=True` is AdamW."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _check_group(self, group):
        lr, eps, (beta1, beta2) = group["lr"], group["eps"], group["betas"]
        if not isinstance(lr, (int, float)) or lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= beta1 < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {beta1}")
        if not 0.0 <= beta2 < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {beta2}")
        if group["weight_decay"] < 0.0:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")

    def _update(self, p, group, state):
        be, fmt = p.backend, p.fmt
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0.0
            state["exp_avg"] = zeros_like(p)
            state["exp_avg_sq"] = zeros_like(p)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = zeros_like(p)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1.0  # torch keeps step as an fp32 tensor; exact for any practical count
        step = state["step"]
        g = p.grad.data
        if group["maximize"]:
            g = be.elementwise("neg", g)
        old = p.data
        param = p.data
        decay = None
        if wd != 0:
            if group["decoupled_weight_decay"]:
                factor = 1 - lr * wd
                param = be.round(K.mul_scalar(be, param, factor), fmt)
                decay = be.elementwise("sub", param, old)
            else:
                g = be.round(K.add(be, g, param, wd), fmt)
        exp_avg.data = be.round(K.lerp(be, exp_avg.data, g, 1 - beta1), fmt)
        exp_avg_sq.data = be.round(K.mul_scalar(be, exp_avg_sq.data, beta2), fmt)
        exp_avg_sq.data = be.round(K.addcmul(be, exp_avg_sq.data, g, g, 1 - beta2), fmt)
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        second = exp_avg_sq
        if group["amsgrad"]:
            state["max_exp_avg_sq"].data = be.elementwise("maximum", state["max_exp_avg_sq"].data,
                                                          exp_avg_sq.data)
            second = state["max_exp_avg_sq"]
        denom = be.round(K.sqrt(be, second.data), fmt)
        denom = be.round(K.div_scalar(be, denom, bias_correction2_sqrt), fmt)
        denom = be.round(K.add_scalar(be, denom, eps), fmt)
        new = K.addcdiv(be, param, exp_avg.data, denom, -step_size)
        update = be.elementwise("div", K.mul_scalar(be, exp_avg.data, -step_size), denom)
        if decay is not None:
            update = be.elementwise("add", update, decay)
        return new, update


class AdamW(Adam):
    """`AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False)`:
    Adam with decoupled weight decay (param *= 1 - lr*weight_decay before the Adam step)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
