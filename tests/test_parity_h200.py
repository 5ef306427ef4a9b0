"""Bit parity of simprec's fp16/bf16 ops with an H200 (torch 2.11 + CUDA 13.0).

Ground truth: the shared capture `<shared>/data/h200/elementwise_dev.npz` (all 65,536 fp16 and
bf16 inputs, 200,000 random pairs, 256 rows of 1,000; skipped when the shared folder is absent)
and this repository's `tests/data/h200_ops.npz` (backward kernels, pow/division rules, fp32
kernels, row reductions; `tests/data/capture_h200_ops.py`). NaN results compare by NaN-ness only
(payloads differ). docs/fidelity.md explains each model.

Ops that must match bit for bit assert 0 mismatches. The others are counted against
`KNOWN_MISMATCHES`: a count may shrink (then lower the constant) but never grow. The op
tables and `KNOWN_MISMATCHES` live in `simprec.parity`, shared with `simprec parity`.
"""

from __future__ import annotations

import pathlib

import ml_dtypes
import numpy as np
import pytest

import simprec as sp
import simprec.ops as ops
from simprec.parity import (  # the op tables, shared with `simprec parity`
    BACKWARD,
    COUNTED_UNARY,
    EXACT_BINARY,
    EXACT_UNARY,
    FP32_FORWARD,
    KNOWN_MISMATCHES,
    mismatches,
)
from simprec.parity import floats as _floats

DATA = pathlib.Path(__file__).parent / "data" / "h200_ops.npz"


@pytest.fixture(scope="module")
def ew(load_h200):
    return load_h200("elementwise_dev")


@pytest.fixture(scope="module")
def x16(ew):
    return sp.tensor(ew["x_all"].view(np.float16))


@pytest.fixture(scope="module")
def pairs(ew):
    return sp.tensor(ew["pair_a"].view(np.float16)), sp.tensor(ew["pair_b"].view(np.float16))


@pytest.mark.parametrize("name", sorted(EXACT_UNARY))
def test_fp16_unary_all_inputs_exact(name, ew, x16):
    out = EXACT_UNARY[name](x16)
    assert out.fmt == sp.fp16
    assert mismatches(out, ew["fp16_" + name], "fp16") == 0


@pytest.mark.parametrize("name", sorted(EXACT_BINARY))
def test_fp16_pairs_exact(name, ew, pairs):
    out = EXACT_BINARY[name](*pairs)
    assert out.fmt == sp.fp16
    assert mismatches(out, ew["pair_" + name], "fp16") == 0


@pytest.mark.parametrize("name", sorted(COUNTED_UNARY))
def test_counted_unary(name, ew):
    kind, fn = COUNTED_UNARY[name]
    if kind == "fp16":
        x, key = sp.tensor(ew["x_all"].view(np.float16)), "fp16_" + name
    else:
        with np.errstate(invalid="ignore"):
            x, key = (
                sp.tensor(ew["xb_all"].view(ml_dtypes.bfloat16).astype(np.float32), sp.bf16),
                name,
            )
    out = fn(x)
    assert out.fmt == (sp.fp16 if kind == "fp16" else sp.bf16)
    assert mismatches(out, ew[key], kind) <= KNOWN_MISMATCHES[name]


def test_casts_exact(ew, x16):
    assert mismatches(x16.to(sp.bf16), ew["fp16_to_bf16"], "bf16") == 0
    assert mismatches(x16.to(sp.fp32), ew["fp16_to_fp32"], "fp32") == 0
    with np.errstate(invalid="ignore"):
        xb = sp.tensor(ew["xb_all"].view(ml_dtypes.bfloat16).astype(np.float32), sp.bf16)
    assert mismatches(xb.to(sp.fp16), ew["bf16_to_fp16"], "fp16") == 0
    f = sp.tensor(ew["f32_bits"].view(np.float32))
    assert mismatches(f.to(sp.fp16), ew["f32_to_fp16"], "fp16") == 0
    assert mismatches(f.to(sp.bf16), ew["f32_to_bf16"], "bf16") == 0


@pytest.fixture(scope="module")
def rows(ew):
    return sp.tensor(ew["rows_x"].view(np.float16))


def test_rows_softmax_and_sums(ew, rows):
    counts = {
        "rows_softmax_fp16": (ops.softmax(rows, -1), "fp16"),
        "rows_log_softmax_fp32": (ops.log_softmax(rows.float(), -1), "fp32"),
        "rows_sum_fp16": (rows.sum(-1), "fp16"),
        "rows_sum_fp32": (rows.float().sum(-1), "fp32"),
    }
    for key, (out, kind) in counts.items():
        assert mismatches(out, ew[key], kind) <= KNOWN_MISMATCHES[key], key


