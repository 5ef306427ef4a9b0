"""The CuPy backend against the NumPy reference, bit for bit (needs a CUDA GPU and CuPy; every
test is marked gpu and the module skips cleanly elsewhere).

Failures name the first differing element with its input and both results as bit patterns.
NaN results compare equal whatever their payloads (not part of the contract).
"""

from __future__ import annotations

import numpy as np
import pytest

import simprec as sp
from simprec import amp, optim
from simprec.backend.numpy_backend import NumpyBackend

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")


@pytest.fixture(scope="module", autouse=True)
def _needs_a_gpu():
    """Skips (as a gpu test, which the skip rule allows) where CuPy finds no CUDA device."""
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no device")
    except Exception as exc:  # no driver, no device
        pytest.skip(f"no CUDA GPU: {exc}")


REF = NumpyBackend()


@pytest.fixture(scope="module")
def be():
    return sp.get_backend("cupy")


def _bits(v) -> str:
    return f"0x{np.float32(v).view(np.uint32):08x} ({np.float32(v)!r})"


def assert_same(got, ref, inputs=()):
    """got (device or host) equals ref bit for bit (any NaN equals any NaN)."""
    got = cupy.asnumpy(got) if isinstance(got, cupy.ndarray) else np.asarray(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, f"shape {got.shape} != reference {ref.shape}"
    if got.dtype == np.bool_ or ref.dtype == np.bool_ or got.dtype.kind in "iu":
        bad = np.flatnonzero(got.reshape(-1) != ref.reshape(-1))
        assert bad.size == 0, f"{bad.size} of {got.size} differ, first at {bad[0]}"
        return
    g = got.astype(np.float32).reshape(-1)
    r = ref.astype(np.float32).reshape(-1)
    bad = np.flatnonzero((g.view(np.uint32) != r.view(np.uint32)) & ~(np.isnan(g) & np.isnan(r)))
    if bad.size:
        i = bad[0]
        ins = ", ".join(_bits(np.broadcast_to(x, got.shape).reshape(-1)[i]) for x in inputs)
        raise AssertionError(f"{bad.size} of {g.size} differ; first at flat index {i} "
                             f"(inputs {ins}): got {_bits(g[i])}, reference {_bits(r[i])}")


# ------------------------------------------------------------------------------ rounding

ROUND_FORMATS = [sp.fp16, sp.bf16, sp.fp8_e4m3, sp.fp8_e5m2,
                 sp.Format(6, 9), sp.Format(3, 4, subnormals=False, overflow="saturate")]


@pytest.fixture(scope="module")
def round_inputs():
    """Every 16-bit pattern as the top half of an fp32 (every binade, both signs), the same
    plus half an ulp and a near-half, and 10^7 random fp32 (random bits, and normal values
    scaled over 2^-40..2^40)."""
    rng = np.random.default_rng(0)
    every = np.arange(1 << 16, dtype=np.uint32) << 16
    x = np.concatenate([every, every | 0x8000, every | 0x7FFF,
                        rng.integers(0, 1 << 32, 5_000_000, dtype=np.uint32)]).view(np.float32)
    scaled = (rng.standard_normal(5_000_000) * np.exp2(rng.uniform(-40, 40, 5_000_000)))
    return np.concatenate([x, scaled.astype(np.float32)])


@pytest.mark.parametrize("mode", ["nearest", "toward_zero", "stochastic"])
@pytest.mark.parametrize("fmt", ROUND_FORMATS, ids=lambda f: f.name)
def test_round_matches_the_reference(be, round_inputs, fmt, mode):
    x = round_inputs
    kw = {"rng": sp.Philox(seed=1234, stream=5, offset=3)} if mode == "stochastic" else {}
    ref = sp.round(x, fmt, mode, **kw)
    kw = {"rng": sp.Philox(seed=1234, stream=5, offset=3)} if mode == "stochastic" else {}
    got = be.round(cupy.asarray(x), fmt, mode=mode, **kw)
    assert_same(got, ref, (x,))


def test_stochastic_rounding_continues_the_philox_stream(be):
    x = np.random.default_rng(1).standard_normal(10_001).astype(np.float32)
    rng = sp.Philox(seed=9)
    a = be.round(cupy.asarray(x[:5000]), sp.bf16, mode="stochastic", rng=rng)
    b = be.round(cupy.asarray(x[5000:]), sp.bf16, mode="stochastic", rng=rng)
    assert rng.offset == x.size
    assert_same(cupy.concatenate([a, b]), sp.round(x, sp.bf16, "stochastic",
                                                   rng=sp.Philox(seed=9)))


def test_stochastic_rounding_with_a_numpy_generator(be):
    x = np.random.default_rng(2).standard_normal(2 * 65536 + 3).astype(np.float32)  # 3 blocks
    got = be.round(cupy.asarray(x), sp.fp8_e5m2, mode="stochastic",
                   rng=np.random.default_rng(7), random_bits=8)
    ref = sp.round(x, sp.fp8_e5m2, "stochastic", rng=np.random.default_rng(7), random_bits=8)
    assert_same(got, ref, (x,))


# ------------------------------------------------------------------------------ elementwise

def _every(fmt):
    """Every fp16 (or bf16) value, as float32."""
    bits = np.arange(1 << 16, dtype=np.uint32)
    if fmt == sp.fp16:
        return bits.astype(np.uint16).view(np.float16).astype(np.float32)
    return (bits << 16).view(np.float32)


PARAMS = {"add_scaled": {"alpha": 0.3}, "mul_scalar": {"scalar": 0.1},
          "add_scalar": {"scalar": 3.0}, "rsub_scalar": {"scalar": 1.0},
          "div_scalar": {"scalar": 3.0}, "rdiv_scalar": {"scalar": 7.0},
          "pow_scalar": {"scalar": 2.0}, "softplus": {"beta": 2.0, "threshold": 10.0},
          "softplus_backward": {"beta": 1.0, "threshold": 20.0},
          "threshold_backward": {"threshold": 0.5}, "clamp": {"lo": -1.0, "hi": 2.0}}
ARITY = {"add": 2, "sub": 2, "mul": 2, "div": 2, "add_scaled": 2, "fma": 3, "maximum": 2,
         "minimum": 2, "tanh_backward": 2, "sigmoid_backward": 2, "gelu_backward": 2,
         "gelu_tanh_backward": 2, "silu_backward": 2, "softplus_backward": 2,
         "relu_backward": 2, "threshold_backward": 2, "gt": 2, "ge": 2, "lt": 2, "le": 2,
         "eq": 2, "ne": 2}
OPS = [op for op in sp.backend.contract.ELEMENTWISE_OPS if op != "where"]


@pytest.mark.parametrize("src", [sp.fp16, sp.bf16], ids=lambda f: f.name)
@pytest.mark.parametrize("op", OPS)
def test_elementwise_on_every_half_input(be, op, src):
    rng = np.random.default_rng(3)
    x = _every(src)
    xs = [x] + [rng.permutation(x) for _ in range(ARITY.get(op, 1) - 1)]
    if op.endswith("_backward"):  # gradients: finite (the all-finite branch of relu_backward)
        xs[0] = np.where(np.isfinite(xs[0]), xs[0], np.float32(1))
    params = PARAMS.get(op, {})
    dev = [cupy.asarray(v) for v in xs]
    assert_same(be.elementwise(op, *dev, **params), REF.elementwise(op, *xs, **params), xs)
    if op not in ("gt", "ge", "lt", "le", "eq", "ne", "isfinite", "isnan"):
        assert_same(be.elementwise(op, *dev, fmt=src, **params),
                    REF.elementwise(op, *xs, fmt=src, **params), xs)


def test_where_and_relu_backward_with_nonfinite_gradients(be):
    x = _every(sp.fp16)
    y = np.random.default_rng(4).permutation(x)
    cond = x > y
    assert_same(be.elementwise("where", cupy.asarray(cond), cupy.asarray(x), 0.0),
                REF.elementwise("where", cond, x, 0.0))
    assert_same(be.elementwise("relu_backward", cupy.asarray(x), cupy.asarray(y)),
                REF.elementwise("relu_backward", x, y), (x, y))


# ------------------------------------------------------------------------------ GEMMs

SHAPES = [((1, 1), (1, 1)), ((7, 37), (37, 5)), ((33, 65), (65, 48)), ((64, 64), (64, 64)),
          ((130, 100), (100, 70)), ((3, 17, 40), (3, 40, 23)), ((2, 1, 9, 33), (4, 33, 18)),
          ((37,), (37, 6))]


def _operands(fmt, sa, sb, seed, specials=False):
    rng = np.random.default_rng(seed)
    spread = 40 if fmt == sp.bf16 else 4

    def draw(shape):
        v = rng.standard_normal(shape) * np.exp2(rng.integers(-spread, spread + 1, shape))
        v[rng.random(shape) < 0.1] = 0
        if specials:
            p = rng.random(shape)
            v[p < 0.005] = np.inf
            v[(p >= 0.005) & (p < 0.01)] = -np.inf
            v[(p >= 0.01) & (p < 0.012)] = np.nan
        return sp.round(v.astype(np.float32), fmt)

    return draw(sa), draw(sb)


@pytest.mark.parametrize("model", ["sm70", "sm80", "sm90", "fp16"])
@pytest.mark.parametrize("fmt", [sp.fp16, sp.bf16], ids=lambda f: f.name)
@pytest.mark.parametrize("case", range(len(SHAPES)))
def test_gemm_matches_the_reference(be, monkeypatch, case, fmt, model):
    """Both GEMM kernels (tiled, and the one-thread-per-output cross-check), every output
    format and bias path, against the reference computed once."""
    monkeypatch.setattr(be, "native_sm90", False)
    sa, sb = SHAPES[case]
    a, b = _operands(fmt, sa, sb, case, specials=case == 2)
    bias = (np.random.default_rng(case).standard_normal(sb[-1]).astype(np.float32)
            if len(sb) > 1 else None)
    da, db = cupy.asarray(a), cupy.asarray(b)
    for out_fmt in (fmt, sp.fp32):
        for bb in (None, bias):
            ref = REF.matmul(a, b, fmt=fmt, accumulate=model, out_fmt=out_fmt, bias=bb)
            for kernel in ("tiled", "simple"):
                monkeypatch.setattr(be, "gemm", kernel)
                got = be.matmul(da, db, fmt=fmt, accumulate=model, out_fmt=out_fmt,
                                bias=None if bb is None else cupy.asarray(bb))
                try:
                    assert_same(got, ref)
                except AssertionError as err:
                    raise AssertionError(f"{kernel} kernel, out_fmt={out_fmt.name}, "
                                         f"bias={bb is not None}: {err}") from None


def test_gemm_fp32_model_is_close(be):
    a, b = _operands(sp.fp16, (64, 200), (200, 32), 0)
    got = cupy.asnumpy(be.matmul(cupy.asarray(a), cupy.asarray(b), fmt=sp.fp16,
                                 accumulate="fp32", out_fmt=sp.fp32))
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------ the rest

def test_reductions_and_movement(be):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 7, 8)).astype(np.float32)
    d = cupy.asarray(x)
    for axis in (None, 0, -1, (0, 2)):
        assert_same(be.sum(d, axis, True), REF.sum(x, axis, True))
        assert_same(be.max(d, axis, False), REF.max(x, axis, False))
    assert_same(be.argmax(d, -1), REF.argmax(x, -1))
    idx = rng.integers(0, 6, 40)
    vals = rng.standard_normal((40, 8)).astype(np.float32)
    assert_same(be.index_add((6, 8), (cupy.asarray(idx),), cupy.asarray(vals)),
                REF.index_add((6, 8), (idx,), vals))
    assert_same(be.take(d, cupy.asarray(idx[:5]), 0), REF.take(x, idx[:5], 0))
    img = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    cols = REF.im2col(img, (3, 3), (2, 2), (1, 1))
    assert_same(be.im2col(cupy.asarray(img), (3, 3), (2, 2), (1, 1)), cols)
    assert_same(be.col2im(cupy.asarray(cols), img.shape, (3, 3), (2, 2), (1, 1)),
                REF.col2im(cols, img.shape, (3, 3), (2, 2), (1, 1)))
    assert be.all_finite([d, d]) and not be.all_finite([d, cupy.asarray([np.inf])])


