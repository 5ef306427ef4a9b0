"""Every differentiable op against torch's float64 autograd (teenygrad's helper_test_op).

simprec computes in fp32 here (fp32 tensors: every rounding is fp32's), torch in float64, so the
tolerances are fp32-sized. Inputs are drawn away from the kinks and poles of each op.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simprec as sp
import simprec.ops as ops

torch = pytest.importorskip("torch")
TF = torch.nn.functional

RTOL, ATOL = 2e-5, 2e-5


def _draw(rng, shape, low, high, avoid):
    """Uniform in [low, high) with |x - a| >= 0.05 for every point a in `avoid` (kinks, ties)."""
    x = rng.uniform(low, high, shape)
    for a in avoid:
        near = np.abs(x - a) < 0.05
        x = np.where(near, a + np.where(x >= a, 0.05, -0.05) + np.sign(x - a + 1e-12) * 0.05, x)
    return x.astype(np.float32)


def helper_test_op(
    shapes,
    torch_fn,
    sp_fn=None,
    *,
    low=-2.0,
    high=2.0,
    avoid=(),
    rtol=RTOL,
    atol=ATOL,
    grad_rtol=None,
    grad_atol=None,
    seed=0,
    forward_only=False,
    ints=None,
):
    """Run `torch_fn` (float64 torch) and `sp_fn` (fp32 simprec; default: the same callable) on the
    same random inputs; compare the outputs and, after a backward of one random cotangent, the
    gradients of every input."""
    sp_fn = sp_fn or torch_fn
    rng = np.random.default_rng(seed)
    arrays = [_draw(rng, s, low, high, avoid) for s in shapes]
    tt = [torch.tensor(a.astype(np.float64), requires_grad=not forward_only) for a in arrays]
    st_ = [sp.tensor(a, requires_grad=not forward_only) for a in arrays]
    extra_t = [torch.tensor(i) for i in (ints or [])]
    extra_s = [sp.tensor(i) for i in (ints or [])]
    out_t, out_s = torch_fn(*tt, *extra_t), sp_fn(*st_, *extra_s)
    assert out_s.fmt == sp.fp32
    assert out_s.shape == tuple(out_t.shape), f"shape {out_s.shape} != torch {tuple(out_t.shape)}"
    np.testing.assert_allclose(out_s.numpy(), out_t.detach().numpy(), rtol=rtol, atol=atol)
    if forward_only:
        return
    cot = rng.standard_normal(out_s.shape).astype(np.float32)
    out_t.backward(torch.tensor(cot.astype(np.float64)))
    out_s.backward(sp.tensor(cot))
    for a, b in zip(st_, tt, strict=False):
        assert a.grad is not None and a.grad.fmt == sp.fp32 and a.grad.shape == a.shape
        np.testing.assert_allclose(
            a.grad.numpy(), b.grad.numpy(), rtol=grad_rtol or rtol * 5, atol=grad_atol or atol * 5
        )


SHAPES = [(), (5,), (3, 4), (2, 3, 4)]

# name: (torch fn, simprec fn or None, kwargs for helper_test_op)
UNARY = {
    "neg": (lambda x: -x, None, {}),
    "exp": (lambda x: x.exp(), None, {}),
    "log": (lambda x: x.log(), None, {"low": 0.1, "high": 3.0}),
    "sqrt": (lambda x: x.sqrt(), None, {"low": 0.1, "high": 3.0}),
    "rsqrt": (lambda x: x.rsqrt(), None, {"low": 0.2, "high": 3.0}),
    "reciprocal": (lambda x: x.reciprocal(), None, {"low": 0.3, "high": 3.0}),
    "abs": (lambda x: x.abs(), None, {"avoid": (0.0,)}),
    "tanh": (lambda x: x.tanh(), None, {}),
    "sigmoid": (lambda x: x.sigmoid(), None, {}),
    "relu": (lambda x: x.relu(), None, {"avoid": (0.0,)}),
    "gelu": (TF.gelu, ops.gelu, {}),
    "gelu_tanh": (
        lambda x: TF.gelu(x, approximate="tanh"),
        lambda x: ops.gelu(x, approximate="tanh"),
        {},
    ),
    "silu": (TF.silu, ops.silu, {}),
    "softplus": (TF.softplus, ops.softplus, {"low": -5, "high": 5}),
    "softplus_beta": (
        lambda x: TF.softplus(x, beta=2.0, threshold=3.0),
        lambda x: ops.softplus(x, beta=2.0, threshold=3.0),
        {"avoid": (1.5,)},
    ),
    "erf": (torch.erf, ops.erf, {}),
    "pow2": (lambda x: x**2, None, {}),
    "pow3": (lambda x: x**3, None, {}),
    "pow_half": (lambda x: x**0.5, None, {"low": 0.2, "high": 3.0}),
    "pow_neg1.5": (lambda x: x**-1.5, None, {"low": 0.3, "high": 3.0}),
    "pow1.7": (lambda x: x.pow(1.7), None, {"low": 0.2, "high": 3.0}),
    "pow_neg2": (lambda x: x**-2, None, {"low": 0.5, "high": 3.0}),
    "square": (lambda x: x.square(), None, {}),
    "clamp": (lambda x: x.clamp(-0.5, 0.7), lambda x: x.clamp(-0.5, 0.7), {"avoid": (-0.5, 0.7)}),
    "clamp_min": (lambda x: x.clamp(min=0.2), lambda x: x.clamp(min=0.2), {"avoid": (0.2,)}),
    "mul_scalar": (lambda x: x * 0.1, None, {}),
    "rmul_scalar": (lambda x: 3 * x, None, {}),
    "add_scalar": (lambda x: x + 1.5, None, {}),
    "radd_scalar": (lambda x: 2 + x, None, {}),
    "sub_scalar": (lambda x: x - 0.25, None, {}),
    "rsub_scalar": (lambda x: 1.0 - x, None, {}),
    "div_scalar": (lambda x: x / 3.0, None, {}),
    "rdiv_scalar": (lambda x: 2.0 / x, None, {"low": 0.3, "high": 3.0}),
    "div_rscalar_fn": (
        lambda x: torch.div(torch.tensor(2.0, dtype=torch.float64), x),
        lambda x: ops.div(2.0, x),
        {"low": 0.3, "high": 3.0},
    ),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name, shape):
    torch_fn, sp_fn, kw = UNARY[name]
    helper_test_op([shape], torch_fn, sp_fn, **kw)


BINARY = {
    "add": (lambda a, b: a + b, None, {}),
    "sub": (lambda a, b: a - b, None, {}),
    "mul": (lambda a, b: a * b, None, {}),
    "div": (lambda a, b: a / b, None, {"low": 0.3, "high": 2.0}),
    "maximum": (torch.maximum, ops.maximum, {}),
    "minimum": (torch.minimum, ops.minimum, {}),
    "add_alpha": (
        lambda a, b: torch.add(a, b, alpha=0.3),
        lambda a, b: ops.add(a, b, alpha=0.3),
        {},
    ),
    "sub_alpha": (
        lambda a, b: torch.sub(a, b, alpha=2.5),
        lambda a, b: ops.sub(a, b, alpha=2.5),
        {},
    ),
}
PAIRS = [
    ((), ()),
    ((4,), (4,)),
    ((3, 4), (4,)),
    ((3, 1), (1, 4)),
    ((2, 3, 4), (3, 1)),
    ((1,), (2, 3)),
]


@pytest.mark.parametrize("shapes", PAIRS, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary(name, shapes):
    torch_fn, sp_fn, kw = BINARY[name]
    helper_test_op(list(shapes), torch_fn, sp_fn, **kw)


_dim = st.integers(1, 4)


@st.composite
def broadcastable_pair(draw):
    """Two shapes of up to 3 dims that broadcast (each dim equal, or 1 on one side)."""
    out = draw(st.lists(_dim, min_size=0, max_size=3))
    a = [d if draw(st.booleans()) else 1 for d in out]
    b = [d if draw(st.booleans()) else 1 for d in out]
    cut = draw(st.integers(0, len(out)))
    return tuple(a), tuple(b[cut:])


@settings(max_examples=30, deadline=None)
@given(shapes=broadcastable_pair(), name=st.sampled_from(sorted(BINARY)), seed=st.integers(0, 1000))
def test_binary_broadcast_hypothesis(shapes, name, seed):
    torch_fn, sp_fn, kw = BINARY[name]
    helper_test_op(list(shapes), torch_fn, sp_fn, seed=seed, **kw)


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(_dim, min_size=0, max_size=4).map(tuple),
    name=st.sampled_from(sorted(UNARY)),
    seed=st.integers(0, 1000),
)
def test_unary_hypothesis(shape, name, seed):
    torch_fn, sp_fn, kw = UNARY[name]
    helper_test_op([shape], torch_fn, sp_fn, seed=seed, **kw)


def test_where_and_masked_fill():
    mask = np.array([[True, False, True, False]] * 3)
    helper_test_op(
        [(3, 4), (3, 4)],
        lambda a, b: torch.where(torch.tensor(mask), a, b),
        lambda a, b: ops.where(sp.tensor(mask), a, b),
    )
    helper_test_op(
        [(3, 4)],
        lambda a: torch.where(torch.tensor(mask), a, 0.5),
        lambda a: ops.where(sp.tensor(mask), a, 0.5),
    )
    helper_test_op(
        [(3, 4)],
        lambda a: a.masked_fill(torch.tensor(mask[0]), -1.5),
        lambda a: a.masked_fill(sp.tensor(mask[0]), -1.5),
    )


# ---------------------------------------------------------------- reductions

REDUCE = {
    "sum": (lambda x: x.sum(), None),
    "sum_dim": (lambda x: x.sum(-1), lambda x: x.sum(-1)),
    "sum_dim0_keep": (lambda x: x.sum(0, keepdim=True), lambda x: x.sum(0, keepdim=True)),
    "sum_dims": (lambda x: x.sum((0, 2)), lambda x: x.sum((0, 2))),
    "mean": (lambda x: x.mean(), None),
    "mean_dim": (lambda x: x.mean(1), lambda x: x.mean(1)),
    "mean_keep": (lambda x: x.mean(-1, keepdim=True), lambda x: x.mean(-1, keepdim=True)),
    "max": (lambda x: x.max(), None),
    "max_dim": (lambda x: x.max(1)[0], lambda x: x.max(1)[0]),
    "max_dim_keep": (
        lambda x: x.max(-1, keepdim=True).values,
        lambda x: x.max(-1, keepdim=True).values,
    ),
    "amax": (lambda x: x.amax(2), lambda x: ops.amax(x, 2)),
    "var": (lambda x: x.var(), None),
    "var_dim": (lambda x: x.var(1), lambda x: x.var(1)),
    "var_biased_keep": (
        lambda x: x.var(-1, correction=0, keepdim=True),
        lambda x: x.var(-1, correction=0, keepdim=True),
    ),
    "logsumexp": (lambda x: torch.logsumexp(x, -1), lambda x: ops.logsumexp(x, -1)),
    "logsumexp_dims": (
        lambda x: torch.logsumexp(x, (0, 1), keepdim=True),
        lambda x: ops.logsumexp(x, (0, 1), keepdim=True),
    ),
    "softmax": (lambda x: torch.softmax(x, -1), lambda x: ops.softmax(x, -1)),
    "softmax_dim1": (lambda x: torch.softmax(x, 1), lambda x: ops.softmax(x, 1)),
    "log_softmax": (lambda x: torch.log_softmax(x, -1), lambda x: ops.log_softmax(x, -1)),
    "log_softmax_dim0": (lambda x: torch.log_softmax(x, 0), lambda x: ops.log_softmax(x, 0)),
}


@pytest.mark.parametrize("shape", [(2, 3, 5), (4, 6, 200)], ids=str)
@pytest.mark.parametrize("name", sorted(REDUCE))
def test_reduce(name, shape):
    torch_fn, sp_fn = REDUCE[name]
    helper_test_op([shape], torch_fn, sp_fn, rtol=1e-4, atol=1e-5)


def test_max_tie_shares_gradient():
    x = sp.tensor([1.0, 3.0, 3.0, 2.0], requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0.5, 0.5, 0])


# ---------------------------------------------------------------- movement

MOVE = {
    "reshape": ((2, 3, 4), lambda x: x.reshape(4, 6), lambda x: x.reshape(4, 6)),
    "reshape_infer": ((2, 3, 4), lambda x: x.reshape(-1, 2), lambda x: x.reshape(-1, 2)),
    "transpose": ((2, 3, 4), lambda x: x.transpose(0, 2), lambda x: x.transpose(0, 2)),
    "permute": ((2, 3, 4), lambda x: x.permute(1, 2, 0), lambda x: x.permute(1, 2, 0)),
    "T": ((3, 4), lambda x: x.T, lambda x: x.T),
    "flatten": ((2, 3, 4), lambda x: x.flatten(1), lambda x: x.flatten(1)),
    "unsqueeze": ((3, 4), lambda x: x.unsqueeze(1), lambda x: x.unsqueeze(1)),
    "expand": ((3, 1), lambda x: x.expand(2, 3, 5), lambda x: x.expand(2, 3, 5)),
    "slice": ((5, 6), lambda x: x[1:4, ::2], lambda x: x[1:4, ::2]),
    "slice_neg_int": ((5, 6), lambda x: x[-1, 1:], lambda x: x[-1, 1:]),
    "index_array_repeat": (
        (5, 3),
        lambda x: x[torch.tensor([0, 2, 2, 4])],
        lambda x: x[sp.tensor(np.array([0, 2, 2, 4]))],
    ),
    "index_bool": (
        (4, 3),
        lambda x: x[torch.tensor([True, False, True, True])],
        lambda x: x[np.array([True, False, True, True])],
    ),
    "pad": (
        (2, 3),
        lambda x: TF.pad(x, (1, 2, 0, 1), value=0.5),
        lambda x: ops.pad(x, (1, 2, 0, 1), 0.5),
    ),
}


@pytest.mark.parametrize("name", sorted(MOVE))
def test_movement(name):
    shape, torch_fn, sp_fn = MOVE[name]
    helper_test_op([shape], torch_fn, sp_fn)


def test_cat_stack():
    helper_test_op(
        [(2, 3), (4, 3)], lambda a, b: torch.cat([a, b, a]), lambda a, b: ops.cat([a, b, a])
    )
    helper_test_op(
        [(2, 3), (2, 1)], lambda a, b: torch.cat([a, b], 1), lambda a, b: ops.cat([a, b], 1)
    )
    helper_test_op(
        [(2, 3), (2, 3)], lambda a, b: torch.stack([a, b], 1), lambda a, b: ops.stack([a, b], 1)
    )


# ---------------------------------------------------------------- matmul / linear

MATMUL = [
    ((3, 4), (4, 5)),
    ((2, 3, 4), (2, 4, 5)),
    ((2, 3, 4), (4, 5)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((2, 1, 3, 4), (5, 4, 2)),
    ((4,), (4,)),
]


@pytest.mark.parametrize("shapes", MATMUL, ids=str)
def test_matmul(shapes):
    helper_test_op(list(shapes), lambda a, b: a @ b, lambda a, b: a @ b)


@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias):
    shapes = [(2, 3, 6), (5, 6)] + ([(5,)] if bias else [])
    helper_test_op(shapes, TF.linear, ops.linear)


# ---------------------------------------------------------------- nn ops


def check_affine_layer_norm(shape, norm):
    """layer_norm with weight and bias against torch's float64 autograd."""
    helper_test_op(
        [shape, norm, norm],
        lambda x, w, b: TF.layer_norm(x, norm, w, b),
        lambda x, w, b: ops.layer_norm(x, norm, w, b),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(4, 8), (2, 3, 6), (3, 7)], ids=str)
