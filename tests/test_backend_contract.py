"""The backend contract, held on every backend this machine has against the NumPy reference.

Backends: "numpy" (the reference itself: the tests then check the harness), "torch:cpu" (the
torch backend's plumbing on every commit), "torch:cuda" (marked gpu), and "opaque" (the
reference's kernels behind boxes NumPy cannot read: the core never hands a backend's array to
NumPy). Every kernel and every whole training step must give the reference's bits.
"""

from __future__ import annotations

import copy
import math

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


def _train(name, recipe_name, backend, gpu=False):
    model, batches = _model(name)
    model.to(backend)
    # on a GPU the tensor cores' own model; on the CPU the default (fast) one
    accumulate = "sm90" if gpu else None
    recipe = amp.get_recipe(recipe_name, clip_grad_norm=1.0, accumulate=accumulate)
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
    gpu = be.name.startswith("torch:cuda")
    want_facts, want_params, *_ = _train(model, recipe, "numpy", gpu)
    facts, params, trained, _ = _train(model, recipe, be.name, gpu)
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


# ---- level 2: op-level kernels, each backend's against the reference's model ----

def _rounded(be, x, fmt):
    """The caller's one rounding of a level-2 result, on the host."""
    return host(be, be.round(x, fmt))


def _arr(be, x, fmt):
    return be.asarray(formats.round(np.asarray(x, np.float32), fmt), fmt)


@pytest.mark.parametrize("shape,axes", [((7, 300), (1,)), ((300, 7), (0,)), ((4, 5, 6), (1,)),
                                        ((3, 4, 50), (1, 2)), ((2, 3, 4), ())], ids=str)
def test_reduce_sum_and_var(be, shape, axes):
    x = _values(math.prod(shape), 12, specials=False).reshape(shape)
    for fmt in (sp.fp32, sp.fp16):
        for keep in (False, True):
            same_bits(_rounded(be, be.reduce_sum(_arr(be, x, fmt), axes, keep), fmt),
                      REF.round(REF.reduce_sum(formats.round(x, fmt), axes, keep), fmt))
        if axes:
            same_bits(_rounded(be, be.var(_arr(be, x, fmt), axes, 1, False, fmt), fmt),
                      REF.round(REF.var(formats.round(x, fmt), axes, 1, False, fmt), fmt))


@pytest.mark.parametrize("n", [10, 100, 1000, 3000])
@pytest.mark.parametrize("fmts", [(sp.fp32, sp.fp32), (sp.fp16, sp.fp16), (sp.bf16, sp.bf16),
                                  (sp.fp16, sp.fp32)], ids=lambda f: f"{f[0].name}-{f[1].name}")
@pytest.mark.parametrize("log", [False, True])
def test_softmax_forward_and_backward(be, n, fmts, log):
    in_fmt, out_fmt = fmts
    rng = np.random.default_rng(n)
    x = rng.standard_normal((6, n)).astype(np.float32) * 4
    g = rng.standard_normal((6, n)).astype(np.float32)
    want = REF.round(REF.softmax(formats.round(x, in_fmt), 1, in_fmt, out_fmt, log), out_fmt)
    got = be.round(be.softmax(_arr(be, x, in_fmt), 1, in_fmt, out_fmt, log), out_fmt)
    same_bits(host(be, got), want)
    gw = REF.softmax_backward(formats.round(g, out_fmt), want, 1, in_fmt, out_fmt, log)
    gb = be.softmax_backward(_arr(be, g, out_fmt), got, 1, in_fmt, out_fmt, log)
    same_bits(_rounded(be, gb, in_fmt), REF.round(gw, in_fmt))


@pytest.mark.parametrize("n", [64, 30])
@pytest.mark.parametrize("fmt", [sp.fp32, sp.fp16], ids=lambda f: f.name)
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_forward_and_backward(be, n, fmt, affine):
    rng = np.random.default_rng(n)
    x = formats.round(rng.standard_normal((40, n)).astype(np.float32) + 1, fmt)
    g = formats.round(rng.standard_normal((40, n)).astype(np.float32), fmt)
    w = formats.round(rng.standard_normal(n).astype(np.float32), fmt) if affine else None
    b = formats.round(rng.standard_normal(n).astype(np.float32), fmt) if affine else None
    on = lambda v: None if v is None else be.asarray(v, fmt)  # noqa: E731
    ref = REF.layer_norm(x, w, b, 1e-5, fmt)
    got = be.layer_norm(on(x), on(w), on(b), 1e-5, fmt)
    same_bits(_rounded(be, got[0], fmt), REF.round(ref[0], fmt))
    for i in (1, 2):
        same_bits(host(be, got[i]).reshape(-1), np.asarray(ref[i]).reshape(-1))
    ref_g = REF.layer_norm_backward(g, x, ref[1], ref[2], w, fmt)
    got_g = be.layer_norm_backward(on(g), on(x), got[1], got[2], on(w), fmt)
    for r, t in zip(ref_g, got_g, strict=True):
        assert (r is None) == (t is None)
        if r is not None:
            same_bits(_rounded(be, t, fmt), REF.round(r, fmt))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("fmt", [sp.fp32, sp.fp16], ids=lambda f: f.name)
