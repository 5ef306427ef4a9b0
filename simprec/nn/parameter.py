"""Parameter: a leaf Tensor that a Module registers, trains and names.

The analysis tells weights from activations by `is_parameter` (see `Function.grad_for`) and
names them by `name`, the dotted path the owning model gives it (`"fc1.weight"`).
"""

from __future__ import annotations

from ..tensor import Tensor

__all__ = ["Parameter"]


class Parameter(Tensor):
    """A leaf tensor with `requires_grad=True` that `Module` collects into `parameters()`.

    `Parameter(data, requires_grad=True, fmt=None)`: `data` is a Tensor (its array is shared,
    detached from any graph) or anything `sp.tensor` accepts. With `fmt` the values are rounded
    once into that format. Ops on a Parameter return plain Tensors, as in torch.
    """

    __slots__ = ()
    is_parameter = True

    def __init__(self, data, requires_grad: bool = True, *, fmt=None):
        source = data if isinstance(data, Tensor) else Tensor._from_data(data, fmt)
        if fmt is not None and source.fmt != fmt:
            source = Tensor._make(source.backend.round(source.data, fmt), fmt, source.backend)
        if requires_grad and not source.fmt.is_float:
            raise TypeError(f"Parameter: only float tensors can require gradients, "
                            f"got {source.fmt.name}")
        self.data, self.fmt, self.backend = source.data, source.fmt, source.backend
        self.requires_grad = bool(requires_grad)
        self._grad, self._ctx, self.name, self._retains_grad = None, None, None, False

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
