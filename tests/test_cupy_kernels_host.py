"""The CuPy backend's CUDA device functions (backends/simprec_cupy/kernels/*.cuh), built for the
host with a C++ compiler and held bit for bit against the NumPy reference: rounding into every
kind of format in every mode, Philox words, and the tensor-core and fp16 accumulation models.
The GPU build of the same functions is checked by tests/test_cupy_backend.py (marked gpu)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

import simprec as sp
from simprec import _tensor_core, accumulate
from simprec._philox import stream_words

sys.path.insert(0, str(REPO / "backends"))
from simprec_cupy import _params  # noqa: E402

u64, i32, f32p = ctypes.c_ulonglong, ctypes.c_int, ctypes.POINTER(ctypes.c_float)


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the kernels for the host")
    so = tmp_path_factory.mktemp("sp_host") / "sp_host.so"
    subprocess.run([cxx, "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-o", str(so),
                    str(_params.KERNEL_DIR / "host_test.cpp")], check=True)
    return ctypes.CDLL(str(so))


def _ptr(a, ctype=ctypes.c_float):
    return a.ctypes.data_as(ctypes.POINTER(ctype))


def host_round(lib, x, fmt, mode="nearest", seed=0, stream=0, offset=0, random_bits=32):
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty_like(x)
    m, emin, fmax, ovf, sub = _params.format_args(fmt)
    lib.sp_host_round(_ptr(x), _ptr(out), ctypes.c_long(x.size), i32(m), i32(emin),
                      ctypes.c_float(fmax), i32(ovf), i32(sub), i32(_params.MODES[mode]),
                      u64(seed), u64(stream), u64(offset),
                      ctypes.c_uint(int(_params.keep_mask(random_bits))))
    return out


def same_bits(a, b):
    """Bit-identical, except that any NaN equals any NaN (payloads are not part of the
    contract); returns the indices that differ."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    diff = (a.view(np.uint32) != b.view(np.uint32)) & ~(np.isnan(a) & np.isnan(b))
    return np.flatnonzero(diff)


FORMATS = [
    sp.fp16, sp.bf16, sp.fp8_e4m3, sp.fp8_e5m2, sp.tf32,
    sp.Format(3, 2),                                         # tiny, IEEE-like
    sp.Format(6, 5, subnormals=False),                       # custom, flush to zero
    sp.fp8_e4m3.replace(overflow="saturate"),
    sp.fp16.replace(overflow="saturate"),
    sp.bf16.replace(subnormals=False),
    sp.Format(4, 3, inf=False, nan="none"),                  # no specials: saturates
    sp.Format(5, 2, overflow="nan"),
    sp.Format(8, 0),
    sp.Format(7, 23),
]


def _inputs():
    rng = np.random.default_rng(0)
    every16 = np.arange(1 << 16, dtype=np.uint32)
    parts = [every16 << 16,                                   # every fp32 binade, both signs
             every16 << 16 | 0x8000,                          # ... halfway below bit 16
             every16 << 16 | 0x7FFF,
             rng.integers(0, 1 << 32, size=1 << 18, dtype=np.uint32)]
    x = np.concatenate(parts).view(np.float32)
    return np.concatenate([x, np.float16(every16.view(np.float16)).astype(np.float32)])


X = _inputs()


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("mode", ["nearest", "toward_zero"])
def test_round_matches_the_reference(lib, fmt, mode):
    ref = sp.round(X, fmt, mode)
    got = host_round(lib, X, fmt, mode)
    bad = same_bits(got, ref)
    assert bad.size == 0, (f"{bad.size} differ; first x={X[bad[0]]!r} "
                           f"(0x{X.view(np.uint32)[bad[0]]:08x}): got {got[bad[0]]!r}, "
                           f"reference {ref[bad[0]]!r}")


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("random_bits", [32, 5])
def test_stochastic_round_with_philox_matches_the_reference(lib, fmt, random_bits):
    ref = sp.round(X, fmt, "stochastic", rng=sp.Philox(seed=42, stream=3, offset=7),
                   random_bits=random_bits)
    got = host_round(lib, X, fmt, "stochastic", seed=42, stream=3, offset=7,
                     random_bits=random_bits)
    bad = same_bits(got, ref)
    assert bad.size == 0, (f"{bad.size} differ; first x={X[bad[0]]!r}: got {got[bad[0]]!r}, "
                           f"reference {ref[bad[0]]!r}")


