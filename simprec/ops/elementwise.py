"""Elementwise ops: computed in fp32 opmath, rounded once to the output format (torch's CUDA rule).

Binary ops promote formats like torch (fp16 with fp32 -> fp32). A Python scalar stays fp32: it is
never rounded to the tensor's format first (torch's "wrapped number" rule, not NumPy's NEP 50), so
`x * 0.1` is `round(fp32(x) * float32(0.1))`. Where torch's CUDA kernel deviates from "one op, one
rounding" simprec follows it (cited per op): `x / s` multiplies by `float32(1 / float32(s))`
(BinaryDivTrueKernel.cu), `s / x` is `x.reciprocal() * s` (torch/_tensor.py `__rdiv__`),
`x ** 3` rounds `x * x` first (PowKernel.cu). Backward formulas follow torch's `derivatives.yaml`,
each of its tensor ops rounded to the output format as torch rounds it; the gradient reaches an
input in that input's format.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..formats import fp32, promote
from ..tensor import Tensor, bool_, common_backend
from ._util import (
    autocast,
    broadcast_shape,
    float_input,
    is_scalar,
    reduce_to_shape,
    scalar_in_format,
)


class _Binary(Function):
    """out = kernel(a, b), broadcast, computed in fp32 and rounded once to the promoted format."""

    kernel = ""

    def forward(self, a, b, **params):
        x, y = self.inputs  # floating-point tensors (checked by the public functions)
        shape_a, shape_b = x.shape, y.shape
        if shape_a != shape_b:  # a readable error for shapes that do not broadcast
            broadcast_shape(self.kernel, shape_a, shape_b)
        self.out_fmt = promote(x.fmt, y.fmt)
        self.a, self.b, self.params = a, b, params
        self.out = self.compute(self.kernel, a, b, fmt=self.out_fmt, **params)
        self.out_shape = tuple(self.backend.shape(self.out))
        return self.out, self.out_fmt

    def to_input(self, i, op, *arrays, **params):
        """Input `i`'s gradient from the kernel `op` on `arrays` (op None: `arrays[0]`, already
        in the output format), computed for the output: rounded to the output format, broadcast
        dimensions summed out (fp32, one rounding), then handed to input `i` in its format."""
        be, parent = self.backend, self.inputs[i]
        if parent.fmt == self.out_fmt and parent.shape == self.out_shape:  # one rounding
            if op is None:
                return self.grad_for(i, arrays[0], exact=True)
            return self.grad_compute(i, op, *arrays, **params)
        grad = arrays[0] if op is None else be.elementwise(op, *arrays, fmt=self.out_fmt,
                                                           **params)
        grad = reduce_to_shape(be, grad, parent.shape, self.out_fmt)
        return self.grad_for(i, grad)

    def grads(self, grad_a, grad_b):
        """The two inputs' gradients from `(op, *arrays)` specs (None: no gradient); a spec's
        last item may be a dict of the kernel's parameters."""
        out = []
        for i, spec in enumerate((grad_a, grad_b)):
            if not self.needs_input_grad[i] or spec is None:
                out.append(None)
                continue
            op, *arrays = spec
            params = arrays.pop() if isinstance(arrays[-1], dict) else {}
            out.append(self.to_input(i, op, *arrays, **params))
        return tuple(out)


class Add(_Binary):
    """a + b."""

    kernel = "add"

    def backward(self, g):
        return self.grads((None, g), (None, g))


class AddScaled(_Binary):
    """a + alpha * b as one fp32 fma: torch.add(a, b, alpha=...) on CUDA (AddFunctor, contracted
    by nvcc to fma(alpha, b, a); measured on the H200). Backward: b's gradient is grad * alpha."""

    kernel = "add_scaled"

    def backward(self, g):
        return self.grads((None, g), ("mul_scalar", g, {"scalar": self.params["alpha"]}))


class Sub(_Binary):
    """a - b."""

    kernel = "sub"

    def backward(self, g):
        return self.grads((None, g), ("neg", g))


