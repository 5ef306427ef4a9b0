"""The backend contract, held on every backend this machine has against the NumPy reference.

Backends: "numpy" (the reference itself: the tests then check the harness), "torch:cpu" (the
torch backend's plumbing on every commit), "torch:cuda" (marked gpu), and "opaque" (the
reference's kernels behind boxes NumPy cannot read: the core never hands a backend's array to
NumPy). Every kernel and every whole training step must give the reference's bits.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from opaque_backend import OpaqueBackend

import simprec as sp
from simprec import amp, formats, optim
from simprec.backend import get_backend, register_backend
from simprec.backend.contract import ELEMENTWISE_OPS

register_backend("opaque", OpaqueBackend)

try:
    import torch
except ImportError:  # pragma: no cover - torch is a dev dependency
    torch = None

_HAS_CUDA = torch is not None and torch.cuda.is_available()
BACKENDS = [
    "numpy",
    "opaque",
    pytest.param("torch:cpu", marks=pytest.mark.skipif(torch is None, reason="torch missing")),
    pytest.param("torch:cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not _HAS_CUDA, reason="needs a CUDA GPU")]),
]
REF = get_backend("numpy")


@pytest.fixture(params=BACKENDS)
def be(request):
    return get_backend(request.param)


def host(be, x):
    return np.asarray(be.to_numpy(x))


def same_bits(a, b):
    """a and b (host arrays) equal bit for bit, NaN as NaN (payloads are not part of the
    contract: NaN stays NaN, its sign and payload are not kept)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.dtype.kind == "f":
        a, b = a.astype(np.float32), b.astype(np.float32)
        nan = np.isnan(a)
        assert np.array_equal(nan, np.isnan(b)), "NaN positions differ"
        bad = (a.view(np.uint32) != b.view(np.uint32)) & ~nan
        assert not bad.any(), f"{bad.sum()} of {a.size} differ: {a[bad][:4]} vs {b[bad][:4]}"
    else:
        assert np.array_equal(a, b)


def _values(n, seed, specials=True):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * np.exp2(rng.integers(-12, 6, n))).astype(np.float32)
    if specials:
        x[:12] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-45, 65504, 65520, 3e38, 0.5, -2]
    return x


UNARY = ["neg", "abs", "sign", "reciprocal", "square", "exp", "log", "sqrt", "rsqrt", "tanh",
         "sigmoid", "softplus", "erf", "relu", "gelu", "gelu_tanh", "silu", "isfinite", "isnan"]
BINARY = ["add", "sub", "mul", "div", "maximum", "minimum", "gt", "ge", "lt", "le", "eq", "ne",
          "tanh_backward", "sigmoid_backward", "gelu_backward", "gelu_tanh_backward",
          "silu_backward", "softplus_backward", "relu_backward", "threshold_backward"]
SCALAR = ["mul_scalar", "add_scalar", "rsub_scalar", "div_scalar", "rdiv_scalar", "pow_scalar"]


def test_the_test_lists_cover_every_elementwise_op():
    assert set(UNARY + BINARY + SCALAR) | {"add_scaled", "fma", "where", "clamp"} == set(
        ELEMENTWISE_OPS)


def _on(be, *xs, fmt=sp.fp32):
    return [be.asarray(formats.round(x, fmt), fmt) for x in xs]


@pytest.mark.parametrize("fmt", [sp.fp32, sp.fp16, sp.bf16], ids=lambda f: f.name)
@pytest.mark.parametrize("op", UNARY + BINARY)
def test_elementwise_is_bit_identical(be, op, fmt):
    if be.name == "torch:cuda" and op == "sign":
        pytest.skip("torch's CUDA sign(NaN) is 0; the reference's is NaN")  # not a training op
    arity = 1 if op in UNARY else 2
    xs = [_values(4099, seed) for seed in range(arity)]
    ref = REF.elementwise(op, *_on(REF, *xs, fmt=fmt))
    got = be.elementwise(op, *_on(be, *xs, fmt=fmt))
    same_bits(host(be, got), ref)
    if ref.dtype == np.float32:  # and rounded once into a format, in the same kernel
        for out in (sp.fp16, sp.bf16, sp.fp8_e4m3):
            same_bits(host(be, be.elementwise(op, *_on(be, *xs, fmt=fmt), fmt=out)),
                      REF.elementwise(op, *_on(REF, *xs, fmt=fmt), fmt=out))