def test_philox_words_match_the_reference(lib):
    for seed, stream, offset in [(0, 0, 0), (2**64 - 1, 2**40 + 5, 2**34 - 3), (7, 1, 5)]:
        out = np.empty(1001, np.uint32)
        lib.sp_host_philox(_ptr(out, ctypes.c_uint), ctypes.c_long(out.size), u64(seed),
                           u64(stream), u64(offset))
        np.testing.assert_array_equal(out, stream_words(seed, stream, offset, out.size))


def _operands(fmt, shape_a, shape_b, rng, specials=False, spread=3.0):
    def draw(shape):
        x = rng.standard_normal(shape) * np.exp2(rng.integers(-spread, spread + 1, shape))
        x[rng.random(shape) < 0.1] = 0
        if specials:
            pick = rng.random(shape)
            x[pick < 0.01] = np.inf
            x[(pick >= 0.01) & (pick < 0.02)] = -np.inf
            x[(pick >= 0.02) & (pick < 0.025)] = np.nan
        return sp.round(x.astype(np.float32), fmt)

    return draw(shape_a), draw(shape_b)


def host_gemm(lib, a, b, c, model, fmt):
    B, M, K = a.shape
    N = b.shape[-1]
    out = np.empty((B, M, N), np.float32)
    m, emin, fmax, ovf, sub = _params.format_args(fmt)
    if model == "fp16":
        blk, frac, floor, kind = accumulate.FP16_BLOCK, 0, 0, 1
    else:
        (blk, frac, floor), kind = _params.tc_args(model), 0
    lib.sp_host_gemm(_ptr(a), _ptr(b), _ptr(c), _ptr(out), i32(B), i32(M), i32(N), i32(K),
                     i32(kind), i32(m), i32(emin), i32(blk), i32(frac), i32(floor),
                     ctypes.c_float(fmax), i32(ovf), i32(sub))
    return out


CASES = [((2, 7, 37), (2, 37, 5), False, 3.0), ((1, 9, 64), (1, 64, 11), True, 3.0),
         ((1, 16, 48), (1, 48, 16), False, 12.0), ((1, 4, 3), (1, 3, 6), False, 1.0)]


@pytest.mark.parametrize("arch", ["sm70", "sm80", "sm90"])
@pytest.mark.parametrize("fmt", [sp.fp16, sp.bf16], ids=lambda f: f.name)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_tensor_core_dot_matches_the_reference(lib, arch, fmt, case):
    sa, sb, specials, spread = CASES[case]
    rng = np.random.default_rng(case)
    if fmt == sp.bf16:
        spread *= 8  # far-apart bf16 exponents take the reference's general path
    a, b = _operands(fmt, sa, sb, rng, specials, spread)
    c = sp.round(rng.standard_normal(sa[:2] + sb[-1:]).astype(np.float32), sp.fp32)
    c[..., 0] = 0.0
    c[..., 1] = -0.0
    c[..., 2] = np.float32(2.0**-140)
    a[:, 0, :] = 0                         # c alone: +0 from +-0, c itself otherwise
    a[:, 1, :] = -a[:, 2, :]               # exact cancellation against c = 0
    c[:, 1:3, 0] = 0.0
    b[:, :, 3] = b[:, :, 4]
    ref = _tensor_core.tc_accumulate(a, b, c, emin=fmt.min_exp, arch=arch)
    got = host_gemm(lib, a, b, c, arch, fmt)
    bad = same_bits(got, ref)
    assert bad.size == 0, f"{bad.size} differ; first at {np.unravel_index(bad[0], got.shape)}"