def test_layer_norm(shape, affine):
    norm = shape[-1:]
    if affine:
        check_affine_layer_norm(shape, norm)
    else:
        helper_test_op(
            [shape],
            lambda x: TF.layer_norm(x, norm),
            lambda x: ops.layer_norm(x, norm),
            rtol=1e-4,
            atol=1e-4,
        )


CONV = [dict(), dict(stride=2), dict(padding=1), dict(stride=(2, 1), padding=(1, 2))]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kw", CONV, ids=str)
def test_conv2d(kw, bias):
    shapes = [(2, 3, 7, 6), (4, 3, 3, 2)] + ([(4,)] if bias else [])
    helper_test_op(
        shapes,
        lambda *a: TF.conv2d(*a, **kw),
        lambda *a: ops.conv2d(*a, **kw),
        rtol=1e-4,
        atol=1e-4,
    )


POOL = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=(3, 2), stride=(2, 1)),
    dict(kernel_size=3, stride=2, padding=1),
]


@pytest.mark.parametrize("kw", POOL, ids=str)
def test_max_pool2d(kw):
    # distinct values (no ties): a shuffled grid
    rng = np.random.default_rng(1)
    x = rng.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6).astype(np.float32) / 10
    xt, xs = (
        torch.tensor(x.astype(np.float64), requires_grad=True),
        sp.tensor(x, requires_grad=True),
    )
    out_t, out_s = TF.max_pool2d(xt, **kw), ops.max_pool2d(xs, **kw)
    np.testing.assert_array_equal(out_s.numpy(), out_t.detach().numpy().astype(np.float32))
    cot = rng.standard_normal(out_s.shape).astype(np.float32)
    out_t.backward(torch.tensor(cot.astype(np.float64)))
    out_s.backward(sp.tensor(cot))
    np.testing.assert_allclose(xs.grad.numpy(), xt.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kw", POOL, ids=str)
def test_avg_pool2d(kw, count_include_pad):
    helper_test_op(
        [(2, 3, 7, 6)],
        lambda x: TF.avg_pool2d(x, count_include_pad=count_include_pad, **kw),
        lambda x: ops.avg_pool2d(x, count_include_pad=count_include_pad, **kw),
    )


def test_avg_pool2d_divisor_override():
    helper_test_op(
        [(1, 2, 6, 6)],
        lambda x: TF.avg_pool2d(x, 3, 1, 1, divisor_override=5),
        lambda x: ops.avg_pool2d(x, 3, 1, 1, divisor_override=5),
    )


@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding(padding_idx):
    ids = np.array([[1, 2, 2], [0, 4, 2]])
    helper_test_op(
        [(5, 3)],
        lambda w, i: TF.embedding(i, w, padding_idx=padding_idx),
        lambda w, i: ops.embedding(i, w, padding_idx=padding_idx),
        ints=[ids],
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy(reduction, smoothing):
    target = np.array([1, 0, 4, 2, 1, 3])
    helper_test_op(
        [(6, 5)],
        lambda x, t: TF.cross_entropy(x, t, reduction=reduction, label_smoothing=smoothing),
        lambda x, t: ops.cross_entropy(x, t, reduction=reduction, label_smoothing=smoothing),
        ints=[target],
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_ignore_index_and_spatial(smoothing):
    target = np.array([[1, -100, 2], [0, 2, -100]])
    helper_test_op(
        [(2, 3, 3)],
        lambda x, t: TF.cross_entropy(x, t, ignore_index=-100, label_smoothing=smoothing),
        lambda x, t: ops.cross_entropy(x, t, ignore_index=-100, label_smoothing=smoothing),
        ints=[target],
    )
    target = np.array([1, 7, 0, 7])
    helper_test_op(
        [(4, 3)],
        lambda x, t: TF.cross_entropy(x, t, ignore_index=7, label_smoothing=smoothing),
        lambda x, t: ops.cross_entropy(x, t, ignore_index=7, label_smoothing=smoothing),
        ints=[target],
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_and_mse(reduction):
    target = np.array([2, 0, 1])
    helper_test_op(
        [(3, 4)],
        lambda x, t: TF.nll_loss(x, t, reduction=reduction),
        lambda x, t: ops.nll_loss(x, t, reduction=reduction),
        ints=[target],
    )
    helper_test_op(
        [(3, 4), (3, 4)],
        lambda a, b: TF.mse_loss(a, b, reduction=reduction),
        lambda a, b: ops.mse_loss(a, b, reduction=reduction),
    )


SDPA = [dict(), dict(is_causal=True), dict(scale=0.3), dict(mask="bool"), dict(mask="float")]


@pytest.mark.parametrize("kw", SDPA, ids=str)
def test_sdpa(kw):
    kw = dict(kw)
    mask = kw.pop("mask", None)
    rng = np.random.default_rng(3)
    if mask == "bool":
        m = rng.random((5, 6)) < 0.7
        m[:, 0] = True
        kw_t, kw_s = dict(attn_mask=torch.tensor(m)), dict(attn_mask=sp.tensor(m))
    elif mask == "float":
        m = rng.standard_normal((5, 6)).astype(np.float32)
        kw_t, kw_s = (
            dict(attn_mask=torch.tensor(m.astype(np.float64))),
            dict(attn_mask=sp.tensor(m)),
        )
    else:
        kw_t = kw_s = {}
    helper_test_op(
        [(2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 7)]
        if not kw.get("is_causal")
        else [(2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 7)],
        lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, **kw, **kw_t),
        lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, **kw, **kw_s),
        rtol=1e-4,
        atol=1e-5,
    )


def test_dropout_identity_and_scaling():
    x = sp.tensor(np.ones((200, 50), np.float32), requires_grad=True)
    assert ops.dropout(x, 0.3, training=False) is x
    assert ops.dropout(x, 0.0, training=True) is x
    y = ops.dropout(x, 0.25, True, generator=np.random.default_rng(0))
    vals = np.unique(y.numpy())
    np.testing.assert_array_equal(vals, [0.0, np.float32(1 / np.float32(0.75))])
    kept = (y.numpy() != 0).mean()
    assert abs(kept - 0.75) < 0.02
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy() != 0, y.numpy() != 0)
    again = ops.dropout(x, 0.25, True, generator=np.random.default_rng(0))
    np.testing.assert_array_equal(again.numpy(), y.numpy())  # seeded: reproducible
    np.testing.assert_array_equal(ops.dropout(x, 1.0, True, generator=0).numpy(), 0.0)


# ---------------------------------------------------------------- finite differences (composites)


def _directional_check(fn, shapes, seed=0, eps=1e-2, rtol=2e-2):
    """<grad f(x), v> against the central difference (f(x + eps v) - f(x - eps v)) / 2 eps, in
    float64 arithmetic on fp32-exact points (f's own fp32 rounding is far below eps here)."""
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes]
    vs = [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes]
    ts = [sp.tensor(x, requires_grad=True) for x in xs]
    fn(*ts).backward()
    analytic = sum(
        float(np.sum(t.grad.numpy().astype(np.float64) * v)) for t, v in zip(ts, vs, strict=False)
    )
    plus = fn(*[sp.tensor(x + eps * v) for x, v in zip(xs, vs, strict=False)]).item()
    minus = fn(*[sp.tensor(x - eps * v) for x, v in zip(xs, vs, strict=False)]).item()
    numeric = (plus - minus) / (2 * eps)
    assert abs(analytic - numeric) <= rtol * max(1.0, abs(numeric)), (analytic, numeric)


def test_finite_differences_composites():
    w = np.random.default_rng(9).standard_normal((2, 3, 5, 3)).astype(np.float32)
    _directional_check(
        lambda q, k, v: (
            ops.scaled_dot_product_attention(q, k, v, is_causal=True) * sp.tensor(w)
        ).sum(),
        [(2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 3)],
    )
    target = sp.tensor(np.array([0, 2, 1, 2]))
    _directional_check(lambda x: ops.cross_entropy(x, target, label_smoothing=0.3), [(4, 3)])
    _directional_check(
        lambda x, k, b: (ops.conv2d(x, k, b, stride=2, padding=1) ** 2).sum(),
        [(1, 2, 5, 5), (3, 2, 3, 3), (3,)],
        eps=1e-3,
    )


@pytest.mark.parametrize(
    "shape,norm",
    [
        ((2, 3, 4), (3, 4)),
        ((70, 8), (8,)),
        ((130, 12), (12,)),
        ((300, 8), (8,)),
        ((5, 1030), (1030,)),
    ],
    ids=str,
)
def test_layer_norm_row_counts_and_shapes(shape, norm):
    """Every tile configuration of the gamma/beta kernel model and multi-dim normalized shapes."""
    check_affine_layer_norm(shape, norm)
