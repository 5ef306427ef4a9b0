"""Tensor: a backend array whose every element is exact in a `Format`, plus its autograd state."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from . import formats
from .backend import Backend, get_backend
from .formats import Format, IntFormat, fp32

__all__ = ["Tensor", "tensor", "bool_", "common_backend", "zeros_like", "clear_grads"]

bool_ = IntFormat(bits=1, name="bool")

# The simprec formats that NumPy dtypes name (np.float16 -> fp16, ml_dtypes.bfloat16 -> bf16, ...).
_FORMAT_OF_DTYPE = {
    np.dtype(np.float16): formats.fp16,
    np.dtype(ml_dtypes.bfloat16): formats.bf16,
    np.dtype(ml_dtypes.float8_e4m3fn): formats.fp8_e4m3,
    np.dtype(ml_dtypes.float8_e5m2): formats.fp8_e5m2,
}


def _check_can_require_grad(fmt) -> None:
    if not fmt.is_float:
        raise TypeError(f"only floating-point tensors can require gradients; "
                        f"this one is {fmt.name}")


class Tensor:
    """An n-dimensional array of values exact in `fmt`, living on `backend`, with autograd.

    Mirrors torch.Tensor where it can: `shape`, `ndim`, `numel()`, `numpy()`, `item()`, `to()`,
    `detach()`, `backward()`, `grad`, operators and math methods (`x.exp()`, `x @ w`, ...).
    """

    __slots__ = ("data", "fmt", "backend", "requires_grad", "_grad", "_ctx", "name",
                 "_retains_grad", "__weakref__", "__dict__")
    __array_priority__ = 1000  # make `ndarray * Tensor` call Tensor.__rmul__

    @classmethod
    def _make(cls, data, fmt, backend, requires_grad=False):
        t = cls.__new__(cls)
        t.data, t.fmt, t.backend = data, fmt, backend
        t.requires_grad, t._grad, t._ctx = requires_grad, None, None
        t.name, t._retains_grad = None, False
        return t

    @classmethod
    def _from_data(cls, data, fmt=None, backend="numpy", requires_grad=False):
        """A leaf tensor from host data, values rounded (once) into `fmt`."""
        backend = get_backend(backend)
        if isinstance(data, Tensor):
            data = data.backend.to_numpy(data.data)
        array = np.asarray(data)
        if fmt is None:
            fmt = _FORMAT_OF_DTYPE.get(array.dtype)
        if array.dtype == object:
            raise TypeError("tensor(): data must be numbers or arrays of numbers, got objects")
        if fmt is None:
            if array.dtype == np.bool_:
                fmt = bool_
            elif np.issubdtype(array.dtype, np.integer):
                fmt = formats.int64
            elif np.issubdtype(array.dtype, np.floating):
                fmt = fp32
            else:
                raise TypeError(f"tensor(): unsupported data type {array.dtype}")
        if not isinstance(fmt, (Format, IntFormat)):
            raise TypeError(f"tensor(): fmt must be a simprec Format such as sp.fp16, got {fmt!r}")
        if fmt.is_float:
            if not np.issubdtype(array.dtype, np.floating):
                array = array.astype(np.float64)
            elif array.dtype not in (np.float32, np.float64):
                array = array.astype(np.float32)  # fp16/bf16/fp8 are exact in float32
            if fmt != fp32 or array.dtype != np.float32:
                array = formats.round(array, fmt)
        else:
            if requires_grad:
                _check_can_require_grad(fmt)
            if np.issubdtype(array.dtype, np.floating) and not np.all(np.mod(array, 1) == 0):
                raise TypeError(f"tensor(): values are not integers, cannot store them as "
                                f"{fmt.name}")
        return cls._make(backend.asarray(array, fmt), fmt, backend, bool(requires_grad))

    # ---- facts ----
    @property
    def shape(self) -> tuple:
        return tuple(self.backend.shape(self.data))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def numel(self) -> int:
        return self.size

    def dim(self) -> int:
        return self.ndim

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def dtype(self):
        """The format (torch calls it dtype)."""
        return self.fmt

    @property
    def device(self) -> str:
        return self.backend.name

    # ---- host access ----
    def numpy(self) -> np.ndarray:
        """A NumPy copy: float32 for float formats up to fp32 (values exact in `fmt`), else
        int/bool."""
        return np.array(self.backend.to_numpy(self.data), copy=True)

    def item(self):
        if self.size != 1:
            raise ValueError(f"item(): only one-element tensors can become a Python number; "
                             f"shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    # ---- autograd ----
    @property
    def grad(self):
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"grad must be a Tensor or None, got {type(value).__name__}")
            if value.shape != self.shape:
                raise ValueError(f"grad shape {value.shape} does not match the tensor's shape "
                                 f"{self.shape}")
            if value.backend is not self.backend:
                raise ValueError("grad lives on another backend than the tensor")
        self._grad = value

    def _accumulate_grad(self, grad_array):
        if self._grad is None:
            self._grad = Tensor._make(grad_array, self.fmt, self.backend)
        else:  # torch accumulates .grad in the tensor's own dtype
            total = self.backend.elementwise("add", self._grad.data, grad_array)
            self._grad = Tensor._make(self.backend.round(total, self._grad.fmt), self._grad.fmt,
                                      self.backend)

    def register_post_accumulate_grad_hook(self, hook):
        """Call `hook(self)` each time backward has accumulated a gradient into this leaf's
        `.grad` (torch's hook of that name; data parallelism starts a gradient's all-reduce
        there). Returns a handle whose `remove()` unregisters it."""
        if self._ctx is not None:
            raise RuntimeError("post-accumulate-grad hooks can only be registered on leaf tensors")
        hooks = self.__dict__.setdefault("_post_accumulate_hooks", [])
        hooks.append(hook)
        return _HookHandle(hooks, hook)

    def backward(self, gradient=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` (scalar self, or give
        `gradient`)."""
        from .autograd import backward

        backward(self, gradient, retain_graph)

    def retain_grad(self):
        """Keep the gradient of this non-leaf tensor in `.grad` during backward."""
        self._retains_grad = True
        return self

    def detach(self) -> Tensor:
        """The same values, cut from the graph."""
        return Tensor._make(self.data, self.fmt, self.backend)

    def requires_grad_(self, flag: bool = True) -> Tensor:
        if flag:
            _check_can_require_grad(self.fmt)
        self.requires_grad = flag
        return self

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), precision=6, separator=", ", threshold=50)
        extra = f", fmt={self.fmt!r}"
        if self.backend.name != "numpy":
            extra += f", backend={self.backend.name!r}"
        if self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"


