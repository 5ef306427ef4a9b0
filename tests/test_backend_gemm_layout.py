"""The GPU backends run the GEMM kernel cuBLASLt picks on the H200 (simprec._gemm_choice) as the
plain 16-block kernel on laid-out operands (simprec.backend.gemm_layout). Checked without a GPU:
the layout against the reference's chosen kernel, and the torch backend's CUDA GEMM path on the
CPU with cuBLASLt's plain sm_90 kernel played by the reference's plain model (a stand-in that
refuses operands the sm_90 TMA kernel could not load). On the H200 the same cases run in
tests/test_torch_backend.py::test_tensor_core_gemm_is_the_sm90_model."""

from __future__ import annotations

import numpy as np
import pytest

import simprec as sp
from simprec import _gemm_choice, formats
from simprec.accumulate import tensor_core_matmul
from simprec.backend import get_backend
from simprec.backend.gemm_layout import sm90_gemm_layout

REF = get_backend("numpy")

# (a shape, b shape, bias): the map's odd kernels (residue tiles, 8-term blocks, batched K
# remainder, unfused bias), shapes cuBLASLt gives non-TMA kernels (N % 8, small M), plain ones
CASES = [
    ((64, 130), (130, 64), False),       # fp16: residue tile 128; bf16: 8-term blocks
    ((8, 63), (63, 64), True),           # fp16: the K remainder first (M <= 16)
    ((128, 1000), (1000, 7), True),      # N = 7
    ((33, 65), (65, 48), False),         # bf16: 8-term blocks, residue 32
    ((128, 31), (31, 17), True),
    ((1, 4096), (4096, 1), False),       # gemv-like
    ((16, 16), (16, 1), True),           # the unfused bias (N = 1, M and K multiples of 8)
    ((4, 65, 65), (4, 65, 64), False),   # batched: the K remainder first
    ((2, 1, 9, 33), (4, 33, 18), True),  # broadcast batch
    ((37,), (37, 6), False),             # 1-D operands
    ((6, 37), (37,), False),
    ((40, 9), (9, 8), True),             # conv0's im2col GEMM (K = 9)
    ((2, 4, 24), (24, 16), True),        # folded by torch.matmul into one GEMM of 8 rows
    ((3, 5, 40), (40,), False),          # folded, against a vector
    ((64, 64), (64, 64), True),          # plain
]


def _operands(fmt, sa, sb, with_bias, seed):
    rng = np.random.default_rng(seed)
    a = formats.round(rng.standard_normal(sa).astype(np.float32), fmt)
    b = formats.round(rng.standard_normal(sb).astype(np.float32) * 3, fmt)
    bias = formats.round(rng.standard_normal(sb[-1]).astype(np.float32), fmt) if with_bias \
        else None
    return a, b, bias


