"""Elementwise ops: computed in fp32 opmath, rounded once to the output format (torch's CUDA rule).

Binary ops promote formats like torch (fp16 with fp32 -> fp32). A Python scalar stays fp32: it is
never rounded to the tensor's format first (torch's rule, not NumPy's NEP 50). Backward formulas
follow torch's `derivatives.yaml`, each of its tensor ops rounded to the output format as torch
rounds them, and the gradient reaches an input in that input's format.
"""

from __future__ import annotations

from ..autograd import Function
from ..formats import promote
from ..tensor import Tensor
from ._util import autocast, broadcast_shape, float_input, is_scalar, reduce_to_shape


def _operand(x, like: Tensor):
    if isinstance(x, Tensor):
        return x
    if is_scalar(x):
        return None
    raise TypeError(f"expected a Tensor or a Python number, got {type(x).__name__}")


class _Binary(Function):
    """out = kernel(a, b), broadcast, in the promoted format."""

    kernel = ""

    def forward(self, a, b, **params):
        fa, fb = self.inputs[0].fmt, self.inputs[1].fmt
        if not (fa.is_float and fb.is_float):
            raise TypeError(f"{self.kernel}: needs floating-point tensors, got {fa.name} and {fb.name}")
        broadcast_shape(self.kernel, self.inputs[0].shape, self.inputs[1].shape)
        self.out_fmt = promote(fa, fb)
        self.a, self.b, self.params = a, b, params
        out = self.finish(self.backend.elementwise(self.kernel, a, b, **params), self.out_fmt)
        self.out = out
        return out, self.out_fmt

    def to_input(self, i, grad_wide):
        """A gradient computed for the output (fp32 values): round to the output format, sum out
        broadcast dimensions, then hand it to input `i` in its format."""
        be = self.backend
        grad = be.round(grad_wide, self.out_fmt)
        grad = reduce_to_shape(be, grad, self.inputs[i].shape, self.out_fmt)
        return self.grad_for(i, grad)

    def grads(self, grad_a, grad_b):
        return (self.to_input(0, grad_a) if self.needs_input_grad[0] else None,
                self.to_input(1, grad_b) if self.needs_input_grad[1] else None)


class Add(_Binary):
    kernel = "add"

    def backward(self, g):
        return self.grads(g, g)


class AddScaled(_Binary):
    """a + alpha * b as one fp32 fma (torch.add(a, b, alpha=...) on CUDA)."""

    kernel = "add_scaled"

    def backward(self, g):
        be = self.backend
        return self.grads(g, be.elementwise("mul_scalar", g, scalar=self.params["alpha"]))


class Sub(_Binary):
    kernel = "sub"

    def backward(self, g):
        return self.grads(g, self.backend.elementwise("neg", g))


class Mul(_Binary):
    kernel = "mul"

    def backward(self, g):
        be = self.backend
        return self.grads(be.elementwise("mul", g, self.b) if self.needs_input_grad[0] else None,
                          be.elementwise("mul", g, self.a) if self.needs_input_grad[1] else None)


class Div(_Binary):
    kernel = "div"

    def backward(self, g):
        be = self.backend
        grad_a = be.elementwise("div", g, self.b) if self.needs_input_grad[0] else None
        grad_b = None
        if self.needs_input_grad[1]:  # torch: -grad * ((self / other) / other)
            ratio = be.round(be.elementwise("div", self.out, self.b), self.out_fmt)
            grad_b = be.elementwise("mul", be.elementwise("neg", g), ratio)
        return self.grads(grad_a, grad_b)


class Maximum(_Binary):
    kernel = "maximum"

    def backward(self, g):
        return self._split(g, "gt")

    def _split(self, g, first_wins):
        # torch gives each side half the gradient where a == b (max/min backward with ties)
        be = self.backend
        wins = be.elementwise(first_wins, self.a, self.b)
        tie = be.elementwise("eq", self.a, self.b)
        half = be.elementwise("mul_scalar", g, scalar=0.5)
        zero = be.elementwise("mul_scalar", g, scalar=0.0)
        grad_a = be.elementwise("where", wins, g, be.elementwise("where", tie, half, zero))
        loses = be.elementwise(first_wins, self.b, self.a)
        grad_b = be.elementwise("where", loses, g, be.elementwise("where", tie, half, zero))
        return self.grads(grad_a, grad_b)


