"""The autograd as the ops use it: accumulation, explicit gradients, graph lifetime, modes,
casts, and bad input that must fail cleanly (naming the op and shapes, leaving no graph behind)."""

from __future__ import annotations

import numpy as np
import pytest

import simprec as sp
import simprec.ops as ops
from simprec.autograd import BackwardError
from simprec.backend.numpy_backend import NumpyBackend


def t(values, fmt=sp.fp32, grad=True):
    return sp.tensor(np.asarray(values, np.float32), fmt, requires_grad=grad)


def test_gradient_accumulates_over_several_uses():
    x = t([1.0, 2.0, -3.0])
    y = x * x + x * 3.0 + x.exp()
    y.sum().backward()
    xv = x.numpy().astype(np.float64)
    np.testing.assert_allclose(x.grad.numpy(), 2 * xv + 3 + np.exp(xv), rtol=1e-6)


def test_gradient_accumulates_across_backward_calls():
    x = t([1.0, 2.0])
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [5.0, 5.0])


def test_several_uses_are_summed_in_fp32_and_rounded_once():
    # two paths each give 1 + 2**-11 (exact in fp16); their sum 2 + 2**-10 is exact too
    x = t([1.0], sp.fp16)
    g = 1.0 + 2**-11
    (x * g + x * g).sum().backward()
    assert x.grad.fmt == sp.fp16 and x.grad.item() == float(
        np.float16(2 * np.float32(np.float16(g)))
    )


def test_backward_with_explicit_gradient():
    x = t([[1.0, 2.0], [3.0, 4.0]])
    y = x * x
    y.backward(np.array([[1.0, 0.0], [0.5, 2.0]], np.float32))
    np.testing.assert_array_equal(x.grad.numpy(), [[2.0, 0.0], [3.0, 16.0]])
    with pytest.raises(BackwardError, match="shape"):
        (x * x).backward(np.ones(3, np.float32))


def test_backward_on_non_scalar_without_gradient_raises_and_leaves_grads():
    x = t([1.0, 2.0])
    y = x * 2.0
    with pytest.raises(BackwardError, match="non-scalar"):
        y.backward()
    assert x.grad is None
    y.sum().backward()  # the graph is intact
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])


def test_retain_graph():
    x = t([2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.item() == 8.0
    with pytest.raises(BackwardError, match="freed"):
        y.backward()


def test_no_grad_and_enable_grad():
    x = t([1.0, 2.0])
    with sp.no_grad():
        y = x * 3.0
        with sp.enable_grad():
            z = x * 2.0
    assert not y.requires_grad and y._ctx is None
    assert z.requires_grad and z._ctx is not None
    with pytest.raises(BackwardError):
        y.sum().backward()


def test_detach_cuts_the_graph():
    x = t([1.0, 2.0])
    y = (x * 3.0).detach()
    assert not y.requires_grad and y._ctx is None
    (y * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 6.0])


def test_to_format_backward_casts_back():
    x = t([1.0 + 2**-12, 0.3])
    y = x.to(sp.fp16)
    assert y.fmt == sp.fp16
    (y * 3.0).sum().backward()
    assert x.grad.fmt == sp.fp32
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])
    w = t([1 / 3, 1.0], sp.fp32)
    x2 = t([1.0, 1.0], sp.fp32)
    (x2.half() * w.half()).sum().backward()
    np.testing.assert_array_equal(x2.grad.numpy(), sp.round(w.numpy(), sp.fp16))  # fp16 grad, cast


def test_grad_is_assignable():
    x = t([1.0, 2.0])
    x.grad = sp.tensor([0.5, 0.5])
    (x * 1.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.5, 1.5])
    x.grad = None
    assert x.grad is None
    with pytest.raises(ValueError, match="shape"):
        x.grad = sp.tensor([1.0])
    with pytest.raises(TypeError):
        x.grad = np.zeros(2)


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="floating"):
        sp.tensor(np.array([1, 2]), requires_grad=True)
    i = sp.tensor(np.array([1, 2]))
    with pytest.raises(TypeError, match="floating"):
        i.requires_grad_(True)
    with pytest.raises(TypeError, match="floating"):
        ops.exp(i)


