"""Adam and AdamW (decoupled weight decay) as torch computes them on CUDA, each path its own way.

The path is chosen like torch's (`foreach=`, `fused=`, `capturable=`; torch's default for CUDA
parameters is foreach). Every line below is one CUDA kernel: fp32 opmath, each result rounded
once into the parameter's format (exp_avg / exp_avg_sq have the parameter's format, as torch's
zeros_like); Python numbers reach a kernel as fp32 (`opmath_t`), computed on the host in double.

single (`_single_tensor_adam`) and foreach (`_multi_tensor_adam`), not capturable:

    param.mul_(1 - lr*wd)                       AdamW                       (1 - lr*wd in double)
    g = grad.add(param, alpha=wd)               Adam                        fma(wd, p, g)
    exp_avg.lerp_(g, 1 - beta1)                                             fma(w, g - m, m)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2)                        fma(1-b2, g*g, v)
    bc1 = 1 - beta1**step, bc2 = 1 - beta2**step                            (host doubles)
    denom = sqrt(v) / sqrt(bc2) + eps      single: a CPU-scalar divisor is a multiply by
                                           float(1/x), the reciprocal taken in double;
                                           foreach (a scalar list): a true division
    param.addcdiv_(exp_avg, denom, -lr/bc1)                                 fma(-ss, m/d, p)

capturable (step a device fp32 tensor): bc = 1 - powf(float(beta), step) on the device
(modelled as the correctly rounded power), and
    single:  denom = sqrt(v) / (sqrt(bc2) * -ss) + eps / -ss;  p += m / denom
    foreach: ss = 1 / ((powf(beta1, step) - 1) / lr);  denom = (sqrt(v) / sqrt(bc2) + eps) / ss;
             p += m / denom
fused (fused_adam_utils.cuh `adam_math`): one kernel, intermediates in fp32 registers:
    g = fma(p, wd, g) (Adam) | p = fma(-(lr*wd), p, p) (AdamW);
    m = fma(b1, m, (1-b1)*g); v = fma(b2, v, (1-b2)*(g*g));
    denom = sqrt(v)/sqrt(bc2) + eps;  p -= (lr/bc1 * m) / denom

A tensor learning rate (a 0-dim fp32 simprec Tensor in the group's "lr") follows torch's
tensor arithmetic: `lr / bc1` is a device division, `1 - lr*wd` an fp32 device expression.
"""

from __future__ import annotations

import numpy as np

from .. import formats, hooks
from ..tensor import zeros_like
from . import _kernels as K
from .optimizer import Optimizer

__all__ = ["Adam", "AdamW"]

_F = np.float32


def _powf(base, step):
    """CUDA powf(fp32 base, fp32 step) for integral steps, modelled as correctly rounded."""
    return _F(np.float64(_F(base)) ** np.float64(step))


def _operand(x, fmt):
    """A 0-dim fp32 device tensor used with a tensor of format `fmt`: TensorIterator's common
    dtype is the tensor's (0-dim tensors do not promote), so the kernel reads it converted to
    `fmt` (for fp16 parameters, the capturable bias corrections are rounded to fp16)."""
    return _F(formats.round(np.asarray([x], dtype=np.float32), fmt)[0])


def _rdiv(num, den):
    """Python number / 0-dim fp32 tensor: torch's __rtruediv__, reciprocal(den) * num."""
    return _F(_F(_F(1.0) / _F(den)) * _F(num))


