"""The torch backend's cuBLAS settings: no reduced-precision reductions and no split-K.

A bare `False` for allow_fp16/bf16_reduced_precision_reduction still lets cuBLASLt split K in
torch >= 2.10 (the flag is a pair: reduced precision, split-K). On the H200 the CNN's conv1
weight-gradient GEMM (16x9, K = 4096) then ran splitKreduce_kernel and differed from the sm90
model in 3 of 144 values (scripts/h200_gemm13_check.py, docs/fidelity.md).
"""

import pytest

torch = pytest.importorskip("torch")

from simprec_torch.backend import _pin_gemm_settings  # noqa: E402
from simprec_torch.native import pin_cuda_gemm_settings  # noqa: E402

GETTERS = ("_get_cublas_allow_fp16_reduced_precision_reduction",
           "_get_cublas_allow_bf16_reduced_precision_reduction")


@pytest.fixture
def restore_settings():
    matmul = torch.backends.cuda.matmul
    saved = {g: getattr(torch._C, g)() for g in GETTERS}
    tf32 = matmul.allow_tf32
    yield
    for getter, value in saved.items():
        setattr(matmul, getter.replace("_get_cublas_", ""), value)
    matmul.allow_tf32 = tf32


@pytest.mark.parametrize("pin", [_pin_gemm_settings, pin_cuda_gemm_settings])
def test_split_k_and_reduced_precision_off(pin, restore_settings):
    matmul = torch.backends.cuda.matmul
    matmul.allow_fp16_reduced_precision_reduction = True
    matmul.allow_bf16_reduced_precision_reduction = True
    matmul.allow_tf32 = True
    pin()
    for getter in GETTERS:
        state = getattr(torch._C, getter)()
        # torch >= 2.10: (reduced precision, split-K); older torch: one bool for both
        assert state in ((False, False), False), f"{getter}() = {state}"
    assert matmul.allow_tf32 is False