class Minimum(Maximum):
    kernel = "minimum"

    def backward(self, g):
        return self._split(g, "lt")


class _Unary(Function):
    """out = kernel(x) in the input's format."""

    kernel = ""

    def forward(self, x, **params):
        fmt = self.inputs[0].fmt
        if not fmt.is_float:
            raise TypeError(f"{self.kernel}: needs a floating-point tensor, got {fmt.name}")
        self.fmt, self.x, self.params = fmt, x, params
        self.out = self.finish(self.backend.elementwise(self.kernel, x, **params), fmt)
        return self.out, fmt

    def round(self, wide):
        return self.backend.round(wide, self.fmt)

    def done(self, grad_wide):
        return (self.grad_for(0, grad_wide),)


class Neg(_Unary):
    kernel = "neg"

    def backward(self, g):
        return self.done(self.backend.elementwise("neg", g))


class MulScalar(_Unary):
    kernel = "mul_scalar"

    def backward(self, g):
        return self.done(self.backend.elementwise("mul_scalar", g, **self.params))


class AddScalar(_Unary):
    kernel = "add_scalar"

    def backward(self, g):
        return self.done(g)


class RSubScalar(_Unary):
    kernel = "rsub_scalar"

    def backward(self, g):
        return self.done(self.backend.elementwise("neg", g))


class DivScalar(_Unary):
    kernel = "div_scalar"

    def backward(self, g):
        return self.done(self.backend.elementwise("div_scalar", g, **self.params))


class RDivScalar(_Unary):
    kernel = "rdiv_scalar"

    def backward(self, g):  # d(s/x) = -s/x^2 = -(out/x)
        be = self.backend
        ratio = self.round(be.elementwise("div", self.out, self.x))
        return self.done(be.elementwise("mul", be.elementwise("neg", g), ratio))


class PowScalar(_Unary):
    kernel = "pow_scalar"

    def backward(self, g):  # torch: grad * (exponent * self.pow(exponent - 1))
        be = self.backend
        exponent = self.params["scalar"]
        if exponent == 0:
            return self.done(be.elementwise("mul_scalar", g, scalar=0.0))
        lowered = self.round(be.elementwise("pow_scalar", self.x, scalar=exponent - 1))
        factor = self.round(be.elementwise("mul_scalar", lowered, scalar=exponent))
        return self.done(be.elementwise("mul", g, factor))


class Exp(_Unary):
    kernel = "exp"

    def backward(self, g):
        return self.done(self.backend.elementwise("mul", g, self.out))


class Log(_Unary):
    kernel = "log"

    def backward(self, g):
        return self.done(self.backend.elementwise("div", g, self.x))


class Sqrt(_Unary):
    kernel = "sqrt"

    def backward(self, g):  # torch: grad / (2 * result)
        be = self.backend
        return self.done(be.elementwise("div", g, self.round(be.elementwise("mul_scalar", self.out, scalar=2.0))))


class Rsqrt(_Unary):
    kernel = "rsqrt"

    def backward(self, g):  # torch: -0.5 * grad * result.pow(3)
        be = self.backend
        cube = self.round(be.elementwise("pow_scalar", self.out, scalar=3.0))
        half_g = self.round(be.elementwise("mul_scalar", g, scalar=-0.5))
        return self.done(be.elementwise("mul", half_g, cube))


class Reciprocal(_Unary):
    kernel = "reciprocal"

    def backward(self, g):  # torch: -grad * (result * result)
        be = self.backend
        square = self.round(be.elementwise("mul", self.out, self.out))
        return self.done(be.elementwise("mul", be.elementwise("neg", g), square))


class Abs(_Unary):
    kernel = "abs"

    def backward(self, g):
        return self.done(self.backend.elementwise("mul", g, self.backend.elementwise("sign", self.x)))


class Tanh(_Unary):
    kernel = "tanh"

    def backward(self, g):
        return self.done(self.backend.elementwise("tanh_backward", g, self.out))


class Sigmoid(_Unary):
    kernel = "sigmoid"

    def backward(self, g):
        return self.done(self.backend.elementwise("sigmoid_backward", g, self.out))


class Relu(_Unary):
    kernel = "relu"

    def backward(self, g):
        return self.done(self.backend.elementwise("relu_backward", g, self.out))