class Mul(_Binary):
    """a * b. Backward: grad * other, in the output format (torch's mul_tensor_backward)."""

    kernel = "mul"

    def backward(self, g):
        return self.grads(("mul", g, self.b), ("mul", g, self.a))


class Div(_Binary):
    """a / b (IEEE division in fp32). Backward: grad / b and -grad * ((a / b) / b)."""

    kernel = "div"

    def backward(self, g):
        be = self.backend
        grad_b = None
        if self.needs_input_grad[1]:  # torch: -grad * ((self / other) / other), each op rounded
            ratio = be.elementwise("div", self.out, self.b, fmt=self.out_fmt)
            grad_b = ("mul", be.elementwise("neg", g), ratio)
        return self.grads(("div", g, self.b), grad_b)


class Maximum(_Binary):
    """maximum(a, b), NaN propagating. Backward: the larger side gets grad; a tie splits it in
    halves (torch's `grad / 2` where a == b)."""

    kernel = "maximum"

    def backward(self, g):
        return self._split(g, "gt")

    def _split(self, g, first_wins):
        be = self.backend
        tie = be.elementwise("eq", self.a, self.b)
        half = be.elementwise("mul_scalar", g, scalar=0.5)
        zero = be.elementwise("mul_scalar", g, scalar=0.0)
        shared = be.elementwise("where", tie, half, zero)
        return self.grads(("where", be.elementwise(first_wins, self.a, self.b), g, shared),
                          ("where", be.elementwise(first_wins, self.b, self.a), g, shared))


class Minimum(Maximum):
    """minimum(a, b); the backward mirrors maximum's."""

    kernel = "minimum"

    def backward(self, g):
        return self._split(g, "lt")


class _Unary(Function):
    """out = kernel(x) computed in fp32 and rounded once to x's format."""

    kernel = ""
    exact = False  # the kernel maps values of a format to values of that format (no rounding)

    def forward(self, x, **params):
        fmt = self.inputs[0].fmt
        self.fmt, self.x, self.params = fmt, x, params
        self.out = self.compute(self.kernel, x, fmt=fmt, exact=self.exact, **params)
        return self.out, fmt

    def round(self, wide):
        """Round an intermediate of a backward formula into the tensor's format (a torch op)."""
        return self.backend.round(wide, self.fmt)

    def op(self, name, *arrays, **params):
        """An intermediate of a backward formula: one torch op, rounded into x's format."""
        return self.backend.elementwise(name, *arrays, fmt=self.fmt, **params)

    def input_grad(self, op, *arrays, **params):
        """The backward's result: the kernel `op` on `arrays`, rounded once into x's format
        (op None: `arrays[0]` as it is)."""
        if op is None:
            return (self.grad_for(0, arrays[0]),)
        return (self.grad_compute(0, op, *arrays, **params),)


class Neg(_Unary):
    kernel = "neg"
    exact = True

    def backward(self, g):
        return (self.grad_compute(0, "neg", g, exact=True),)


class MulScalar(_Unary):
    """x * s with s kept in fp32 (torch's wrapped-number rule)."""

    kernel = "mul_scalar"

    def backward(self, g):
        return self.input_grad("mul_scalar", g, **self.params)


class AddScalar(_Unary):
    """x + s (and x - s as x + (-s), exactly torch's `add(x, s, alpha=-1)`)."""

    kernel = "add_scalar"

    def backward(self, g):
        return self.input_grad(None, g)


class RSubScalar(_Unary):
    """s - x."""

    kernel = "rsub_scalar"

    def backward(self, g):
        return self.input_grad("neg", g)


class DivScalar(_Unary):
    """x / s: torch's CUDA kernel multiplies by float32(1 / float32(s)) (BinaryDivTrueKernel.cu)."""

    kernel = "div_scalar"

    def backward(self, g):  # grad / s: the same kernel
        return self.input_grad("div_scalar", g, **self.params)


class RDivScalar(_Unary):
    """torch.div(s, x) = float32(s) / x, one rounding. (The operator `s / x` is torch's
    `x.reciprocal() * s`, two roundings: see `Tensor.__rtruediv__`.)"""

    kernel = "rdiv_scalar"

    def backward(self, g):  # torch: -grad * ((s / x) / x)
        ratio = self.op("div", self.out, self.x)
        return self.input_grad("mul", self.backend.elementwise("neg", g), ratio)


