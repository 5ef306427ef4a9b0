"""simprec's GEMM kernel-choice map (simprec/_gemm_choice.py) against the H200 grid
(tests/data/h200_capture/h200_gemm_digests.json: digests of every captured output; inputs are
regenerated from the capture script's seeds). Every case the map claims reproduces bit for
bit; every case docs/fidelity.md names as not reproduced still differs."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from simprec import _gemm_choice

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "h200_capture")
sys.path.insert(0, HERE)
from gemm_cases import digest, inputs, model_bits, parse  # noqa: E402

with open(os.path.join(HERE, "h200_gemm_digests.json")) as _f:
    DATA = json.load(_f)
CASES, UNEXPLAINED = DATA["cases"], DATA["unexplained"]


def _run(case):
    op, dtype, dims = parse(case)
    return digest(model_bits(op, dtype, dims))


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("op", ["mm", "lin", "linb", "bmm3", "bmm4", "qk", "av"])
def test_grid_bit_identical(op, dtype):
    cases = [c for c in CASES if c.startswith(f"{op}__{dtype}__")]
    assert cases
    wrong = [c for c in cases if (_run(c) == CASES[c]) == (c in UNEXPLAINED)]
    assert not wrong, wrong[:10]


def test_grid_counts():
    """The shipped map: 4,090 cases; the named remainder (docs/fidelity.md) is 33."""
    assert len(CASES) == 4090
    assert len(UNEXPLAINED) == 33
    assert sum(UNEXPLAINED.values()) == 37


def test_choice_rules():
    c, G = _gemm_choice.choose, _gemm_choice.GemmChoice
    # fp16 one GEMM: K mod 8 != 0 takes a residue tile (16 rows or fewer: 16, else 128)
    assert c(64, 64, 130, "f16") == G(16, 128, True)
    assert c(8, 64, 63, "f16") == G(16, 16, True)
    assert c(64, 64, 128, "f16") == c(64, 64, 136, "f16") == G()
    assert c(128, 1, 130, "f16") == c(1, 64, 130, "f16") == G()       # gemv-like: unmodelled
    # bf16 one GEMM: K or N not a multiple of 8: the 8-term-block kernel, residue tile 32
    assert c(64, 64, 130, "bf16") == c(128, 65, 128, "bf16") == G(8, 32, True)
    assert c(64, 64, 128, "bf16") == c(65, 128, 16, "bf16") == G()
    # batched: the K remainder first, both dtypes
    assert c(65, 64, 65, "f16", batch=8) == c(65, 64, 65, "bf16", batch=8) == G(16, 16, True)
    assert c(65, 65, 64, "bf16", batch=8) == G()
    # the bias epilogue
    assert not c(8, 1, 16, "f16", bias=True).fused_bias
    assert c(17, 1, 16, "f16", bias=True).fused_bias


@pytest.mark.parametrize("case, choice", [
    (("mm", "f16", (64, 64, 130)), _gemm_choice.GemmChoice(16, 128)),
    (("mm", "f16", (8, 64, 63)), _gemm_choice.GemmChoice(16, 16)),
    (("mm", "bf16", (128, 65, 128)), _gemm_choice.GemmChoice(8, 32)),
    (("mm", "bf16", (128, 17, 31)), _gemm_choice.GemmChoice(8, 32)),
    (("av", "bf16", (2, 4, 65, 64)), _gemm_choice.GemmChoice(16, 16)),
])
def test_choice_changes_bits(case, choice):
    """Each non-default kernel of the map gives other bits than the plain model on a captured
    case it reproduces (the grid tests are not vacuous), and the case is reproduced."""
    from simprec.formats import bf16, fp16

    op, dtype, dims = case
    a, b, bias = inputs(op, dtype, dims)
    fmt = {"f16": fp16, "bf16": bf16}[dtype]
    assert _gemm_choice.choose(a.shape[1], b.shape[2], a.shape[2], dtype,
                               batch=a.shape[0]) == choice
    got = _gemm_choice.gemm(a, b, fmt, choice)
    plain = _gemm_choice.gemm(a, b, fmt, _gemm_choice.DEFAULT)
    assert (plain.view(np.uint32) != got.view(np.uint32)).any()
    key = f"{op}__{dtype}__{'_'.join(map(str, dims))}"
    assert key not in UNEXPLAINED and _run(key) == CASES[key]


def test_residue_tile_is_zero_insertion():
    """A residue tile of T: the first K mod T products walked in blocks from 0 (the tile's
    unused slots zero), then whole blocks from K mod T, spelled out for K = 31, block 8,
    T = 32 (all 31 products in the first tile: the plain walk) and K = 127 (31 in the first
    tile, then blocks 31..38, 39..46, ...) against the explicit zero-padded operands."""
    from simprec.formats import bf16

    rng = np.random.default_rng(5)
    for k, r in ((31, 31), (127, 31), (130, 2)):
        a = np.asarray(sp_round(rng.standard_normal((1, 9, k)).astype(np.float32), bf16))
        b = np.asarray(sp_round(rng.standard_normal((1, k, 5)).astype(np.float32), bf16))
        choice = _gemm_choice.GemmChoice(8, 32)
        got = _gemm_choice.accumulate(a, b, -126, choice)
        pad = -r % 8
        az = np.concatenate([a[..., :r], np.zeros((1, 9, pad), np.float32), a[..., r:]], -1)
        bz = np.concatenate([b[:, :r], np.zeros((1, pad, 5), np.float32), b[:, r:]], -2)
        want = _gemm_choice.accumulate(az, bz, -126, _gemm_choice.GemmChoice(8, 0))
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def sp_round(x, fmt):
    from simprec.formats import round as fround
    return fround(x, fmt)


# ---------------------------------------------------------------------------------------------
# the map wired into the model: the public ops run every GEMM as the chosen kernel

def _public_bits(op, dtype, dims):
    """One grid case through simprec's public ops (matmul, @, nn.functional.linear) under
    ``sp.accumulation("sm90")``: output bits (uint16)."""
    import simprec as sp
    from simprec import nn
    from simprec.accumulate import _to_native

    fmt = {"f16": sp.fp16, "bf16": sp.bf16}[dtype]
    a, b, bias = inputs(op, dtype, dims)

    def t(x):
        return sp.tensor(np.ascontiguousarray(x), fmt=fmt)

    with sp.accumulation("sm90"):
        if op == "mm":
            out = sp.matmul(t(a[0]), t(b[0]))
        elif op in ("lin", "linb"):
            out = nn.functional.linear(t(a[0]), t(b[0].T), None if bias is None else t(bias))
        elif op in ("bmm3", "bmm4"):
            *batch, m, n, k = dims
            out = t(a.reshape(*batch, m, k)) @ t(b.reshape(*batch, k, n))
        else:                                   # attention: (B, H, T, ·) @ (B, H, ·, T|D)
            bsz, h, tt, d = dims
            if op == "qk":
                k_ = t(np.swapaxes(b, -1, -2).reshape(bsz, h, tt, d))
                out = t(a.reshape(bsz, h, tt, d)) @ k_.transpose(-2, -1)
            else:
                out = t(a.reshape(bsz, h, tt, tt)) @ t(b.reshape(bsz, h, tt, d))
    assert out.fmt == fmt
    return np.ascontiguousarray(_to_native(out.numpy(), fmt)).view(np.uint16).reshape(-1)


@pytest.mark.parametrize("fast", [False, True], ids=["spec", "fast"])
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("op", ["mm", "lin", "linb", "bmm3", "bmm4", "qk", "av"])
def test_grid_through_public_ops(op, dtype, fast):
    """Every grid case the map claims is bit-identical to the H200 through sp.matmul / @ /
    nn.functional.linear (specification and compiled tensor-core paths); every named case
    still differs."""
    from simprec import _fast

    cases = [c for c in CASES if c.startswith(f"{op}__{dtype}__")]
    assert cases
    _fast.set_enabled(fast)
    try:
        wrong = [c for c in cases
                 if (digest(_public_bits(*parse(c))) == CASES[c]) == (c in UNEXPLAINED)]
    finally:
        _fast.set_enabled(None)
    assert not wrong, wrong[:10]


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_backward_gemms_use_the_map(dtype):
    """linear's and matmul's backward GEMMs run the kernel the map names for their own shape:
    dX = dY @ W (M, K, N) and dW = dYᵀ @ X (N, K, M). With M = 130 (dW has K = 130: a residue
    tile first) the gradient equals `_gemm_choice.gemm` of that shape, bit for bit."""
    import simprec as sp
    from simprec import nn
    from simprec.formats import bf16, fp16

    fmt = {"f16": fp16, "bf16": bf16}[dtype]
    rng = np.random.default_rng(3)
    m, n, k = 130, 64, 64  # seed 3: the bf16 dW differs from the plain walk in 1 value
    x32, w32, g32 = (np.asarray(sp.round(rng.standard_normal(s).astype(np.float32), fmt))
                     for s in ((m, k), (n, k), (m, n)))
    x = sp.tensor(x32, fmt=fmt, requires_grad=True)
    w = sp.tensor(w32, fmt=fmt, requires_grad=True)
    with sp.accumulation("sm90"):
        y = nn.functional.linear(x, w)
        y.backward(sp.tensor(g32, fmt=fmt))
    gemm = _gemm_choice.gemm
    want_dw = gemm(g32.T[None].copy(), x32[None], fmt, _gemm_choice.choose(n, k, m, dtype))[0]
    want_dx = gemm(g32[None], w32[None], fmt, _gemm_choice.choose(m, k, n, dtype))[0]
    assert _gemm_choice.choose(n, k, m, dtype).residue == (128 if dtype == "f16" else 32)
    np.testing.assert_array_equal(w.grad.numpy().view(np.uint32), want_dw.view(np.uint32))
    np.testing.assert_array_equal(x.grad.numpy().view(np.uint32), want_dx.view(np.uint32))
    # not vacuous: the plain walk gives another weight gradient
    plain = gemm(g32.T[None].copy(), x32[None], fmt, _gemm_choice.DEFAULT)[0]
    assert (plain.view(np.uint32) != want_dw.view(np.uint32)).any()


def test_lookup_cached_and_folded():
    """The lookup is cached per shape; a batched operand against a 2-D one is one folded GEMM
    (torch's at::matmul), batched against batched is a strided-batched GEMM."""
    _gemm_choice.choose.cache_clear()
    f = _gemm_choice.for_operands
    assert f((2, 10, 130), (130, 64), "f16") == _gemm_choice.choose(20, 64, 130, "f16")
    assert f((2, 10, 130), (130, 64), "f16").residue == 128            # 20 rows >= 17
    assert f((10, 130), (130, 64), "f16").residue == 16                # 10 rows
    assert f((4, 65, 65), (4, 65, 16), "f16").residue == 16            # batched
    assert f((130,), (130, 64), "f16") == _gemm_choice.choose(1, 64, 130, "f16")
    before = _gemm_choice.choose.cache_info()
    f((2, 10, 130), (130, 64), "f16")
    after = _gemm_choice.choose.cache_info()
    assert after.hits == before.hits + 1 and after.currsize == before.currsize


@pytest.mark.parametrize("choice", [_gemm_choice.GemmChoice(16, 16),
                                    _gemm_choice.GemmChoice(16, 128),
                                    _gemm_choice.GemmChoice(8, 32), _gemm_choice.DEFAULT])
@pytest.mark.parametrize("k", [1, 9, 31, 33, 127, 130, 200])
def test_k_slots_plain_walk_is_the_chosen_walk(choice, k):
    """What a GPU backend runs (the plain 16-block kernel on operands scattered to
    `k_slots`) is the chosen kernel's walk, bit for bit (bf16 values of wide range: with these
    inputs the chosen walks differ from the plain one in 3 to 35 of 42 values wherever they
    differ at all, i.e. except K <= 9 and residue 128 with K <= 128)."""
    from simprec.formats import bf16
    from simprec.formats import round as fround

    rng = np.random.default_rng(k)
    a = np.asarray(fround((rng.standard_normal((1, 6, k)) * 2.0 ** rng.integers(-8, 8, (1, 6, k)))
                          .astype(np.float32), bf16))
    b = np.asarray(fround(rng.standard_normal((1, k, 7)).astype(np.float32), bf16))
    total, slots = _gemm_choice.k_slots(k, choice)
    assert total % 16 == 0 and len(set(slots.tolist())) == k and slots.max() < total
    assert np.all(np.diff(slots) > 0)                      # K order kept
    az = np.zeros((1, 6, total), np.float32)
    bz = np.zeros((1, total, 7), np.float32)
    az[..., slots], bz[:, slots] = a, b
    want = _gemm_choice.accumulate(a, b, -126, choice)
    got = _gemm_choice.accumulate(az, bz, -126, _gemm_choice.DEFAULT)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