class _HookHandle:
    """What `register_post_accumulate_grad_hook` returns: `remove()` unregisters the hook."""

    def __init__(self, hooks: list, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def common_backend(tensors, op_name: str) -> Backend:
    """The one backend all `tensors` live on; mixing backends is an error, as in torch."""
    backend = None
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"{op_name}: expected Tensors, got {type(t).__name__}")
        if backend is None:
            backend = t.backend
        elif t.backend is not backend:
            raise ValueError(f"{op_name}: tensors live on different backends "
                             f"({backend.name} and {t.backend.name}); move them with .to(...)")
    if backend is None:
        raise TypeError(f"{op_name}: needs at least one Tensor")
    return backend


def zeros_like(t: Tensor) -> Tensor:
    """Zeros of `t`'s shape and format on its backend (a leaf, no graph)."""
    return Tensor._make(t.backend.full(t.shape, 0.0, t.fmt), t.fmt, t.backend)


def clear_grads(tensors, set_to_none: bool = True) -> None:
    """torch's `zero_grad`: drop every tensor's `.grad` (`set_to_none`) or make it zeros."""
    for t in tensors:
        if t.grad is not None:
            t.grad = None if set_to_none else zeros_like(t.grad)


def tensor(data, fmt=None, *, requires_grad=False, backend="numpy") -> Tensor:
    """A leaf tensor from data (lists, scalars, arrays), rounded once into `fmt`.

    `fmt` defaults to the format of a half NumPy dtype (np.float16 -> fp16, bfloat16 -> bf16),
    fp32 for other floats, int64 for integers and bool for booleans.
    """
    return Tensor._from_data(data, fmt, backend, requires_grad)
