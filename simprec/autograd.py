"""Function (an op's forward and backward, side by side) and the backward pass.

A `Function` subclass computes on backend arrays. Its `forward` returns `(array, fmt)`: the
result, already rounded once into `fmt`. Its `backward` receives the gradient of the output
(an array in the output's format) and returns one gradient array per tensor input (or None),
each rounded once into that input's format. Results round through `finish` (forward) and
`grad_for` (backward), where `simprec.hooks` observers see every value enter its format.
"""

from __future__ import annotations

from . import _state, hooks
from .formats import fp32
from .tensor import Tensor, common_backend

__all__ = ["Function", "backward", "BackwardError"]


class BackwardError(RuntimeError):
    """The backward pass was asked for something it cannot do (no graph, freed graph, ...)."""


class Function:
    """One node of the graph: saved state, `forward`, `backward`.

    Subclasses save what backward needs on `self` (`self.x = x`), as in teenygrad's mlops.
    """

    # What finish() reports to observers for this op's outputs (analysis); subclasses may refine.
    kind = "activation"

    def __init__(self, backend, inputs):
        self.backend = backend
        self.inputs = inputs  # the input Tensors (parents in the graph)
        self.needs_input_grad = tuple(t.requires_grad for t in inputs)
        self.released = False

    # ---- the subclass API ----
    def forward(self, *arrays, **params):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def _round(self, wide, fmt, exact, owned):
        return self.backend.round(wide, fmt, inplace=owned and not hooks.observers, exact=exact)

    def compute(self, op, *arrays, fmt, kind=None, exact=False, **params):
        """The elementwise kernel `op` (ELEMENTWISE_OPS) on `arrays`, rounded once into `fmt`:
        one fused kernel on the backend, or, while observers watch, the fp32 result and then
        `finish` (so they see both). `exact=True` as in `finish`."""
        be = self.backend
        if hooks.observers or exact:
            return self.finish(be.elementwise(op, *arrays, **params), fmt, kind, exact, owned=True)
        return be.elementwise(op, *arrays, fmt=fmt, **params)

    def grad_compute(self, i, op, *arrays, exact=False, **params):
        """`compute` for a gradient of input `i`: the kernel's result rounded once into that
        input's format (through `grad_for` while observers watch)."""
        parent = self.inputs[i]
        if hooks.observers or exact:
            return self.grad_for(i, self.backend.elementwise(op, *arrays, **params), exact,
                                 owned=True)
        fmt = parent.fmt if parent.fmt.is_float else fp32
        return self.backend.elementwise(op, *arrays, fmt=fmt, **params)

    def finish(self, wide, fmt, kind=None, exact=False, owned=False):
        """Round the fp32 value `wide` once into `fmt` (nearest-even); report it to observers.
        `exact=True`: the op guarantees `wide` is already exact in `fmt` (relu, neg, a selection
        of values of that format), so the rounding is skipped; observers still see the event.
        `owned=True`: `wide` is a fresh array nobody else holds, so it may be rounded in place
        (not while observers want to see it before rounding)."""
        rounded = self._round(wide, fmt, exact, owned)
        if hooks.observers:
            hooks.notify({"op": type(self).__name__, "kind": kind or self.kind, "fmt": fmt,
                          "module": hooks.module_path(), "wide": wide, "rounded": rounded,
                          "backend": self.backend})
        return rounded

    def grad_for(self, i, wide, exact=False, owned=False):
        """Round a gradient for input `i` into that input's format (fp32 for integer inputs);
        `exact=True` as in `finish` (the value is already exact in that format)."""
        parent = self.inputs[i]
        fmt = parent.fmt if parent.fmt.is_float else fp32
        rounded = self._round(wide, fmt, exact, owned)
        if hooks.observers:
            is_weight = (getattr(parent, "is_parameter", False)
                         or getattr(parent, "is_parameter_copy", False))
            kind = "weight_grad" if is_weight else "activation_grad"
            hooks.notify({"op": type(self).__name__ + "Backward", "kind": kind, "fmt": fmt,
                          "module": getattr(self, "module", ""), "wide": wide,
                          "rounded": rounded, "backend": self.backend,
                          "name": getattr(parent, "name", None)})
        return rounded

    # ---- graph construction ----
    @classmethod
    def apply(cls, *inputs, **params):
        """Run `forward` on the inputs' arrays; return the output Tensor (with its graph node)."""
        backend = common_backend(inputs, cls.__name__)
        node = cls(backend, inputs)
        data, fmt = node.forward(*(t.data for t in inputs), **params)
        needs_grad = _state.grad_enabled.get() and any(node.needs_input_grad)
        out = Tensor._make(data, fmt, backend, requires_grad=needs_grad)
        if needs_grad:
            node.module = hooks.module_path()  # for the gradients' events
            out._ctx = node
        return out


