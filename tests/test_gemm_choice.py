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