def pow_value(be, x, exponent, fmt):
    """torch.pow(x, exponent) for an array x of format `fmt`, rounded into `fmt` as torch's CUDA
    kernel rounds it (aten/src/ATen/native/cuda/PowKernel.cu): 0.5, -0.5, -1 go to the sqrt,
    rsqrt and reciprocal kernels; otherwise the exponent is first converted to the tensor's type
    (`exp_scalar.to<scalar_t>()`, so fp16(0.1) for an fp16 tensor) and then 2 -> x*x, 3 ->
    (x*x)*x and -2 -> 1/(x*x), each product of two values of the tensor's type rounded to it
    (at::Half arithmetic), others -> powf in fp32. Returns the rounded array."""
    e = float(exponent)
    if e == 0.5:
        return be.round(be.elementwise("sqrt", x), fmt)
    if e == -0.5:
        return be.round(be.elementwise("rsqrt", x), fmt)
    if e == -1.0:
        return be.round(be.elementwise("reciprocal", x), fmt)
    e = scalar_in_format(be, e, fmt)  # the exponent in the tensor's type
    if e == 2.0:
        return be.round(be.elementwise("square", x), fmt)
    if e == 3.0:
        return be.round(be.elementwise("mul", be.round(be.elementwise("square", x), fmt), x), fmt)
    if e == -2.0:
        return be.round(
            be.elementwise("reciprocal", be.round(be.elementwise("square", x), fmt)), fmt
        )
    return be.round(be.elementwise("pow_scalar", x, scalar=e), fmt)


class PowScalar(Function):
    """x ** exponent for a Python-number exponent, rounded as torch's CUDA kernel (`pow_value`).
    Backward: torch's pow_backward, grad * (exponent * x.pow(exponent - 1)), each op rounded."""

    def forward(self, x, exponent):
        self.fmt, self.x, self.exponent = self.inputs[0].fmt, x, exponent
        out = pow_value(self.backend, x, exponent, self.fmt)
        return self.finish(out, self.fmt), self.fmt

    def backward(self, g):
        be = self.backend
        if self.exponent == 0:
            return (self.grad_for(0, be.elementwise("mul_scalar", g, scalar=0.0)),)
        lowered = pow_value(be, self.x, self.exponent - 1, self.fmt)
        factor = be.round(be.elementwise("mul_scalar", lowered, scalar=self.exponent), self.fmt)
        return (self.grad_for(0, be.elementwise("mul", g, factor)),)


class Exp(_Unary):
    kernel = "exp"

    def backward(self, g):  # grad * result
        return self.input_grad("mul", g, self.out)


class Log(_Unary):
    kernel = "log"

    def backward(self, g):  # grad / self
        return self.input_grad("div", g, self.x)


class Sqrt(_Unary):
    kernel = "sqrt"

    def backward(self, g):  # torch: grad / (2 * result)
        return self.input_grad("div", g, self.op("mul_scalar", self.out, scalar=2.0))


class Rsqrt(_Unary):
    """1 / sqrt(x): CUDA's rsqrtf. Backward: -0.5 * grad * result.pow(3), each op rounded."""

    kernel = "rsqrt"

    def backward(self, g):
        cube = pow_value(self.backend, self.out, 3, self.fmt)
        return self.input_grad("mul", self.op("mul_scalar", g, scalar=-0.5), cube)


class Reciprocal(_Unary):
    kernel = "reciprocal"

    def backward(self, g):  # torch: -grad * (result * result)
        square = self.op("mul", self.out, self.out)
        return self.input_grad("mul", self.backend.elementwise("neg", g), square)


class Abs(_Unary):
    kernel = "abs"
    exact = True

    def backward(self, g):  # grad * sgn(x)
        return self.input_grad("mul", g, self.backend.elementwise("sign", self.x))


