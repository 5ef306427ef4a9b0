"""torch's own CUDA kernels for the contract's op-level (level 2) kernels.

On a CUDA device each of these is the one kernel torch launches for the op, which the reference's
default (`simprec.backend.reference_ops`) models bit for bit; `TorchBackend` uses them there and
the defaults on the CPU (where torch's CPU kernels add in other orders).
tests/test_torch_backend.py holds each against the default on the GPU.

Each takes the contract's arguments (arrays of fp32 values in the backend's containers and the
formats of the GPU tensors the op reads), casts its inputs into those formats' containers (exact)
and returns the kernel's result, already rounded into the op's output format where the kernel
rounds (the caller's one rounding then changes nothing).
"""

from __future__ import annotations

import torch

from simprec import formats

from .rounding import container_dtype

_REDUCTION = {"none": 0, "mean": 1, "sum": 2}  # at::Reduction
_NATIVE = (formats.fp32, formats.fp16, formats.bf16)


def native(*fmts) -> bool:
    """Every format is one torch has a dtype (and these kernels) for."""
    return all(f in _NATIVE for f in fmts)


def reduce_sum(x, axes, keepdims):
    if not axes:
        return x.float()
    return torch.sum(x, dim=tuple(axes), keepdim=keepdims, dtype=torch.float32)


def var(x, axes, correction, keepdims, fmt):
    return torch.var(x.to(container_dtype(fmt)), dim=tuple(axes), correction=correction,
                     keepdim=keepdims)


def softmax(x, axis, in_fmt, out_fmt, log):
    half_to_float = in_fmt == formats.fp16 and out_fmt == formats.fp32
    x = x.to(container_dtype(in_fmt if half_to_float or in_fmt == out_fmt else out_fmt))
    kernel = torch._log_softmax if log else torch._softmax
    return kernel(x, axis, half_to_float)


def softmax_backward(grad, out, axis, in_fmt, out_fmt, log):
    dtype = container_dtype(out_fmt)
    kernel = torch._log_softmax_backward_data if log else torch._softmax_backward_data
    return kernel(grad.to(dtype), out.to(dtype), axis, container_dtype(in_fmt))


def layer_norm(x, weight, bias, eps, fmt):
    return torch.native_layer_norm(x.to(container_dtype(fmt)), [x.shape[-1]], weight, bias, eps)


def layer_norm_backward(grad, x, mean, rstd, weight, fmt, needs):
    dtype = container_dtype(fmt)
    has_weight = weight is not None
    mask = [bool(needs[0]), has_weight and bool(needs[1]), has_weight and bool(needs[2])]
    bias = torch.empty_like(weight) if has_weight else None
    return torch.ops.aten.native_layer_norm_backward(grad.to(dtype), x.to(dtype), [x.shape[-1]],
                                                     mean, rstd, weight, bias, mask)


def nll_loss(logp, target, ignore_index, reduction):
    return torch.ops.aten.nll_loss_forward(logp, target, None, _REDUCTION[reduction],
                                           ignore_index)


def nll_loss_backward(grad, target, ignore_index, reduction, total_weight, shape, fmt):
    dtype = container_dtype(fmt)
    logp = torch.empty(shape, dtype=dtype, device=target.device)  # only its shape and type count
    return torch.ops.aten.nll_loss_backward(grad.to(dtype), logp, target, None,
                                            _REDUCTION[reduction], ignore_index,
                                            total_weight.to(dtype))


def embedding_backward(grad, ids, num_weights, padding_idx, scale_grad_by_freq=False):
    return torch.ops.aten.embedding_dense_backward(
        grad, ids, num_weights, -1 if padding_idx is None else padding_idx, scale_grad_by_freq)


def amp_unscale(grads, inv_scale):
    # The kernel works in place: a gradient array the autograd shares between parameters (the
    # backward of an add hands one array to both), or a broadcast view, is copied first.
    seen = set()
    own = []
    for g in grads:
        if not g.is_contiguous() or g.data_ptr() in seen:
            g = g.contiguous() if not g.is_contiguous() else g.clone()
        seen.add(g.data_ptr())
        own.append(g)
    grads = own
    found = torch.zeros((), dtype=torch.float32, device=grads[0].device)
    inv = torch.full((), inv_scale, dtype=torch.float32, device=grads[0].device)
    torch._amp_foreach_non_finite_check_and_unscale_(grads, found, inv)
    return grads, found


def amp_update_scale(scale, tracker, found_inf, growth_factor, backoff_factor, growth_interval):
    scale = scale.float().clone()
    tracker = tracker.to(torch.int32).clone()
    torch._amp_update_scale_(scale, tracker, found_inf.float(), growth_factor, backoff_factor,
                             growth_interval)
    return scale, tracker.long()


def _owned(tensors):
    """The tensors made safe to update in place: each contiguous and its own storage (a view or
    a storage shared with another entry is copied first)."""
    seen, out = set(), []
    for t in tensors:
        if not t.is_contiguous() or t.data_ptr() in seen or t._base is not None:
            t = t.clone(memory_format=torch.contiguous_format)
        seen.add(t.data_ptr())
        out.append(t)
    return out


def adam_foreach(params, grads, exp_avgs, exp_avg_sqs, *, lr, beta1, beta2, eps, weight_decay,
                 decoupled, step):
    """torch.optim's `_multi_tensor_adam` body (torch/optim/adam.py, not capturable, a number
    lr): its `_foreach_*` kernels, in place on params, exp_avgs and exp_avg_sqs."""
    params, exp_avgs, exp_avg_sqs = _owned(params), _owned(exp_avgs), _owned(exp_avg_sqs)
    if weight_decay != 0:
        if decoupled:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, [bias_correction2_sqrt] * len(denom))
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, [(lr / bias_correction1) * -1] * len(denom))
    return params, exp_avgs, exp_avg_sqs