@pytest.mark.parametrize("op", SCALAR)
@pytest.mark.parametrize("value", [0.1, 3.0, -2.5, 1e-8])
def test_scalar_elementwise_is_bit_identical(be, op, value):
    x = np.abs(_values(2053, 3)) if op == "pow_scalar" else _values(2053, 3)
    same_bits(host(be, be.elementwise(op, *_on(be, x), scalar=value)),
              REF.elementwise(op, *_on(REF, x), scalar=value))


def test_fused_and_selection_kernels(be):
    a, b, c = (_values(4099, s) for s in range(3))
    same_bits(host(be, be.elementwise("fma", *_on(be, a, b, c))),
              REF.elementwise("fma", *_on(REF, a, b, c)))
    same_bits(host(be, be.elementwise("add_scaled", *_on(be, a, b), alpha=0.3)),
              REF.elementwise("add_scaled", *_on(REF, a, b), alpha=0.3))
    same_bits(host(be, be.elementwise("clamp", *_on(be, a), lo=-1.0, hi=0.5)),
              REF.elementwise("clamp", *_on(REF, a), lo=-1.0, hi=0.5))
    cond = be.elementwise("gt", *_on(be, a), 0.0)
    same_bits(host(be, be.elementwise("where", cond, *_on(be, a, b))),
              REF.elementwise("where", REF.elementwise("gt", a, 0.0), a, b))


FORMATS = [sp.fp16, sp.bf16, sp.fp8_e4m3, sp.fp8_e5m2, sp.fp8_e4m3.replace(overflow="saturate"),
           sp.tf32, sp.Format(3, 2, subnormals=False), sp.Format(2, 1), sp.Format(4, 0),
           sp.Format(6, 9, overflow="saturate")]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_round_into_every_format_is_bit_identical(be, fmt):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.integers(0, 2**32, 50000, dtype=np.uint32).view(np.float32),
                        _values(50000, 8)])
    got = host(be, be.round(be.asarray(x, sp.fp32), fmt))
    same_bits(got, formats.round(x, fmt))
    # exact=True moves values already in the format: no change
    same_bits(host(be, be.round(be.round(be.asarray(x, sp.fp32), fmt), fmt, exact=True)), got)


@pytest.mark.parametrize("mode", ["toward_zero", "stochastic"])
@pytest.mark.parametrize("fmt", FORMATS[:6], ids=lambda f: f.name)
def test_torch_rounding_modes_on_the_device(mode, fmt):
    pytest.importorskip("torch")
    get_backend("torch:cpu")  # puts <repo>/backends on the path in a plain checkout
    from simprec_torch.rounding import round_to_format

    rng = np.random.default_rng(9)
    x = np.concatenate([rng.integers(0, 2**32, 50000, dtype=np.uint32).view(np.float32),
                        _values(50000, 10)])
    words = np.random.default_rng(11).integers(0, 2**32, size=x.size, dtype=np.uint32)
    want = formats.round(x, fmt, mode, **({"rng": np.random.default_rng(11)}
                                           if mode == "stochastic" else {}))
    got = round_to_format(torch.from_numpy(x), fmt, mode, torch.from_numpy(words.astype(np.int64)))
    same_bits(got.float().numpy(), want)