class Tanh(_Unary):
    """tanh (CUDA's tanhf). Backward: torch's tanh_backward kernel, grad * (1 - y*y), written in
    the tensor's own type: fp32 arithmetic (1 - y*y contracted to one fma) for fp32, and for
    fp16/bf16 at::Half arithmetic, every operation rounded to the half format (measured)."""

    kernel = "tanh"

    def backward(self, g):
        y = self.out
        if self.fmt == fp32:
            return self.input_grad("tanh_backward", g, y)
        slope = self.op("rsub_scalar", self.op("mul", y, y), scalar=1.0)
        return self.input_grad("mul", g, slope)


class Sigmoid(_Unary):
    """sigmoid, 1/(1 + exp(-x)) in fp32. Backward: torch's sigmoid_backward kernel,
    grad * (1 - y) * y, in the tensor's own type (each op rounded for fp16/bf16, measured)."""

    kernel = "sigmoid"

    def backward(self, g):
        y = self.out
        if self.fmt == fp32:
            return self.input_grad("sigmoid_backward", g, y)
        first = self.op("mul", g, self.op("rsub_scalar", y, scalar=1.0))
        return self.input_grad("mul", first, y)


class Relu(_Unary):
    kernel = "relu"
    exact = True

    def backward(self, g):  # threshold_backward(grad, result, 0): 0 where result <= 0 (exact)
        return (self.grad_compute(0, "relu_backward", g, self.out, exact=True),)


class Gelu(_Unary):
    kernel = "gelu"

    def backward(self, g):
        return self.input_grad("gelu_backward", g, self.x)


class GeluTanh(_Unary):
    kernel = "gelu_tanh"

    def backward(self, g):
        return self.input_grad("gelu_tanh_backward", g, self.x)


class Silu(_Unary):
    kernel = "silu"

    def backward(self, g):
        return self.input_grad("silu_backward", g, self.x)


class Softplus(_Unary):
    """log1p(exp(beta x)) / beta, or x where beta x > threshold (ActivationSoftplusKernel.cu)."""

    kernel = "softplus"

    def backward(self, g):
        return self.input_grad("softplus_backward", g, self.x, **self.params)


class Erf(_Unary):
    """erf(x) (CUDA's erff). Backward: 2/sqrt(pi) * exp(-(x.pow(2))) * grad, each op rounded."""

    kernel = "erf"

    def backward(self, g):
        be = self.backend
        square = pow_value(be, self.x, 2, self.fmt)
        e = self.op("exp", be.elementwise("neg", square))
        scaled = self.op("mul_scalar", e, scalar=2.0 / np.sqrt(np.pi))
        return self.input_grad("mul", scaled, g)


class Clamp(_Unary):
    """clamp(x, lo, hi) with fp32 bounds; NaN stays NaN. Backward: grad where lo <= x <= hi
    (torch's clamp_backward: NaN inputs get 0)."""

    kernel = "clamp"

    def backward(self, g):
        be = self.backend
        lo, hi = self.params.get("lo"), self.params.get("hi")
        inside = None
        if lo is not None:
            inside = be.elementwise("ge", self.x, np.float32(lo))
        if hi is not None:
            upper = be.elementwise("le", self.x, np.float32(hi))
            inside = upper if inside is None else inside & upper
        zero = be.elementwise("mul_scalar", g, scalar=0.0)
        return self.input_grad("where", inside, g, zero)


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
    """where(cond, a, b): exact selection in the promoted format; the gradient goes to the chosen
    side."""

    def forward(self, cond, a, b):
        fa, fb = self.inputs[1].fmt, self.inputs[2].fmt
        if self.inputs[0].fmt != bool_:
            raise TypeError(
                f"where: condition must be a bool tensor, got {self.inputs[0].fmt.name}"
            )
        broadcast_shape("where", *(t.shape for t in self.inputs))
        self.out_fmt = promote(fa, fb)
        self.cond = cond
        be = self.backend  # values of either side are exact in the promoted format
        return self.finish(
            be.elementwise("where", cond, a, b), self.out_fmt, exact=True
        ), self.out_fmt

    def backward(self, g):
        be = self.backend
        zero = be.elementwise("mul_scalar", g, scalar=0.0)
        out = [None]
        for i in (1, 2):
            if not self.needs_input_grad[i]:
                out.append(None)
                continue
            # the output's shape (g's): cond broadcasts against it
            picked = (
                be.elementwise("where", self.cond, g, zero)
                if i == 1
                else be.elementwise("where", self.cond, zero, g)
            )
            picked = reduce_to_shape(be, picked, self.inputs[i].shape, self.out_fmt)
            out.append(self.grad_for(i, picked))
        return tuple(out)