@pytest.mark.parametrize("fmt", [sp.fp16, sp.bf16], ids=lambda f: f.name)
def test_fp16_accumulation_matches_the_reference(lib, fmt):
    rng = np.random.default_rng(5)
    a, b = _operands(fmt, (2, 9, 70), (2, 70, 13), rng, spread=6.0)
    ref = accumulate._half_accumulate(a, b, fmt)
    got = host_gemm(lib, a, b, np.zeros(ref.shape, np.float32), "fp16", fmt)
    assert same_bits(got, ref).size == 0


# ----------------------------------------------------------------- gemm.cu's kernels, emulated

@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the kernels for the host")
    so = tmp_path_factory.mktemp("sp_emu") / "sp_emu.so"
    proc = subprocess.run([cxx, "-std=c++20", "-O2", "-ffp-contract=off", "-fPIC", "-shared",
                           "-pthread", "-o", str(so),
                           str(_params.KERNEL_DIR / "host_gemm_emu.cpp")], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"the host compiler cannot build the emulation (C++20 <barrier>): "
                    f"{proc.stderr.decode()[:200]}")
    return ctypes.CDLL(str(so))


EMU_SHAPES = [(2, 70, 37, 130), (1, 1, 1, 1), (1, 65, 64, 3), (3, 9, 16, 66)]  # B, M, K, N


@pytest.mark.parametrize("model", ["sm70", "sm80", "sm90", "fp16"])
@pytest.mark.parametrize("fmt", [sp.fp16, sp.bf16], ids=lambda f: f.name)
@pytest.mark.parametrize("case", range(len(EMU_SHAPES)))
def test_gemm_kernels_match_the_reference(emu, case, fmt, model):
    """sp_tc_gemm / sp_half_gemm (64x64 tiles, 4x4 outputs per thread, K tiles of 16, the
    special-value flags, the fused bias and output rounding) and sp_simple_gemm."""
    B, M, K, N = EMU_SHAPES[case]
    rng = np.random.default_rng(case)
    a, b = _operands(fmt, (B, M, K), (B, K, N), rng, specials=case == 0,
                     spread=24.0 if fmt == sp.bf16 else 3.0)
    bias = rng.standard_normal(N).astype(np.float32)
    m, emin, fmax, ovf, sub = _params.format_args(fmt)
    if model == "fp16":
        tc, blk, frac, floor = 1, accumulate.FP16_BLOCK, 0, 0
    else:
        tc, (blk, frac, floor) = 0, _params.tc_args(model)
    for out_fmt, bb in ((fmt, bias), (sp.fp32, None)):
        # the kernel is one tensor core kernel's arithmetic, the plain model: simprec's sm90
        # matmul adds the H200's kernel choice on top (simprec._gemm_choice), which a backend
        # realises through the operands (k_slots), not inside this kernel
        ref = (accumulate.matmul(a, b, fmt=fmt, accumulate=model, out_fmt=out_fmt, bias=bb)
               if model == "fp16" else
               accumulate.tensor_core_matmul(a, b, arch=model, out=out_fmt, bias=bb, fmt=fmt))
        om, oemin, ofmax, oovf, osub = _params.format_args(out_fmt)
        # the one-thread-per-output kernel (thread creation is slow here) on the small cases
        for kind in (tc, 2) if M * N <= 1200 else (tc,):
            out = np.full((B, M, N), np.nan, np.float32)
            bias_ptr = _ptr(bb) if bb is not None else None
            emu.sp_emu_gemm(i32(kind), _ptr(a), _ptr(b), bias_ptr, _ptr(out), i32(B), i32(M),
                            i32(N), i32(K), i32(tc), i32(m), i32(emin), i32(blk), i32(frac),
                            i32(floor), ctypes.c_float(fmax), i32(ovf), i32(sub),
                            i32(out_fmt != sp.fp32), i32(om), i32(oemin), ctypes.c_float(ofmax),
                            i32(oovf), i32(osub))
            bad = same_bits(out, ref)
            assert bad.size == 0, (f"kernel {kind}, out {out_fmt.name}, bias {bb is not None}: "
                                   f"{bad.size} differ, first at "
                                   f"{np.unravel_index(bad[0], out.shape)}: {out.flat[bad[0]]!r} "
                                   f"vs {ref.flat[bad[0]]!r}")
