"""The compiled fast paths (simprec._fast) against the NumPy specification, bit for bit.

Each test computes the same thing twice in one process, with the fast paths switched off (the
specification) and on, over inputs that reach every branch: NaN, +-inf, -0, subnormals of the
input and output formats, overflow, values on rounding ties. The whole suite also runs both
ways in CI (`SIMPREC_FAST=0`), so every other test holds the fast paths to their contract too.
Without numba (the GPU machine) the fast paths cannot be switched on: these tests then compare
the specification with itself, and `test_fast_paths_are_on_where_numba_is` checks just that.
"""

from __future__ import annotations

import contextlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simprec import _fast, _tensor_core

HAVE_NUMBA = _fast._numba_available()
EMIN = {"fp16": -14, "bf16": -126}
NATIVE = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16}


@contextlib.contextmanager
def fast(on: bool):
    """The fast paths on or off inside the block (back to the environment's choice after)."""
    _fast.set_enabled(on)
    try:
        yield
    finally:
        _fast.set_enabled(None)


def both(f, *args, **kw):
    """f(*args, **kw) with the specification and with the fast paths."""
    with fast(False):
        want = f(*args, **kw)
    with fast(True):
        got = f(*args, **kw)
    return want, got


def assert_same_bits(want, got):
    want, got = np.asarray(want), np.asarray(got)
    assert want.dtype == got.dtype and want.shape == got.shape
    w = want.view(np.uint32 if want.dtype.itemsize == 4 else np.uint16)
    g = got.view(w.dtype)
    bad = w != g
    assert not bad.any(), (f"{int(bad.sum())} of {bad.size} differ, first at "
                           f"{np.argwhere(bad)[0]}: {want[bad][0]!r} vs {got[bad][0]!r}")


def test_fast_paths_are_on_where_numba_is():
    with fast(True):
        assert _fast.enabled() == HAVE_NUMBA
        assert (_fast.kernels("tensor_core") is not None) == HAVE_NUMBA
    with fast(False):
        assert not _fast.enabled() and _fast.kernels("tensor_core") is None


# ---------------------------------------------------------------------------------------------
# the tensor-core model

def _half_values(rng, shape, fmt, spread):
    """Values of fmt (float32 containers): normal-ish, with every kind of edge value mixed in."""
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-spread, spread + 1, shape))
    pick = rng.random(shape)
    x[pick < 0.05] = 0.0
    x[(pick >= 0.05) & (pick < 0.08)] = -0.0
    tiny = {"fp16": 2.0 ** -24, "bf16": 2.0 ** -133}[fmt]
    sub = (pick >= 0.08) & (pick < 0.12)
    x[sub] = rng.integers(-20, 20, int(sub.sum())) * tiny       # subnormals of the format
    with np.errstate(over="ignore"):
        return x.astype(NATIVE[fmt]).astype(np.float32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), arch=st.sampled_from(["sm70", "sm80", "sm90"]),
       fmt=st.sampled_from(["fp16", "bf16"]), spread=st.sampled_from([0, 6, 14, 60, 120]),
       specials=st.booleans(), shape=st.tuples(st.integers(1, 3), st.integers(1, 40),
                                               st.integers(1, 70), st.integers(1, 150)))
def test_tensor_core_model(seed, arch, fmt, spread, specials, shape):
    """Random batches with subnormals, signed zeros, K off the block size, wide bf16 exponents
    (the float64 path), a nonzero c, NaN/inf among inputs and c, accumulators that overflow."""
    rng = np.random.default_rng(seed)
    B, M, K, N = shape
    a = _half_values(rng, (B, M, K), fmt, spread)
    b = _half_values(rng, (B, K, N), fmt, spread)
    c = (rng.standard_normal((B, M, N)) * np.exp2(rng.integers(-140, 20, (B, M, N))))
    c = c.astype(np.float32)
    if specials:
        for x in (a, b, c):
            pick = rng.random(x.shape) < 0.03
            x[pick] = rng.choice(np.float32([np.nan, np.inf, -np.inf, 3e38, -3e38]),
                                 int(pick.sum()))
        big = {"fp16": 65504.0, "bf16": 3.3e38}[fmt]
        a[0, 0, :] = np.float32(np.float32(big).astype(NATIVE[fmt]))      # overflow
    want, got = both(_tensor_core.tc_accumulate, a, b, c, emin=EMIN[fmt], arch=arch)
    assert_same_bits(want, got)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("arch", ["sm70", "sm80", "sm90"])