class MaskedFill(Function):
    """x.masked_fill(mask, value): `value` (already in x's format) where mask is True; exact.
    Backward: grad with zeros where mask is True."""

    def forward(self, x, mask, value):
        self.mask, self.fmt = mask, self.inputs[0].fmt
        be = self.backend
        # the fill in x's format and the selection stored in it: one kernel on x's own type
        # on a GPU backend (exact: every value is already in the format)
        fill = be.asarray(np.float32(value), self.fmt)
        return be.elementwise("where", mask, fill, x, fmt=self.fmt), self.fmt

    def backward(self, g):
        be, fmt = self.backend, self.fmt
        zero = be.elementwise("mul_scalar", g, scalar=0.0, fmt=fmt)  # exact in fmt
        return (self.grad_for(0, be.elementwise("where", self.mask, zero, g, fmt=fmt)), None)


# ---------------------------------------------------------------- public functions

_BINARY = {"add": Add, "sub": Sub, "mul": Mul, "div": Div, "maximum": Maximum, "minimum": Minimum}


def _binary(name: str, a, b):
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        float_input(name, a, b)
        a, b = autocast(name, a, b)
        return _BINARY[name].apply(a, b)
    if name in ("maximum", "minimum"):
        raise TypeError(f"{name}: both arguments must be tensors")
    if isinstance(a, Tensor) and is_scalar(b):
        float_input(name, a)
        (a,) = autocast(name, a)
        if name == "sub":
            return AddScalar.apply(a, scalar=-float(b))  # torch: x - s == x + (-s), exactly
        cls = {"add": AddScalar, "mul": MulScalar, "div": DivScalar}[name]
        return cls.apply(a, scalar=float(b))
    if is_scalar(a) and isinstance(b, Tensor):
        float_input(name, b)
        (b,) = autocast(name, b)
        cls = {"add": AddScalar, "mul": MulScalar, "sub": RSubScalar, "div": RDivScalar}[name]
        return cls.apply(b, scalar=float(a))
    raise TypeError(f"{name}: unsupported operands {type(a).__name__} and {type(b).__name__}")


def add(a, b, *, alpha=1):
    """a + alpha * b; with alpha != 1 one fp32 fma, as torch.add on CUDA."""
    if alpha != 1:
        if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
            raise TypeError("add with alpha: both operands must be tensors")
        float_input("add", a, b)
        a, b = autocast("add", a, b)
        return AddScaled.apply(a, b, alpha=float(alpha))
    return _binary("add", a, b)


def sub(a, b, *, alpha=1):
    """a - alpha * b."""
    if alpha != 1:
        return add(a, b, alpha=-alpha)
    return _binary("sub", a, b)


def mul(a, b):
    """a * b (a Python number stays fp32)."""
    return _binary("mul", a, b)


def div(a, b):
    """a / b. For a Python-number b, torch's CUDA kernel multiplies by float32(1/b); for a
    Python-number a, one rounding of float32(a) / b."""
    return _binary("div", a, b)


def maximum(a, b):
    return _binary("maximum", a, b)


def minimum(a, b):
    return _binary("minimum", a, b)


def pow(x, exponent):  # noqa: A001
    """x ** exponent for a Python-number exponent, rounded as torch's CUDA pow (`pow_value`)."""
    float_input("pow", x)
    if not is_scalar(exponent):
        raise TypeError(f"pow: the exponent must be a Python number, got {type(exponent).__name__}")
    (x,) = autocast("pow", x)
    return PowScalar.apply(x, exponent=float(exponent))


