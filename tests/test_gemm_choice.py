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
    """The shipped map: 4,090 cases; the named remainder (docs/fidelity.md) is 69."""
    assert len(CASES) == 4090
    assert len(UNEXPLAINED) == 69


def test_choice_rules():
    c = _gemm_choice.choose
    assert c(64, 64, 130, "f16") == _gemm_choice.GemmChoice(16, True, True)
    assert not c(64, 64, 130, "bf16").remainder_first
    assert not c(64, 64, 128, "f16").remainder_first
    assert not c(128, 1, 130, "f16").remainder_first
    assert c(65, 64, 65, "f16", batch=8).remainder_first
    assert not c(65, 64, 65, "f16").remainder_first
    assert not c(8, 1, 16, "f16", bias=True).fused_bias
    assert c(17, 1, 16, "f16", bias=True).fused_bias


def test_remainder_first_changes_bits():
    """The two K walks differ on the captured case (the test above is not vacuous)."""
    a, b, _ = inputs("mm", "f16", (64, 64, 130))
    from simprec.formats import fp16
    plain = _gemm_choice.gemm(a, b, fp16, _gemm_choice.GemmChoice())
    first = _gemm_choice.gemm(a, b, fp16, _gemm_choice.GemmChoice(remainder_first=True))
    assert (plain.view(np.uint32) != first.view(np.uint32)).any()


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
    dX = dY @ W (M, K, N) and dW = dYᵀ @ X (N, K, M). With M = 130 (K remainder first for fp16
    dW, which has K = 130) the gradient equals `_gemm_choice.gemm` of that shape, bit for bit."""
    import simprec as sp
    from simprec import nn
    from simprec.formats import bf16, fp16

    fmt = {"f16": fp16, "bf16": bf16}[dtype]
    rng = np.random.default_rng(3)
    m, n, k = 130, 24, 40
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
    assert _gemm_choice.choose(n, k, m, dtype).remainder_first == (dtype == "f16")
    np.testing.assert_array_equal(w.grad.numpy().view(np.uint32), want_dw.view(np.uint32))
    np.testing.assert_array_equal(x.grad.numpy().view(np.uint32), want_dx.view(np.uint32))
    if dtype == "f16":   # not vacuous: the plain walk gives another weight gradient
        plain = gemm(g32.T[None].copy(), x32[None], fmt, _gemm_choice.DEFAULT)[0]
        assert (plain.view(np.uint32) != want_dw.view(np.uint32)).any()


def test_lookup_cached_and_folded():
    """The lookup is cached per shape; a batched operand against a 2-D one is one folded GEMM
    (torch's at::matmul), batched against batched is a strided-batched GEMM."""
    _gemm_choice.choose.cache_clear()
    f = _gemm_choice.for_operands
    assert f((2, 10, 130), (130, 64), "f16") == _gemm_choice.choose(20, 64, 130, "f16")
    assert f((2, 10, 130), (130, 64), "f16").remainder_first            # 20 rows >= 17
    assert not f((10, 130), (130, 64), "f16").remainder_first            # 10 rows
    assert f((4, 65, 65), (4, 65, 16), "f16").remainder_first            # batched, K > 64
    assert f((130,), (130, 64), "f16") == _gemm_choice.choose(1, 64, 130, "f16")
    before = _gemm_choice.choose.cache_info()
    f((2, 10, 130), (130, 64), "f16")
    after = _gemm_choice.choose.cache_info()
    assert after.hits == before.hits + 1 and after.currsize == before.currsize
