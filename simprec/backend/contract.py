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
"""

from __future__ import annotations

from abc import ABC, abstractmethod

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