class Gelu(_Unary):
    kernel = "gelu"

    def backward(self, g):
        return self.done(self.backend.elementwise("gelu_backward", g, self.x))


class GeluTanh(_Unary):
    kernel = "gelu_tanh"

    def backward(self, g):
        return self.done(self.backend.elementwise("gelu_tanh_backward", g, self.x))


class Silu(_Unary):
    kernel = "silu"

    def backward(self, g):
        return self.done(self.backend.elementwise("silu_backward", g, self.x))


class Softplus(_Unary):
    kernel = "softplus"

    def backward(self, g):
        return self.done(self.backend.elementwise("softplus_backward", g, self.x))


class Clamp(_Unary):
    kernel = "clamp"

    def backward(self, g):
        be = self.backend
        lo, hi = self.params.get("lo"), self.params.get("hi")
        keep = be.elementwise("isnan", self.x)
        inside = be.elementwise("eq", self.x, self.x)
        if lo is not None:
            inside = inside & be.elementwise("ge", self.x, be.elementwise("mul_scalar", self.x, scalar=0.0) + lo)
        if hi is not None:
            inside = inside & be.elementwise("le", self.x, be.elementwise("mul_scalar", self.x, scalar=0.0) + hi)
        zero = be.elementwise("mul_scalar", g, scalar=0.0)
        return self.done(be.elementwise("where", inside | keep, g, zero))


class Cast(Function):
    """x.to(fmt): one rounding into `fmt`; the backward casts the gradient back (torch's rule)."""

    kind = "cast"

    def forward(self, x, fmt):
        self.src_fmt = self.inputs[0].fmt
        if fmt == self.src_fmt:
            return x, fmt
        return self.finish(x, fmt), fmt

    def backward(self, g):
        return (self.grad_for(0, g),)


class Where(Function):
    """where(cond, a, b): elementwise selection, exact; gradients go to the selected side."""

    def forward(self, cond, a, b):
        fa, fb = self.inputs[1].fmt, self.inputs[2].fmt
        if self.inputs[0].fmt.name != "bool":
            raise TypeError(f"where: condition must be a bool tensor, got {self.inputs[0].fmt.name}")
        broadcast_shape("where", *(t.shape for t in self.inputs))
        self.out_fmt = promote(fa, fb)
        self.cond = cond
        be = self.backend
        return self.finish(be.elementwise("where", cond, a, b), self.out_fmt), self.out_fmt

    def backward(self, g):
        be = self.backend
        zero = be.elementwise("mul_scalar", g, scalar=0.0)
        out = [None]
        for i, picked in ((1, be.elementwise("where", self.cond, g, zero)),
                          (2, be.elementwise("where", self.cond, zero, g))):
            if self.needs_input_grad[i]:
                picked = reduce_to_shape(be, picked, self.inputs[i].shape, self.out_fmt)
                out.append(self.grad_for(i, picked))
            else:
                out.append(None)
        return tuple(out)


# ---------------------------------------------------------------- public functions

_BINARY = {"add": Add, "sub": Sub, "mul": Mul, "div": Div, "maximum": Maximum, "minimum": Minimum}
_SCALAR_RIGHT = {"add": AddScalar, "sub": None, "mul": MulScalar, "div": DivScalar}


def _binary(name: str, a, b, torch_name=None):
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        a, b = autocast(torch_name or name, a, b)
        return _BINARY[name].apply(a, b)
    if isinstance(a, Tensor) and is_scalar(b):
        (a,) = autocast(torch_name or name, a)
        if name == "sub":
            return AddScalar.apply(a, scalar=-b)  # torch: x - s == x + (-s), exactly
        if name in ("maximum", "minimum"):
            raise TypeError(f"{name}: both arguments must be tensors")
        return _SCALAR_RIGHT[name].apply(a, scalar=b)
    if is_scalar(a) and isinstance(b, Tensor):
        (b,) = autocast(torch_name or name, b)
        if name == "add":
            return AddScalar.apply(b, scalar=a)
        if name == "mul":
            return MulScalar.apply(b, scalar=a)
        if name == "sub":
            return RSubScalar.apply(b, scalar=a)
        if name == "div":
            return RDivScalar.apply(b, scalar=a)
    raise TypeError(f"{name}: unsupported operands {type(a).__name__} and {type(b).__name__}")