def test_tensor_core_model_on_larger_tiles(fmt, arch):
    """Several output tiles and panels in both directions (the tiles' edges and padding)."""
    rng = np.random.default_rng(1)
    a = _half_values(rng, (2, 70, 100), fmt, 4)
    b = _half_values(rng, (2, 100, 300), fmt, 4)
    c = np.zeros((2, 70, 300), np.float32)
    want, got = both(_tensor_core.tc_accumulate, a, b, c, emin=EMIN[fmt], arch=arch)
    assert_same_bits(want, got)


# ---------------------------------------------------------------------------------------------
# elementwise kernels, CUDA's math functions and the special-function unit

def _edge_floats(rng, n):
    """float32 values of every magnitude, with the edges of fp32, fp16 and bf16 (NaN, +-inf,
    +-0, subnormals, overflow thresholds, rounding ties) and raw bit patterns."""
    x = (rng.standard_normal(n) * np.exp2(rng.integers(-40, 40, n))).astype(np.float32)
    edges = np.float32([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 3e38, -3e38, 65504,
                        65519.99, 65520, -65520, 2.0 ** -24, 2.0 ** -25, 1.5 * 2.0 ** -24,
                        2.0 ** -14, 2.0 ** -14 - 2.0 ** -25, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11,
                        1 + 2.0 ** -8, 3.3e38, 88.7, -87.4, 9.02, 0.6, 1.00297])
    x[: edges.size] = edges
    bits = rng.integers(0, 2**32, n // 8, dtype=np.uint64).astype(np.uint32)
    x[edges.size: edges.size + bits.size] = bits.view(np.float32)
    return rng.permutation(x)


def assert_same_values(want, got):
    """Bit for bit, except that any NaN equals any NaN (NaN payloads are not specified)."""
    want = np.asarray(want, np.float32)
    got = np.asarray(got, np.float32)
    assert want.shape == got.shape
    same = (want.view(np.uint32) == got.view(np.uint32)) | (np.isnan(want) & np.isnan(got))
    bad = ~same
    assert not bad.any(), (f"{int(bad.sum())} of {bad.size} differ, e.g. {want[bad][:3]!r} "
                           f"vs {got[bad][:3]!r}")


PARAMS = {"add_scaled": {"alpha": 0.3}, "mul_scalar": {"scalar": 0.1},
          "add_scalar": {"scalar": -1.7}, "rsub_scalar": {"scalar": 1.0},
          "div_scalar": {"scalar": 3.0}, "rdiv_scalar": {"scalar": 2.0},
          "softplus": {"beta": 2.0, "threshold": 10.0}, "softplus_backward": {}}
ARITY = {"fma": 3, "add": 2, "sub": 2, "mul": 2, "div": 2, "add_scaled": 2,
         "tanh_backward": 2, "sigmoid_backward": 2, "gelu_backward": 2,
         "gelu_tanh_backward": 2, "silu_backward": 2, "softplus_backward": 2}
UNARY = ["neg", "mul_scalar", "add_scalar", "rsub_scalar", "div_scalar", "rdiv_scalar", "abs",
         "reciprocal", "square", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "softplus",
         "erf", "relu", "gelu", "gelu_tanh", "silu"]


@pytest.mark.parametrize("fmt", [None, "fp16", "bf16"])
@pytest.mark.parametrize("op", UNARY + list(ARITY))
def test_elementwise_fused_with_rounding(op, fmt):
    """Every op the compiled kernel covers, unrounded and rounded into fp16 / bf16, on 30,000
    edge values (every operand; for add and fma one operand is a single value)."""
    from simprec import bf16, fp16
    from simprec.backend.numpy_backend import NumpyBackend

    rng = np.random.default_rng(abs(hash((op, fmt))) % 2**32)
    xs = [_edge_floats(rng, 30000).reshape(10, 3000) for _ in range(ARITY.get(op, 1))]
    if op in ("add", "fma"):                  # an operand broadcast from one value
        xs[1] = np.float32(rng.standard_normal()).reshape(1, 1)
    backend = NumpyBackend()
    f = {None: None, "fp16": fp16, "bf16": bf16}[fmt]
    want, got = both(backend.elementwise, op, *xs, fmt=f, **PARAMS.get(op, {}))
    assert_same_values(want, got)


@pytest.mark.parametrize("name", ["expf", "logf", "tanhf", "erff", "log1pf", "rsqrtf"])
def test_libdevice_functions(name):
    """CUDA's math functions over edge values and every binade, and near the branch points."""
    from simprec.cudamath import libdevice

    rng = np.random.default_rng(7)
    x = _edge_floats(rng, 200000)
    want, got = both(getattr(libdevice, name), x)
    assert_same_values(want, got)


@pytest.mark.parametrize("name", ["ex2", "rcp", "rsqrt"])
def test_special_function_unit(name):
    from simprec.cudamath import mufu

    rng = np.random.default_rng(8)
    x = _edge_floats(rng, 200000).reshape(400, 500)
    want, got = both(getattr(mufu, name), x)
    assert_same_values(want, got)
    want, got = both(getattr(mufu, name), np.float32(0.3).reshape(()))   # 0-d stays 0-d
    assert_same_values(want, got)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_fma_is_the_correctly_rounded_fused_multiply_add(seed):
    """fma32's float64 emulation (the specification) and the hardware fma: ties of the fp32
    rounding built on purpose (a*b + c exactly halfway between two floats), subnormal sums."""
    from simprec.cudamath import libdevice

    rng = np.random.default_rng(seed)
    a = _edge_floats(rng, 5000)
    b = _edge_floats(rng, 5000)
    # c = -RN(a*b) + (half an ulp of a value near it): the exact sum sits on a tie
    with np.errstate(all="ignore"):
        p = (a.astype(np.float64) * b).astype(np.float32)
        ulp = np.abs(np.spacing(p))
        c = (-p + ulp * rng.choice(np.float32([0.5, -0.5, 1.5, 0.25]), p.size)).astype(np.float32)
    c[::3] = _edge_floats(rng, c[::3].size)
    want, got = both(libdevice.fma32, a, b, c)
    assert_same_values(want, got)
    want, got = both(libdevice.fma32, a, np.float32(0.3), c.reshape(-1))   # a scalar operand
    assert_same_values(want, got)


@pytest.mark.parametrize("n", [1, 1000, 1_200_000])
@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8_e4m3"])
def test_rounding_to_nearest(fmt, n):
    """formats.round_array (the autocast casts, every op's output) on edge values, both the
    one-thread and the parallel kernel, into a new array and in place; other formats keep the
    specification's path."""
    import simprec as sp
    from simprec import formats

    rng = np.random.default_rng(n)
    x = _edge_floats(rng, max(n, 40))[:n]
    f = getattr(sp, fmt)
    want, got = both(formats.round_array, x, f)
    assert_same_values(want, got)
    with fast(True):
        y = x.copy()
        formats.round_array(y, f, out=y)
    assert_same_values(want, y)


# ---------------------------------------------------------------------------------------------
# the reductions in CUDA's order (simprec.backend._order), compiled

def _rows(rng, shape, specials):
    """Activations-like float32 rows (values of several magnitudes, -0), with NaN / inf / huge
    values in a few rows when `specials`."""
    x = (rng.standard_normal(shape) * np.exp2(rng.integers(-3, 4, shape))).astype(np.float32)
    x[rng.random(shape) < 0.02] = -0.0
    if specials:
        flat = x.reshape(-1)
        pick = rng.random(flat.size) < 0.002
        flat[pick] = rng.choice(np.float32([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-40]),
                                int(pick.sum()))
    return x


ROW_SHAPES = [(1, 4), (3, 8), (1024, 64), (7, 128), (5, 512), (4, 516), (3, 1028), (2, 2052)]


@pytest.mark.parametrize("specials", [False, True])
@pytest.mark.parametrize("shape", ROW_SHAPES)
def test_layer_norm_statistics(shape, specials):
    """welford_rows (layer_norm's forward statistics): one to several 128-thread steps,
    rows of a partial last step, idle threads, non-finite values."""
    from simprec.backend import _order
    from simprec.backend.numpy_backend import NumpyBackend

    x = _rows(np.random.default_rng(shape[1]), shape, specials)
    want, got = both(_order.welford_rows, NumpyBackend(), x)
    for w, g in zip(want, got, strict=True):
        assert_same_values(w, g)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("specials", [False, True])
@pytest.mark.parametrize("shape", ROW_SHAPES + [(64, 64), (200, 32), (300, 16), (70, 8)])
def test_layer_norm_backward_kernels(shape, specials, affine):
    """layer_norm_dx and layer_norm_gamma_beta (every tile size of GammaBetaBackward: fewer
    than 64, 128, 256 rows and more), with and without a weight."""
    from simprec.backend import _order
    from simprec.backend.numpy_backend import NumpyBackend

    be = NumpyBackend()
    rng = np.random.default_rng(shape[0] * 7 + shape[1])
    x, g = _rows(rng, shape, specials), _rows(rng, shape, specials)
    gamma = _rows(rng, shape[1:], False) if affine else None
    with np.errstate(all="ignore"):
        mean = x.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
        rstd = (1 / np.sqrt(x.var(axis=1, keepdims=True, dtype=np.float64) + 1e-5))
    rstd = rstd.astype(np.float32)
    want, got = both(_order.layer_norm_dx, be, x, g, gamma, mean, rstd)
    assert_same_values(want, got)
    want, got = both(_order.layer_norm_gamma_beta, be, x, g, mean, rstd)
    for w, o in zip(want, got, strict=True):
        assert_same_values(w, o)


@pytest.mark.parametrize("specials", [False, True])
@pytest.mark.parametrize("n", [1, 5, 31, 32, 33, 64, 100, 256, 1000, 1024])
def test_softmax_warp_sums(n, specials):
    from simprec.backend import _order
    from simprec.backend.numpy_backend import NumpyBackend

    v = _rows(np.random.default_rng(n), (37, n), specials)
    want, got = both(_order.warp_softmax_sum, NumpyBackend(), v)
    assert_same_values(want, got)


@pytest.mark.parametrize("specials", [False, True])
@pytest.mark.parametrize("shape", [(1, 5), (3, 64), (37, 33), (300, 64), (1024, 192),
                                   (5000, 3), (70000, 4), (200000, 2)])
def test_column_sums(shape, specials):
    """reduce_cols (bias gradients): one thread per column, rows split over a block's warps,
    and over several blocks whose partial sums the last block adds."""
    from simprec.backend import _order
    from simprec.backend.numpy_backend import NumpyBackend

    x = _rows(np.random.default_rng(shape[0]), shape, specials)
    want, got = both(_order.reduce_cols, NumpyBackend(), x)
    assert_same_values(want, got)
    if shape[1] % 2 == 0 and shape[1] > 2:         # a middle-dim reduction's layout
        want, got = both(_order.reduce_cols, NumpyBackend(), x, 2)
        assert_same_values(want, got)


@pytest.mark.parametrize("index", [(slice(None), slice(0, 3)), (Ellipsis, slice(5, 1, -2)),
                                   (1, slice(None), 2), (slice(None), None, 3), 4,
                                   (np.int64(2), Ellipsis)])
def test_index_add_of_basic_indexing(index):
    """The backward of a basic-indexing selection (slices, integers: no element twice) is a
    scatter; the same bits as the accumulating sum 0 + v of np.add.at (-0 becomes +0)."""
    from simprec.backend.numpy_backend import NumpyBackend

    shape = (6, 7, 5)
    values = _rows(np.random.default_rng(3), np.zeros(shape)[index].shape, True)
    values.reshape(-1)[:3] = -0.0
    want = np.zeros(shape, np.float64)
    np.add.at(want, index, values)
    got = NumpyBackend().index_add(shape, index, values)
    assert_same_bits(want.astype(np.float32), got)


def test_compact_tables_from_the_stored_deltas():
    """The special-function unit's compact tables, built straight from the stored 2-bit deltas,
    are `compact_table` of the decoded tables (the kernels' lookups are checked above)."""
    pytest.importorskip("numba")
    from simprec._fast import elementwise
    from simprec.cudamath import mufu

    tables = elementwise._compact_tables()
    for name, decoded in [("ex2", mufu._ex2_table()), ("rcp", mufu._table("rcp")),
                          ("rsqrt", mufu._table("rsqrt"))]:
        want = elementwise.compact_table(decoded)
        assert tables[name].dtype == want.dtype
        assert np.array_equal(tables[name], want)