def test_rows_layer_norm_under_autocast(ew, rows):
    from simprec import amp

    w, b = sp.tensor(ew["ln_w"].view(np.float32)), sp.tensor(ew["ln_b"].view(np.float32))
    with amp.autocast(sp.fp16):
        out = ops.layer_norm(rows, (1000,), w, b)
    assert out.fmt == sp.fp32
    key = "rows_layer_norm_autocast"
    assert mismatches(out, ew[key], "fp32") <= KNOWN_MISMATCHES[key]


# ---------------------------------------------------------------- tests/data/h200_ops.npz


@pytest.fixture(scope="module")
def extra():
    if not DATA.is_file():
        pytest.skip(f"{DATA} not found")
    with np.load(DATA) as npz:
        return {k: npz[k] for k in npz.files}


def _grid(extra, kind):
    bits = extra["grid_bits"]
    fmt = sp.fp16 if kind == "fp16" else sp.bf16
    dt = np.float16 if kind == "fp16" else ml_dtypes.bfloat16
    with np.errstate(invalid="ignore"):
        x = sp.tensor(bits.view(dt).astype(np.float32), fmt, requires_grad=True)
    return x, fmt, dt


@pytest.mark.parametrize("kind", ["fp16", "bf16"])
@pytest.mark.parametrize("name", sorted(BACKWARD))
def test_half_backward_kernels_exact(name, kind, extra):
    """The gradient an op sends back equals torch's CUDA backward kernel on the same inputs."""
    pre = "h" if kind == "fp16" else "b"
    x, fmt, dt = _grid(extra, kind)
    if name == "threshold_bwd":  # torch's relu backward thresholds on the result, = x here
        x = sp.tensor(np.where(x.numpy() > 0, x.numpy(), 0), fmt, requires_grad=True)
    out = BACKWARD[name](x)
    with np.errstate(invalid="ignore"):
        dy = sp.tensor(extra[f"g_{pre}_dy"].view(dt).astype(np.float32), fmt)
    out.backward(dy)
    assert x.grad.fmt == fmt
    want = extra[f"g_{pre}_{name}"]
    if name == "threshold_bwd":  # result 0 (x <= 0) passes no gradient: compare where x > 0
        keep = _floats(extra["grid_bits"], kind) > 0
        want = np.where(keep, want, np.uint16(0))
    assert mismatches(x.grad, want, kind) == 0


@pytest.mark.parametrize("kind", ["fp16", "bf16"])
def test_half_forward_kernels_exact(kind, extra):
    pre = "h" if kind == "fp16" else "b"
    x, _, _ = _grid(extra, kind)
    assert mismatches(ops.softplus(x), extra[f"g_{pre}_softplus"], kind) == 0
    assert mismatches(ops.erf(x), extra[f"g_{pre}_erf"], kind) == 0


def test_fp16_pow_and_division_rules_exact(extra):
    x, _, _ = _grid(extra, "fp16")
    for p in (2, 3, -2, 0.1, 1.7, 2.5, -1.5):
        assert mismatches(x**p, extra[f"g_h_pow_{p}"], "fp16") == 0, p
    assert mismatches(x / 3.0, extra["g_h_div3"], "fp16") == 0
    assert mismatches(x / 0.1, extra["g_h_div0.1"], "fp16") == 0
    assert mismatches(3.0 / x, extra["g_h_rdiv3"], "fp16") == 0
    dy = sp.tensor(extra["g_h_dy"].view(np.float16))
    assert mismatches(ops.add(x, dy, alpha=0.3), extra["g_h_mul_alpha"], "fp16") == 0


@pytest.mark.parametrize("name", sorted(FP32_FORWARD))
def test_fp32_kernels_exact(name, extra):
    """fp32 results (no final rounding to hide behind): CUDA's libm and the SFU, bit for bit."""
    x = sp.tensor(extra["r_x"].view(np.float32), requires_grad=True)
    out = FP32_FORWARD[name](x)
    assert mismatches(out, extra["r_" + name], "fp32") == 0
    if f"r_{name}_bwd" in extra:
        out.backward(sp.tensor(extra["r_dy"].view(np.float32)))
        assert mismatches(x.grad, extra[f"r_{name}_bwd"], "fp32") == 0