def test_containers(be):
    x = be.asarray(np.array([1.5, -2.0], np.float32), sp.fp16)
    assert be.shape(x) == (2,)
    same_bits(host(be, x), np.array([1.5, -2.0], np.float32))
    same_bits(host(be, be.full((2, 3), 0.25, sp.bf16)), np.full((2, 3), 0.25, np.float32))
    ids = be.asarray(np.array([3, 1]), formats.int64)
    assert host(be, ids).dtype == np.int64
    if be.name.startswith("torch"):
        assert x.dtype == torch.float16 and be.asarray([1.0], sp.bf16).dtype == torch.bfloat16
        assert be.asarray([1.0], sp.fp8_e4m3).dtype == torch.float32


@pytest.mark.parametrize("fmt,accumulate", [(sp.fp16, "sm90"), (sp.bf16, "sm90"),
                                            (sp.fp32, "fp32")], ids=str)
@pytest.mark.parametrize("shape", [(8, 16, 4), (5, 37, 3), (2, 3, 33, 7)], ids=str)
@pytest.mark.parametrize("out", [sp.fp32, "same"])
def test_matmul_is_bit_identical(be, fmt, accumulate, shape, out):
    if be.name.startswith("torch:cuda") and fmt == sp.fp32:
        pytest.skip("fp32 GEMM order is unspecified in the reference")
    out = fmt if out == "same" else out
    rng = np.random.default_rng(1)
    *batch, m, k, n = shape
    a = formats.round(rng.standard_normal((*batch, m, k)).astype(np.float32), fmt)
    b = formats.round(rng.standard_normal((k, n)).astype(np.float32), fmt)
    bias = formats.round(rng.standard_normal(n).astype(np.float32), fmt)
    for with_bias in (None, bias):
        want = REF.matmul(a, b, fmt=fmt, accumulate=accumulate, out_fmt=out, bias=with_bias)
        got = be.matmul(be.asarray(a, fmt), be.asarray(b, fmt), fmt=fmt, accumulate=accumulate,
                        out_fmt=out, bias=None if with_bias is None else be.asarray(bias, fmt))
        same_bits(host(be, got), want)


def test_reductions(be):
    x = _values(6 * 7 * 5, 4, specials=False).reshape(6, 7, 5)
    bx = be.asarray(x, sp.fp32)
    for axis in (None, 0, (1, 2), -1):
        same_bits(host(be, be.sum(bx, axis, False)), REF.sum(x, axis, False))
        same_bits(host(be, be.max(bx, axis, True)), REF.max(x, axis, True))
    same_bits(host(be, be.argmax(bx, 1)), REF.argmax(x, 1))
    assert be.all_finite([bx]) and not be.all_finite([bx, be.asarray([np.inf], sp.fp32)])


def test_movement(be):
    x = _values(2 * 3 * 4 * 5, 5, specials=False).reshape(2, 3, 4, 5)
    bx = be.asarray(x, sp.fp32)
    same_bits(host(be, be.reshape(bx, (6, -1))), x.reshape(6, -1))
    same_bits(host(be, be.transpose(bx, (3, 1, 0, 2))), x.transpose(3, 1, 0, 2))
    same_bits(host(be, be.broadcast_to(be.asarray(x[:1], sp.fp32), x.shape)),
              np.broadcast_to(x[:1], x.shape))
    for index in [(slice(None), 1), (Ellipsis, slice(1, 4, 2)), (np.array([1, 0, 1]),),
                  (slice(None), np.array([2, 0]), slice(None), np.array([4, 1]))]:
        same_bits(host(be, be.getitem(bx, index)), x[index])
        values = REF.getitem(x, index)
        same_bits(host(be, be.index_add(x.shape, index, be.asarray(values, sp.fp32))),
                  REF.index_add(x.shape, index, values))
    same_bits(host(be, be.concatenate([bx, bx], 1)), np.concatenate([x, x], 1))
    same_bits(host(be, be.pad(bx, ((0, 0), (1, 0), (0, 2), (0, 0)), -np.inf)),
              np.pad(x, ((0, 0), (1, 0), (0, 2), (0, 0)), constant_values=-np.inf))
    ids = np.array([[1, 0], [1, 1]])
    same_bits(host(be, be.take(bx, be.asarray(ids, formats.int64), 1)), np.take(x, ids, 1))
    assert host(be, be.astype(bx, "int")).dtype == np.int64
    assert host(be, be.astype(be.elementwise("gt", bx, 0.0), "float")).dtype == np.float32