@pytest.mark.parametrize("fmt", [sp.fp16, sp.bf16], ids=lambda f: f.name)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_plain_kernel_on_the_layout_is_the_chosen_kernel(case, fmt):
    """The plain model over K' with the products at `slots` equals the map's kernel."""
    sa, sb, _ = CASES[case]
    a, b, _ = _operands(fmt, sa, sb, False, case)
    layout = sm90_gemm_layout(a.shape, b.shape, fmt)
    k = sa[-1]
    assert layout.k_padded % 16 == 0 and layout.k_padded >= k
    a2 = a[None] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    slots = np.arange(k) if layout.slots is None else layout.slots
    a_lay = np.zeros(a2.shape[:-1] + (layout.k_padded,), np.float32)
    a_lay[..., slots] = a2
    b_lay = np.zeros(b2.shape[:-2] + (layout.k_padded, b2.shape[-1]), np.float32)
    b_lay[..., slots, :] = b2
    got = tensor_core_matmul(a_lay, b_lay, arch="sm90", out=sp.fp32, fmt=fmt)
    want = REF.matmul(a2, b2, fmt=fmt, accumulate="sm90", out_fmt=sp.fp32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_layout_of_the_map():
    """Plain shapes keep the plain layout (the backends' fast path); odd ones get slots."""
    plain = sm90_gemm_layout((64, 64), (64, 64), sp.fp16)
    assert plain.slots is None and plain.k_padded == 64 and plain.fused_bias
    assert sm90_gemm_layout((64, 9), (9, 64), "fp16").slots is None        # K <= tile 128
    assert sm90_gemm_layout((64, 9), (9, 64), "fp16").k_padded == 16
    odd = sm90_gemm_layout((33, 65), (65, 48), sp.bf16)                     # 8-term blocks
    choice = _gemm_choice.choose(33, 48, 65, "bf16")
    assert choice.block == 8
    assert odd.k_padded == _gemm_choice.k_slots(65, choice)[0]
    # K = 65, tile 32: the 1 leading product alone in its block, then 8 products per 16 slots
    assert list(odd.slots[:10]) == [0, 16, 17, 18, 19, 20, 21, 22, 23, 32]
    assert not odd.slots.flags.writeable
    assert not sm90_gemm_layout((16, 16), (16, 1), sp.fp16, bias=True).fused_bias
    assert sm90_gemm_layout((16, 16), (16, 1), sp.fp16).fused_bias
    assert sm90_gemm_layout((33, 65), (65, 48), sp.bf16) is odd             # cached
    with pytest.raises(ValueError):
        sm90_gemm_layout((4, 4), (4, 4), sp.fp32)


def _plain_sm90_stand_in(fmt):
    """`_matmul_fp32_out` as cuBLASLt's plain sm_90 kernel: the reference's plain model, on
    operands that kernel can load (K' % 16 == 0, N % 8 == 0, M > 16) only."""
    import torch

    def mm(a, b):
        assert a.shape[-1] % 16 == 0 and b.shape[-1] % 8 == 0 and a.shape[-2] > 16, (
            a.shape, b.shape)
        out = tensor_core_matmul(a.float().numpy(), b.float().numpy(), arch="sm90",
                                 out=sp.fp32, fmt=fmt)
        return torch.from_numpy(np.ascontiguousarray(out))
    return mm


@pytest.mark.parametrize("fmt", [sp.fp16, sp.bf16], ids=lambda f: f.name)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_torch_cuda_gemm_path_on_the_layout(monkeypatch, case, fmt):
    """torch:cuda's sm90 GEMM path (the CUDA plan on the CPU) on the map's odd shapes, with the
    plain tensor-core kernel stood in for, equals the reference bit for bit; torch:cpu too."""
    pytest.importorskip("torch")
    from simprec_torch import TorchBackend
    from simprec_torch import backend as torch_backend

    monkeypatch.setattr(torch_backend, "_matmul_fp32_out", _plain_sm90_stand_in(fmt))
    plan, cpu = TorchBackend.cuda_plan(), get_backend("torch:cpu")
    sa, sb, with_bias = CASES[case]
    a, b, bias = _operands(fmt, sa, sb, with_bias, case)
    # the shapes the backend lays out (else its plain path runs torch's own GEMM: CPU bits)
    m = int(np.prod(sa[:-1])) if len(sb) <= 2 else sa[-2]  # torch.matmul folds a's batch
    n = sb[-1] if len(sb) > 1 else 1
    laid_out = (sm90_gemm_layout(sa, sb, fmt).slots is not None or n % 8 or m <= 16
                or not sm90_gemm_layout(sa, sb, fmt, bias=with_bias).fused_bias)
    for out in (fmt, sp.fp32):
        for bb in (None, bias) if bias is not None else (None,):
            want = REF.matmul(a, b, fmt=fmt, accumulate="sm90", out_fmt=out, bias=bb)
            for be in (plan, cpu) if laid_out else (cpu,):
                got = be.to_numpy(be.matmul(
                    be.asarray(a, fmt), be.asarray(b, fmt), fmt=fmt, accumulate="sm90",
                    out_fmt=out, bias=None if bb is None else be.asarray(bb, fmt)))
                assert got.shape == want.shape
                assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (
                    be.name, out.name, bb is not None,
                    int(np.sum(got.view(np.uint32) != want.view(np.uint32))))


def _gpu_backends():
    """The GPU backends here: torch:cuda, and cupy on its cuBLASLt path ("native") and its
    emulated kernel; none without a CUDA GPU."""
    found = []
    try:
        import torch
        if torch.cuda.is_available():
            found.append(("torch:cuda", None))
    except ImportError:
        pass
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() > 0:
            found += [("cupy", True), ("cupy", False)]
    except Exception:  # no CuPy, no driver, no device
        pass
    return found


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", [sp.fp16, sp.bf16], ids=lambda f: f.name)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_gpu_backends_run_the_maps_kernel(monkeypatch, case, fmt):
    """On the H200: every GPU backend's sm90 GEMM equals the reference on the map's shapes."""
    found = _gpu_backends()
    if not found:
        pytest.skip("needs a CUDA GPU (torch or CuPy)")
    sa, sb, with_bias = CASES[case]
    a, b, bias = _operands(fmt, sa, sb, with_bias, case)
    for name, native in found:
        be = get_backend(name)
        if native is not None:
            monkeypatch.setattr(be, "native_sm90", native)
        for out in (fmt, sp.fp32):
            for bb in (None, bias) if bias is not None else (None,):
                want = REF.matmul(a, b, fmt=fmt, accumulate="sm90", out_fmt=out, bias=bb)
                got = be.to_numpy(be.matmul(
                    be.asarray(a, fmt), be.asarray(b, fmt), fmt=fmt, accumulate="sm90",
                    out_fmt=out, bias=None if bb is None else be.asarray(bb, fmt)))
                assert np.array_equal(got.astype(np.float32).view(np.uint32),
                                      want.view(np.uint32)), (
                    name, native, out.name, bb is not None,
                    int(np.sum(got.astype(np.float32).view(np.uint32) != want.view(np.uint32))))