def test_rows_backward_and_losses_exact(ew, extra):
    x16 = ew["rows_x"].view(np.float16)
    dy = extra["w_dY"].view(np.float32)
    for kind, fn, key in (
        ("fp16", ops.softmax, "smx_bwd16"),
        ("fp32", ops.softmax, "smx_bwd32"),
        ("fp32", ops.log_softmax, "lsm_bwd32"),
        ("fp16", ops.log_softmax, "lsm_bwd16"),
    ):
        fmt = sp.fp16 if kind == "fp16" else sp.fp32
        x = sp.tensor(x16[:8], fmt, requires_grad=True)
        out = fn(x, -1)
        if key == "lsm_bwd16":
            assert mismatches(out, extra["w_lsm16"], "fp16") == 0
        out.backward(sp.tensor(dy, fmt))
        assert mismatches(x.grad, extra["w_" + key], kind) == 0, key
    w, b = sp.tensor(ew["ln_w"].view(np.float32)), sp.tensor(ew["ln_b"].view(np.float32))
    x = sp.tensor(x16[:8], sp.fp32, requires_grad=True)
    ops.layer_norm(x, (1000,), w, b).backward(sp.tensor(dy))
    assert mismatches(x.grad, extra["w_ln_gx"], "fp32") == 0
    rows = sp.tensor(x16)
    assert mismatches(rows.mean(-1), extra["w_mean16"], "fp16") == 0
    assert mismatches(rows.float().mean(-1), extra["w_mean32"], "fp32") == 0
    assert mismatches(rows.sum(), extra["w_sum16_all"], "fp16") == 0
    assert mismatches(rows.sum(0), extra["w_sum16_col"], "fp16") == 0
    assert (
        mismatches(rows.float().sum(0), extra["w_sum32_col"], "fp32")
        <= KNOWN_MISMATCHES["sum32_col"]
    )
    target = sp.tensor(extra["w_tgt"])
    assert mismatches(ops.cross_entropy(rows.float(), target), extra["w_ce32"], "fp32") == 0
    assert mismatches(ops.cross_entropy(rows, target), extra["w_ce16"], "fp16") == 0
    assert (
        mismatches(
            ops.cross_entropy(rows.float(), target, label_smoothing=0.1), extra["w_ce32_ls"], "fp32"
        )
        == 0
    )


# ---------------------------------------------------------------- tests/data/h200_colsums.npz

COLSUMS = pathlib.Path(__file__).parent / "data" / "h200_colsums.npz"