def test_nll_loss_and_embedding_backward(be, reduction, fmt):
    rng = np.random.default_rng(3)
    logp = formats.round(-np.abs(rng.standard_normal((70, 9))).astype(np.float32), fmt)
    target = rng.integers(0, 9, 70)
    target[::7] = -100
    ref_loss, ref_w = REF.nll_loss(logp, target, -100, reduction)
    tgt = be.asarray(target, formats.int64)
    loss, weight = be.nll_loss(be.asarray(logp, fmt), tgt, -100, reduction)
    same_bits(_rounded(be, loss, fmt), REF.round(ref_loss, fmt))
    grad = formats.round(rng.standard_normal(() if reduction != "none" else 70)
                         .astype(np.float32), fmt)
    same_bits(_rounded(be, be.nll_loss_backward(be.asarray(grad, fmt), tgt, -100, reduction,
                                                weight, (70, 9), fmt), fmt),
              REF.round(REF.nll_loss_backward(grad, target, -100, reduction, ref_w, (70, 9), fmt),
                        fmt))
    ids = rng.integers(0, 12, (5, 7))
    g = formats.round(rng.standard_normal((5, 7, 4)).astype(np.float32), fmt)
    for padding in (None, 3):
        same_bits(_rounded(be, be.embedding_backward(be.asarray(g, fmt),
                                                     be.asarray(ids, formats.int64), 12, padding),
                           fmt),
                  REF.round(REF.embedding_backward(g, ids, 12, padding), fmt))


@pytest.mark.parametrize("poison", [None, np.inf, np.nan])
def test_amp_unscale_and_update_scale(be, poison):
    from simprec.amp.grad_scaler import amp_update_scale

    rng = np.random.default_rng(4)
    grads = [rng.standard_normal(s).astype(np.float32) * 1024 for s in ((5, 3), (7,))]
    if poison is not None:
        grads[1][2] = poison
    inv = np.float32(1.0 / np.float64(3072.0))
    ref, ref_found = REF.amp_unscale([g.copy() for g in grads], [sp.fp32] * 2, float(inv))
    got, found = be.amp_unscale([be.asarray(g, sp.fp32) for g in grads], [sp.fp32] * 2,
                                float(inv))
    assert float(host(be, found)) == float(ref_found) == (poison is not None)
    for r, t in zip(ref, got, strict=True):
        same_bits(host(be, t), r)
    for tracker in (0, 1999, 5):
        for scale in (65536.0, 3e38, 1.0):
            want = amp_update_scale(np.float32(scale), np.int32(tracker), float(ref_found),
                                    2.0, 0.5, 2000)
            new_scale, new_tracker = be.amp_update_scale(
                be.full((), scale, sp.fp32), be.full((), tracker, formats.int64), found,
                2.0, 0.5, 2000)
            assert float(host(be, new_scale)) == float(want[0])
            assert int(host(be, new_tracker)) == int(want[1])


@pytest.mark.parametrize("fmt", [sp.fp32, sp.fp16], ids=lambda f: f.name)
@pytest.mark.parametrize("decoupled,wd", [(True, 0.01), (False, 0.1), (False, 0.0)])
def test_adam_foreach(be, fmt, decoupled, wd):
    """The optimizers' foreach kernel (torch's _multi_tensor_adam) against the reference's
    model, tensor by tensor, including the handed-over state."""
    rng = np.random.default_rng(5)
    shapes = ((5, 3), (7,), (33,))

    def arrays(scale):
        return [formats.round(rng.standard_normal(s).astype(np.float32) * scale, fmt)
                for s in shapes]

    params, grads, avgs = arrays(1.0), arrays(1e-2), arrays(1e-3)
    sqs = [np.abs(a) for a in arrays(1e-4)]
    kw = dict(lr=3e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=wd, decoupled=decoupled,
              step=3.0)
    want = REF.adam_foreach(*([a.copy() for a in x] for x in (params, grads, avgs, sqs)),
                            [fmt] * 3, **kw)
    got = be.adam_foreach(*([be.asarray(a, fmt) for a in x] for x in (params, grads, avgs, sqs)),
                          [fmt] * 3, **kw)
    for w, g in zip(want, got, strict=True):
        for a, b in zip(w, g, strict=True):
            same_bits(host(be, b), a)