class Adam(Optimizer):
    """`Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
    maximize=False, foreach=None, capturable=False, fused=None)`; `decoupled_weight_decay=True`
    is AdamW."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False, fused=None,
                 decoupled_weight_decay=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=capturable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _check_group(self, group):
        lr, eps, (beta1, beta2) = K.scalar_value(group["lr"]), group["eps"], group["betas"]
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
        path = K.resolve_path(group)
        if (path == "foreach" and not group["capturable"] and K.is_tensor_lr(group["lr"])):
            raise ValueError("lr as a Tensor is not supported for capturable=False and "
                             "foreach=True")

    @staticmethod
    def _begin(p, group, state):
        if not state:
            state["step"] = 0.0
            state["exp_avg"] = zeros_like(p)
            state["exp_avg_sq"] = zeros_like(p)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = zeros_like(p)
        state["step"] += 1.0  # torch keeps step as an fp32 tensor; exact for any practical count

    def _step_group(self, group):
        """torch's foreach path (`_multi_tensor_adam`, not capturable, a number lr, no amsgrad,
        no maximize) updates the group's tensors together: the backend's `adam_foreach` kernel
        (the reference's model of torch's `_foreach_*` kernels, or those kernels themselves),
        for each run of tensors with one backend, format and step. Otherwise, and while
        observers watch each update, one parameter at a time (`_update`)."""
        if (hooks.observers or K.resolve_path(group) != "foreach" or group["capturable"]
                or group["amsgrad"] or group["maximize"] or K.is_tensor_lr(group["lr"])):
            return super()._step_group(group)
        runs: dict = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state.setdefault(p, {})
            self._begin(p, group, state)
            runs.setdefault((id(p.backend), p.fmt, state["step"]), []).append(p)
        beta1, beta2 = group["betas"]
        for (_, _, step), params in runs.items():
            be = params[0].backend
            states = [self.state[p] for p in params]
            new, exp_avgs, exp_avg_sqs = be.adam_foreach(
                [p.data for p in params], [p.grad.data for p in params],
                [s["exp_avg"].data for s in states], [s["exp_avg_sq"].data for s in states],
                [p.fmt for p in params], lr=group["lr"], beta1=beta1, beta2=beta2,
                eps=group["eps"], weight_decay=group["weight_decay"],
                decoupled=group["decoupled_weight_decay"], step=step)
            for p, s, x, m, v in zip(params, states, new, exp_avgs, exp_avg_sqs, strict=True):
                p.data, s["exp_avg"].data, s["exp_avg_sq"].data = x, m, v

    def _update(self, p, group, state):
        be, fmt = p.backend, p.fmt
        path = K.resolve_path(group)
        self._begin(p, group, state)
        g = p.grad.data
        if group["maximize"]:
            g = be.elementwise("neg", g)
        if path == "fused":
            return self._fused_update(p, group, state, g)
        old = p.data
        param = p.data
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        tensor_lr = K.is_tensor_lr(lr)
        lr = K.scalar_value(lr)
        beta1, beta2 = group["betas"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        decay = None
        if wd != 0:
            if group["decoupled_weight_decay"]:
                # 1 - lr*wd: a host double, or fp32 device arithmetic for a tensor lr
                factor = (_operand(_F(1.0) - _F(_F(lr) * _F(wd)), fmt) if tensor_lr
                          else 1 - lr * wd)
                param = be.round(K.mul_scalar(be, param, factor), fmt)
                if hooks.observers:  # the update observers see includes the decay
                    decay = be.elementwise("sub", param, old)
            else:
                g = be.round(K.add(be, g, param, wd), fmt)
        exp_avg.data = be.round(K.lerp(be, exp_avg.data, g, 1 - beta1), fmt)
        exp_avg_sq.data = be.round(K.mul_scalar(be, exp_avg_sq.data, beta2), fmt)
        exp_avg_sq.data = be.round(K.addcmul_cuda(be, exp_avg_sq.data, g, g, 1 - beta2), fmt)
        second = exp_avg_sq.data
        if group["amsgrad"]:
            state["max_exp_avg_sq"].data = be.elementwise("maximum", state["max_exp_avg_sq"].data,
                                                          exp_avg_sq.data)
            second = state["max_exp_avg_sq"].data
        step = state["step"]
        root = be.round(K.sqrt(be, second), fmt)
        if group["capturable"]:
            new = self._capturable_step(be, fmt, path, param, exp_avg.data, root, step, lr,
                                        tensor_lr, beta1, beta2, eps)
        else:
            bias_correction1 = 1 - beta1**step
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            if path == "single":
                denom = be.round(K.mul_scalar(be, root, 1.0 / bias_correction2_sqrt), fmt)
                # lr / bc1: a host double, or a device division of the tensor lr
                step_size = (_F(_F(lr) * _F(1.0 / bias_correction1)) if tensor_lr
                             else lr / bias_correction1)
                neg_step_size = -step_size
            else:
                denom = be.round(K.div_true_scalar(be, root, bias_correction2_sqrt), fmt)
                neg_step_size = (lr / bias_correction1) * -1
            denom = be.round(K.add_scalar(be, denom, eps), fmt)
            new = K.addcdiv_cuda(be, param, exp_avg.data, denom, neg_step_size)
        if not hooks.observers:  # the update is for observers only (two passes saved)
            return new, None
        update = be.elementwise("sub", be.round(new, fmt), param)
        if decay is not None:
            update = be.elementwise("add", update, decay)
        return new, update

    @staticmethod
    def _capturable_step(be, fmt, path, param, exp_avg, root, step, lr, tensor_lr, beta1,
                         beta2, eps):
        """The capturable bias corrections, computed in fp32 on the device (0-dim tensors)."""
        one = _F(1.0)
        if path == "single":
            bc1 = _F(one - _powf(beta1, step))
            bc2 = _F(one - _powf(beta2, step))
            step_size = _F(_F(lr) / bc1) if tensor_lr else _rdiv(lr, bc1)
            neg = -step_size
            bc2_sqrt = _F(np.sqrt(bc2))
            denom = be.round(K.div_true_scalar(be, root, _operand(bc2_sqrt * neg, fmt)), fmt)
            denom = be.round(K.add_scalar(be, denom, _operand(_rdiv(eps, neg), fmt)), fmt)
        else:
            bc1 = _F(_powf(beta1, step) - one)
            bc2 = _F(np.sqrt(-_F(_powf(beta2, step) - one)))
            # _foreach_div_(bc1, lr): a Python lr is a multiply by its reciprocal (in double),
            # a tensor lr a true division
            scaled = _F(bc1 / _F(lr)) if tensor_lr else _F(bc1 * _F(1.0 / lr))
            step_size = _F(one / scaled)
            denom = be.round(K.div_true_scalar(be, root, _operand(bc2, fmt)), fmt)
            denom = be.round(K.add_scalar(be, denom, eps), fmt)
            denom = be.round(K.div_true_scalar(be, denom, _operand(step_size, fmt)), fmt)
        return K.addcdiv_cuda(be, param, exp_avg, denom, 1.0)

    def _fused_update(self, p, group, state, g):
        """fused_adam_utils.cuh `adam_math`: one kernel, intermediates in fp32 registers, the
        parameter and the moments rounded into their format when stored."""
        be, fmt = p.backend, p.fmt
        lr, eps, wd = K.scalar_value(group["lr"]), group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        step = state["step"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        param = p.data
        if wd != 0:
            if group["decoupled_weight_decay"]:
                param = K.fma(be, param, -_F(_F(lr) * _F(wd)), param)  # p -= lr * wd * p
            else:
                g = K.fma(be, param, wd, g)  # g += param * weight_decay
        # m = fma(beta1, m, (1-beta1)*g), v = fma(beta2, v, (1-beta2)*(g*g)), 1 - beta in fp32
        # (read from the H200 captures: the first product is the fused one)
        c1, c2 = _F(1 - _F(beta1)), _F(1 - _F(beta2))
        gg = be.elementwise("mul", g, g)
        m = K.fma(be, exp_avg.data, beta1, K.mul_scalar(be, g, c1))
        v = K.fma(be, exp_avg_sq.data, beta2, K.mul_scalar(be, gg, c2))
        bc1 = _F(_F(1.0) - _powf(beta1, step))
        step_size = _F(_F(lr) / bc1)
        bc2_sqrt = _F(np.sqrt(_F(_F(1.0) - _powf(beta2, step))))
        second = v
        if group["amsgrad"]:
            second = be.elementwise("maximum", state["max_exp_avg_sq"].data, v)
            state["max_exp_avg_sq"].data = be.round(second, fmt)
        denom = K.add_scalar(be, K.div_true_scalar(be, K.sqrt(be, second), bc2_sqrt), eps)
        new = be.elementwise("sub", param,
                             be.elementwise("div", K.mul_scalar(be, m, step_size), denom))
        exp_avg.data = be.round(m, fmt)
        exp_avg_sq.data = be.round(v, fmt)
        if not hooks.observers:
            return new, None
        return new, be.elementwise("sub", be.round(new, fmt), p.data)


class AdamW(Adam):
    """`AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
    *, maximize=False, foreach=None, capturable=False, fused=None)`: Adam with decoupled weight
    decay (param *= 1 - lr*weight_decay before the Adam step)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         foreach=foreach, capturable=capturable, fused=fused,
                         decoupled_weight_decay=True)