def _load_capture(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, COLSUMS.with_name(name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CAPTURE = _load_capture("capture_h200_colsums")


@pytest.fixture(scope="module")
def colsums():
    if not COLSUMS.is_file():
        pytest.skip(f"{COLSUMS} not found")
    with np.load(COLSUMS) as npz:
        return {k: npz[k] for k in npz.files}




@pytest.mark.parametrize("seed, case", list(enumerate(CAPTURE.CASES)),
                         ids=[c[0] for c in CAPTURE.CASES])
def test_leading_dim_sums_exact(seed, case, colsums):
    """Reduce.cuh over leading dims, every launch configuration (vector width 4/2/1, one thread,
    warps, blocks), bit for bit: sum, mean, a linear layer's bias gradient, a broadcast's."""
    import hashlib

    name, shape, lead, dtype = case
    x = CAPTURE.inputs(shape, seed, dtype)
    assert hashlib.sha256(x.tobytes()).digest() == colsums[name + "_sha"].tobytes()
    kind = "fp16" if dtype == "f16" else "fp32"
    fmt = sp.fp16 if dtype == "f16" else sp.fp32
    xt = sp.tensor(x.astype(np.float32), fmt)
    assert mismatches(xt.sum(tuple(range(lead))), colsums[name + "_sum"], kind) == 0
    if name + "_mean" in colsums:
        assert mismatches(xt.mean(0), colsums[name + "_mean"], kind) == 0
    if name + "_linear_db" in colsums:
        rows, cols = shape
        w = sp.zeros((cols, 7), fmt=fmt, requires_grad=True)
        b = sp.zeros((cols,), fmt=fmt, requires_grad=True)
        ops.linear(sp.zeros((rows, 7), fmt=fmt), w, b).backward(xt)
        assert mismatches(b.grad, colsums[name + "_linear_db"], kind) == 0
        c = sp.zeros((cols,), fmt=fmt, requires_grad=True)
        (sp.zeros((rows, cols), fmt=fmt) + c).backward(xt)
        assert mismatches(c.grad, colsums[name + "_bcast_dc"], kind) == 0


def test_leading_dim_sums_are_not_exactly_rounded_sums(colsums):
    """The order matters: the exactly rounded sum misses the GPU's on these cases."""
    missed = 0
    for seed, (name, shape, lead, dtype) in enumerate(CAPTURE.CASES):
        if dtype == "f32":
            x = CAPTURE.inputs(shape, seed, dtype)
            exact = x.astype(np.float64).sum(tuple(range(lead))).astype(np.float32)
            missed += int((exact.view(np.uint32) != colsums[name + "_sum"]).sum())
    assert missed > 100


# ---------------------------------------------------------------- tests/data/h200_longsums.npz

LONGSUMS = COLSUMS.with_name("h200_longsums.npz")


LONG = _load_capture("capture_h200_longsums")


@pytest.fixture(scope="module")
def longsums():
    if not LONGSUMS.is_file():
        pytest.skip(f"{LONGSUMS} not found")
    with np.load(LONGSUMS) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.mark.parametrize("seed, case", list(enumerate(LONG.CASES)),
                         ids=[c[0] for c in LONG.CASES])
def test_long_row_and_whole_tensor_sums_exact(seed, case, longsums):
    """Reduce.cuh over the trailing dim when it splits rows over warps and blocks (aligned and
    misaligned rows, whole tensors up to 12 M elements): sum(-1), sum(), mean(), mse_loss."""
    import hashlib

    name, shape, dtype = case
    x = LONG.inputs(shape, seed, dtype)
    assert hashlib.sha256(x.tobytes()).digest() == longsums[name + "_sha"].tobytes()
    kind = "fp16" if dtype == "f16" else "fp32"
    xt = sp.tensor(x.astype(np.float32), sp.fp16 if dtype == "f16" else sp.fp32)
    assert mismatches(xt.sum(-1), longsums[name + "_rows"], kind) == 0
    assert mismatches(xt.sum(), longsums[name + "_all"], kind) == 0
    assert mismatches(xt.mean(), longsums[name + "_mean"], kind) == 0
    if dtype == "f32":
        y = sp.tensor(LONG.inputs(shape, seed + 500, dtype))
        assert mismatches(ops.mse_loss(xt, y), longsums[name + "_mse"], kind) == 0


# ---------------------------------------------------------------- tests/data/h200_softmax.npz

SOFTMAX = COLSUMS.with_name("h200_softmax.npz")
SOFT = _load_capture("capture_h200_softmax")


@pytest.fixture(scope="module")
def softmax_digests():
    if not SOFTMAX.is_file():
        pytest.skip(f"{SOFTMAX} not found")
    with np.load(SOFTMAX) as npz:
        return {k: npz[k] for k in npz.files}


def assert_digest(tensor, digests, key, kind):
    """The bit patterns of `tensor` hash to the GPU's (the file keeps digests, not outputs)."""
    import hashlib

    got = tensor.numpy()
    got = got.astype(np.float16).view(np.uint16) if kind == "fp16" else got.view(np.uint32)
    got = np.ascontiguousarray(got)
    if hashlib.sha256(got.tobytes()).digest() != digests[key + "_sha"].tobytes():
        head = digests[key + "_head"]
        raise AssertionError(f"{key}: bits differ from the H200's; first 64: "
                             f"{int((got.ravel()[:head.size] != head).sum())} differ")


@pytest.mark.parametrize("seed, case", list(enumerate(SOFT.CASES)), ids=[c[0] for c in SOFT.CASES])
def test_long_row_softmax_and_cross_entropy_exact(seed, case, softmax_digests):
    """SoftMax.cu past the persistent kernel (register, shared-memory and general block kernels;
    aligned and misaligned rows up to a 50,257-word vocabulary), forward and backward, and
    cross_entropy with its gradient: bit for bit."""
    import hashlib

    name, n, dtype = case
    x, g, t = SOFT.inputs(n, seed, dtype)
    assert (hashlib.sha256(x.tobytes() + g.tobytes() + t.tobytes()).digest()
            == softmax_digests[name + "_in_sha"].tobytes())
    kind = "fp16" if dtype == "f16" else "fp32"
    fmt = sp.fp16 if dtype == "f16" else sp.fp32
    for op, fn in (("sm", ops.softmax), ("lsm", ops.log_softmax)):
        xt = sp.tensor(x.astype(np.float32), fmt, requires_grad=True)
        y = fn(xt, -1)
        y.backward(sp.tensor(g.astype(np.float32), fmt))
        assert_digest(y, softmax_digests, f"{name}_{op}", kind)
        assert_digest(xt.grad, softmax_digests, f"{name}_{op}_dx", kind)
    xt = sp.tensor(x.astype(np.float32), fmt, requires_grad=True)
    loss = ops.cross_entropy(xt, sp.tensor(t))
    loss.backward()
    assert_digest(loss, softmax_digests, name + "_ce", kind)
    assert_digest(xt.grad, softmax_digests, name + "_ce_dx", kind)
