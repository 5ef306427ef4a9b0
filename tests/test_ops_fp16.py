"""The precision rules of the ops in fp16/bf16: results and gradients exact in their format, one
rounding of an fp32 opmath value, fp32 scalars, promotion, fp32 accumulation."""

from __future__ import annotations

import numpy as np
import pytest
from test_ops import BINARY, UNARY, _draw

import simprec as sp
import simprec.ops as ops

HALF = [sp.fp16, sp.bf16]


def exact_in(a: np.ndarray, fmt) -> bool:
    a = np.asarray(a, np.float32)
    r = sp.round(a, fmt)
    return bool(np.all((r == a) | (np.isnan(r) & np.isnan(a))))


def _tensor(rng, shape, fmt, low=-2.0, high=2.0, avoid=(), grad=True):
    return sp.tensor(_draw(rng, shape, low, high, avoid), fmt, requires_grad=grad)


@pytest.mark.parametrize("fmt", HALF, ids=str)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_results_and_grads_stay_in_format(name, fmt):
    torch_fn, sp_fn, kw = UNARY[name]
    fn = sp_fn or torch_fn
    rng = np.random.default_rng(0)
    x = _tensor(rng, (4, 5), fmt, kw.get("low", -2.0), kw.get("high", 2.0), kw.get("avoid", ()))
    y = fn(x)
    assert y.fmt == fmt and exact_in(y.numpy(), fmt)
    y.backward(sp.tensor(rng.standard_normal(y.shape), fmt))
    assert x.grad.fmt == fmt and exact_in(x.grad.numpy(), fmt)