def add(a, b, *, alpha=1):
    """a + alpha * b; with alpha != 1 one fp32 fma, as torch.add on CUDA."""
    if alpha != 1:
        if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
            raise TypeError("add with alpha: both operands must be tensors")
        a, b = autocast("add", a, b)
        return AddScaled.apply(a, b, alpha=alpha)
    return _binary("add", a, b)


def sub(a, b, *, alpha=1):
    if alpha != 1:
        return add(a, b, alpha=-alpha)
    return _binary("sub", a, b)


def mul(a, b):
    return _binary("mul", a, b)


def div(a, b):
    return _binary("div", a, b)


def maximum(a, b):
    return _binary("maximum", a, b)


def minimum(a, b):
    return _binary("minimum", a, b)


def pow(x, exponent):  # noqa: A001
    """x ** exponent for a Python-number exponent (computed in fp32, rounded once)."""
    float_input("pow", x)
    if not is_scalar(exponent):
        raise TypeError(f"pow: the exponent must be a Python number, got {type(exponent).__name__}")
    (x,) = autocast("pow", x)
    return PowScalar.apply(x, scalar=exponent)


def _unary(cls, torch_name):
    def op(x):
        float_input(torch_name, x)
        (x,) = autocast(torch_name, x)
        return cls.apply(x)

    op.__name__ = torch_name
    op.__doc__ = f"Elementwise {torch_name}, computed in fp32 and rounded once to x's format."
    return op


neg = _unary(Neg, "neg")
exp = _unary(Exp, "exp")
log = _unary(Log, "log")
sqrt = _unary(Sqrt, "sqrt")
rsqrt = _unary(Rsqrt, "rsqrt")
reciprocal = _unary(Reciprocal, "reciprocal")
abs = _unary(Abs, "abs")  # noqa: A001
tanh = _unary(Tanh, "tanh")
sigmoid = _unary(Sigmoid, "sigmoid")
relu = _unary(Relu, "relu")
silu = _unary(Silu, "silu")
softplus = _unary(Softplus, "softplus")


def gelu(x, approximate: str = "none"):
    """GELU with torch's two forms: exact erf ("none") or the tanh approximation ("tanh")."""
    float_input("gelu", x)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    (x,) = autocast("gelu", x)
    return (GeluTanh if approximate == "tanh" else Gelu).apply(x)


def clamp(x, min=None, max=None):  # noqa: A002
    float_input("clamp", x)
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    (x,) = autocast("clamp", x)
    return Clamp.apply(x, lo=min, hi=max)


def cast(x: Tensor, fmt) -> Tensor:
    """x rounded into `fmt` (differentiable: the gradient is cast back to x's format)."""
    if not (x.fmt.is_float and fmt.is_float):
        raise TypeError(f"to(): casts between float formats only ({x.fmt.name} -> {fmt.name})")
    return Cast.apply(x, fmt=fmt)


def where(cond: Tensor, a, b) -> Tensor:
    """Elements of a where cond is True, else of b (Python numbers become fp32 scalars)."""
    from ..formats import fp32

    if not isinstance(cond, Tensor):
        raise TypeError("where: cond must be a bool Tensor")
    like = a if isinstance(a, Tensor) else b
    if not isinstance(like, Tensor):
        raise TypeError("where: at least one of a and b must be a Tensor")
    a = a if isinstance(a, Tensor) else Tensor._from_data(float(a), like.fmt if like.fmt.is_float else fp32, like.backend)
    b = b if isinstance(b, Tensor) else Tensor._from_data(float(b), like.fmt if like.fmt.is_float else fp32, like.backend)
    return Where.apply(cond, a, b)


def masked_fill(x: Tensor, mask: Tensor, value) -> Tensor:
    """x with `value` where mask is True (value rounded into x's format, like torch)."""
    float_input("masked_fill", x)
    fill = Tensor._from_data(float(value), x.fmt, x.backend)
    return Where.apply(mask, fill, x)


def compare(op: str, a, b) -> Tensor:
    """Elementwise comparison (gt, ge, lt, le, eq, ne) as a bool tensor (no gradient)."""
    from ..tensor import bool_

    t = a if isinstance(a, Tensor) else b
    be = t.backend
    xa = a.data if isinstance(a, Tensor) else float(a)
    xb = b.data if isinstance(b, Tensor) else float(b)
    return Tensor._make(be.elementwise(op, xa, xb), bool_, be)