def _topological_order(root):
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        if tensor._ctx is not None:
            for parent in tensor._ctx.inputs:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order


def backward(root, gradient=None, retain_graph=False):
    """Backpropagate from `root`, accumulating into the `.grad` of leaf tensors that need it."""
    if not root.requires_grad:
        raise BackwardError("backward(): the tensor does not require grad and has no graph (was "
                            "it computed under no_grad, or from tensors without requires_grad?)")
    backend = root.backend
    if gradient is None:
        if root.size != 1:
            raise BackwardError(f"backward(): a gradient must be given for a non-scalar output "
                                f"(shape {root.shape}); pass gradient= of the same shape")
        seed = backend.full(root.shape, 1.0, root.fmt)
    else:
        if not isinstance(gradient, Tensor):
            gradient = Tensor._from_data(gradient, root.fmt, backend)
        if gradient.shape != root.shape:
            raise BackwardError(f"backward(): gradient shape {gradient.shape} does not match the "
                                f"output shape {root.shape}")
        if gradient.backend is not backend:
            raise BackwardError("backward(): the gradient lives on another backend than the output")
        seed = backend.round(gradient.data, root.fmt)

    order = _topological_order(root)
    for tensor in order:
        if tensor._ctx is not None and tensor._ctx.released:
            raise BackwardError("backward(): the graph was freed by an earlier backward(); "
                                "call backward(retain_graph=True) the first time")

    # A leaf's gradient is accumulated as soon as the last node that uses it has run (as
    # torch's engine runs AccumulateGrad when its inputs are ready), not at the leaf's place
    # in the order, so that post-accumulate hooks (data parallelism's all-reduce) fire while
    # the rest of backward still runs. The arithmetic and its order are unchanged.
    pending_uses: dict[int, int] = {}
    for tensor in order:
        if tensor._ctx is not None:
            for parent in tensor._ctx.inputs:
                if parent._ctx is None and parent.requires_grad:
                    pending_uses[id(parent)] = pending_uses.get(id(parent), 0) + 1

    grads = {id(root): seed}
    for tensor in reversed(order):
        grad = grads.pop(id(tensor), None)
        if grad is None:
            continue
        node = tensor._ctx
        if node is None:  # a leaf: accumulate into .grad in the leaf's format (torch's rule)
            _accumulate_leaf(tensor, grad)
            continue
        if tensor._retains_grad:
            tensor._accumulate_grad(grad)
        input_grads = node.backward(grad)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for parent, parent_grad in zip(node.inputs, input_grads, strict=False):
            if parent_grad is None or not parent.requires_grad:
                continue
            previous = grads.get(id(parent))
            if previous is None:
                grads[id(parent)] = parent_grad
            else:  # several uses of one tensor: sum in fp32, round once to its format
                grads[id(parent)] = backend.elementwise("add", previous, parent_grad,
                                                        fmt=parent.fmt)
        for parent in node.inputs:
            if id(parent) in pending_uses:
                pending_uses[id(parent)] -= 1
                if pending_uses[id(parent)] == 0 and id(parent) in grads:
                    _accumulate_leaf(parent, grads.pop(id(parent)))
        if not retain_graph:
            node.released = True
            node.__dict__ = {"released": True, "inputs": node.inputs}


def _accumulate_leaf(tensor, grad) -> None:
    """Accumulate into a leaf's `.grad` (in the leaf's format, torch's rule), then run its
    post-accumulate-grad hooks."""
    tensor._accumulate_grad(grad)
    for hook in tensor.__dict__.get("_post_accumulate_hooks", ()):
        hook(tensor)