@pytest.mark.parametrize("fmt", HALF, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_results_and_grads_stay_in_format(name, fmt):
    torch_fn, sp_fn, kw = BINARY[name]
    fn = sp_fn or torch_fn
    rng = np.random.default_rng(1)
    a = _tensor(rng, (3, 4), fmt, kw.get("low", -2.0), kw.get("high", 2.0))
    b = _tensor(rng, (4,), fmt, kw.get("low", -2.0), kw.get("high", 2.0))
    y = fn(a, b)
    assert y.fmt == fmt and exact_in(y.numpy(), fmt)
    y.backward(sp.tensor(rng.standard_normal(y.shape), fmt))
    for t in (a, b):
        assert t.grad.fmt == fmt and exact_in(t.grad.numpy(), fmt)


@pytest.mark.parametrize("name", sorted(set(BINARY) - {"add_alpha", "sub_alpha"}))
def test_binary_is_one_rounding_of_fp32(name):
    """Forward = round_fp16(fp32 opmath result): no intermediate rounding. (add/sub with alpha
    are an fma: test_add_alpha_is_an_fma.)"""
    torch_fn, sp_fn, kw = BINARY[name]
    fn = sp_fn or torch_fn
    rng = np.random.default_rng(2)
    a32 = sp.round(_draw(rng, (500,), kw.get("low", -2.0), kw.get("high", 2.0), ()), sp.fp16)
    b32 = sp.round(_draw(rng, (500,), kw.get("low", -2.0), kw.get("high", 2.0), ()), sp.fp16)
    expect = {
        "add": np.add,
        "sub": np.subtract,
        "mul": np.multiply,
        "div": np.divide,
        "maximum": np.maximum,
        "minimum": np.minimum,
    }[name](a32, b32)
    got = fn(sp.tensor(a32, sp.fp16), sp.tensor(b32, sp.fp16)).numpy()
    np.testing.assert_array_equal(got, expect.astype(np.float16).astype(np.float32))


def test_add_alpha_is_an_fma():
    """torch.add(a, b, alpha) on CUDA is fma(alpha, b, a) in fp32: one rounding of a + alpha*b."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal(20000).astype(np.float32)
    b = rng.standard_normal(20000).astype(np.float32)
    alpha = np.float32(0.3)
    fused = (a.astype(np.float64) + np.float64(alpha) * b.astype(np.float64)).astype(np.float32)
    two_step = a + alpha * b  # product rounded to fp32 first
    got = ops.add(sp.tensor(a), sp.tensor(b), alpha=0.3).numpy()
    # float64 a + alpha*b is exact here except for rare double-rounding ties; compare where safe
    np.testing.assert_array_equal(got, fused)
    assert np.any(got != two_step)


def test_python_scalar_stays_fp32():
    """x * 0.1 is fp16(float32(x) * float32(0.1)), not NumPy's NEP 50 fp16(x * fp16(0.1))."""
    x16 = np.arange(-2048, 2048, dtype=np.float32).astype(np.float16) * np.float16(0.37)
    x = sp.tensor(x16, sp.fp16)
    torch_rule = (x16.astype(np.float32) * np.float32(0.1)).astype(np.float16)
    nep50 = x16 * 0.1  # numpy 2: the scalar is cast to float16 first
    got = (x * 0.1).numpy().astype(np.float16)
    np.testing.assert_array_equal(got, torch_rule)
    assert np.any(got != nep50)  # the two rules really differ on these inputs
    np.testing.assert_array_equal((0.1 * x).numpy().astype(np.float16), torch_rule)
    np.testing.assert_array_equal(
        (x + 0.1).numpy().astype(np.float16),
        (x16.astype(np.float32) + np.float32(0.1)).astype(np.float16),
    )


def test_division_by_scalar_is_reciprocal_multiply_and_rdiv_is_two_ops():
    x16 = np.linspace(-50, 50, 4001).astype(np.float16)
    x = sp.tensor(x16, sp.fp16)
    recip = np.float32(1) / np.float32(3.0)
    np.testing.assert_array_equal(
        (x / 3.0).numpy(), (x16.astype(np.float32) * recip).astype(np.float16).astype(np.float32)
    )
    nz = x16[x16 != 0]
    r = (np.float32(1) / nz.astype(np.float32)).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(
        (3.0 / sp.tensor(nz, sp.fp16)).numpy(),
        (r * np.float32(3)).astype(np.float16).astype(np.float32),
    )


def test_pow_rounds_like_torch_cuda():
    x16 = np.linspace(0.1, 8, 999).astype(np.float16)
    x = sp.tensor(x16, sp.fp16)
    xf = x16.astype(np.float32)
    cube = ((xf * xf).astype(np.float16).astype(np.float32) * xf).astype(np.float16)
    np.testing.assert_array_equal((x**3).numpy().astype(np.float16), cube)
    e = np.float64(np.float16(0.1))  # the exponent is converted to the tensor's type first
    np.testing.assert_array_equal(
        (x**0.1).numpy().astype(np.float16),
        np.power(xf.astype(np.float64), e).astype(np.float32).astype(np.float16),
    )


def test_mixed_formats_promote():
    a = sp.tensor([1.0, 2.0], sp.fp16)
    b = sp.tensor([0.1, 0.2], sp.fp32)
    assert (a + b).fmt == sp.fp32 and (a * b).fmt == sp.fp32
    assert (a @ sp.tensor([[1.0], [2.0]], sp.fp32)).fmt == sp.fp32
    assert (sp.tensor([1.0], sp.fp16) + sp.tensor([1.0], sp.bf16)).fmt == sp.fp32
    assert ops.cat([a, b]).fmt == sp.fp32
    np.testing.assert_array_equal((a + b).numpy(), np.float32([1.0, 2.0]) + np.float32([0.1, 0.2]))


def test_mixed_format_gradients_come_back_in_each_format():
    a = sp.tensor([1.0, 2.0, 3.0], sp.fp16, requires_grad=True)
    b = sp.tensor([0.1, 0.2, 0.3], sp.fp32, requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.fmt == sp.fp16 and b.grad.fmt == sp.fp32
    np.testing.assert_array_equal(a.grad.numpy(), sp.round(b.numpy(), sp.fp16))
    np.testing.assert_array_equal(b.grad.numpy(), a.numpy())


def test_reductions_accumulate_in_fp32_and_round_once():
    ones = sp.tensor(np.ones(4096), sp.fp16)
    assert ones.sum().item() == 4096.0  # a per-step fp16 sum would stall at 2048
    assert ones.mean().item() == 1.0
    vals = np.full(3000, 1.0 + 2**-10, np.float32)  # each exact in fp16
    got = sp.tensor(vals, sp.fp16).sum().item()
    assert got == float(np.float16(np.float32(vals.astype(np.float64).sum())))
    assert sp.tensor(vals, sp.fp16).sum(dtype=sp.fp32).fmt == sp.fp32


def test_broadcast_backward_is_fp32_sum_rounded_once():
    """The gradient of a broadcast input is the fp32 sum of the output's fp16 gradients, rounded
    once to fp16 (not an fp16 running sum)."""
    m = 4096
    x = sp.tensor(np.zeros((1, 1)), sp.fp16, requires_grad=True)
    y = sp.tensor(np.zeros((m, 1)), sp.fp16)
    out = x + y
    g = np.full((m, 1), 1.0, np.float32)
    out.backward(sp.tensor(g, sp.fp16))
    exact = np.float16(np.float32(g.astype(np.float64).sum()))
    assert x.grad.fmt == sp.fp16 and x.grad.item() == float(exact)
    running = np.float16(0)
    for v in g.ravel().astype(np.float16):
        running = np.float16(running + v)
    assert float(running) != float(exact)


def test_matmul_and_linear_fp16_one_rounding_with_fused_bias():
    """linear = round_fp16(fp32 accumulator + bias), bit for bit. The inputs are multiples of 1/8
    (products multiples of 1/64, sums below 2**8), so every fp32 partial sum is exact whatever
    the accumulation order and the only rounding left is the one under test; rounding the
    product to fp16 before adding the bias gives other bits on some elements (checked)."""
    rng = np.random.default_rng(4)
    a = rng.integers(-32, 33, (64, 16)).astype(np.float32) / 8
    w = rng.integers(-32, 33, (8, 16)).astype(np.float32) / 8
    b = rng.integers(-512, 513, 8).astype(np.float32) / 64
    out = ops.linear(sp.tensor(a, sp.fp16), sp.tensor(w, sp.fp16), sp.tensor(b, sp.fp16))
    acc = a @ w.T  # exact: |sum| < 2**8 in multiples of 2**-6
    assert np.array_equal(acc, (a.astype(np.float64) @ w.T.astype(np.float64)))
    one_rounding = (acc + b).astype(np.float16)
    two_roundings = (acc.astype(np.float16).astype(np.float32) + b).astype(np.float16)
    assert out.fmt == sp.fp16
    np.testing.assert_array_equal(out.numpy().astype(np.float16).view(np.uint16),
                                  one_rounding.view(np.uint16))
    assert np.sum(one_rounding != two_roundings) > 0  # the test tells the two apart


@pytest.mark.parametrize("fmt", HALF, ids=str)
def test_nn_ops_stay_in_format(fmt):
    rng = np.random.default_rng(5)
    x = _tensor(rng, (2, 3, 6, 6), fmt)
    w = _tensor(rng, (4, 3, 3, 3), fmt)
    outs = [
        ops.conv2d(x, w, padding=1),
        ops.max_pool2d(x, 2),
        ops.avg_pool2d(x, 3, 1, 1),
        ops.layer_norm(x, (6,)),
        ops.softmax(x, -1),
        ops.log_softmax(x, 1),
        ops.scaled_dot_product_attention(x, x, x, is_causal=True),
        ops.dropout(x, 0.3, True, generator=0),
        ops.embedding(sp.tensor(np.array([0, 3, 3])), _tensor(rng, (5, 4), fmt)),
    ]
    for out in outs:
        assert out.fmt == fmt and exact_in(out.numpy(), fmt)
        out.backward(sp.tensor(rng.standard_normal(out.shape), fmt))
    assert x.grad.fmt == fmt and exact_in(x.grad.numpy(), fmt)
    assert w.grad.fmt == fmt and exact_in(w.grad.numpy(), fmt)


def test_dropout_scales_in_fp32_and_rounds_once():
    x16 = np.linspace(-3, 3, 1001).astype(np.float16)
    y = ops.dropout(sp.tensor(x16, sp.fp16), 0.1, True, generator=np.random.default_rng(0)).numpy()
    scale = np.float32(1.0 / np.float64(np.float32(0.9)))
    kept = y != 0
    expect = (x16.astype(np.float32) * scale).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(y[kept], expect[kept])


def test_bf16_cast_and_back():
    x = sp.tensor(np.array([1.0 + 2**-9, 3.14159], np.float32), requires_grad=True)
    y = x.bfloat16()
    assert y.fmt == sp.bf16
    np.testing.assert_array_equal(y.numpy(), np.array([1.0, 3.140625], np.float32))
    (y * 3.0).sum().backward()
    assert x.grad.fmt == sp.fp32
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def test_embedding_backward_sums_duplicates_in_fp32_once():
    """2,051 gradients of 1 for one row: summed in fp32 and rounded once that is 2052 (2051 is
    an fp16 tie between 2050 and 2052); an fp16 running sum would stall at 2048."""
    w = sp.tensor(np.zeros((3, 1)), sp.fp16, requires_grad=True)
    ids = sp.tensor(np.zeros(2051, dtype=np.int64))
    out = ops.embedding(ids, w)
    out.backward(sp.tensor(np.ones((2051, 1)), sp.fp16))
    running = np.float16(0)
    for _ in range(2051):
        running = np.float16(running + np.float16(1))
    assert running == 2048
    assert w.grad.fmt == sp.fp16 and w.grad.numpy()[0, 0] == 2052.0
    assert np.all(w.grad.numpy()[1:] == 0)