def test_im2col_and_col2im(be):
    x = _values(2 * 3 * 6 * 5, 6, specials=False).reshape(2, 3, 6, 5)
    args = ((3, 2), (2, 1), (1, 1))
    cols = REF.im2col(x, *args)
    same_bits(host(be, be.im2col(be.asarray(x, sp.fp32), *args)), cols)
    same_bits(host(be, be.col2im(be.asarray(cols, sp.fp32), x.shape, *args)),
              REF.col2im(cols, x.shape, *args))


# ---- whole models: a few steps of every recipe, losses, scales and parameters ----

def _model(name):
    from simprec.models import MLP, SmallCNN, TinyGPT

    g = np.random.default_rng(0)
    if name == "mlp":
        model = MLP(64, (32, 32), 10, activation="gelu", generator=1)
        batches = [(g.standard_normal((16, 64)).astype(np.float32), g.integers(0, 10, 16))
                   for _ in range(3)]
    elif name == "cnn":
        model = SmallCNN(1, (4, 8), 10, 8, generator=1)
        batches = [(g.standard_normal((8, 1, 8, 8)).astype(np.float32), g.integers(0, 10, 8))
                   for _ in range(3)]
    else:
        model = TinyGPT(32, 16, n_layer=1, n_head=2, n_embd=32, generator=1)
        batches = [(g.integers(0, 32, (4, 16)), g.integers(0, 32, (4, 16))) for _ in range(3)]
    return model, batches


def _loss(model, batch):
    from simprec.nn import functional as F

    x, y = batch
    out = model(x)
    if out.ndim == 3:
        out, y = out.reshape(-1, out.shape[-1]), y.reshape(-1)
    return F.cross_entropy(out, y)


def _train(name, recipe_name, backend):
    model, batches = _model(name)
    model.to(backend)
    recipe = amp.get_recipe(recipe_name, clip_grad_norm=1.0)
    factory = ((lambda p: optim.SGD(p, lr=0.05, momentum=0.9)) if recipe_name == "pure-fp16"
               else (lambda p: optim.AdamW(p, lr=1e-2)))
    model, opt, _ = recipe.prepare(model, factory)
    facts = []
    for x, y in batches:
        _, f = recipe.step(model, opt, _loss, (sp.tensor(x, backend=backend),
                                              sp.tensor(y, backend=backend)))
        facts.append((f["loss"], f["scale"], f["skipped"]))
    return facts, {n: p.numpy() for n, p in model.named_parameters()}, model, opt


@pytest.mark.parametrize("recipe", ["amp-fp16", "amp-bf16", "pure-fp16", "o2-fp16"])
@pytest.mark.parametrize("model", ["mlp", "cnn", "gpt"])
def test_training_steps_are_bit_identical(be, model, recipe):
    want_facts, want_params, *_ = _train(model, recipe, "numpy")
    facts, params, trained, _ = _train(model, recipe, be.name)
    assert facts == want_facts
    for name, value in want_params.items():
        same_bits(params[name], value)
    assert all(p.backend is be for p in trained.parameters())


def test_state_follows_and_checkpoints_are_backend_neutral(be):
    """Optimizer state lives on the parameters' backend; a state_dict moves between backends
    and training continues bit for bit."""
    facts, params, model, opt = _train("mlp", "amp-fp16", be.name)
    for state in opt.state.values() if hasattr(opt, "state") else ():
        for value in state.values():
            if hasattr(value, "backend"):
                assert value.backend is be
    state = copy.deepcopy(model.state_dict())
    fresh, _ = _model("mlp")
    fresh.load_state_dict(state)
    for name, p in fresh.named_parameters():
        same_bits(p.numpy(), params[name])