def _unary(cls, torch_name):
    def op(x):
        float_input(torch_name, x)
        (x,) = autocast(torch_name, x)
        return cls.apply(x)

    op.__name__ = torch_name
    op.__doc__ = (
        f"Elementwise {torch_name}: fp32 opmath (torch's CUDA formula), rounded once to x's format."
    )
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
erf = _unary(Erf, "erf")


def softplus(x, beta: float = 1.0, threshold: float = 20.0):
    """F.softplus: log1p(exp(beta x)) / beta, x where beta x > threshold; fp32, one rounding."""
    float_input("softplus", x)
    (x,) = autocast("softplus", x)
    return Softplus.apply(x, beta=float(beta), threshold=float(threshold))


def gelu(x, approximate: str = "none"):
    """GELU with torch's two forms: exact erf ("none") or the tanh approximation ("tanh")."""
    float_input("gelu", x)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    (x,) = autocast("gelu", x)
    return (GeluTanh if approximate == "tanh" else Gelu).apply(x)


def clamp(x, min=None, max=None):  # noqa: A002
    """Clamp to [min, max] (bounds in fp32, the result rounded once into x's format)."""
    float_input("clamp", x)
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    (x,) = autocast("clamp", x)
    return Clamp.apply(
        x, lo=None if min is None else float(min), hi=None if max is None else float(max)
    )


def cast(x: Tensor, fmt) -> Tensor:
    """x rounded into `fmt` (differentiable: the gradient is cast back to x's format)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"to(): expected a Tensor, got {type(x).__name__}")
    if not (x.fmt.is_float and fmt.is_float):
        raise TypeError(f"to(): casts between float formats only ({x.fmt.name} -> {fmt.name})")
    return Cast.apply(x, fmt=fmt)


def _scalar_tensor(value, like: Tensor) -> Tensor:
    fmt = like.fmt if like.fmt.is_float else fp32
    return Tensor._from_data(np.float64(value), fmt, like.backend)


def where(cond: Tensor, a, b) -> Tensor:
    """Elements of a where cond is True, else of b; a Python number takes the other side's
    format."""
    if not isinstance(cond, Tensor):
        raise TypeError("where: cond must be a bool Tensor")
    like = a if isinstance(a, Tensor) else b
    if not isinstance(like, Tensor):
        raise TypeError("where: at least one of a and b must be a Tensor")
    common_backend([t for t in (cond, a, b) if isinstance(t, Tensor)], "where")
    a = a if isinstance(a, Tensor) else _scalar_tensor(a, like)
    b = b if isinstance(b, Tensor) else _scalar_tensor(b, like)
    float_input("where", a, b)
    a, b = autocast("where", a, b)
    return Where.apply(cond, a, b)


def masked_fill(x: Tensor, mask: Tensor, value) -> Tensor:
    """x with `value` where mask is True; value is rounded into x's format, like torch."""
    float_input("masked_fill", x)
    if not isinstance(mask, Tensor) or mask.fmt != bool_:
        raise TypeError("masked_fill: mask must be a bool Tensor")
    if not is_scalar(value):
        raise TypeError(f"masked_fill: value must be a Python number, got {type(value).__name__}")
    if broadcast_shape("masked_fill", x.shape, mask.shape) != x.shape:
        raise ValueError(
            f"masked_fill: mask of shape {mask.shape} does not broadcast to the "
            f"input shape {x.shape}"
        )
    common_backend([x, mask], "masked_fill")
    (x,) = autocast("masked_fill", x)
    fill = scalar_in_format(x.backend, value, x.fmt)  # torch converts it to x's type
    return MaskedFill.apply(x, mask, value=fill)


def compare(op: str, a, b) -> Tensor:
    """Elementwise comparison (gt, ge, lt, le, eq, ne) in fp32 as a bool tensor (no gradient)."""
    tensors = [t for t in (a, b) if isinstance(t, Tensor)]
    be = common_backend(tensors, op)
    xa = a.data if isinstance(a, Tensor) else np.float32(a)
    xb = b.data if isinstance(b, Tensor) else np.float32(b)
    return Tensor._make(be.elementwise(op, xa, xb), bool_, be)