def test_fp32_subnormals_survive_every_path(be):
    """CuPy compiles with -ftz=true; the backend's kernels and its replacements of CuPy's own
    (astype, +, sum, max) keep fp32 subnormals as the reference does (backends/simprec_cupy/
    _ftz.py). The values: bf16 patterns 0x0001..0x007F (every one an fp32 subnormal)."""
    rng = np.random.default_rng(6)
    tiny = (np.arange(1, 0x80, dtype=np.uint32) << 16).view(np.float32)
    x = (tiny[rng.integers(0, tiny.size, (5, 24))] * rng.choice([-1, 1], (5, 24))).astype(
        np.float32)
    d = cupy.asarray(x)
    for axis in (None, 0, -1):
        assert_same(be.sum(d, axis, False), REF.sum(x, axis, False))
        assert_same(be.max(d, axis, True), REF.max(x, axis, True))
        # (abs on the host: CuPy's own abs flushes)
        assert_same(be.max(cupy.asarray(abs(x)), axis, True), REF.max(abs(x), axis, True))
    assert_same(be.elementwise("add", d, d, fmt=sp.bf16),
                REF.elementwise("add", x, x, fmt=sp.bf16))
    for op in ("gt", "ge", "lt", "le", "eq", "ne"):
        assert_same(be.elementwise(op, d, 0.0), REF.elementwise(op, x, 0.0))
        assert_same(be.elementwise(op, d, d[::-1].copy()), REF.elementwise(op, x, x[::-1]))
    e = x - np.float32(87.5)
    assert_same(be.elementwise("exp", cupy.asarray(e)), REF.elementwise("exp", e))
    wide = x.astype(np.float64) * 0.75
    assert_same(be.astype(cupy.asarray(wide), "float"), REF.astype(wide, "float"))
    assert_same(be.round(cupy.asarray(wide), sp.fp32), sp.round(wide, sp.fp32))
    idx = rng.integers(0, 3, 5)
    assert_same(be.index_add((3, 24), (cupy.asarray(idx),), d), REF.index_add((3, 24), (idx,), x))
    a = sp.round(rng.standard_normal((4, 24)).astype(np.float32), sp.bf16)
    # products and sums below 2^-126: the accumulators are fp32 subnormals
    b = sp.round(rng.standard_normal((24, 24)).astype(np.float32) * np.float32(2**-128), sp.bf16)
    for model in ("sm90", "sm80", "fp16"):
        assert_same(be.matmul(cupy.asarray(a), cupy.asarray(b), fmt=sp.bf16, accumulate=model,
                              out_fmt=sp.fp32, bias=cupy.asarray(x[0])),
                    REF.matmul(a, b, fmt=sp.bf16, accumulate=model, out_fmt=sp.fp32,
                               bias=x[0]))


