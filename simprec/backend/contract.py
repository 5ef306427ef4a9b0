"""The backend contract: the kernels the autograd and the layers above it may call.

A backend owns its arrays ("containers"): it stores every float format in a container that holds
its values exactly (the NumPy reference uses float32 for every format up to fp32; a GPU backend
may keep fp16/bf16 in native half arrays) and int64 / bool arrays for integer tensors.

Rules every kernel obeys (DESIGN.md, principles 2 and 3):
- Elementwise kernels compute in fp32 "opmath". Without `fmt` they return the fp32 values,
  *unrounded* (the analysis hooks see them before rounding); with `fmt` they return the result
  rounded once into `fmt`, as one GPU kernel computes and stores it (a backend fuses the two).
- `round(x, fmt)` is the one place values enter a format (nearest-even); `round(x, fmt,
  exact=True)` only moves values already exact in `fmt` into its container.
- `matmul` owns its accumulation model and returns values already in `out_fmt`.
- Reductions accumulate wider than fp32 and round once to fp32.

A kernel never changes its inputs. Shapes follow NumPy's broadcasting.

The contract has two levels (docs/architecture.md). Level 1, the abstract methods: primitive
kernels (round, elementwise, matmul, reductions, movement). Level 2, the op-level kernels below
them: each is one torch CUDA kernel (sums over dims, var, softmax / log_softmax and their
backward, layer_norm and its backward, nll_loss and its backward, embedding backward, the
GradScaler's unscale and update), with the reference's model of that kernel as its default,
built from level-1 kernels (`reference_ops`). A backend overrides one only with the kernel the
reference models; the layers above call these methods and never know which one ran.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from . import reference_ops

# The named elementwise kernels (`Backend.elementwise(op, *arrays, **params)`): forward ones and the
# backward formulas torch's CUDA kernels use. Parameters in brackets.
ELEMENTWISE_OPS = (
    # arithmetic
    "add", "sub", "mul", "div", "neg", "add_scaled",  # add_scaled: x + alpha*y as one fma [alpha]
    "fma",  # fma(a, b, c) = a*b + c with one fp32 rounding (CUDA's fmaf)
    # [scalar]:
    "mul_scalar", "add_scalar", "rsub_scalar", "div_scalar", "rdiv_scalar", "pow_scalar",
    "maximum", "minimum", "abs", "sign", "reciprocal", "square",
    # transcendental
    "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "softplus", "erf",
    # activations
    "relu", "gelu", "gelu_tanh", "silu",
    # backward formulas: (grad, saved) -> grad_in
    "tanh_backward", "sigmoid_backward", "gelu_backward", "gelu_tanh_backward", "silu_backward",
    "softplus_backward", "relu_backward", "threshold_backward",
    # comparisons (return bool arrays)
    "gt", "ge", "lt", "le", "eq", "ne", "isfinite", "isnan",
    # selection
    "where", "clamp",  # where(cond, a, b); clamp(x) [lo, hi]
)


class Backend(ABC):
    """A set of kernels over one array library on one device."""

    name: str = "abstract"
    # Arrays live in host memory, so reading one costs no device synchronisation: the layers
    # above validate indices (targets, ids) there. On a device an out-of-range index is the
    # kernel's error, as in torch.
    host_memory: bool = False

    # ---- arrays: creation, transfer, inspection ----
    @abstractmethod
    def asarray(self, data, fmt):
        """A container for `data` (host array or scalar), in the container dtype of `fmt`.
        The values must already be exact in `fmt`; use `round` first otherwise."""

    @abstractmethod
    def to_numpy(self, x):
        """A host NumPy array with the values of `x` (float32 for float formats up to fp32)."""

    @abstractmethod
    def full(self, shape, value, fmt):
        """An array of `shape` filled with `value` (already exact in `fmt`)."""

    @abstractmethod
    def shape(self, x) -> tuple:
        """The shape of `x`."""

    # ---- the precision kernels ----
    @abstractmethod
    def round(self, x, fmt, *, inplace=False, exact=False):
        """Round fp32 values to `fmt`, nearest-even (the only way values enter a format).
        `inplace=True`: the caller hands `x` over, and the backend may round it in place.
        `exact=True`: the values are already exact in `fmt` (a selection, a negation): only
        the container changes, where the backend keeps `fmt` in another one."""

    @abstractmethod
    def elementwise(self, op: str, *xs, fmt=None, **params):
        """One of ELEMENTWISE_OPS on fp32 opmath: unrounded, or rounded once into `fmt` (nearest
        even) when it is given, in the same pass where the backend can fuse them."""

    @abstractmethod
    def matmul(self, a, b, *, fmt, accumulate: str, out_fmt, bias=None):
        """(…,M,K) @ (…,K,N) on values exact in `fmt`, accumulated by `accumulate`, optional fused
        fp32 `bias`, one rounding to `out_fmt`."""

    # ---- reductions (accumulate wide, return fp32, unrounded to half formats) ----
    @abstractmethod
    def sum(self, x, axis, keepdims: bool):
        """Sum over `axis` (int, tuple or None)."""

    @abstractmethod
    def max(self, x, axis, keepdims: bool):
        """Maximum over `axis` (NaN propagates)."""

    @abstractmethod
    def argmax(self, x, axis):
        """Index of the maximum along `axis` (int64)."""

    @abstractmethod
    def all_finite(self, xs) -> bool:
        """True when no element of any array in `xs` is inf or NaN (one host sync)."""

    # ---- movement (exact: values are copied, never rounded) ----
    @abstractmethod
    def reshape(self, x, shape): ...

    @abstractmethod
    def transpose(self, x, axes): ...

    @abstractmethod
    def broadcast_to(self, x, shape): ...

    @abstractmethod
    def getitem(self, x, index): ...

    @abstractmethod
    def index_add(self, shape, index, values):
        """Zeros of `shape` with `values` added at `index` (duplicates accumulate in fp32):
        the backward of `getitem`."""

    @abstractmethod
    def concatenate(self, xs, axis): ...

    @abstractmethod
    def pad(self, x, pad_width, value): ...

    @abstractmethod
    def take(self, x, indices, axis):
        """`x` gathered at integer `indices` along `axis` (embedding lookup)."""

    @abstractmethod
    def im2col(self, x, kernel, stride, padding):
        """(N,C,H,W) -> (N, OH*OW, C*KH*KW) patches (zero padding), for convolution as matmul."""

    @abstractmethod
    def col2im(self, cols, input_shape, kernel, stride, padding):
        """The adjoint of `im2col`: patches summed back (in fp32) into (N,C,H,W)."""

    @abstractmethod
    def astype(self, x, kind: str):
        """Convert the container: kind "float" (fp32 container), "int" (int64) or "bool"."""

    # ---- level 2: op-level kernels, the reference's models by default (reference_ops) ----
    def reduce_sum(self, x, axes: tuple, keepdims: bool):
        """fp32 sum over `axes` in the order of torch's CUDA reduce kernel (torch.sum)."""
        return reference_ops.reduce_sum(self, x, axes, keepdims)

    def var(self, x, axes: tuple, correction: int, keepdims: bool, fmt):
        """torch.var of x (values of `fmt`) over `axes` with `correction`, fp32 statistics."""
        return reference_ops.var(self, x, axes, correction, keepdims, fmt)

    def softmax(self, x, axis: int, in_fmt, out_fmt, log: bool = False):
        """torch._softmax / _log_softmax along `axis` of x (values of `in_fmt`) into
        `out_fmt`."""
        kernel = reference_ops.log_softmax if log else reference_ops.softmax
        return kernel(self, x, axis, in_fmt, out_fmt)

    def softmax_backward(self, grad, out, axis: int, in_fmt, out_fmt, log: bool = False):
        """torch._softmax_backward_data / _log_softmax_backward_data: the input's gradient from
        the output's (`grad`) and the output `out`."""
        kernel = reference_ops.log_softmax_backward if log else reference_ops.softmax_backward
        return kernel(self, grad, out, axis, in_fmt, out_fmt)

    def layer_norm(self, x, weight, bias, eps: float, fmt):
        """torch.native_layer_norm over the rows of x (rows, n) of `fmt` values: (y, mean, rstd),
        mean and rstd (rows, 1) fp32; weight, bias (n,) or None."""
        return reference_ops.layer_norm(self, x, weight, bias, eps, fmt)

    def layer_norm_backward(self, grad, x, mean, rstd, weight, fmt, needs=(True, True, True)):
        """torch.native_layer_norm_backward: (dx, dweight, dbias), None where not in `needs`."""
        return reference_ops.layer_norm_backward(self, grad, x, mean, rstd, weight, fmt, needs)

    def nll_loss(self, logp, target, ignore_index: int, reduction: str):
        """torch's nll_loss_forward for (N, C) log-probabilities, (N,) int targets: (loss,
        total_weight), total_weight an fp32 array () (the count of non-ignored targets)."""
        return reference_ops.nll_loss(self, logp, target, ignore_index, reduction)

    def nll_loss_backward(self, grad, target, ignore_index: int, reduction: str, total_weight,
                          shape: tuple, fmt):
        """torch's nll_loss_backward: the (N, C) gradient of the log-probabilities."""
        return reference_ops.nll_loss_backward(self, grad, target, ignore_index, reduction,
                                               total_weight, shape, fmt)

    def embedding_backward(self, grad, ids, num_weights: int, padding_idx, fmt=None,
                           scale_grad_by_freq: bool = False):
        """torch's embedding_dense_backward: the (num_weights, D) weight gradient in the weight's
        format `fmt` (fp32 when None)."""
        return reference_ops.embedding_backward(self, grad, ids, num_weights, padding_idx, fmt,
                                                scale_grad_by_freq)

    def amp_unscale(self, grads: list, fmts: list, inv_scale: float):
        """torch._amp_foreach_non_finite_check_and_unscale_: (unscaled grads, each rounded into
        its format, found_inf: an fp32 array () on this backend, 1.0 if any grad had an inf or
        NaN). The grads are handed over: a backend may update them in place."""
        return reference_ops.amp_unscale(self, grads, fmts, inv_scale)

    def amp_update_scale(self, scale, tracker, found_inf, growth_factor: float,
                         backoff_factor: float, growth_interval: int):
        """torch._amp_update_scale_ on arrays (): (new scale fp32, new growth tracker int)."""
        return reference_ops.amp_update_scale(self, scale, tracker, found_inf, growth_factor,
                                              backoff_factor, growth_interval)

    def adam_foreach(self, params, grads, exp_avgs, exp_avg_sqs, fmts, *, lr: float,
                     beta1: float, beta2: float, eps: float, weight_decay: float,
                     decoupled: bool, step: float):
        """torch's `_multi_tensor_adam` (Adam / AdamW with foreach, not capturable, a number lr,
        no amsgrad or maximize) on lists of tensors of one `step`: (new params, new exp_avgs,
        new exp_avg_sqs), each rounded into its format (`fmts`). params, exp_avgs and
        exp_avg_sqs are handed over: a backend may update them in place."""
        return reference_ops.adam_foreach(self, params, grads, exp_avgs, exp_avg_sqs, fmts,
                                          lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                          weight_decay=weight_decay, decoupled=decoupled,
                                          step=step)

    def __repr__(self) -> str:
        return f"<simprec backend {self.name}>"

    # A backend is a process-wide singleton per name: copies of tensors keep pointing at it.
    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def __reduce__(self):
        from . import get_backend

        return (get_backend, (self.name,))