@pytest.mark.parametrize(
    "call,words",
    [
        (lambda a, b: a + b, ("add", "(2, 3)", "(4,)")),
        (lambda a, b: a * b, ("mul", "(2, 3)", "(4,)")),
        (lambda a, b: ops.maximum(a, b), ("maximum", "(2, 3)", "(4,)")),
        (lambda a, b: a @ b, ("matmul", "(2, 3)", "(4,)")),
        (
            lambda a, b: ops.where(sp.tensor(np.ones((2, 3), bool)), a, b),
            ("where", "(2, 3)", "(4,)"),
        ),
    ],
)
def test_shape_mismatch_names_op_and_shapes(call, words):
    a, b = t(np.ones((2, 3))), t(np.ones(4))
    with pytest.raises(ValueError) as err:
        call(a, b)
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    assert a.grad is None and b.grad is None and a._ctx is None and b._ctx is None


@pytest.mark.parametrize(
    "call,words",
    [
        (
            lambda: ops.linear(t(np.ones((2, 3))), t(np.ones((4, 5)))),
            ("linear", "(2, 3)", "(4, 5)"),
        ),
        (
            lambda: ops.conv2d(t(np.ones((1, 3, 5, 5))), t(np.ones((2, 4, 3, 3)))),
            ("conv2d", "(2, 4, 3, 3)"),
        ),
        (lambda: ops.layer_norm(t(np.ones((2, 3))), (4,)), ("layer_norm", "(4,)", "(2, 3)")),
        (lambda: ops.mse_loss(t(np.ones((2, 3))), t(np.ones(3))), ("mse_loss", "(2, 3)", "(3,)")),
        (lambda: ops.cat([t(np.ones((2, 3))), t(np.ones((2, 4)))]), ("cat", "(2, 3)", "(2, 4)")),
        (lambda: t(np.ones((2, 3))).reshape(4, 2), ("reshape", "(2, 3)", "(4, 2)")),
        (
            lambda: ops.scaled_dot_product_attention(
                t(np.ones((2, 4))), t(np.ones((3, 5))), t(np.ones((3, 5)))
            ),
            ("scaled_dot_product_attention", "(2, 4)", "(3, 5)"),
        ),
    ],
)
def test_nn_shape_mismatch_names_op_and_shapes(call, words):
    with pytest.raises(ValueError) as err:
        call()
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_mixing_backends_raises():
    class SecondNumpy(NumpyBackend):
        name = "numpy2"

    sp.register_backend("numpy2", SecondNumpy)
    a = t([1.0, 2.0])
    b = sp.tensor(np.array([3.0, 4.0], np.float32), requires_grad=True, backend="numpy2")
    assert b.backend is not a.backend and b.device == "numpy2"
    for call in (
        lambda: a + b,
        lambda: a * b,
        lambda: a @ b,
        lambda: ops.cat([a, b]),
        lambda: ops.where(sp.tensor(np.array([True, False])), a, b),
    ):
        with pytest.raises(ValueError, match="numpy and numpy2|numpy2 and numpy"):
            call()
    assert a.grad is None and b.grad is None and a._ctx is None
    (b * 2.0).sum().backward()  # the second backend works on its own
    np.testing.assert_array_equal(b.grad.numpy(), [2.0, 2.0])


def test_failed_op_leaves_no_graph():
    x = t([1.0, 2.0])
    y = x * 2.0
    with pytest.raises(ValueError):
        y + t([1.0, 2.0, 3.0])
    with pytest.raises(TypeError):
        y * "a"
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])


def test_retain_grad_and_leaf_flags():
    x = t([1.0, 2.0])
    h = (x * 3.0).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_array_equal(h.grad.numpy(), 2 * h.numpy())
    assert x.is_leaf and not h.is_leaf


def test_inputs_not_requiring_grad_get_none():
    x = t([1.0, 2.0])
    c = t([3.0, 4.0], grad=False)
    (x * c).sum().backward()
    assert c.grad is None and x.grad is not None