# ------------------------------------------------------------------------------ whole models

def _model(name):
    from simprec.models import MLP, SmallCNN, TinyGPT

    gen = np.random.default_rng(0)
    if name == "mlp":
        return MLP(64, (128, 128), 10, generator=gen)
    if name == "cnn":
        return SmallCNN(1, (8, 16), 10, image_size=8, generator=gen)
    return TinyGPT(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=64, generator=gen)


def _batches(name, steps, backend):
    rng = np.random.default_rng(1)
    out = []
    for _ in range(steps):
        if name == "gpt":
            ids = rng.integers(0, 65, (4, 33))
            out.append((sp.tensor(ids[:, :-1], backend=backend),
                        sp.tensor(ids[:, 1:], backend=backend)))
        else:
            shape = (32, 64) if name == "mlp" else (32, 1, 8, 8)
            out.append((sp.tensor(rng.standard_normal(shape).astype(np.float32), backend=backend),
                        sp.tensor(rng.integers(0, 10, 32), backend=backend)))
    return out


def _loss(model, batch):
    from simprec.nn import functional as F

    x, y = batch
    logits = model(x)
    if logits.ndim == 3:
        logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    return F.cross_entropy(logits, y)


def _train(name, recipe_name, backend, steps, **options):
    recipe = amp.get_recipe(recipe_name, **options)
    model = _model(name)
    if backend != "numpy":
        model.to(backend)
    model, opt, _ = recipe.prepare(model, lambda p: optim.SGD(p, lr=0.05, momentum=0.9))
    losses = [recipe.step(model, opt, _loss, batch)[1]["loss"]
              for batch in _batches(name, steps, backend)]
    return losses, {n: p.numpy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("recipe,options", [("amp-fp16", {"accumulate": "sm90"}),
                                            ("pure-fp16", {"accumulate": "sm70"}),
                                            ("amp-bf16", {"accumulate": "sm80"}),
                                            ("fp8", {"accumulate": "sm70",
                                                     "amax_history_len": 16})])
@pytest.mark.parametrize("name", ["mlp", "cnn", "gpt"])
def test_short_training_runs_are_bit_identical(name, recipe, options):
    steps = 5
    ref_losses, ref_params = _train(name, recipe, "numpy", steps, **options)
    losses, params = _train(name, recipe, "cupy", steps, **options)
    assert np.array(losses).tobytes() == np.array(ref_losses).tobytes(), (losses, ref_losses)
    for key, value in ref_params.items():
        assert_same(params[key], value)
